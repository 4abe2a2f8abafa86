package dhcp_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"

	"github.com/insomniacslk/dhcp/iana"

	"github.com/netroot/netroot/dhcp"
)

// A proxyDHCP beside the site's DHCP server: BIOS machines get pxelinux.0, UEFI machines
// shim (Secure Boot on or off), UEFI HTTP boot and iPXE clients an http:// URL. One machine
// is left to another boot server.
func ExampleServer() {
	srv := &dhcp.Server{
		Addr:      netip.MustParseAddr("192.0.2.1"),
		Interface: "eth0",
		Logger:    slog.New(slog.NewTextHandler(os.Stderr, nil)),
		Machine: func(c *dhcp.Client) dhcp.Loader {
			if c.MAC.String() == "52:54:00:00:00:99" {
				return dhcp.LoaderNone
			}
			return dhcp.LoaderAuto
		},
	}
	go func() {
		if err := srv.ListenAndServe(); err != nil && err != dhcp.ErrServerClosed {
			fmt.Println(err)
		}
	}()
	// ... on SIGTERM:
	_ = srv.Shutdown(context.Background())
}

func ExampleFirmwareOf() {
	for _, arch := range []iana.Arch{0, 7, 11, 16} {
		fmt.Println(uint16(arch), dhcp.FirmwareOf(arch))
	}
	// Output:
	// 0 bios
	// 7 efi-x64
	// 11 efi-arm64
	// 16 efi-x64-http
}

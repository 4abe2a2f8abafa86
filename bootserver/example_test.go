package bootserver_test

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	"github.com/netroot/netroot/bootserver"
)

// A boot server for the KIS builds KIWI wrote into /var/lib/kiwi/out: TFTP on port 69, NBD on
// 10809, the newest build of the only image, rolled forward on SIGHUP.
func Example() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	srv := &bootserver.Server{
		Source:   &bootserver.KISSource{Dirs: []string{"/var/lib/kiwi/out"}, Logger: logger},
		TFTPRoot: "/srv/tftpboot",
		ServerIP: netip.MustParseAddr("192.0.2.1"), // this server, as clients reach it
		Boot: bootserver.BootOptions{
			Append:     "console=ttyS0,115200",
			Bootloader: true, // copy pxelinux.0 from the pxelinux package
		},
		Logger: logger,
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			if err := srv.Reload(ctx); err != nil {
				logger.Error("reload", "err", err)
			}
		}
	}()
	if err := srv.Run(ctx); err != nil {
		logger.Error("boot server", "err", err)
		os.Exit(1)
	}
}

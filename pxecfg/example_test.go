package pxecfg_test

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/netroot/netroot/pxecfg"
)

func ExampleWritePXELinux() {
	c := &pxecfg.Config{
		Serial:  "0 115200",
		Default: "kis",
		Timeout: 3 * time.Second,
		Entries: []pxecfg.Entry{
			pxecfg.NetbootEntry("kis", "boot/linux", []string{"boot/initrd"},
				"root=overlay:nbd=192.0.2.1:kis rd.driver.pre=nbd console=ttyS0,115200"),
		},
	}
	if err := pxecfg.WritePXELinux(os.Stdout, c); err != nil {
		fmt.Println(err)
	}
	// Output:
	// SERIAL 0 115200
	// DEFAULT kis
	// TIMEOUT 30
	//
	// LABEL kis
	//   LINUX boot/linux
	//   INITRD boot/initrd
	//   APPEND root=overlay:nbd=192.0.2.1:kis rd.driver.pre=nbd console=ttyS0,115200
	//   IPAPPEND 2
}

func ExampleWriteGRUB() {
	c := &pxecfg.Config{Entries: []pxecfg.Entry{
		pxecfg.NetbootEntry("kis", "boot/linux", []string{"boot/initrd"}, `root=overlay:aoe=e0.1 rd.driver.pre=aoe "motd=hello world"`),
	}}
	if err := pxecfg.WriteGRUB(os.Stdout, c); err != nil {
		fmt.Println(err)
	}
	// Output:
	// set timeout=0
	//
	// menuentry kis --id kis {
	// 	linux /boot/linux root=overlay:aoe=e0.1 rd.driver.pre=aoe 'motd=hello world' BOOTIF=01-${net_default_mac}
	// 	initrd /boot/initrd
	// }
}

func ExampleWriteIPXE() {
	c := &pxecfg.Config{Entries: []pxecfg.Entry{
		pxecfg.NetbootEntry("kis", "boot/linux", []string{"boot/initrd"}, "root=overlay:aoe=e0.1 rd.driver.pre=aoe"),
	}}
	if err := pxecfg.WriteIPXE(os.Stdout, c); err != nil {
		fmt.Println(err)
	}
	// Output:
	// #!ipxe
	//
	// :kis
	// kernel --name kernel boot/linux initrd=initrd root=overlay:aoe=e0.1 rd.driver.pre=aoe BOOTIF=01-${netX/mac:hexhyp}
	// initrd --name initrd boot/initrd
	// boot
}

func ExampleConfigNames() {
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	for _, n := range pxecfg.ConfigNames("", mac, netip.MustParseAddr("192.0.2.100")) {
		fmt.Println(n)
	}
	// Output:
	// pxelinux.cfg/01-52-54-00-12-34-56
	// pxelinux.cfg/C0000264
	// pxelinux.cfg/C000026
	// pxelinux.cfg/C00002
	// pxelinux.cfg/C0000
	// pxelinux.cfg/C000
	// pxelinux.cfg/C00
	// pxelinux.cfg/C0
	// pxelinux.cfg/C
	// pxelinux.cfg/default
}

// A tool reads a site's menu, adds an entry and writes it back without losing the others.
func ExampleParse() {
	site := `DEFAULT local
label local
  localboot 0
`
	c, err := pxecfg.Parse(strings.NewReader(site))
	if err != nil {
		fmt.Println(err)
		return
	}
	c.Add(pxecfg.NetbootEntry("kis", "boot/linux", []string{"boot/initrd"}, "root=overlay:aoe=e0.1 rd.driver.pre=aoe"))
	if err := pxecfg.WritePXELinux(os.Stdout, c); err != nil {
		fmt.Println(err)
	}
	// Output:
	// DEFAULT local
	//
	// LABEL local
	//   LOCALBOOT 0
	//
	// LABEL kis
	//   LINUX boot/linux
	//   INITRD boot/initrd
	//   APPEND root=overlay:aoe=e0.1 rd.driver.pre=aoe
	//   IPAPPEND 2
}

func ExampleWriteDir() {
	root, err := os.MkdirTemp("", "tftproot")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(root)
	c := &pxecfg.Config{Entries: []pxecfg.Entry{pxecfg.NetbootEntry("kis", "boot/linux", []string{"boot/initrd"}, "root=overlay:aoe=e0.1")}}
	written, err := pxecfg.WriteDir(root, c, nil)
	fmt.Println(written, err)
	// Output: [pxelinux.cfg/default grub/grub.cfg boot.ipxe] <nil>
}

func ExampleBootFiles() {
	files, err := pxecfg.BootFiles(pxecfg.BIOS, &pxecfg.Config{UI: "menu.c32"})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, f := range files {
		fmt.Println(f.Name, f.Source, f.Package)
	}
	// Output:
	// pxelinux.0 /usr/lib/PXELINUX/pxelinux.0 pxelinux
	// ldlinux.c32 /usr/lib/syslinux/modules/bios/ldlinux.c32 syslinux-common
	// menu.c32 /usr/lib/syslinux/modules/bios/menu.c32 syslinux-common
}

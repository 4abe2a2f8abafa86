package overlaycmdline_test

import (
	"fmt"

	"github.com/netroot/netroot/overlaycmdline"
)

func ExampleCmdline() {
	c := overlaycmdline.Cmdline{
		Root:    overlaycmdline.NBD("192.0.2.1", "leap-kis"),
		Options: overlaycmdline.Options{Size: "2G"},
		Extra:   []string{"console=ttyS0,115200"},
	}
	if err := c.Validate(); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(c.String())
	// Output: root=overlay:nbd=192.0.2.1:leap-kis rd.driver.pre=nbd rd.root.overlay.size=2G console=ttyS0,115200
}

func ExampleRoot_Validate() {
	fmt.Println(overlaycmdline.NBD("192.0.2.1:10809", "root").Validate())
	fmt.Println(overlaycmdline.NBD("192.0.2.1", "site:root").Validate())
	// Output:
	// overlaycmdline: NBD host "192.0.2.1:10809" carries port 10809; the module always connects to 192.0.2.1 port 10809
	// overlaycmdline: NBD export name "site:root" contains ':'; the module takes field 3 of root= split on ':' and would read "site"
}

func ExampleParse() {
	c, err := overlaycmdline.Parse(`quiet root="overlay:aoe=e0.1" rd.driver.pre=aoe rd.kiwi.debug`)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(c.Root.Kind, c.Root.Device(), c.Options.Debug, c.Extra)
	// Output: aoe /dev/etherd/e0.1 true [quiet]
}

// KIWI writes the kernel options of a KIS build to its .append file; Append merges the overlay
// arguments into them and replaces KIWI's own root=.
func ExampleAppend() {
	kiwi := "root=overlay:LABEL=ROOT console=ttyS0 rd.kiwi.install.pxe"
	c := overlaycmdline.Cmdline{Root: overlaycmdline.AoE(0, 1)}
	fmt.Println(overlaycmdline.Append(kiwi, c.Args()...))
	// Output: console=ttyS0 rd.kiwi.install.pxe root=overlay:aoe=e0.1 rd.driver.pre=aoe
}

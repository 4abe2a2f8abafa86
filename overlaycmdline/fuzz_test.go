package overlaycmdline_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/overlaycmdline"
)

// FuzzParse checks that whatever Parse accepts validates, renders, and parses back to the same
// model, and that Append never loses or duplicates the key it adds.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"root=overlay:nbd=192.0.2.1:root rd.driver.pre=nbd quiet",
		`root="overlay:aoe=e0.1" rd.root.overlay.size=50% rd.kiwi.debug "console=ttyS0,115200"`,
		"root=overlay:UUID=0d8f rd.root.overlay.readonly=0 rootflags=noatime,ro",
		"root=overlay:nbd=boot.example.net:a=b rd.root.overlay.write=/dev/vdb1 rd.driver.pre=nbd,e1000",
		`a="b c" root=x root=overlay:LABEL=l"`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := overlaycmdline.Parse(s)
		if err != nil {
			assert.Regexp(t, "^overlaycmdline: ", err.Error())
			return
		}
		require.NoError(t, c.Validate())
		again, err := overlaycmdline.Parse(c.String())
		require.NoError(t, err, "rendered %q", c.String())
		assert.Equal(t, c, again)

		merged := overlaycmdline.Append(s, c.Args()...)
		m, err := overlaycmdline.Parse(merged)
		require.NoError(t, err, "merged %q", merged)
		assert.Equal(t, c.Root, m.Root)
		n := 0
		for _, fld := range overlaycmdline.Fields(merged) {
			if overlaycmdline.SplitArg(fld).Key == overlaycmdline.KeyRoot {
				n++
			}
		}
		assert.Equal(t, 1, n, "one root= in %q", merged)
	})
}

package pxecfg_test

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/pxecfg"
)

// FuzzParse checks that the parser never panics, that every config it reads and the writer
// accepts reads back equal, and that the GRUB and iPXE writers either succeed or fail cleanly.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob("testdata/site/pxelinux.cfg/*")
	require.NoError(f, err)
	for _, name := range files {
		data, err := os.ReadFile(name)
		require.NoError(f, err)
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := pxecfg.Parse(bytes.NewReader(data))
		if err != nil {
			assert.Regexp(t, "^pxecfg: ", err.Error())
			return
		}
		if _, err := pxecfg.BootFiles(pxecfg.BIOS, c); err != nil {
			assert.Regexp(t, "^pxecfg: ", err.Error())
		}
		for _, w := range []func(io.Writer, *pxecfg.Config) error{pxecfg.WriteGRUB, pxecfg.WriteIPXE} {
			if err := w(io.Discard, c); err != nil {
				assert.Regexp(t, "^pxecfg: ", err.Error())
			}
		}
		var b bytes.Buffer
		if err := pxecfg.WritePXELinux(&b, c); err != nil {
			assert.Regexp(t, "^pxecfg: ", err.Error())
			return
		}
		again, err := pxecfg.Parse(bytes.NewReader(b.Bytes()))
		require.NoError(t, err, "reading back:\n%s", b.String())
		assert.Equal(t, c, again, "written:\n%s", b.String())
	})
}

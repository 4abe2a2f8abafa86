package kis_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/netroot/netroot/kis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseAppend(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		root     string
		options  []string
	}{
		{"kiwi default", "root=UUID=8f0a6b8e-7d0e-4c5b-9a57-1d2f0a0c3e11", "UUID=8f0a6b8e-7d0e-4c5b-9a57-1d2f0a0c3e11", nil},
		{"custom cmdline", "root=UUID=abcd console=ttyS0,115200 rd.kiwi.install.pass.bootparam quiet\n", "UUID=abcd",
			[]string{"console=ttyS0,115200", "rd.kiwi.install.pass.bootparam", "quiet"}},
		{"quoted", `root=UUID=1 dyndbg="file net/* +p" a="" b`, "UUID=1", []string{`dyndbg="file net/* +p"`, `a=""`, "b"}},
		{"root elsewhere, extra space", "  quiet \t root=/dev/nbd0  splash ", "/dev/nbd0", []string{"quiet", "splash"}},
		{"no root", "console=tty0", "", []string{"console=tty0"}},
		{"quoted root", `"root=/dev/nbd0" x`, "/dev/nbd0", []string{"x"}},
		{"not root", "rootflags=ro rootfstype=ext4", "", []string{"rootflags=ro", "rootfstype=ext4"}},
		{"empty", "", "", nil},
		{"vertical tab and form feed separate, as in the kernel", "quiet\vroot=/dev/nbd0\fsplash", "/dev/nbd0", []string{"quiet", "splash"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, opts, err := kis.ParseAppend(tc.in)
			require.NoError(t, err)
			assert.Equal(t, tc.root, root)
			assert.Equal(t, tc.options, opts)
		})
	}
}

func TestParseAppendErrors(t *testing.T) {
	_, _, err := kis.ParseAppend(`root=UUID=1 a="b c`)
	assert.ErrorContains(t, err, `kis: append options "root=UUID=1 a=\"b c" have an unterminated quote`)
	_, _, err = kis.ParseAppend("a\x00b")
	assert.ErrorContains(t, err, "NUL byte")
}

func TestReadAppend(t *testing.T) {
	dir := t.TempDir()
	root, opts, err := kis.ReadAppend(kis.Build{})
	require.NoError(t, err)
	assert.Empty(t, root)
	assert.Nil(t, opts)

	p := filepath.Join(dir, "x.x86_64-1.0.0.append")
	require.NoError(t, os.WriteFile(p, []byte("root=UUID=1 console=ttyS0\n"), 0o644))
	root, opts, err = kis.ReadAppend(kis.Build{Append: p})
	require.NoError(t, err)
	assert.Equal(t, "UUID=1", root)
	assert.Equal(t, []string{"console=ttyS0"}, opts)

	require.NoError(t, os.WriteFile(p, []byte(strings.Repeat("a ", 40000)), 0o644))
	_, _, err = kis.ReadAppend(kis.Build{Append: p})
	assert.ErrorContains(t, err, "is longer than 65536 bytes")

	require.NoError(t, os.WriteFile(p, []byte(`"`), 0o644))
	_, _, err = kis.ReadAppend(kis.Build{Append: p})
	assert.ErrorContains(t, err, "(in "+p+")")

	_, _, err = kis.ReadAppend(kis.Build{Append: filepath.Join(dir, "absent")})
	assert.ErrorIs(t, err, os.ErrNotExist)
}

func FuzzParseAppend(f *testing.F) {
	f.Add("root=UUID=1 console=ttyS0,115200 quiet")
	f.Add(`a="b c" root="x y" d`)
	f.Add("\t\n")
	f.Fuzz(func(t *testing.T, s string) {
		root, opts, err := kis.ParseAppend(s)
		if err != nil {
			return
		}
		// Joining the options gives a command line that parses to the same options.
		joined := strings.Join(opts, " ")
		root2, opts2, err := kis.ParseAppend(joined)
		if err != nil {
			t.Fatalf("ParseAppend(%q) options %q do not parse again: %v", s, joined, err)
		}
		if root2 != "" || strings.Join(opts2, " ") != joined || len(opts2) != len(opts) {
			t.Fatalf("ParseAppend(%q): options %q parse as %q (root %q)", s, opts, opts2, root2)
		}
		for _, o := range opts {
			if o == "" || strings.HasPrefix(strings.TrimPrefix(o, `"`), "root=") {
				t.Fatalf("ParseAppend(%q): option %q", s, o)
			}
		}
		_ = root
	})
}

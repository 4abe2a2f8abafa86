package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// serveFlags returns serve's flag set, as runServe makes it.
func serveFlags(t *testing.T) (*flag.FlagSet, *serveConfig) {
	t.Helper()
	e := &env{stdout: io.Discard, stderr: io.Discard, globals: globalFlags{logFormat: "text", logLevel: "info"}}
	fs := newFlagSet(e, "serve", "")
	var c serveConfig
	c.register(fs)
	fs.String("config", "", "")
	require.NoError(t, fs.Parse(nil))
	return fs, &c
}

func TestExampleSettingsFile(t *testing.T) {
	fs, c := serveFlags(t)
	require.NoError(t, applyConfigFile(fs, "netroot.example.toml"), "the shipped example is valid")
	assert.Equal(t, "192.0.2.1", c.serverIP)
	assert.Equal(t, "/srv/tftpboot", c.stage.tftpRoot)
	assert.Equal(t, 30*time.Second, c.shutdownTimeout)
	assert.Equal(t, ":9469", c.metricsAddr)
}

func TestSettingsErrorsSayWhatTheyWant(t *testing.T) {
	for _, tc := range []struct{ setting, want string }{
		{`shutdown-timeout = 5`, `shutdown-timeout = 5: want a duration such as "5s" or "2m30s" (in quotes), not a number`},
		{`shutdown-timeout = "5 s"`, `shutdown-timeout = "5 s": want a duration such as "5s"`},
		{`nbd = "yes"`, `nbd = "yes": want true or false, not a string`},
		{`aoe-slot = "one"`, `aoe-slot = "one": want a whole number, not a string`},
		{`aoe-slot = 1.5`, `aoe-slot = 1.5: want a whole number, not a number`},
		{`server-ip = 192`, `server-ip = 192: want a string in quotes, not a number`},
		{`append = true`, `append = true: want a string in quotes, not a boolean`},
	} {
		t.Run(tc.setting, func(t *testing.T) {
			fs, _ := serveFlags(t)
			path := filepath.Join(t.TempDir(), "bad.toml")
			require.NoError(t, os.WriteFile(path, []byte(tc.setting+"\n"), 0o644))
			err := applyConfigFile(fs, path)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

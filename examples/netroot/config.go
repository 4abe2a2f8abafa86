package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

// applyConfigFile sets, from a TOML file, every flag of fs that the command line did not set:
// command-line flags win over the file, and the file over the defaults. Keys are the flag names
// (tftp-root = "/srv/tftpboot", nbd = false, mac = ["52:54:00:12:34:56"] for a repeatable flag).
func applyConfigFile(fs *flag.FlagSet, path string) error {
	if path == "" {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("-config: %w", err)
	}
	var values map[string]any
	md, err := toml.Decode(string(data), &values)
	if err != nil {
		return fmt.Errorf("-config %s: %w", path, err)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		f := fs.Lookup(k)
		if f == nil || k == "config" {
			return fmt.Errorf("-config %s: unknown setting %q (settings are the flags of 'netroot %s -h')", path, k, strings.TrimPrefix(fs.Name(), "netroot "))
		}
		if set[k] {
			continue // the command line wins
		}
		vals := []any{values[k]}
		if list, ok := values[k].([]any); ok {
			vals = list
		}
		for _, v := range vals {
			var s string
			switch v := v.(type) {
			case string, bool, int64, float64:
				s = fmt.Sprint(v)
			default:
				return fmt.Errorf("-config %s: %s: %s value %v is not a string, number or boolean", path, k, md.Type(k), v)
			}
			if err := fs.Set(k, s); err != nil {
				return fmt.Errorf("-config %s: %s = %v: %w", path, k, v, err)
			}
		}
	}
	return nil
}

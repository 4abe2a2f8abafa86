package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

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
	_, err = toml.Decode(string(data), &values)
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
			str, err := settingString(f, v)
			if err != nil {
				return fmt.Errorf("-config %s: %s = %s: %s, not %w", path, k, tomlText(v), want(f), err)
			}
			if err := fs.Set(k, str); err != nil {
				return fmt.Errorf("-config %s: %s = %s: %s: %w", path, k, tomlText(v), want(f), err)
			}
		}
	}
	return nil
}

// flagKind is what a flag's value is, for settings and their errors.
func flagKind(f *flag.Flag) string {
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return "string"
	}
	switch g.Get().(type) {
	case bool:
		return "bool"
	case time.Duration:
		return "duration"
	case int, int64, uint, uint64:
		return "number"
	case float64:
		return "float"
	}
	return "string"
}

// settingString is a TOML value as the text the flag parses, refusing TOML types that do not
// fit the flag (a number for a duration, a string for a boolean).
func settingString(f *flag.Flag, v any) (string, error) {
	kind := flagKind(f)
	switch v := v.(type) {
	case string:
		if kind == "bool" || kind == "number" || kind == "float" {
			return "", errors.New("a string")
		}
		return v, nil
	case bool:
		if kind != "bool" {
			return "", errors.New("a boolean")
		}
		return fmt.Sprint(v), nil
	case int64:
		if kind != "number" && kind != "float" {
			return "", errors.New("a number")
		}
		return fmt.Sprint(v), nil
	case float64:
		if kind != "float" {
			return "", errors.New("a number")
		}
		return fmt.Sprint(v), nil
	}
	return "", fmt.Errorf("a %T", v)
}

// want says what a setting of f's kind should look like.
func want(f *flag.Flag) string {
	switch flagKind(f) {
	case "duration":
		return `want a duration such as "5s" or "2m30s" (in quotes)`
	case "bool":
		return "want true or false"
	case "number":
		return "want a whole number"
	case "float":
		return "want a number"
	}
	return "want a string in quotes"
}

// tomlText writes v as it would stand in a TOML file.
func tomlText(v any) string {
	if s, ok := v.(string); ok {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprint(v)
}

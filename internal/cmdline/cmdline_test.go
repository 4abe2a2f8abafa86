package cmdline

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// nextArgs is a byte-for-byte transliteration of the kernel's parse_args loop over next_arg
// (lib/cmdline.c, kernel/params.c) onto a NUL-terminated copy of s, with the kernel's isspace
// restricted to ASCII as the package documents. It is the reference the splitter is checked
// against: every argument as (param, val, hasVal).
func nextArgs(s string) []Arg {
	buf := append([]byte(s), 0)
	cstr := func(p int) string {
		end := p
		for buf[end] != 0 {
			end++
		}
		return string(buf[p:end])
	}
	skip := func(p int) int {
		for IsSpace(buf[p]) {
			p++
		}
		return p
	}
	var out []Arg
	args := skip(0)
	for buf[args] != 0 {
		i, equals := 0, 0
		inQuote, quoted := false, false
		if buf[args] == '"' {
			args++
			inQuote, quoted = true, true
		}
		for ; buf[args+i] != 0; i++ {
			if IsSpace(buf[args+i]) && !inQuote {
				break
			}
			if equals == 0 && buf[args+i] == '=' {
				equals = i
			}
			if buf[args+i] == '"' {
				inQuote = !inQuote
			}
		}
		param, val := args, -1
		if equals != 0 {
			buf[args+equals] = 0
			val = args + equals + 1
			if buf[val] == '"' {
				val++
				if buf[args+i-1] == '"' {
					buf[args+i-1] = 0
				}
			}
		}
		if quoted && buf[args+i-1] == '"' {
			buf[args+i-1] = 0
		}
		next := args + i
		if buf[args+i] != 0 {
			buf[args+i] = 0
			next++
		}
		a := Arg{Key: cstr(param)}
		if val >= 0 {
			a.Value, a.HasValue = cstr(val), true
		}
		out = append(out, a)
		args = skip(next)
	}
	return out
}

func splitAll(s string) []Arg {
	var out []Arg
	for _, f := range Split(s) {
		out = append(out, SplitArg(f))
	}
	return out
}

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string
	}{
		{"empty", "", nil},
		{"spaces only", " \t\n\v\f\r ", nil},
		{"plain", "quiet  root=x\tro", []string{"quiet", "root=x", "ro"}},
		{"vertical tab and form feed separate", "a\vb\fc", []string{"a", "b", "c"}},
		{"quoted value", `a="b c" d`, []string{`a="b c"`, "d"}},
		{"quoted argument", `"a=b c" d`, []string{`"a=b c"`, "d"}},
		{"quote in the middle", `g"h i"j k`, []string{`g"h i"j`, "k"}},
		{"unterminated quote runs to the end", `a="b c d`, []string{`a="b c d`}},
		{"a backslash does not escape a quote", `a=\"b c\" d`, []string{`a=\"b c\"`, "d"}},
		{"0xA0 is not split", "a\xa0b", []string{"a\xa0b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, Split(tc.in))
		})
	}
}

func TestSplitArg(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Arg
	}{
		{"quiet", Arg{Key: "quiet"}},
		{"a=", Arg{Key: "a", HasValue: true}},
		{"a=b=c", Arg{Key: "a", Value: "b=c", HasValue: true}},
		{`a="b c"`, Arg{Key: "a", Value: "b c", HasValue: true}},
		{`"a=b c"`, Arg{Key: "a", Value: "b c", HasValue: true}},
		{`"a b"`, Arg{Key: "a b"}},
		{`"a="b""`, Arg{Key: "a", Value: `b"`, HasValue: true}},
		{`a="`, Arg{Key: "a", HasValue: true}},
		{"=x", Arg{Key: "=x"}},
		{`"=x"`, Arg{Key: "=x"}},
		{`"`, Arg{Key: ""}},
		{"==0", Arg{Key: "=", Value: "0", HasValue: true}},
	} {
		t.Run(tc.in, func(t *testing.T) {
			assert.Equal(t, tc.want, SplitArg(tc.in))
			assert.Equal(t, nextArgs(tc.in), []Arg{tc.want}, "the kernel's next_arg agrees")
		})
	}
}

func TestQuote(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"quiet", "quiet"},
		{"a=b c", `a="b c"`},
		{"a b", `"a b"`},
		{"=b c", `"=b c"`},
		{"==b c", `=="b c"`},
		{`a=b "c"`, `a=b "c"`},
		{"a=b\vc", "a=\"b\vc\""},
	} {
		t.Run(tc.in, func(t *testing.T) {
			q := Quote(tc.in)
			assert.Equal(t, tc.want, q)
			if !strings.Contains(tc.in, `"`) {
				require.Len(t, Split(q), 1)
				assert.Equal(t, tc.in, Unquote(q))
			}
		})
	}
}

func TestUnterminated(t *testing.T) {
	assert.False(t, Unterminated(`a="b c" d`))
	assert.True(t, Unterminated(`a="b c d`))
}

// FuzzSplit checks Split and SplitArg against the transliterated kernel parser, and that
// joining the split arguments with single spaces splits the same way again.
func FuzzSplit(f *testing.F) {
	for _, s := range []string{
		`quiet root=overlay:nbd=192.0.2.1:root rd.driver.pre=nbd`,
		"a=\"b c\"\v\"d=e f\"\fg",
		`"a="b"" =x "=y" a=" "`,
		"\t\n\r x=1\xa0y",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if strings.IndexByte(s, 0) >= 0 {
			t.Skip("a C string ends at NUL")
		}
		fields := Split(s)
		assert.Equal(t, nextArgs(s), splitAll(s), "%q", s)
		for _, fl := range fields {
			require.NotEmpty(t, fl)
		}
		assert.Equal(t, fields, Split(strings.Join(fields, " ")))
	})
}

package peertest

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestRequired(t *testing.T) {
	for _, tc := range []struct {
		val  string
		want bool
	}{{"", false}, {"0", false}, {"false", false}, {"FALSE", false}, {"1", true}, {"yes", true}} {
		t.Run("value="+tc.val, func(t *testing.T) {
			t.Setenv(EnvRequire, tc.val)
			assert.Equal(t, tc.want, Required())
		})
	}
}

func TestProgramFindsShell(t *testing.T) {
	t.Setenv(EnvRequire, "1")
	assert.NotEmpty(t, Program(t, "sh", "dash"))
}

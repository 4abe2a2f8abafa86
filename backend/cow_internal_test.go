package backend

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCreateRemoved checks the fallback for file systems without O_TMPFILE: the file is usable
// and has no name.
func TestCreateRemoved(t *testing.T) {
	dir := t.TempDir()
	f, path, err := createRemoved(dir)
	require.NoError(t, err)
	defer f.Close()
	assert.Empty(t, path)
	_, err = f.WriteAt([]byte("overlay"), 1<<20)
	require.NoError(t, err)
	got := make([]byte, 7)
	_, err = f.ReadAt(got, 1<<20)
	require.NoError(t, err)
	assert.Equal(t, "overlay", string(got))
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries)
}

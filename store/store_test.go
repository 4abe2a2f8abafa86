package store_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/netroot/netroot/kis/kistest"
	"github.com/netroot/netroot/store"
	"github.com/netroot/netroot/store/storetest"
)

const testChunk = store.MinChunkSize

// writeBuild writes a KIS build of image into a new directory.
func writeBuild(t *testing.T, version string, image []byte, spec kistest.Spec) string {
	t.Helper()
	dir := t.TempDir()
	spec.Version = version
	spec.Image = image
	if spec.Append == "" {
		spec.Append = "root=UUID=1234 console=ttyS0\n"
	}
	_, err := kistest.Write(dir, spec)
	require.NoError(t, err)
	return dir
}

// noise returns n pseudo-random bytes: no two chunks of it are alike.
func noise(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// readBlob reassembles a blob from its chunks.
func readBlob(t *testing.T, st *store.Store, m *store.Manifest, b store.Blob) []byte {
	t.Helper()
	var out []byte
	for i, h := range b.Chunks {
		size := min(m.ChunkSize, b.Size-int64(i)*m.ChunkSize)
		data, err := st.Chunk(context.Background(), h, size)
		require.NoError(t, err)
		out = append(out, data...)
	}
	return out
}

func TestPushStoresChunksManifestAndTag(t *testing.T) {
	ctx := context.Background()
	srv := storetest.NewServer(t)
	st := srv.Store(t, "images", "site/a")

	image := kistest.Image(10*testChunk+123, 1)
	dir := writeBuild(t, "1.0.0", image, kistest.Spec{})
	res, err := st.Push(ctx, dir, &store.PushOptions{ChunkSize: testChunk})
	require.NoError(t, err)

	assert.Equal(t, "netroot-test.x86_64", res.Tag)
	assert.Equal(t, "netroot-test.x86_64-1.0.0", res.Manifest.Build)
	assert.Equal(t, "root=UUID=1234 console=ttyS0", res.Manifest.Append)
	assert.Len(t, res.Manifest.Image.Chunks, 11)
	assert.Equal(t, int64(len(image)), res.Manifest.Image.Size)

	tag, err := st.Tag(ctx, "netroot-test.x86_64")
	require.NoError(t, err)
	assert.Equal(t, res.ID, tag.Manifest)
	m, err := st.Manifest(ctx, tag.Manifest)
	require.NoError(t, err)
	assert.Equal(t, res.Manifest.MD5, m.MD5)
	assert.True(t, bytes.Equal(image, readBlob(t, st, m, m.Image)), "image read back from chunks differs")
	assert.Equal(t, []byte("kernel 6.1.0-13-amd64\n"), readBlob(t, st, m, m.Kernel))
	assert.Equal(t, []byte("initrd of netroot-test 1.0.0\n"), readBlob(t, st, m, m.Initrd))

	// Everything lives under the prefix.
	objs, err := srv.Backend.ListBucket("images", nil, defaultPage)
	require.NoError(t, err)
	for _, o := range objs.Contents {
		assert.Regexp(t, `^site/a/(chunks|manifests|tags)/`, o.Key)
	}
}

func TestPushStoresSharedChunksOnce(t *testing.T) {
	ctx := context.Background()
	srv := storetest.NewServer(t)
	st := srv.Store(t, "images", "")

	v1 := kistest.Image(16*testChunk, 7)
	v2 := bytes.Clone(v1)
	v2[5*testChunk+10] ^= 0xff // one chunk differs
	v2 = append(v2, bytes.Repeat([]byte{1}, testChunk)...)

	r1, err := st.Push(ctx, writeBuild(t, "1.0.0", v1, kistest.Spec{}), &store.PushOptions{ChunkSize: testChunk})
	require.NoError(t, err)
	r2, err := st.Push(ctx, writeBuild(t, "1.0.1", v2, kistest.Spec{}), &store.PushOptions{ChunkSize: testChunk})
	require.NoError(t, err)

	// v2: 17 image chunks, of which 15 are v1's; kernel is the same, initrd names the version.
	assert.Equal(t, 15+1, r2.Reused, "chunks of v2 found in the store")
	assert.Equal(t, 2+1, r2.Uploaded, "chunks of v2 uploaded")
	assert.Equal(t, r1.Uploaded-r1.Reused >= 0, true)
	l, err := st.List(ctx)
	require.NoError(t, err)
	assert.Len(t, l.Manifests, 2)
	assert.Equal(t, r1.Uploaded+r2.Uploaded, l.Chunks)

	// The newest manifest is listed first and the tag names it.
	assert.Equal(t, r2.ID, l.Manifests[0].ID)
	assert.Equal(t, []string{"netroot-test.x86_64"}, l.Manifests[0].Tags)
	assert.Empty(t, l.Manifests[1].Tags)
}

func TestPushZeroChunksRepeatWithinABuild(t *testing.T) {
	srv := storetest.NewServer(t)
	st := srv.Store(t, "images", "")
	image := make([]byte, 8*testChunk)
	copy(image, "superblock")
	res, err := st.Push(context.Background(), writeBuild(t, "1", image, kistest.Spec{}), &store.PushOptions{ChunkSize: testChunk})
	require.NoError(t, err)
	assert.Equal(t, 6, res.Reused, "7 zero chunks stored once")
	assert.Equal(t, 4, res.Uploaded, "superblock chunk, zero chunk, kernel, initrd")
}

func TestPushCompressedAndBundledBuilds(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec kistest.Spec
	}{
		{"xz", kistest.Spec{Compressed: true}},
		{"bundle only", kistest.Spec{BundleOnly: true}},
		{"compressed bundle only", kistest.Spec{BundleOnly: true, Compressed: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := storetest.NewServer(t)
			st := srv.Store(t, "images", "p")
			image := kistest.Image(5*testChunk+1, 3)
			res, err := st.Push(context.Background(), writeBuild(t, "2.0", image, tc.spec), &store.PushOptions{ChunkSize: testChunk})
			require.NoError(t, err)
			assert.True(t, bytes.Equal(image, readBlob(t, st, res.Manifest, res.Manifest.Image)))
		})
	}
}

func TestPushRefusesBuildFailingVerification(t *testing.T) {
	for _, tc := range []struct {
		name   string
		spec   kistest.Spec
		damage func(t *testing.T, dir string)
	}{
		{"raw image changed", kistest.Spec{}, func(t *testing.T, dir string) {
			p := filepath.Join(dir, "netroot-test.x86_64-1.0.0")
			b, err := os.ReadFile(p)
			require.NoError(t, err)
			b[100] ^= 1
			require.NoError(t, os.WriteFile(p, b, 0o644))
		}},
		{"md5 wrong", kistest.Spec{Compressed: true}, func(t *testing.T, dir string) {
			p := filepath.Join(dir, "netroot-test.x86_64-1.0.0.md5")
			b, err := os.ReadFile(p)
			require.NoError(t, err)
			b[0] = map[bool]byte{true: '1', false: '0'}[b[0] == '0']
			require.NoError(t, os.WriteFile(p, b, 0o644))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := storetest.NewServer(t)
			st := srv.Store(t, "images", "")
			dir := writeBuild(t, "1.0.0", kistest.Image(4*testChunk, 1), tc.spec)
			tc.damage(t, dir)
			_, err := st.Push(context.Background(), dir, &store.PushOptions{ChunkSize: testChunk})
			require.ErrorIs(t, err, store.ErrVerify)
			l, err := st.List(context.Background())
			require.NoError(t, err)
			assert.Empty(t, l.Tags)
			assert.Empty(t, l.Manifests)
			assert.Zero(t, l.Chunks, "nothing uploaded for a refused build")
		})
	}
}

func TestPushInterruptedLeavesNoTag(t *testing.T) {
	srv := storetest.NewServer(t)
	st := srv.Store(t, "images", "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	image := kistest.Image(64*testChunk, 5)
	dir := writeBuild(t, "1.0.0", image, kistest.Spec{})
	// Verification reads the image once; cancel halfway through the upload pass.
	_, err := st.Push(ctx, dir, &store.PushOptions{ChunkSize: testChunk, Progress: func(done, total int64) {
		if total > int64(len(image)) && done > total/2 {
			cancel()
		}
	}})
	require.ErrorIs(t, err, context.Canceled)
	l, err := st.List(context.Background())
	require.NoError(t, err)
	assert.Empty(t, l.Tags)
	assert.Empty(t, l.Manifests)
	assert.NotZero(t, l.Chunks, "the push had uploaded chunks when it stopped")

	// The orphans go once they are older than the grace age. (A PUT the client gave up on may
	// still land on the server after Push returned, hence the retries.)
	res, err := st.GC(context.Background(), &store.GCOptions{Grace: time.Hour})
	require.NoError(t, err)
	assert.Zero(t, res.Chunks)
	assert.GreaterOrEqual(t, res.YoungChunks, l.Chunks)
	require.Eventually(t, func() bool {
		_, err := st.GC(context.Background(), &store.GCOptions{Grace: time.Hour, Now: time.Now().Add(2 * time.Hour)})
		require.NoError(t, err)
		l, err = st.List(context.Background())
		require.NoError(t, err)
		return l.Chunks == 0
	}, 5*time.Second, 50*time.Millisecond)
}

func TestPromote(t *testing.T) {
	ctx := context.Background()
	srv := storetest.NewServer(t)
	st := srv.Store(t, "images", "")
	r1, err := st.Push(ctx, writeBuild(t, "1.0.0", kistest.Image(3*testChunk, 1), kistest.Spec{}), &store.PushOptions{ChunkSize: testChunk})
	require.NoError(t, err)
	r2, err := st.Push(ctx, writeBuild(t, "1.0.1", kistest.Image(3*testChunk, 2), kistest.Spec{}), &store.PushOptions{ChunkSize: testChunk, NoTag: true})
	require.NoError(t, err)
	assert.Empty(t, r2.Tag)

	tag, err := st.Tag(ctx, "netroot-test.x86_64")
	require.NoError(t, err)
	assert.Equal(t, r1.ID, tag.Manifest, "a push with NoTag leaves the tag")

	for _, tc := range []struct {
		ref  string
		want store.Hash
	}{
		{"netroot-test.x86_64-1.0.1", r2.ID},
		{r1.ID.String(), r1.ID},
		{r2.ID.String()[:10], r2.ID},
	} {
		got, err := st.Promote(ctx, "netroot-test.x86_64", tc.ref)
		require.NoError(t, err, tc.ref)
		assert.Equal(t, tc.want, got.Manifest, tc.ref)
		tag, err := st.Tag(ctx, "netroot-test.x86_64")
		require.NoError(t, err)
		assert.Equal(t, tc.want, tag.Manifest, tc.ref)
	}

	// A second tag (a canary, say) on another manifest.
	_, err = st.Promote(ctx, "canary", "netroot-test.x86_64-1.0.0")
	require.NoError(t, err)
	tags, err := st.Tags(ctx)
	require.NoError(t, err)
	require.Len(t, tags, 2)
	assert.Equal(t, "canary", tags[0].Name)

	for _, bad := range []string{"nope-1.0", "0000", r1.ID.String()[:7], store.Sum(nil).String()} {
		_, err := st.Promote(ctx, "netroot-test.x86_64", bad)
		assert.Error(t, err, bad)
	}
	_, err = st.Promote(ctx, "../evil", r1.ID.String())
	assert.ErrorContains(t, err, "tag name")

	// A manifest whose chunks are gone is not promoted.
	srv.Backend.DeleteObject("images", "chunks/"+r1.Manifest.Image.Chunks[1].String())
	_, err = st.Promote(ctx, "netroot-test.x86_64", r1.ID.String())
	assert.ErrorIs(t, err, store.ErrNotFound)
}

func TestGC(t *testing.T) {
	ctx := context.Background()
	srv := storetest.NewServer(t)
	st := srv.Store(t, "images", "gc")
	later := time.Now().Add(3 * time.Hour)

	v1 := noise(8*testChunk, 1)
	v2 := bytes.Clone(v1)
	copy(v2[2*testChunk:], noise(2*testChunk, 9)) // chunks 2 and 3 differ
	r1, err := st.Push(ctx, writeBuild(t, "1", v1, kistest.Spec{}), &store.PushOptions{ChunkSize: testChunk})
	require.NoError(t, err)
	r2, err := st.Push(ctx, writeBuild(t, "2", v2, kistest.Spec{}), &store.PushOptions{ChunkSize: testChunk})
	require.NoError(t, err)
	before, err := st.List(ctx)
	require.NoError(t, err)

	// Without pruning every manifest keeps its chunks: nothing to do.
	res, err := st.GC(ctx, &store.GCOptions{Now: later})
	require.NoError(t, err)
	assert.Zero(t, res.Chunks)
	assert.Empty(t, res.Manifests)
	assert.Equal(t, before.Chunks, res.KeptChunks)

	// Pruning, inside the grace age: the untagged v1 manifest is recent, so it stays.
	res, err = st.GC(ctx, &store.GCOptions{PruneManifests: true})
	require.NoError(t, err)
	assert.Empty(t, res.Manifests)
	assert.Zero(t, res.Chunks)

	// Dry run past the grace age reports and deletes nothing.
	res, err = st.GC(ctx, &store.GCOptions{PruneManifests: true, Now: later, DryRun: true})
	require.NoError(t, err)
	assert.Equal(t, []store.Hash{r1.ID}, res.Manifests)
	assert.Equal(t, 3, res.Chunks, "v1's two own image chunks and its initrd")
	after, err := st.List(ctx)
	require.NoError(t, err)
	assert.Equal(t, before.Chunks, after.Chunks)

	res, err = st.GC(ctx, &store.GCOptions{PruneManifests: true, Now: later})
	require.NoError(t, err)
	assert.Equal(t, []store.Hash{r1.ID}, res.Manifests)
	assert.Equal(t, 3, res.Chunks)
	after, err = st.List(ctx)
	require.NoError(t, err)
	require.Len(t, after.Manifests, 1)
	assert.Equal(t, r2.ID, after.Manifests[0].ID)
	assert.Equal(t, before.Chunks-3, after.Chunks)
	// The tagged version still reads in full.
	assert.True(t, bytes.Equal(v2, readBlob(t, st, r2.Manifest, r2.Manifest.Image)))

	// A manifest that cannot be read stops gc before it deletes anything.
	srv.Put(t, "images", "gc/manifests/"+store.Sum([]byte("x")).String(), []byte("x"))
	srv.Put(t, "images", "gc/chunks/"+store.Sum([]byte("orphan")).String(), []byte("orphan"))
	_, err = st.GC(ctx, &store.GCOptions{Now: later})
	require.Error(t, err)
	_, err = st.Chunk(ctx, store.Sum([]byte("orphan")), 6)
	assert.NoError(t, err, "orphan chunk still there after gc stopped")
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		in, bucket, prefix string
		bad                bool
	}{
		{in: "s3://images", bucket: "images"},
		{in: "s3://images/", bucket: "images"},
		{in: "s3://images/site/a/", bucket: "images", prefix: "site/a"},
		{in: "http://images/a", bad: true},
		{in: "s3:///a", bad: true},
		{in: "s3://u:p@images/a", bad: true},
		{in: "s3://images/a?x=1", bad: true},
	} {
		b, p, err := store.ParseURL(tc.in)
		if tc.bad {
			assert.Error(t, err, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		assert.Equal(t, tc.bucket, b, tc.in)
		assert.Equal(t, tc.prefix, p, tc.in)
	}
}

func TestValidTagName(t *testing.T) {
	for name, ok := range map[string]bool{
		"netroot-test.x86_64": true, "canary": true, "a+b_c": true,
		"": false, ".hidden": false, "a/b": false, "../x": false, "a b": false, string(make([]byte, 129)): false,
	} {
		assert.Equal(t, ok, store.ValidTagName(name) == nil, "%q", name)
	}
}

func TestConfigFromEnv(t *testing.T) {
	t.Setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
	t.Setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:7480")
	t.Setenv("AWS_DEFAULT_REGION", "eu-1")
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_ACCESS_KEY_ID", "AK")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "SK")
	t.Setenv("AWS_SESSION_TOKEN", "")
	c := store.ConfigFromEnv()
	assert.Equal(t, store.Config{Endpoint: "http://127.0.0.1:7480", Region: "eu-1", AccessKeyID: "AK", SecretAccessKey: "SK"}, c)
	_, err := store.New("b", "", &store.Config{Endpoint: "127.0.0.1:7480"})
	assert.ErrorContains(t, err, "endpoint")
}

var defaultPage = gofakes3.ListBucketPage{}

func TestPushStoreUnreachable(t *testing.T) {
	srv := storetest.NewServer(t)
	st := srv.Store(t, "images", "")
	dir := writeBuild(t, "1.0.0", noise(4*testChunk, 1), kistest.Spec{})
	srv.SetDown(true)
	_, err := st.Push(context.Background(), dir, &store.PushOptions{ChunkSize: testChunk})
	require.Error(t, err)
	srv.SetDown(false)
	l, err := st.List(context.Background())
	require.NoError(t, err)
	assert.Empty(t, l.Tags)
	assert.Empty(t, l.Manifests)
	// The same push goes through once the store is back.
	_, err = st.Push(context.Background(), dir, &store.PushOptions{ChunkSize: testChunk})
	require.NoError(t, err)
}

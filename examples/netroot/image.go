package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/netroot/netroot/bootserver"
	"github.com/netroot/netroot/store"
)

// runImage publishes KIS builds to S3-compatible storage: netroot image push|promote|list|gc.
func runImage(ctx context.Context, e *env, args []string) error {
	subs := []struct {
		name, synopsis, summary string
		run                     func(ctx context.Context, e *env, args []string) error
	}{
		{"push", "[flags] KISDIR s3://BUCKET[/PREFIX]", "verify a KIS build and upload it as chunks, manifest and tag", runImagePush},
		{"promote", "[flags] s3://BUCKET[/PREFIX] TAG MANIFEST|BUILD", "move a tag to a manifest (ID, ID prefix or build)", runImagePromote},
		{"list", "[flags] s3://BUCKET[/PREFIX]", "show tags, manifests and chunk totals", runImageList},
		{"gc", "[flags] s3://BUCKET[/PREFIX]", "delete chunks no manifest needs (and, with -prune, old untagged manifests)", runImageGC},
	}
	if len(args) > 0 {
		for _, s := range subs {
			if s.name == args[0] {
				return s.run(ctx, e, args[1:])
			}
		}
	}
	fmt.Fprintln(e.stderr, "usage: netroot image COMMAND [flags] ARGS\n\nCommands:")
	for _, s := range subs {
		fmt.Fprintf(e.stderr, "  %-8s %s\n           netroot image %s %s\n", s.name, s.summary, s.name, s.synopsis)
	}
	fmt.Fprintln(e.stderr, "\nThe endpoint, region and credentials come from AWS_ENDPOINT_URL_S3 (or AWS_ENDPOINT_URL),\n"+
		"AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, or from the flags.")
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
		return flag.ErrHelp
	}
	return usageError{fmt.Errorf("unknown image command %q", args[0])}
}

// storeFlags are the connection flags every image command takes.
type storeFlags struct {
	endpoint, region, accessKey, secretKey *string
	virtualHosted                          *bool
}

func addStoreFlags(fs *flag.FlagSet) storeFlags {
	return storeFlags{
		endpoint:      fs.String("endpoint", "", "S3 endpoint URL such as http://127.0.0.1:7480 (default $AWS_ENDPOINT_URL_S3, else AWS)"),
		region:        fs.String("region", "", "region to sign for (default $AWS_REGION, else "+store.DefaultRegion+")"),
		accessKey:     fs.String("access-key", "", "access key ID (default $AWS_ACCESS_KEY_ID)"),
		secretKey:     fs.String("secret-key", "", "secret access key (default $AWS_SECRET_ACCESS_KEY; prefer the variable: flags show in ps)"),
		virtualHosted: fs.Bool("virtual-hosted", false, "address buckets as BUCKET.HOST instead of HOST/BUCKET"),
	}
}

func (f storeFlags) open(e *env, url string) (*store.Store, error) {
	cfg := store.ConfigFromEnv()
	for _, o := range []struct{ flag, dst *string }{
		{f.endpoint, &cfg.Endpoint}, {f.region, &cfg.Region}, {f.accessKey, &cfg.AccessKeyID}, {f.secretKey, &cfg.SecretAccessKey},
	} {
		if *o.flag != "" {
			*o.dst = *o.flag
		}
	}
	cfg.VirtualHosted = *f.virtualHosted
	if e.verbose {
		cfg.Logger = e.log.With("store", url)
	}
	st, err := store.Open(url, &cfg)
	if err != nil {
		return nil, usageError{err}
	}
	return st, nil
}

func runImagePush(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "image push", "[flags] KISDIR s3://BUCKET[/PREFIX]")
	allowArgs(fs)
	sf := addStoreFlags(fs)
	name := fs.String("name", "", "image name to push when the directory holds several")
	version := fs.String("version", "", "version to push (default the newest)")
	tag := fs.String("tag", "", "tag to move to the new manifest (default NAME.ARCH)")
	noTag := fs.Bool("no-tag", false, "upload without moving any tag (promote later)")
	chunk := fs.Int64("chunk-size", store.DefaultChunkSize, "chunk size in bytes (a power of two)")
	parallel := fs.Int("parallel", store.DefaultParallel, "uploads in flight")
	createBucket := fs.Bool("create-bucket", false, "create the bucket first if it does not exist")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return usageError{errors.New("image push needs KISDIR and s3://BUCKET[/PREFIX]")}
	}
	st, err := sf.open(e, fs.Arg(1))
	if err != nil {
		return err
	}
	if *createBucket {
		if err := st.CreateBucket(ctx); err != nil {
			return err
		}
	}
	start := time.Now()
	res, err := st.Push(ctx, fs.Arg(0), &store.PushOptions{
		Name: *name, Version: *version, Tag: *tag, NoTag: *noTag, ChunkSize: *chunk, Parallel: *parallel,
	})
	if err != nil {
		return err
	}
	m := res.Manifest
	fmt.Fprintf(e.stdout, "pushed %s to %s in %s\n", m.Build, st, time.Since(start).Round(time.Millisecond))
	fmt.Fprintf(e.stdout, "manifest %s\n", res.ID)
	fmt.Fprintf(e.stdout, "image %s in %d chunks of %s, kernel %s, initrd %s\n",
		imageBytes(m.Image.Size), len(m.Image.Chunks), imageBytes(m.ChunkSize), imageBytes(m.Kernel.Size), imageBytes(m.Initrd.Size))
	fmt.Fprintf(e.stdout, "uploaded %d chunks (%s), %d already stored (%s)\n",
		res.Uploaded, imageBytes(res.UploadedBytes), res.Reused, imageBytes(res.ReusedBytes))
	if res.Tag != "" {
		fmt.Fprintf(e.stdout, "tag %s -> %s\n", res.Tag, m.Build)
	} else {
		fmt.Fprintf(e.stdout, "no tag moved; to boot it: netroot image promote %s TAG %s\n", st, m.Build)
	}
	return nil
}

func runImagePromote(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "image promote", "[flags] s3://BUCKET[/PREFIX] TAG MANIFEST|BUILD")
	allowArgs(fs)
	sf := addStoreFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 3 {
		fs.Usage()
		return usageError{errors.New("image promote needs s3://BUCKET[/PREFIX], TAG and a manifest ID, ID prefix or build")}
	}
	st, err := sf.open(e, fs.Arg(0))
	if err != nil {
		return err
	}
	prev, prevErr := st.Tag(ctx, fs.Arg(1))
	t, err := st.Promote(ctx, fs.Arg(1), fs.Arg(2))
	if err != nil {
		return err
	}
	from := "(new tag)"
	if prevErr == nil {
		from = prev.Build
	}
	fmt.Fprintf(e.stdout, "tag %s: %s -> %s (manifest %s)\n", t.Name, from, t.Build, t.Manifest)
	return nil
}

func runImageList(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "image list", "[flags] s3://BUCKET[/PREFIX]")
	allowArgs(fs)
	sf := addStoreFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return usageError{errors.New("image list needs s3://BUCKET[/PREFIX]")}
	}
	st, err := sf.open(e, fs.Arg(0))
	if err != nil {
		return err
	}
	l, err := st.List(ctx)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TAG\tBUILD\tMANIFEST\tSINCE")
	for _, t := range l.Tags {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", t.Name, t.Build, t.Manifest.String()[:12], t.Time.Format(time.RFC3339))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "MANIFEST\tBUILD\tIMAGE\tCHUNK\tCREATED\tTAGS")
	for _, in := range l.Manifests {
		m := in.Manifest
		tags := strings.Join(in.Tags, ",")
		if tags == "" {
			tags = "-"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", in.ID.String()[:12], m.Build, imageBytes(m.Image.Size), imageBytes(m.ChunkSize),
			m.Created.Format(time.RFC3339), tags)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "\n%d chunks, %s stored\n", l.Chunks, imageBytes(l.Bytes))
	return nil
}

func runImageGC(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "image gc", "[flags] s3://BUCKET[/PREFIX]")
	allowArgs(fs)
	sf := addStoreFlags(fs)
	grace := fs.Duration("grace", store.DefaultGrace, "keep objects younger than this (pushes in progress, recent manifests)")
	prune := fs.Bool("prune", false, "also delete manifests no tag names that are older than -grace")
	dryRun := fs.Bool("dry-run", false, "report what would be deleted, delete nothing")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return usageError{errors.New("image gc needs s3://BUCKET[/PREFIX]")}
	}
	if *grace <= 0 {
		return usageError{fmt.Errorf("-grace %s: want a positive duration", *grace)}
	}
	st, err := sf.open(e, fs.Arg(0))
	if err != nil {
		return err
	}
	res, err := st.GC(ctx, &store.GCOptions{Grace: *grace, PruneManifests: *prune, DryRun: *dryRun})
	if err != nil {
		return err
	}
	verb := "deleted"
	if *dryRun {
		verb = "would delete"
	}
	for _, id := range res.Manifests {
		fmt.Fprintf(e.stdout, "%s manifest %s\n", verb, id)
	}
	fmt.Fprintf(e.stdout, "%s %d chunks (%s); kept %d in use and %d younger than %s\n",
		verb, res.Chunks, imageBytes(res.Bytes), res.KeptChunks, res.YoungChunks, *grace)
	if res.MissingChunks > 0 {
		fmt.Fprintf(e.stdout, "warning: %d chunks that manifests need are missing from the store\n", res.MissingChunks)
	}
	return nil
}

// imageBytes formats a byte count with a binary unit.
func imageBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// storeServeFlags make `netroot serve -store s3://BUCKET/PREFIX` a replica that serves the
// builds the store's tags name, with no local copy of any root image.
type storeServeFlags struct {
	url, endpoint, tags, diskDir string
	memory, diskBytes            int64
	fetchTimeout, breakFor       time.Duration
	breakAfter                   int
}

func (f *storeServeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.url, "store", "", "serve the builds the tags of this S3-compatible store name (s3://BUCKET/PREFIX) instead of -kis; endpoint and credentials from the AWS_* variables")
	fs.StringVar(&f.endpoint, "store-endpoint", "", "with -store: S3 endpoint URL (default $AWS_ENDPOINT_URL_S3)")
	fs.StringVar(&f.tags, "store-tags", "", "with -store: comma-separated tags to serve (default all)")
	fs.Int64Var(&f.memory, "store-memory", store.DefaultMemoryBytes, "with -store: bytes of chunks cached in memory")
	fs.StringVar(&f.diskDir, "store-cache-dir", "", "with -store: also cache chunks in this directory")
	fs.Int64Var(&f.diskBytes, "store-cache-bytes", store.DefaultDiskBytes, "with -store-cache-dir: bound on its size in bytes")
	fs.DurationVar(&f.fetchTimeout, "store-fetch-timeout", store.DefaultFetchTimeout, "with -store: a read that misses the cache fails (I/O error to that request) when the store has not delivered the chunk in this time")
	fs.IntVar(&f.breakAfter, "store-break-after", store.DefaultBreakAfter, "with -store: after this many failed fetches in a row, reads that miss the cache fail at once for -store-break-for, then one fetch tries the store again (-1: never)")
	fs.DurationVar(&f.breakFor, "store-break-for", store.DefaultBreakFor, "with -store: how long the circuit breaker stays open")
}

// apply makes srv serve from the store when -store is given; the tags are polled every
// store.DefaultWatchInterval unless -watch says otherwise.
func (f *storeServeFlags) apply(e *env, srv *bootserver.Server, withKIS bool) error {
	if f.url == "" {
		return nil
	}
	if withKIS {
		return usageError{errors.New("-kis and -store exclude each other")}
	}
	cfg := store.ConfigFromEnv()
	if f.endpoint != "" {
		cfg.Endpoint = f.endpoint
	}
	st, err := store.Open(f.url, &cfg)
	if err != nil {
		return usageError{err}
	}
	cache, err := store.NewCache(st, &store.CacheConfig{MemoryBytes: f.memory, DiskDir: f.diskDir, DiskBytes: f.diskBytes,
		FetchTimeout: f.fetchTimeout, BreakAfter: f.breakAfter, BreakFor: f.breakFor,
		Logger: e.log.With("store", f.url)})
	if err != nil {
		return err
	}
	src := &bootserver.StoreSource{Cache: cache, Logger: e.log}
	if f.tags != "" {
		src.Tags = strings.Split(f.tags, ",")
	}
	srv.Source = src
	if srv.WatchInterval == 0 {
		srv.WatchInterval = store.DefaultWatchInterval
	}
	return nil
}

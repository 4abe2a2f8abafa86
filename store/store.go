package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// DefaultRegion is the region requests are signed for when none is configured; Ceph RGW,
// MinIO and most other engines accept it.
const DefaultRegion = "us-east-1"

// Config says how to reach an S3-compatible service. The zero value means AWS S3 in
// DefaultRegion with anonymous access; ConfigFromEnv fills it from the usual AWS variables.
type Config struct {
	// Endpoint is the service's base URL, such as http://127.0.0.1:7480; empty means AWS S3.
	Endpoint string
	// Region requests are signed for; empty means DefaultRegion.
	Region string
	// AccessKeyID and SecretAccessKey (and SessionToken for temporary credentials) sign
	// requests; with no AccessKeyID requests are anonymous.
	AccessKeyID, SecretAccessKey, SessionToken string
	// VirtualHosted addresses buckets as BUCKET.HOST instead of HOST/BUCKET. Path-style, the
	// default, is what self-hosted engines expect.
	VirtualHosted bool
	// HTTPClient sends the requests; nil means a client of its own.
	HTTPClient *http.Client
	// RetryMaxAttempts bounds the attempts per request; 0 means the SDK's default (3).
	RetryMaxAttempts int
	// Logger receives one line per object written or deleted at debug level; nil means silent.
	Logger *slog.Logger
}

// ConfigFromEnv returns a Config from AWS_ENDPOINT_URL_S3 (or AWS_ENDPOINT_URL),
// AWS_REGION (or AWS_DEFAULT_REGION), AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
// AWS_SESSION_TOKEN.
func ConfigFromEnv() Config {
	first := func(names ...string) string {
		for _, n := range names {
			if v := os.Getenv(n); v != "" {
				return v
			}
		}
		return ""
	}
	return Config{
		Endpoint:        first("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
		Region:          first("AWS_REGION", "AWS_DEFAULT_REGION"),
		AccessKeyID:     os.Getenv("AWS_ACCESS_KEY_ID"),
		SecretAccessKey: os.Getenv("AWS_SECRET_ACCESS_KEY"),
		SessionToken:    os.Getenv("AWS_SESSION_TOKEN"),
	}
}

// Store is the images under one prefix of one bucket:
//
//	PREFIX/chunks/SHA256      chunks of kernels, initrds and root images, by content
//	PREFIX/manifests/SHA256   manifests (JSON), by the hash of their bytes
//	PREFIX/tags/NAME          the manifest each image name boots (JSON)
//
// Chunks and manifests never change once written; only tags move. A Store is safe for
// concurrent use.
type Store struct {
	client *s3.Client
	bucket string
	prefix string // "" or ending in "/"
	log    *slog.Logger
}

// ParseURL splits s3://BUCKET/PREFIX into bucket and prefix (without surrounding slashes).
func ParseURL(s string) (bucket, prefix string, err error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", "", fmt.Errorf("store: URL %q: %w", s, err)
	}
	if u.Scheme != "s3" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", "", fmt.Errorf("store: URL %q: want s3://BUCKET[/PREFIX]", s)
	}
	return u.Host, strings.Trim(u.Path, "/"), nil
}

// Open returns the store at s3://BUCKET/PREFIX. It does not contact the service.
func Open(storeURL string, cfg *Config) (*Store, error) {
	bucket, prefix, err := ParseURL(storeURL)
	if err != nil {
		return nil, err
	}
	return New(bucket, prefix, cfg)
}

// New returns the store under prefix in bucket. It does not contact the service.
func New(bucket, prefix string, cfg *Config) (*Store, error) {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	if bucket == "" {
		return nil, errors.New("store: empty bucket name")
	}
	o := s3.Options{
		Region:       c.Region,
		UsePathStyle: !c.VirtualHosted,
		// Checksums only where the API requires them: engines such as Ceph RGW before Squid
		// reject the SDK's default trailing checksums, and chunks carry their own hash anyway.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
		RetryMaxAttempts:           c.RetryMaxAttempts,
	}
	if o.Region == "" {
		o.Region = DefaultRegion
	}
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("store: endpoint %q: want an http:// or https:// URL", c.Endpoint)
		}
		o.BaseEndpoint = aws.String(c.Endpoint)
	}
	if c.AccessKeyID != "" {
		creds := aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken, Source: "netroot"}
		o.Credentials = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) { return creds, nil })
	} else {
		o.Credentials = aws.AnonymousCredentials{}
	}
	if c.HTTPClient != nil {
		o.HTTPClient = c.HTTPClient
	} else {
		o.HTTPClient = &http.Client{Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
		}}
	}
	p := strings.Trim(prefix, "/")
	if p != "" {
		p += "/"
	}
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{client: s3.New(o), bucket: bucket, prefix: p, log: log}, nil
}

// String returns s3://BUCKET/PREFIX.
func (s *Store) String() string { return "s3://" + s.bucket + "/" + strings.TrimSuffix(s.prefix, "/") }

// Bucket returns the store's bucket.
func (s *Store) Bucket() string { return s.bucket }

func (s *Store) chunkKey(h Hash) string    { return s.prefix + "chunks/" + h.String() }
func (s *Store) manifestKey(h Hash) string { return s.prefix + "manifests/" + h.String() }
func (s *Store) tagKey(name string) string { return s.prefix + "tags/" + name }

var errTooLarge = errors.New("object larger than expected")

// ErrNotFound is wrapped by errors for a chunk, manifest or tag that is not in the store.
var ErrNotFound = errors.New("store: not found")

// CreateBucket creates the store's bucket; a bucket that exists already and is the caller's is
// not an error.
func (s *Store) CreateBucket(ctx context.Context) error {
	_, err := s.client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &s.bucket})
	var owned *s3types.BucketAlreadyOwnedByYou
	if err == nil || errors.As(err, &owned) {
		return nil
	}
	return fmt.Errorf("store: create bucket %q: %w", s.bucket, err)
}

// get reads the whole object at key, at most limit bytes; more is an error.
func (s *Store) get(ctx context.Context, key string, limit int64) ([]byte, error) {
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: &key})
	if err != nil {
		return nil, s.wrap("get", key, err)
	}
	defer out.Body.Close()
	if out.ContentLength != nil && *out.ContentLength > limit {
		return nil, fmt.Errorf("store: get %s: %d bytes, more than %d: %w", key, *out.ContentLength, limit, errTooLarge)
	}
	size := int64(512)
	if out.ContentLength != nil && *out.ContentLength >= 0 {
		size = *out.ContentLength
	}
	buf := bytes.NewBuffer(make([]byte, 0, size+1))
	n, err := buf.ReadFrom(io.LimitReader(out.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("store: get %s: %w", key, err)
	}
	if n > limit {
		return nil, fmt.Errorf("store: get %s: more than %d bytes: %w", key, limit, errTooLarge)
	}
	return buf.Bytes(), nil
}

func (s *Store) put(ctx context.Context, key string, data []byte, contentType string) error {
	_, err := s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        &s.bucket,
		Key:           &key,
		Body:          bytes.NewReader(data),
		ContentLength: aws.Int64(int64(len(data))),
		ContentType:   aws.String(contentType),
	})
	if err != nil {
		return s.wrap("put", key, err)
	}
	s.log.Debug("put", "key", key, "bytes", len(data))
	return nil
}

// exists reports whether key is there (and, when size >= 0, has that size).
func (s *Store) exists(ctx context.Context, key string, size int64) (bool, error) {
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: &key})
	if err != nil {
		err = s.wrap("head", key, err)
		if errors.Is(err, ErrNotFound) {
			return false, nil
		}
		return false, err
	}
	if size >= 0 && out.ContentLength != nil && *out.ContentLength != size {
		return false, nil
	}
	return true, nil
}

func (s *Store) delete(ctx context.Context, key string) error {
	if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: &key}); err != nil {
		return s.wrap("delete", key, err)
	}
	s.log.Debug("delete", "key", key)
	return nil
}

// object is one entry of a listing, its key relative to the listed folder.
type object struct {
	name     string
	size     int64
	modified time.Time
}

// list returns the objects directly under PREFIX/dir/.
func (s *Store) list(ctx context.Context, dir string) ([]object, error) {
	prefix := s.prefix + dir + "/"
	var objs []object
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: &prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, s.wrap("list", prefix, err)
		}
		for _, o := range page.Contents {
			if o.Key == nil {
				continue
			}
			name := strings.TrimPrefix(*o.Key, prefix)
			if name == "" || strings.Contains(name, "/") {
				continue
			}
			obj := object{name: name}
			if o.Size != nil {
				obj.size = *o.Size
			}
			if o.LastModified != nil {
				obj.modified = *o.LastModified
			}
			objs = append(objs, obj)
		}
	}
	return objs, nil
}

func (s *Store) wrap(op, key string, err error) error {
	var nsk *s3types.NoSuchKey
	var nf *s3types.NotFound
	var api smithy.APIError
	switch {
	case errors.As(err, &nsk), errors.As(err, &nf):
		return fmt.Errorf("store: %s %s: %w", op, key, ErrNotFound)
	case errors.As(err, &api) && (api.ErrorCode() == "NoSuchKey" || api.ErrorCode() == "NotFound"):
		return fmt.Errorf("store: %s %s: %w", op, key, ErrNotFound)
	}
	return fmt.Errorf("store: %s s3://%s/%s: %w", op, s.bucket, key, err)
}

// ErrCorrupt is wrapped by the error for a chunk whose content does not match its hash.
var ErrCorrupt = errors.New("store: corrupt chunk")

// Chunk reads chunk h of size bytes and checks its length and hash.
func (s *Store) Chunk(ctx context.Context, h Hash, size int64) ([]byte, error) {
	key := s.chunkKey(h)
	data, err := s.get(ctx, key, size)
	if errors.Is(err, errTooLarge) {
		return nil, fmt.Errorf("store: chunk %s: %w: %w", h, ErrCorrupt, err)
	}
	if err != nil {
		return nil, err
	}
	if int64(len(data)) != size {
		return nil, fmt.Errorf("store: chunk %s: %d bytes, want %d: %w", h, len(data), size, ErrCorrupt)
	}
	if got := Sum(data); got != h {
		return nil, fmt.Errorf("store: chunk %s: content hashes to %s: %w", h, got, ErrCorrupt)
	}
	return data, nil
}

func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

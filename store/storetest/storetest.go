// Package storetest runs an in-process S3 service (gofakes3 over an in-memory backend, behind
// httptest) for tests of code that uses package store, with switches to take it down, slow it
// and corrupt objects, and counts of the requests it served.
package storetest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/netroot/netroot/store"
)

// Credentials the fake service accepts (it accepts any).
const (
	AccessKeyID     = "netroot-test"
	SecretAccessKey = "netroot-test-secret"
)

// Server is an S3 service on a loopback port.
type Server struct {
	*httptest.Server
	Backend *s3mem.Backend

	down  atomic.Bool
	delay atomic.Int64 // nanoseconds added to every request

	mu   sync.Mutex
	gets map[string]int // GET requests per path (/BUCKET/KEY)
}

// NewServer starts a server; it is closed when t ends.
func NewServer(t testing.TB) *Server {
	s := Start()
	t.Cleanup(s.Server.Close)
	return s
}

// Start starts a server; the caller closes it.
func Start() *Server {
	s := &Server{Backend: s3mem.New(), gets: make(map[string]int)}
	fake := gofakes3.New(s.Backend, gofakes3.WithTimeSkewLimit(0))
	h := fake.Server()
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.down.Load() {
			// As a dead peer looks: the connection closes without an answer.
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					c.Close()
					return
				}
			}
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		if d := time.Duration(s.delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		if r.Method == http.MethodGet {
			s.mu.Lock()
			s.gets[r.URL.Path]++
			s.mu.Unlock()
		}
		h.ServeHTTP(w, r)
	}))
	return s
}

// Config returns a store configuration for this server.
func (s *Server) Config() *store.Config {
	return &store.Config{Endpoint: s.URL, AccessKeyID: AccessKeyID, SecretAccessKey: SecretAccessKey, RetryMaxAttempts: 1}
}

// Store creates bucket (if needed) and returns the store under prefix in it.
func (s *Server) Store(t testing.TB, bucket, prefix string) *store.Store {
	t.Helper()
	st, err := store.New(bucket, prefix, s.Config())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CreateBucket(context.Background()); err != nil {
		t.Fatal(err)
	}
	return st
}

// SetDown makes every request fail (the connection is closed unanswered) until SetDown(false).
func (s *Server) SetDown(down bool) { s.down.Store(down) }

// SetDelay delays every request by d.
func (s *Server) SetDelay(d time.Duration) { s.delay.Store(int64(d)) }

// Gets returns the number of GET requests for objects whose key contains substr.
func (s *Server) Gets(substr string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for p, c := range s.gets {
		if strings.Contains(p, substr) {
			n += c
		}
	}
	return n
}

// GetsPerKey returns the GET requests per object path (/BUCKET/KEY) whose key contains substr.
func (s *Server) GetsPerKey(substr string) map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]int)
	for p, c := range s.gets {
		if strings.Contains(p, substr) {
			m[p] = c
		}
	}
	return m
}

// Put replaces an object's content behind the client's back (to corrupt a chunk, say).
func (s *Server) Put(t testing.TB, bucket, key string, data []byte) {
	t.Helper()
	if _, err := s.Backend.PutObject(bucket, key, map[string]string{}, strings.NewReader(string(data)), int64(len(data)), nil); err != nil {
		t.Fatal(err)
	}
}

// Package store keeps KIWI KIS builds in S3-compatible object storage (Ceph RGW, MinIO,
// SeaweedFS, Garage, AWS S3) and serves them from there, so that any number of stateless
// replicas can boot machines from the same versioned images.
//
// A push ([Store.Push]) verifies a build against its .md5 and stores its root image, kernel and
// initrd as fixed-size chunks named by their SHA-256 (a chunk that two versions share is stored
// once), then a [Manifest] that lists the chunks, and last a [Tag] that names the manifest an
// image name boots. Chunks and manifests never change; only tags move ([Store.Promote]), so a
// push interrupted halfway leaves no tag naming it, and [Store.GC] removes the chunks no
// manifest needs.
//
// A replica reads a manifest's blobs through a [Cache]: [Cache.Open] returns a read-only
// backend.Device (for nbd and aoe exports, and for kernel and initrd over TFTP and HTTP) whose
// chunks come from a bounded memory cache, an optional bounded disk cache, or the store; each
// chunk is checked against its hash, concurrent misses of one chunk are fetched once, and
// sequential reads fetch ahead. When the store cannot be reached or hangs, cached chunks are
// still served and a miss fails that one read with an I/O error after a bounded wait; after
// several failed fetches in a row a circuit breaker makes misses fail at once (ErrUnavailable)
// for a cool-down, then lets one fetch try the store again.
//
// A [Watcher] polls the tags so that a replica sees a promotion without a restart, and [Images]
// keeps each tag's current [Version] open (a connection keeps the version it attached to).
// [Rendezvous] picks each machine's replica by rendezvous (highest random weight) hashing of its
// MAC address, so every replica computes the same placement with no coordination; [Health]
// probes the replicas (an NBD handshake, [NBDProbe]) with hysteresis so that placement is over
// the healthy ones.
//
// The S3 protocol is spoken by the AWS SDK for Go v2 with path-style addressing and a custom
// endpoint; see [Config] and [ConfigFromEnv].
package store

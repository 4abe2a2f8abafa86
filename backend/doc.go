// Package backend is the block storage that netroot's NBD server and AoE target export: a disk
// image read with pread, through a memory mapping, as a copy-on-write overlay over a shared base
// image, or held in memory.
//
// The servers depend only on the small interfaces declared here. A read-only device is an
// io.ReaderAt with a Size; io.WriterAt makes it writable; Syncer, Trimmer, Zeroer and Extenter
// are optional abilities found by type assertion, and they decide which protocol features a
// server advertises (NBD's FLUSH, TRIM, WRITE_ZEROES and BLOCK_STATUS; AoE's FLUSH CACHE).
//
// The package holds no protocol code.
package backend

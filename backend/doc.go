// Package backend is the block storage that netroot's NBD server and AoE target export: a disk
// image read with pread, through a memory mapping, as a copy-on-write overlay over a shared base
// image, or held in memory.
//
// The servers depend only on the small interfaces declared here. A read-only device is an
// io.ReaderAt with a Size; io.WriterAt makes it writable; Syncer, Trimmer, Zeroer and Extenter
// are optional abilities found by type assertion, and they decide which protocol features a
// server advertises (NBD's FLUSH, TRIM, WRITE_ZEROES and BLOCK_STATUS; AoE's FLUSH CACHE).
//
// The devices:
//   - File (OpenFile): pread and pwrite on a regular file or block device, optionally with
//     O_DIRECT or O_SYNC and restricted to an offset and length window, like vblade's -d, -s,
//     -o and -l. Trim punches holes, ZeroAt uses fallocate ZERO_RANGE, Extents uses SEEK_DATA
//     and SEEK_HOLE.
//   - Mmap (OpenMmap): the file mapped MAP_SHARED; faults on the mapping come back as errors
//     wrapping ErrFault. Mmap.Slice hands out mapped bytes for zero-copy sends.
//   - CopyOnWrite (NewCopyOnWrite): a read-only base plus a private overlay in a sparse file or
//     in memory, like nbd-server's copyonwrite.
//   - Memory (NewMemory): for tests and demos.
//
// Every device is safe for concurrent use. Writes, trims and zeroing outside a device fail
// whole with a *RangeError naming the offset, length and size; reads follow io.ReaderAt (a read
// past the end returns what there is and io.EOF). Read-only devices refuse changes with
// ErrReadOnly.
//
// File and Mmap use Linux system calls and exist only on Linux; the rest is portable.
//
// The package holds no protocol code.
package backend

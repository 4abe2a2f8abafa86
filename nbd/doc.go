// Package nbd implements the Network Block Device protocol as described by the protocol
// document of the NetworkBlockDevice project (doc/proto.md in
// https://github.com/NetworkBlockDevice/nbd): a fixed-newstyle server that exports block devices
// from package backend, and a client. Package nbdconf reads the reference nbd-server's
// configuration file.
// Every protocol constant (proto.go) is taken from that document.
//
// # Server
//
// The server speaks fixed newstyle negotiation only (no oldstyle) with NO_ZEROES, the options
// EXPORT_NAME, ABORT, LIST, INFO, GO, STARTTLS, STRUCTURED_REPLY, LIST_META_CONTEXT and
// SET_META_CONTEXT (with the base:allocation context); other options get NBD_REP_ERR_UNSUP and
// the negotiation goes on. It serves the commands READ, WRITE, DISC, FLUSH, TRIM, CACHE,
// WRITE_ZEROES (with NO_HOLE and FAST_ZERO) and BLOCK_STATUS (with REQ_ONE), with the FUA and
// DF flags, and answers with the document's error values only: NBD_EPERM on read-only exports,
// NBD_ENOSPC for writes past the end, NBD_EINVAL for other requests outside the export and for
// unknown commands or flags. Requests carry up to 32 MiB of data.
//
// An Export advertises only what its device can do: an io.WriterAt makes it writable (when the
// Export allows it), and backend.Syncer, backend.Trimmer, backend.Zeroer and backend.Extenter
// switch on real FLUSH/FUA, TRIM, fast WRITE_ZEROES and precise block status. Exports are
// read-only unless Writable is set. Copy-on-write exports give every connection, or every client
// address, a private overlay over a shared base image (backend.CopyOnWrite, in memory by default).
//
// Requests on one connection are served concurrently and replies are written whole, in the
// order they complete; small replies that complete together, or whose requests arrived
// together, share one system call. Reads from a device that can lend its memory (backend.Mmap's
// Slice) go from the mapping to the socket with writev, without an intermediate copy. On Linux,
// with a device that can lend its file (backend.File's FileRange, without Direct) and a
// connection without TLS, reads of 64 KiB or more go from the page cache to the socket with
// sendfile(2), and the payloads of writes of 64 KiB or more from the socket into the file with
// splice(2): the data does not pass through the server's memory. A file that shrinks under such
// a read ends the connection, since the reply's length is already on the wire. On every path a
// write's payload is received in full before any of it is written, so a write cut off by a
// disconnect leaves the device unchanged.
//
// TLS follows the document's three modes (TLSMode): off, optional (SELECTIVETLS, with exports
// that require it) and required (FORCEDTLS); client certificates are verified when the
// tls.Config asks for it. Exports can be limited to client prefixes and to a number of
// connections; handshake and idle timeouts bound what a stuck client holds.
//
// No client can take what the others need: the server has a cap on connections
// (MaxConnections) and on those negotiating from one address (MaxHandshakesPerSource), a
// memory budget shared by all connections for request payloads and replies (MaxBufferBytes,
// besides the per-connection DefaultMaxInflightBytes), and a write timeout that disconnects a
// client that stops taking its replies (WriteTimeout); all have defaults. Refused clients are
// counted by reason in Stats and reported to OnRefuse, the end of each session to OnDetach. A
// Server looks like
// net/http's: configure its exported fields, then call Serve, ListenAndServe or ServeConn, and
// stop it with Shutdown (graceful: requests in flight finish, devices are flushed) or Close.
//
// For a binary upgrade without dropping clients, Handoff takes the connections out of a Server
// between two requests, with their negotiated state (ConnState, which marshals to bytes), and
// Resume goes on serving each in another Server, typically in the new process that received
// the sockets' descriptors. TLS connections and copy-on-write exports stay with the old server.
//
// # Client
//
// The Client dials a server, optionally upgrades to TLS, lists exports, asks for details and
// enters transmission with Go; it then offers ReadAt, WriteAt, Flush, Trim, Zero, Cache and
// BlockStatus, all safe for concurrent use and pipelined over one connection.
package nbd

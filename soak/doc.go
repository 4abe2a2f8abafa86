// Package soak holds the bounded chaos test of issue #17 and nothing else: TestSoak runs the
// TFTP, NBD and AoE servers in a child process and, for a fixed time, lets legitimate clients
// (curl over TFTP, libnbd's nbdcopy, the aoe package's initiator over a veth pair between two
// network namespaces) fetch and checksum their data while hostile clients replay the defect
// patterns of the issue against the same servers: oversized option lists, abandoned transfers
// with the largest windows, netascii reads of large files, long names, random packets and
// frames, idle floods, NBD clients that never read their replies, idle clients of an export
// with its own idle timeout, cut-off writes and AoE frames from group addresses. It asserts that every legitimate transfer finishes byte-exact within
// a stated time, that the server's resident memory stays under a stated bound, that no
// descriptor or goroutine is left once the hostile clients are gone, and that a SIGKILL of the
// server leaves no copy-on-write overlay behind.
//
// It needs Linux and root (namespaces, AF_PACKET) and the peers curl (Debian curl) and
// nbdcopy (libnbd-bin); it runs for about a minute:
//
//	go test ./soak/
package soak

// Package nbdtest is a conformance suite for NBD servers: Run takes the address of a running
// server and checks, over raw connections, the fixed newstyle handshake and its variants, option
// edge cases, transmission error codes and data integrity, as the NetworkBlockDevice project's
// protocol document (doc/proto.md) specifies them.
//
// The suite carries its own small encoder and decoder of the wire format, built from the
// constants of package nbd, so that it checks a server without relying on netroot's client.
// It works against any server: where real servers legitimately differ (an error code the
// document only recommends, an optional feature), Expect states the behaviour to check instead,
// so a difference is asserted, never skipped.
package nbdtest

// Package tftp implements a Trivial File Transfer Protocol server and client for network boot.
//
// It follows RFC 1350 (the protocol, octet and netascii modes), RFC 2347 (option negotiation),
// RFC 2348 (blksize), RFC 2349 (timeout and tsize) and RFC 7440 (windowsize). Block numbers roll
// over from 65535 to 0, as tftp-hpa, curl and PXE firmware expect, so files larger than 65535
// blocks transfer.
//
// A [Server] answers requests on a net.PacketConn (UDP port 69 for PXE); every transfer runs on
// its own ephemeral port as RFC 1350 says. What a read request gets is decided by a [Handler]:
// [FileServer] serves a directory read-only through os.Root and can never leave it, and a
// [HandlerFunc] can generate content per client (a pxelinux config for one MAC address, say).
// Content is served from an io.ReaderAt with its size, read 64 KiB at a time as the transfer
// goes, so clients reading the same initrd share one file or buffer instead of holding copies. Uploads are refused unless [Server.WriteHandler] is set, for instance to
// [UploadServer].
//
// A window of blocks (RFC 7440) leaves in one system call where Linux offers UDP segmentation
// offload; blksize is capped by the path MTU and windowsize × blksize by [MaxWindowBytes].
//
// No client can take what others need: a request is parsed with at most [MaxOptions] options,
// transfers are capped server-wide and per client address ([Server.MaxTransfers],
// [Server.MaxTransfersPerClient]), windows, receive buffers and read-ahead share a memory
// budget ([Server.MaxBufferBytes]) that shrinks large windows rather than refusing anyone, a
// silent client is given up after [Server.MaxIdle] whatever timeout it negotiated, netascii is
// encoded as the transfer goes, and ERROR packets never echo more than a short piece of a name.
// [Stats] counts what was refused and why. [Server.PortRange] confines transfer ports for
// firewalls, and [MapRules] applies tftpd-hpa map files.
//
// [Client] gets and puts files with any option combination, for tests, provisioning tools and
// conformance checks; package tftptest has a loopback test server and a lossy relay. The wire format is available as plain values ([ParsePacket],
// [RequestPacket], [DataPacket], [AckPacket], [ErrorPacket], [OAckPacket]).
package tftp

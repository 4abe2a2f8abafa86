// Package handoff passes a running server's sockets, and the state that goes with them, to the
// process that replaces it, so that a binary upgrade drops no client.
//
// Two transports carry the same thing, a list of named descriptors with opaque state:
//
//   - An in-place upgrade (SIGUSR2, as nginx does it): the old process starts the new binary
//     ([Upgrade.Start]) with one end of a unix SOCK_SEQPACKET socketpair inherited as a file
//     descriptor named by the environment variable [EnvFD]. Messages on it carry descriptors
//     with SCM_RIGHTS. The old process sends the listening sockets first; the new one starts its
//     servers on them and reports ready ([Inherited.Ready]); only then does the old one stop
//     accepting, hand over its established connections ([Successor.Send]) and finish
//     ([Successor.Finish]). If the new process fails to start, exits, or is not ready in time,
//     the old one kills it and keeps serving: no connection is ever served by two processes.
//   - A restart under systemd: the old process stores its descriptors in the service manager's
//     file descriptor store (sd_notify FDSTORE=1, FDNAME=) with the state in a memfd, and the
//     next process finds them among LISTEN_FDS ([Inherit] handles both).
//
// The package knows nothing about the protocols: callers decide what a descriptor's state means
// (the NBD server stores a connection's negotiated state, for instance).
package handoff

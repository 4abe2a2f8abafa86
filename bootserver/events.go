package bootserver

import (
	"fmt"
	"time"
)

// EventKind says what an Event reports.
type EventKind int

// The events a Server reports through OnEvent.
const (
	// Builds.
	BuildReady    EventKind = iota + 1 // a build was opened, staged and exported
	BuildCurrent                       // a build became what new boots of its image get
	BuildRejected                      // a build failed to open (Err); what ran before keeps running
	BuildRetired                       // an old build's export, files and image were removed
	ConfigWritten                      // a boot configuration file was written (File)
	Ready                              // the group serves: every server listens, the first builds are published

	// Clients.
	TFTPTransfer   // a TFTP read finished (File, Bytes, Err; Err wraps tftp.ErrFileNotFound for a miss)
	NBDAttach      // an NBD client entered transmission on Build's export
	NBDDetach      // an NBD client's connection to Build's export ended
	AoEDiscover    // an AoE initiator (Client, a MAC address) found Build's device
	ServiceStopped // a service of the group stopped (File names it; Err why)
	HTTPRequest    // an HTTP request for a boot file finished (Client, File, Bytes, Err)
)

var eventNames = [...]string{
	BuildReady: "build-ready", BuildCurrent: "build-current", BuildRejected: "build-rejected",
	BuildRetired: "build-retired", ConfigWritten: "config-written", Ready: "ready", TFTPTransfer: "tftp-transfer",
	NBDAttach: "nbd-attach", NBDDetach: "nbd-detach", AoEDiscover: "aoe-discover",
	ServiceStopped: "service-stopped", HTTPRequest: "http-request",
}

func (k EventKind) String() string {
	if int(k) > 0 && int(k) < len(eventNames) {
		return eventNames[k]
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one thing that happened in a Server, for status pages and logs. Fields that do not
// apply to the Kind are zero. Services report their own events with Server.Emit.
type Event struct {
	Time   time.Time
	Kind   EventKind
	Build  BuildID
	Client string // IP address (TFTP, NBD) or MAC address (AoE)
	File   string // TFTP file name or configuration path, relative to the TFTP root
	Bytes  int64
	Err    error
}

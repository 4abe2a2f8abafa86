package aoe

import (
	"net"
	"slices"

	"github.com/mdlayher/packet"
)

// The transport seam.
//
// The Target and its workers see frames only through frameIO: receive a batch, send a batch.
// What makes that cheap on Linux (recvmmsg and sendmmsg, a Target's workers waiting in a
// blocking receive outside the runtime's poller, a send-only raw socket that takes a virtio
// header so the kernel's copies are aligned, no queueing discipline) lives behind it in
// transport_linux.go and listen_linux.go; any other PacketConn, such as aoetest's in-memory
// network, moves one frame per call.

// frame is one payload in a batch of received or sent frames.
type frame struct {
	buf  []byte // received: the whole buffer; to send: exactly the payload, or its start
	data []byte // to send: the rest of the payload when it is not in buf (reads run together)
	n    int    // received length
	addr [6]byte
}

// frameIO moves frames in batches. Listen's Conn does it with recvmmsg and sendmmsg; any other
// PacketConn moves one frame per call.
type frameIO interface {
	// recv fills frames[:k] for some k >= 1, blocking until at least one frame arrives.
	recv(frames []frame) (int, error)
	// send transmits every frame.
	send(frames []frame) error
}

func newFrameIO(pc net.PacketConn) frameIO {
	if b, ok := pc.(interface{ batchIO() frameIO }); ok {
		if fio := b.batchIO(); fio != nil {
			return fio
		}
	}
	return &singleIO{pc: pc}
}

// newServeIO is newFrameIO for a Target's workers: on Listen's Conn, they wait for frames
// in blocking system calls outside the runtime's poller (see blockIO).
func newServeIO(pc net.PacketConn) frameIO {
	if b, ok := pc.(interface{ serveIO() frameIO }); ok {
		if fio := b.serveIO(); fio != nil {
			return fio
		}
	}
	return newFrameIO(pc)
}

// singleIO is frameIO over plain ReadFrom and WriteTo.
type singleIO struct {
	pc net.PacketConn
}

func (s *singleIO) recv(frames []frame) (int, error) {
	for {
		n, addr, err := s.pc.ReadFrom(frames[0].buf)
		if err != nil {
			return 0, err
		}
		a, ok := addr.(*packet.Addr)
		if !ok || len(a.HardwareAddr) != 6 {
			continue
		}
		frames[0].n = n
		copy(frames[0].addr[:], a.HardwareAddr)
		return 1, nil
	}
}

func (s *singleIO) send(frames []frame) error {
	var first error
	for i := range frames {
		f := &frames[i]
		p := f.buf
		if f.data != nil {
			p = append(slices.Clip(f.buf), f.data...)
		}
		if _, err := s.pc.WriteTo(p, &packet.Addr{HardwareAddr: f.addr[:]}); err != nil && first == nil {
			first = err
		}
	}
	return first
}

package tftp

import (
	"encoding/binary"
	"syscall"
	"unsafe"
)

const (
	// udpSegment is UDP_SEGMENT from linux/udp.h: the control message that asks the kernel to
	// cut one send into datagrams of the given size (UDP generic segmentation offload, 4.18+).
	udpSegment = 103
	// gsoMaxSegments and gsoMaxBytes stay within the kernel's limits for one segmented send.
	gsoMaxSegments = 64
	gsoMaxBytes    = 65000
)

// sendSegments sends b as packets of seg bytes (the last may be shorter), as few system calls
// as the kernel allows: a window of DATA blocks leaves in one sendmsg with UDP GSO. Where GSO
// is unavailable it falls back to one send per packet, for good on this socket.
func (l *link) sendSegments(b []byte, seg int) error {
	maxSeg := min(gsoMaxSegments, gsoMaxBytes/seg)
	for len(b) > 0 {
		if l.noGSO || maxSeg < 2 || len(b) <= seg {
			return l.sendEach(b, seg)
		}
		chunk := min(len(b), maxSeg*seg)
		if l.oob == nil {
			l.oob = make([]byte, syscall.CmsgSpace(2))
			h := (*syscall.Cmsghdr)(unsafe.Pointer(&l.oob[0]))
			h.Level = syscall.IPPROTO_UDP
			h.Type = udpSegment
			h.SetLen(syscall.CmsgLen(2))
		}
		binary.NativeEndian.PutUint16(l.oob[syscall.CmsgLen(0):], uint16(seg))
		var err error
		if l.s != nil {
			err = l.s.sendmsg(b[:chunk], l.oob)
		} else if l.connected {
			_, _, err = l.c.WriteMsgUDP(b[:chunk], l.oob, nil)
		} else {
			_, _, err = l.c.WriteMsgUDPAddrPort(b[:chunk], l.oob, l.peer)
		}
		if err != nil {
			// Old kernel, no offload on the route, or a segment beyond the MTU: send the
			// packets one by one, which reports any error that remains.
			l.noGSO = true
			continue
		}
		b = b[chunk:]
	}
	return nil
}

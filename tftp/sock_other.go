//go:build !linux

package tftp

import (
	"errors"
	"net/netip"
	"time"
)

// sock is Linux's blocking transfer socket; elsewhere transfers use package net.
type sock struct{ crowded func() bool }

func openSock(netip.Addr, netip.AddrPort, uint16) (*sock, error) {
	return nil, errors.New("tftp: no raw transfer sockets on this system")
}

func (*sock) send([]byte) error                   { return errors.ErrUnsupported }
func (*sock) recv([]byte, time.Time) (int, error) { return 0, errors.ErrUnsupported }
func (*sock) lockThread()                         {}
func (*sock) shutdown()                           {}
func (*sock) sendFinal([]byte)                    {}
func (*sock) close()                              {}
func (*sock) setBuffers(int)                      {}
func (*sock) pathMTU() int                        { return 0 }

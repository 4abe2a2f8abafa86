// Package tftptest provides utilities for TFTP testing, as net/http/httptest does for HTTP: a
// server on a loopback port and a relay that loses and duplicates packets.
package tftptest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/netroot/netroot/tftp"
)

// Server is a tftp.Server listening on a loopback port.
type Server struct {
	// Addr is the server's address, "127.0.0.1:port".
	Addr string
	// Server is the running server; set its fields before the first request only.
	Server *tftp.Server

	done chan error
}

// NewServer starts a server with handler h on a loopback port. The caller should Close it.
// It panics if no port can be opened, as httptest.NewServer does.
func NewServer(h tftp.Handler) *Server {
	return Start(&tftp.Server{Handler: h})
}

// Start runs srv on a loopback port. The caller should Close it.
func Start(srv *tftp.Server) *Server {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("tftptest: listen on a loopback port: %v", err))
	}
	s := &Server{Addr: pc.LocalAddr().String(), Server: srv, done: make(chan error, 1)}
	go func() { s.done <- srv.Serve(pc) }()
	return s
}

// Close stops the server and its transfers and waits for Serve to return.
func (s *Server) Close() {
	_ = s.Server.Close()
	<-s.done
}

// RelayConfig says how a Relay mistreats packets. Each packet, in either direction, is dropped
// with probability Drop, else sent twice with probability Duplicate. The zero value forwards
// everything once.
type RelayConfig struct {
	// Seed makes the schedule of drops and duplicates reproducible.
	Seed      uint64
	Drop      float64
	Duplicate float64
}

// Relay forwards UDP between TFTP clients and a server, dropping and duplicating packets by a
// seeded schedule. Like a NAT it keeps transfer IDs apart: clients send requests to Addr, and
// each transfer port of the server gets a port of its own on the relay, so a client sees one
// port per transfer, as it would without the relay. It serves one client address at a time.
type Relay struct {
	front, back *net.UDPConn
	server      netip.AddrPort
	cfg         RelayConfig

	mu        sync.Mutex
	wg        sync.WaitGroup
	rng       *rand.Rand
	client    netip.AddrPort
	transfers map[netip.AddrPort]*net.UDPConn // server transfer ID -> the relay's port for it
	closed    bool
	dropped   atomic.Int64
	duplicate atomic.Int64
}

// NewRelay starts a relay on a loopback port in front of the server at server ("ip:port").
func NewRelay(server string, cfg RelayConfig) (*Relay, error) {
	ap, err := netip.ParseAddrPort(server)
	if err != nil {
		return nil, fmt.Errorf("tftptest: server address %q: %w", server, err)
	}
	front, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("tftptest: relay front socket: %w", err)
	}
	back, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		front.Close()
		return nil, fmt.Errorf("tftptest: relay back socket: %w", err)
	}
	r := &Relay{front: front, back: back, server: ap, cfg: cfg,
		rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)), transfers: map[netip.AddrPort]*net.UDPConn{}}
	r.wg.Add(2)
	go r.pump(front, r.server)
	go r.pumpBack()
	return r, nil
}

// Addr is where clients send their requests.
func (r *Relay) Addr() string { return r.front.LocalAddr().String() }

// Dropped counts the packets dropped so far.
func (r *Relay) Dropped() int64 { return r.dropped.Load() }

// Duplicated counts the packets sent twice so far.
func (r *Relay) Duplicated() int64 { return r.duplicate.Load() }

// Close stops the relay and waits for its goroutines.
func (r *Relay) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return errors.New("tftptest: relay already closed")
	}
	r.closed = true
	r.front.Close()
	r.back.Close()
	for _, c := range r.transfers {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
	return nil
}

// copies decides the fate of the next packet: 0 copies (dropped), 1, or 2 (duplicated).
func (r *Relay) copies() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	x := r.rng.Float64()
	switch {
	case x < r.cfg.Drop:
		r.dropped.Add(1)
		return 0
	case x < r.cfg.Drop+r.cfg.Duplicate:
		r.duplicate.Add(1)
		return 2
	}
	return 1
}

// pump forwards what the client sends to in on to the server address to.
func (r *Relay) pump(in *net.UDPConn, to netip.AddrPort) {
	defer r.wg.Done()
	buf := make([]byte, 70000)
	for {
		n, from, err := in.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		r.mu.Lock()
		r.client = from
		r.mu.Unlock()
		for range r.copies() {
			_, _ = r.back.WriteToUDPAddrPort(buf[:n], to)
		}
	}
}

// pumpBack forwards what the server sends to the client, from the relay port of the server's
// transfer ID.
func (r *Relay) pumpBack() {
	defer r.wg.Done()
	buf := make([]byte, 70000)
	for {
		n, from, err := r.back.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		r.mu.Lock()
		out, ok := r.transfers[from]
		if !ok && !r.closed {
			out, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err == nil {
				r.transfers[from] = out
				r.wg.Add(1)
				go r.pump(out, from)
			}
		}
		client := r.client
		r.mu.Unlock()
		if out == nil {
			continue
		}
		for range r.copies() {
			_, _ = out.WriteToUDPAddrPort(buf[:n], client)
		}
	}
}

package main

import (
	"log/slog"
	"net"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
)

// activated holds the sockets systemd passed us (socket activation): stream sockets (NBD) and
// datagram sockets (TFTP), by their FileDescriptorName=. Without systemd both are empty and the
// servers open their own sockets.
type activated struct {
	listeners map[string]net.Listener
	packets   map[string]net.PacketConn
}

func socketActivation(e *env) activated {
	a := activated{listeners: map[string]net.Listener{}, packets: map[string]net.PacketConn{}}
	for _, f := range activation.Files(true) {
		if l, err := net.FileListener(f); err == nil {
			a.listeners[f.Name()] = l
		} else if pc, err := net.FilePacketConn(f); err == nil {
			a.packets[f.Name()] = pc
		} else {
			e.log.Warn("ignoring socket from systemd", slog.String("name", f.Name()), slog.Any("err", err))
		}
		_ = f.Close() // the net values hold their own duplicates
	}
	if len(a.listeners)+len(a.packets) > 0 {
		e.log.Info("using sockets from systemd", slog.Int("stream", len(a.listeners)), slog.Int("datagram", len(a.packets)))
	}
	return a
}

// listener returns the activated stream socket named name (or the only one), if any.
func (a activated) listener(name string) net.Listener {
	if l, ok := a.listeners[name]; ok {
		return l
	}
	if len(a.listeners) == 1 {
		for _, l := range a.listeners {
			return l
		}
	}
	return nil
}

// packetConn returns the activated datagram socket named name (or the only one), if any.
func (a activated) packetConn(name string) net.PacketConn {
	if pc, ok := a.packets[name]; ok {
		return pc
	}
	if len(a.packets) == 1 {
		for _, pc := range a.packets {
			return pc
		}
	}
	return nil
}

// notifyReady tells systemd (Type=notify) that the servers are up; a no-op elsewhere.
func notifyReady(e *env) {
	if ok, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		e.log.Warn("sd_notify", slog.Any("err", err))
	} else if ok {
		e.log.Debug("notified systemd: ready")
	}
}

func notifyStopping() { _, _ = daemon.SdNotify(false, daemon.SdNotifyStopping) }

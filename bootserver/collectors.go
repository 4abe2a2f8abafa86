package bootserver

import (
	"runtime/debug"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/netroot/netroot/aoe"
	"github.com/netroot/netroot/dhcp"
	"github.com/netroot/netroot/nbd"
	"github.com/netroot/netroot/tftp"
)

// The protocol packages keep plain Stats structs (no Prometheus dependency); these collectors
// turn them into metrics named the Prometheus way: netroot_<protocol>_<noun>[_<unit>][_total],
// counters ending in _total, units last, the reason or command of a count as a label.

// metric is one metric of a collector: its description and how to read it from a snapshot.
type metric[S any] struct {
	desc *prometheus.Desc
	typ  prometheus.ValueType
	// value reads the metric; for a labelled metric it calls emit once per label value.
	value func(s *S, emit func(v float64, labels ...string))
}

// statsCollector reports the metrics of one snapshot function.
type statsCollector[S any] struct {
	snapshot func() S
	metrics  []metric[S]
}

func (c *statsCollector[S]) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.metrics {
		ch <- m.desc
	}
}

func (c *statsCollector[S]) Collect(ch chan<- prometheus.Metric) {
	s := c.snapshot()
	for _, m := range c.metrics {
		m.value(&s, func(v float64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(m.desc, m.typ, v, labels...)
		})
	}
}

// one builds a metric without labels.
func one[S any](name, help string, typ prometheus.ValueType, f func(*S) float64) metric[S] {
	return metric[S]{
		desc:  prometheus.NewDesc(name, help, nil, nil),
		typ:   typ,
		value: func(s *S, emit func(float64, ...string)) { emit(f(s)) },
	}
}

// labelled builds a metric with labels; f calls emit once per combination.
func labelled[S any](name, help string, typ prometheus.ValueType, labels []string, f func(*S, func(float64, ...string))) metric[S] {
	return metric[S]{desc: prometheus.NewDesc(name, help, labels, nil), typ: typ, value: f}
}

const (
	counter = prometheus.CounterValue
	gauge   = prometheus.GaugeValue
)

// TFTPCollector exports a tftp.Server's Stats.
func TFTPCollector(stats func() tftp.Stats) prometheus.Collector {
	return &statsCollector[tftp.Stats]{snapshot: stats, metrics: []metric[tftp.Stats]{
		one("netroot_tftp_requests_total", "TFTP read and write requests received.", counter,
			func(s *tftp.Stats) float64 { return float64(s.Requests) }),
		one("netroot_tftp_transfers", "TFTP transfers running now.", gauge,
			func(s *tftp.Stats) float64 { return float64(s.Active) }),
		labelled("netroot_tftp_transfers_total", "TFTP transfers that ended, by result (completed or failed; failed includes refused requests).",
			counter, []string{"result"}, func(s *tftp.Stats, emit func(float64, ...string)) {
				emit(float64(s.Completed), "completed")
				emit(float64(s.Failed), "failed")
			}),
		one("netroot_tftp_sent_bytes_total", "File bytes sent to TFTP clients (DATA payload of read requests).", counter,
			func(s *tftp.Stats) float64 { return float64(s.BytesSent) }),
		one("netroot_tftp_received_bytes_total", "File bytes received from TFTP clients (DATA payload of write requests).", counter,
			func(s *tftp.Stats) float64 { return float64(s.BytesReceived) }),
		one("netroot_tftp_retransmitted_packets_total", "TFTP packets sent again after a timeout or an early acknowledgement.", counter,
			func(s *tftp.Stats) float64 { return float64(s.Retransmits) }),
		labelled("netroot_tftp_refused_requests_total", "TFTP requests refused before a transfer started, by reason: busy (the server's transfer limit), client_limit (the client's own limit), no_port (the transfer port range was used up).",
			counter, []string{"reason"}, func(s *tftp.Stats, emit func(float64, ...string)) {
				emit(float64(s.RefusedBusy), "busy")
				emit(float64(s.RefusedClient), "client_limit")
				emit(float64(s.RefusedPort), "no_port")
			}),
		one("netroot_tftp_malformed_packets_total", "Packets on the TFTP request port that did not parse.", counter,
			func(s *tftp.Stats) float64 { return float64(s.Malformed) }),
		one("netroot_tftp_shrunk_transfers_total", "TFTP transfers given a smaller window or block size than negotiated because the buffer budget was spent.", counter,
			func(s *tftp.Stats) float64 { return float64(s.BudgetShrunk) }),
		one("netroot_tftp_buffered_bytes", "Memory that running TFTP transfers hold for windows, receive buffers and read-ahead.", gauge,
			func(s *tftp.Stats) float64 { return float64(s.BufferedBytes) }),
	}}
}

// refuseLabel is the label value of an NBD refusal reason: lower case, words joined by '_'.
func refuseLabel(r nbd.RefuseReason) string {
	switch r {
	case nbd.RefusedUnknownExport:
		return "unknown_export"
	case nbd.RefusedNotAllowed:
		return "not_allowed"
	case nbd.RefusedTLSRequired:
		return "tls_required"
	case nbd.RefusedExportFull:
		return "export_full"
	case nbd.RefusedServerFull:
		return "server_full"
	case nbd.RefusedHandshakeLimit:
		return "handshake_limit"
	}
	return strings.ReplaceAll(strings.ToLower(r.String()), " ", "_")
}

// commandLabel is the label value of an NBD command: read, write, ... or unknown.
func commandLabel(i int) string {
	if i == nbd.UnknownCommands {
		return "unknown"
	}
	return strings.ToLower(strings.TrimPrefix(nbd.Command(i).String(), "NBD_CMD_"))
}

// NBDCollector exports an nbd.Server's Stats, with requests by command and refusals by reason.
func NBDCollector(stats func() nbd.Stats) prometheus.Collector {
	return &statsCollector[nbd.Stats]{snapshot: stats, metrics: []metric[nbd.Stats]{
		one("netroot_nbd_connections_total", "NBD connections accepted.", counter,
			func(s *nbd.Stats) float64 { return float64(s.Connections) }),
		one("netroot_nbd_connections", "NBD connections open now (negotiating or in transmission).", gauge,
			func(s *nbd.Stats) float64 { return float64(s.ActiveConnections) }),
		one("netroot_nbd_attachments_total", "NBD connections that entered transmission on an export.", counter,
			func(s *nbd.Stats) float64 { return float64(s.Attached) }),
		labelled("netroot_nbd_handoffs_total", "NBD connections moved between processes by a binary upgrade, by direction (received or sent).",
			counter, []string{"direction"}, func(s *nbd.Stats, emit func(float64, ...string)) {
				emit(float64(s.Resumed), "received")
				emit(float64(s.HandedOver), "sent")
			}),
		labelled("netroot_nbd_refused_clients_total", "NBD clients turned away, by reason.",
			counter, []string{"reason"}, func(s *nbd.Stats, emit func(float64, ...string)) {
				for r, n := range s.Refused {
					emit(float64(n), refuseLabel(nbd.RefuseReason(r)))
				}
			}),
		labelled("netroot_nbd_requests_total", "NBD transmission requests, by command.",
			counter, []string{"command"}, func(s *nbd.Stats, emit func(float64, ...string)) {
				for c, n := range s.Requests {
					emit(float64(n), commandLabel(c))
				}
			}),
		one("netroot_nbd_read_bytes_total", "Bytes NBD clients read from exports.", counter,
			func(s *nbd.Stats) float64 { return float64(s.BytesRead) }),
		one("netroot_nbd_written_bytes_total", "Bytes NBD clients wrote to exports.", counter,
			func(s *nbd.Stats) float64 { return float64(s.BytesWritten) }),
		one("netroot_nbd_error_replies_total", "NBD requests answered with an error.", counter,
			func(s *nbd.Stats) float64 { return float64(s.Errors) }),
		one("netroot_nbd_buffered_bytes", "Memory held now for NBD request payloads and replies.", gauge,
			func(s *nbd.Stats) float64 { return float64(s.BufferedBytes) }),
		one("netroot_nbd_buffer_limit_bytes", "The server-wide limit of memory for NBD payloads and replies (0: none).", gauge,
			func(s *nbd.Stats) float64 { return float64(s.BufferLimit) }),
		one("netroot_nbd_buffer_waits_total", "Times an NBD connection waited for buffer memory.", counter,
			func(s *nbd.Stats) float64 { return float64(s.BufferWaits) }),
		one("netroot_nbd_write_timeouts_total", "NBD clients disconnected because they left replies untaken.", counter,
			func(s *nbd.Stats) float64 { return float64(s.WriteTimeouts) }),
	}}
}

// AoECollector exports an aoe.Target's Stats.
func AoECollector(stats func() aoe.Stats) prometheus.Collector {
	return &statsCollector[aoe.Stats]{snapshot: stats, metrics: []metric[aoe.Stats]{
		one("netroot_aoe_received_frames_total", "AoE frames received by the target.", counter,
			func(s *aoe.Stats) float64 { return float64(s.FramesIn) }),
		one("netroot_aoe_sent_frames_total", "AoE frames sent by the target.", counter,
			func(s *aoe.Stats) float64 { return float64(s.FramesOut) }),
		one("netroot_aoe_ignored_frames_total", "AoE frames not answered: responses, other devices, masked hosts, malformed, group sources.", counter,
			func(s *aoe.Stats) float64 { return float64(s.Ignored) }),
		one("netroot_aoe_group_source_frames_total", "AoE frames dropped because their Ethernet source is a broadcast or multicast address.", counter,
			func(s *aoe.Stats) float64 { return float64(s.GroupSource) }),
		one("netroot_aoe_error_responses_total", "AoE responses with an error flag or ATA error status.", counter,
			func(s *aoe.Stats) float64 { return float64(s.ErrorsOut) }),
		one("netroot_aoe_read_bytes_total", "Bytes AoE initiators read from the target's devices.", counter,
			func(s *aoe.Stats) float64 { return float64(s.SectorsRead) * aoe.SectorSize }),
		one("netroot_aoe_written_bytes_total", "Bytes AoE initiators wrote to the target's devices.", counter,
			func(s *aoe.Stats) float64 { return float64(s.SectorsWritten) * aoe.SectorSize }),
	}}
}

// HTTPCollector exports an HTTPServer's Stats.
func HTTPCollector(stats func() HTTPStats) prometheus.Collector {
	return &statsCollector[HTTPStats]{snapshot: stats, metrics: []metric[HTTPStats]{
		labelled("netroot_http_requests_total", "HTTP requests for boot files, by result: ok, not_found (404) or error (another error status).",
			counter, []string{"result"}, func(s *HTTPStats, emit func(float64, ...string)) {
				emit(max(0, float64(s.Requests)-float64(s.NotFound)-float64(s.Failed)), "ok")
				emit(float64(s.NotFound), "not_found")
				emit(float64(s.Failed), "error")
			}),
		one("netroot_http_sent_bytes_total", "Boot file bytes sent over HTTP.", counter,
			func(s *HTTPStats) float64 { return float64(s.BytesSent) }),
	}}
}

// DHCPCollector exports a dhcp.Server's Stats.
func DHCPCollector(stats func() dhcp.Stats) prometheus.Collector {
	return &statsCollector[dhcp.Stats]{snapshot: stats, metrics: []metric[dhcp.Stats]{
		one("netroot_dhcp_received_packets_total", "DHCP packets received.", counter,
			func(s *dhcp.Stats) float64 { return float64(s.Received) }),
		one("netroot_dhcp_malformed_packets_total", "Packets on the DHCP ports that are not DHCP requests.", counter,
			func(s *dhcp.Stats) float64 { return float64(s.Malformed) }),
		one("netroot_dhcp_ignored_requests_total", "DHCP requests not answered: not a network-boot client, another server's, or no boot loader for it.", counter,
			func(s *dhcp.Stats) float64 { return float64(s.Ignored) }),
		labelled("netroot_dhcp_replies_total", "DHCP replies sent, by type: offer, ack or nak.",
			counter, []string{"type"}, func(s *dhcp.Stats, emit func(float64, ...string)) {
				emit(float64(s.Offers), "offer")
				emit(float64(s.Acks), "ack")
				emit(float64(s.Naks), "nak")
			}),
		one("netroot_dhcp_leases", "Addresses leased now (lab DHCP server mode).", gauge,
			func(s *dhcp.Stats) float64 { return float64(s.ActiveLeases) }),
	}}
}

// BuildInfoCollector reports netroot_build_info{version,revision,goversion} = 1 for the running
// binary, from debug.ReadBuildInfo.
func BuildInfoCollector() prometheus.Collector {
	version, revision, goversion := BinaryVersion()
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "netroot_build_info",
		Help:        "The running netroot binary: module version, VCS revision and Go version as labels; the value is 1.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": goversion},
	}, func() float64 { return 1 })
}

// BinaryVersion returns the main module's version ("(devel)" for a source build), the VCS
// revision the binary was built from (with "-dirty" when it had local changes; "unknown" without
// VCS information) and the Go version.
func BinaryVersion() (version, revision, goversion string) {
	version, revision, goversion = "unknown", "unknown", "unknown"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return
	}
	goversion = bi.GoVersion
	if bi.Main.Version != "" {
		version = bi.Main.Version
	}
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty && revision != "unknown" {
		revision += "-dirty"
	}
	return
}

package tftp

import (
	"fmt"
	"strconv"
	"strings"
)

// PortRange is a range of UDP ports, First to Last inclusive, for the sockets of transfers
// (tftpd-hpa's --port-range). The zero value means any ephemeral port. A range allows at most
// Last-First+1 transfers at once; a request beyond that is answered "server busy".
type PortRange struct {
	First, Last uint16
}

// ParsePortRange parses "first:last" as tftpd-hpa's -R option does ("first-last" is accepted
// too), for example "50000:50100".
func ParsePortRange(s string) (PortRange, error) {
	lo, hi, ok := strings.Cut(s, ":")
	if !ok {
		lo, hi, ok = strings.Cut(s, "-")
	}
	if !ok {
		return PortRange{}, fmt.Errorf("tftp: port range %q: want first:last", s)
	}
	first, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	last, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
	if err1 != nil || err2 != nil {
		return PortRange{}, fmt.Errorf("tftp: port range %q: want two port numbers 1 to 65535", s)
	}
	r := PortRange{First: uint16(first), Last: uint16(last)}
	return r, r.check()
}

// String returns "first:last", or "" for the zero value.
func (r PortRange) String() string {
	if r == (PortRange{}) {
		return ""
	}
	return fmt.Sprintf("%d:%d", r.First, r.Last)
}

// check reports an unusable range.
func (r PortRange) check() error {
	if r == (PortRange{}) {
		return nil
	}
	if r.First == 0 || r.Last < r.First {
		return fmt.Errorf("tftp: port range %d:%d: want 1 <= first <= last", r.First, r.Last)
	}
	return nil
}

// span returns the first port and the number of ports; (0, 1) for the zero value, which
// stands for one ephemeral port.
func (r PortRange) span() (int, int) {
	if r == (PortRange{}) {
		return 0, 1
	}
	return int(r.First), int(r.Last) - int(r.First) + 1
}

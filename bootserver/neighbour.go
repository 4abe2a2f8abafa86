package bootserver

import (
	"bufio"
	"net"
	"net/netip"
	"os"
	"strings"
)

// neighbourMAC returns the MAC address the kernel's ARP table holds for the IPv4 address ip
// (Linux's /proc/net/arp), or nil when there is none (or no such table: other systems, IPv6).
// The status page uses it to put a machine's TFTP, HTTP and NBD traffic, which carry IP
// addresses, on one timeline with its DHCP and AoE traffic, which carry MAC addresses.
func neighbourMAC(ip netip.Addr) net.HardwareAddr {
	if !ip.Is4() || ip.IsLoopback() {
		return nil
	}
	f, err := os.Open("/proc/net/arp")
	if err != nil {
		return nil
	}
	defer f.Close()
	return arpLookup(bufio.NewScanner(f), ip)
}

// arpLookup finds ip in the text of /proc/net/arp: a header line, then
// "IP-address HW-type Flags HW-address Mask Device" per entry; Flags 0x0 is an incomplete entry.
func arpLookup(sc *bufio.Scanner, ip netip.Addr) net.HardwareAddr {
	want := ip.String()
	sc.Scan() // header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[0] != want || f[2] == "0x0" {
			continue
		}
		hw, err := net.ParseMAC(f[3])
		if err != nil || hw.String() == "00:00:00:00:00:00" {
			continue
		}
		return hw
	}
	return nil
}

// Package dhcp tells network-booting machines what to load: a proxyDHCP server that answers
// PXE and UEFI HTTP boot clients beside the site's own DHCP server, and, for isolated lab
// networks, a full DHCP server that also hands out addresses.
//
// The proxyDHCP follows the Preboot Execution Environment (PXE) Specification 2.1: it answers
// only DHCPDISCOVER messages whose vendor class (option 60) begins with "PXEClient" or
// "HTTPClient", with an offer that carries boot information and no address (yiaddr 0), and it
// answers the DHCPREQUEST a client sends to UDP port 4011 with a DHCPACK. The boot file follows
// the client system architecture (option 93, RFC 4578, and IANA's Processor Architecture Types
// registry); iPXE clients (user class "iPXE", option 77, RFC 3004) get an iPXE script over HTTP.
// The DHCPv4 wire format is github.com/insomniacslk/dhcp's; the message exchange is RFC 2131's.
//
// [Server] is shaped like net/http's: its exported fields are its configuration,
// [Server.Serve] answers a UDP socket the caller opened, [Server.ListenAndServe] opens the
// sockets (port 67, and 4011 for proxyDHCP) on one interface, and [Server.Shutdown] and
// [Server.Close] stop it.
package dhcp

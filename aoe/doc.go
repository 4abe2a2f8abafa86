// Package aoe implements ATA over Ethernet as specified by Coraid's "AoE Protocol Specification",
// revision 11 (AoEr11): the wire format as plain values, a Target that exports block devices
// (the role of vblade), an initiator Client that discovers targets and reads and writes their
// sectors, and Listen, an AF_PACKET transport bound to EtherType 0x88A2.
//
// AoE messages travel in raw Ethernet frames. The transport is a net.PacketConn whose addresses
// are *packet.Addr hardware addresses and whose payloads start at the AoE header (the Ethernet
// header is the transport's business): Listen opens one on a Linux interface, and
// aoetest.Network connects any number of in-memory ones for tests.
//
// # Where the Target departs from vblade
//
//   - It answers a Query Config request that carries an AoE version it does not speak with the
//     Unsupported Version error (vblade ignores the version field).
//   - ATA commands must name the device exactly; a frame addressed to the broadcast shelf or slot
//     only runs Query Config, MAC Mask List and Reserve/Release (vblade would run a broadcast
//     WRITE on every blade that hears it).
//   - It drops frames whose Ethernet source is a group (broadcast or multicast) address and
//     counts them in Stats.GroupSource (vblade answers them, so a READ from ff:ff:ff:ff:ff:ff
//     broadcasts sector data to the whole segment).
//   - It keeps announcing itself every AnnounceInterval (vblade announces once, at start), so a
//     booting Linux aoe driver finds its root within seconds instead of a minute.
//   - FLUSH CACHE and FLUSH CACHE EXT call the backend's Sync (vblade acknowledges FLUSH CACHE
//     without flushing and aborts FLUSH CACHE EXT).
package aoe

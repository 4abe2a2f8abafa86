package aoe

import (
	"encoding/binary"
	"fmt"
	"io"
)

// ATA command codes the Target executes.
const (
	ATAReadSectors     = 0x20
	ATAReadSectorsExt  = 0x24
	ATAWriteSectors    = 0x30
	ATAWriteSectorsExt = 0x34
	ATACheckPowerMode  = 0xE5
	ATAFlushCache      = 0xE7
	ATAFlushCacheExt   = 0xEA
	ATAIdentifyDevice  = 0xEC
)

// ATA status register bits.
const (
	ATAStatusBusy  = 0x80
	ATAStatusReady = 0x40 // DRDY
	ATAStatusFault = 0x20 // DF
	ATAStatusDRQ   = 0x08
	ATAStatusError = 0x01 // ERR
)

// ATA error register bits.
const (
	ATAErrorUncorrectable = 0x40 // UNC
	ATAErrorIDNotFound    = 0x10 // IDNF: address beyond the device
	ATAErrorAbort         = 0x04 // ABRT: command aborted or not supported
)

// maxLBA28 is the largest sector count that LBA28 words 60-61 report.
const maxLBA28 = 0x0FFFFFFF

// Identify is the decoded subset of an IDENTIFY DEVICE response that initiators use.
type Identify struct {
	Serial, Firmware, Model string
	// Sectors is the capacity: LBA48 words 100-103 when the device reports 48-bit support,
	// otherwise LBA28 words 60-61.
	Sectors uint64
	// LBA48 reports 48-bit address support (word 83 bit 10).
	LBA48 bool
	// Flush reports FLUSH CACHE support (word 83 bit 12), FlushExt FLUSH CACHE EXT (bit 13).
	Flush, FlushExt bool
	// Cylinders, Heads and SectorsPerTrack are the current CHS geometry (words 54-56).
	Cylinders, Heads, SectorsPerTrack uint16
}

// ParseIdentify decodes the 512-byte IDENTIFY DEVICE data.
func ParseIdentify(b []byte) (Identify, error) {
	var id Identify
	if len(b) < SectorSize {
		return id, fmt.Errorf("aoe: IDENTIFY data of %d bytes, want %d: %w", len(b), SectorSize, io.ErrUnexpectedEOF)
	}
	w := func(i int) uint16 { return binary.LittleEndian.Uint16(b[2*i:]) }
	id.Serial = ataString(b[20:40])
	id.Firmware = ataString(b[46:54])
	id.Model = ataString(b[54:94])
	id.LBA48 = w(83)&(1<<10) != 0
	id.Flush = w(83)&(1<<12) != 0
	id.FlushExt = w(83)&(1<<13) != 0
	if id.LBA48 {
		id.Sectors = uint64(w(100)) | uint64(w(101))<<16 | uint64(w(102))<<32 | uint64(w(103))<<48
	} else {
		id.Sectors = uint64(w(60)) | uint64(w(61))<<16
	}
	id.Cylinders, id.Heads, id.SectorsPerTrack = w(54), w(55), w(56)
	return id, nil
}

// identifyData builds the IDENTIFY DEVICE response for a device of sectors sectors.
func identifyData(dst []byte, id *Identify) {
	b := dst[:SectorSize]
	clear(b)
	put := func(i int, v uint16) { binary.LittleEndian.PutUint16(b[2*i:], v) }
	// Default and current CHS geometry: 16 heads, 63 sectors per track, cylinders capped at
	// 16383 as ATA prescribes for devices larger than 8.4 GB.
	const heads, spt = 16, 63
	cyl := id.Sectors / (heads * spt)
	cyl = min(cyl, 16383)
	put(1, uint16(cyl))
	put(3, heads)
	put(6, spt)
	putATAString(b[20:40], id.Serial)
	putATAString(b[46:54], id.Firmware)
	putATAString(b[54:94], id.Model)
	put(47, 0x8000)    // READ/WRITE MULTIPLE: no sectors per DRQ block
	put(49, 1<<9)      // LBA supported
	put(50, 0x4000)    // capabilities word valid
	put(53, 1<<0|1<<1) // words 54-58 and 64-70 valid
	put(54, uint16(cyl))
	put(55, heads)
	put(56, spt)
	chs := uint32(cyl) * heads * spt
	put(57, uint16(chs))
	put(58, uint16(chs>>16))
	lba28 := min(id.Sectors, maxLBA28)
	put(60, uint16(lba28))
	put(61, uint16(lba28>>16))
	put(80, 0x00F0) // ATA/ATAPI-4 to -7
	put(82, 1<<14)  // NOP supported
	// Word 83: bit 14 set, bit 13 FLUSH CACHE EXT, bit 12 FLUSH CACHE, bit 10 48-bit address.
	put(83, 1<<14|1<<13|1<<12|1<<10)
	put(84, 0x4000)
	put(85, 1<<14)
	put(86, 1<<13|1<<12|1<<10)
	put(87, 0x4000)
	put(93, 0x400B) // hardware reset result as a single device reports it
	put(100, uint16(id.Sectors))
	put(101, uint16(id.Sectors>>16))
	put(102, uint16(id.Sectors>>32))
	put(103, uint16(id.Sectors>>48))
}

// putATAString stores s in ATA string order (each 16-bit word holds two characters, first in
// the high byte), padded with spaces.
func putATAString(b []byte, s string) {
	for i := range b {
		c := byte(' ')
		if i < len(s) {
			c = s[i]
		}
		b[i^1] = c
	}
}

func ataString(b []byte) string {
	s := make([]byte, len(b))
	for i := range b {
		s[i^1] = b[i]
	}
	end := len(s)
	for end > 0 && (s[end-1] == ' ' || s[end-1] == 0) {
		end--
	}
	return string(s[:end])
}

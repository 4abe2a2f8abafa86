package dhcp

import (
	"strconv"
	"strings"

	"github.com/insomniacslk/dhcp/iana"
)

// Firmware is the kind of boot firmware a client architecture type (option 93) stands for.
type Firmware int

// The firmwares the server boots. FirmwareUnknown clients are not answered.
const (
	FirmwareUnknown Firmware = iota
	// FirmwareBIOS is a PC BIOS PXE ROM (architecture 0); it loads pxelinux.0 over TFTP.
	FirmwareBIOS
	// FirmwareEFIX64 is x86-64 UEFI PXE (7, and 6 and 9, which x86-64 firmware has sent since
	// RFC 4578's table and IANA's registry disagreed on 7 and 9); it loads shim over TFTP.
	FirmwareEFIX64
	// FirmwareEFIARM64 is arm64 UEFI PXE (11); it loads the arm64 shim over TFTP.
	FirmwareEFIARM64
	// FirmwareEFIX64HTTP is x86-64 UEFI HTTP boot (16); it loads shim from an http:// URL.
	FirmwareEFIX64HTTP
	// FirmwareEFIARM64HTTP is arm64 UEFI HTTP boot (19).
	FirmwareEFIARM64HTTP
)

func (f Firmware) String() string {
	switch f {
	case FirmwareUnknown:
		return "unknown"
	case FirmwareBIOS:
		return "bios"
	case FirmwareEFIX64:
		return "efi-x64"
	case FirmwareEFIARM64:
		return "efi-arm64"
	case FirmwareEFIX64HTTP:
		return "efi-x64-http"
	case FirmwareEFIARM64HTTP:
		return "efi-arm64-http"
	}
	return "Firmware(" + strconv.Itoa(int(f)) + ")"
}

// HTTP reports whether the firmware loads its boot file over HTTP.
func (f Firmware) HTTP() bool { return f == FirmwareEFIX64HTTP || f == FirmwareEFIARM64HTTP }

// FirmwareOf returns the firmware of a client system architecture type (RFC 4578 section 2.1,
// IANA Processor Architecture Types).
func FirmwareOf(a iana.Arch) Firmware {
	switch a {
	case iana.INTEL_X86PC:
		return FirmwareBIOS
	case iana.EFI_IA32, iana.EFI_X86_64, iana.EFI_BC:
		return FirmwareEFIX64
	case iana.EFI_ARM64:
		return FirmwareEFIARM64
	case iana.EFI_X86_64_HTTP:
		return FirmwareEFIX64HTTP
	case iana.EFI_ARM64_HTTP:
		return FirmwareEFIARM64HTTP
	}
	return FirmwareUnknown
}

// Vendor class prefixes (option 60) of the clients a proxyDHCP answers.
const (
	ClassPXE  = "PXEClient"
	ClassHTTP = "HTTPClient"
)

// archFromClass reads the architecture from a PXE vendor class such as
// "PXEClient:Arch:00007:UNDI:003016", for clients that leave out option 93.
func archFromClass(class string) (iana.Arch, bool) {
	f := strings.Split(class, ":")
	if len(f) < 3 || f[1] != "Arch" || len(f[2]) != 5 {
		return 0, false
	}
	n, err := strconv.ParseUint(f[2], 10, 16)
	if err != nil {
		return 0, false
	}
	return iana.Arch(n), true
}

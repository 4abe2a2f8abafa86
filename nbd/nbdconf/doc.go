// Package nbdconf reads the configuration file of the reference nbd-server (nbd-server(5),
// normally /etc/nbd-server/config) and the access files ("authfile") it names, so that an
// operator's existing file describes netroot's exports too, and turns it into an nbd.Server
// (ConfigFile.NewServer).
//
// The file is a GLib key file: "[section]" headers, "key = value" lines and whole-line "#"
// comments. The first section is [generic]; every other section is one export, named by its
// section header. What is read but not applied is listed in ConfigFile.Warnings.
//
// Opening export files with OpenConfigExport (backend.File) is Linux-only; elsewhere
// ConfigFile.NewServer needs an opener.
package nbdconf

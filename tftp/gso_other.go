//go:build !linux

package tftp

// sendSegments sends b as packets of seg bytes (the last may be shorter).
func (l *link) sendSegments(b []byte, seg int) error { return l.sendEach(b, seg) }

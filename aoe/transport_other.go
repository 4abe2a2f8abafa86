//go:build !linux

package aoe

func (c *Conn) batchIO() frameIO { return nil }

//go:build !linux

package aoe

func (c *Conn) batchIO() frameIO { return nil }

func (c *Conn) serveIO() frameIO { return nil }

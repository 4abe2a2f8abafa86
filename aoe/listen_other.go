//go:build !linux

package aoe

func (c *Conn) tune() error { return nil }

func (c *Conn) closeTx() {}

func (c *Conn) closeRx() {}

// The reply-coalescing promise, in one place: every wait of the request-reading goroutine
// goes through the methods here.
//
// While the reader has requests in hand and will not wait, a finished reply need not go out at
// once: it waits in the msgWriter's buffer for the replies of the requests that follow, to
// share a system call with them (msgWriter.deferred). The reader promises to end that before
// it waits, for the client or for anything else, so that no reply is held while nothing will
// come to release it.

package nbd

// awaitRequest runs read, which reads the next request header. If the header is not already
// buffered the reader is about to wait for the client: the held replies go out, and the
// writer's buffer goes back to the pool. Once the header is in, the promise is made.
func (c *conn) awaitRequest(read func() error) error {
	if c.br.Buffered() < RequestHeaderSize {
		c.w.idle()
	}
	return c.promiseAfter(read())
}

// awaitPayload runs read, which reads n bytes of the client's: if they are not all buffered
// the held replies go out first. The promise is made again after.
func (c *conn) awaitPayload(n int, read func() error) error {
	if c.br.Buffered() < n {
		c.w.undefer()
	}
	return c.promiseAfter(read())
}

// await runs wait, which may block on the server (a semaphore, a buffer budget): the held
// replies go out first, and the promise is as it was after.
func (c *conn) await(wait func()) {
	kept := c.w.deferred.Load()
	c.w.undefer()
	wait()
	if kept {
		c.w.deferred.Store(true)
	}
}

// promiseAfter makes the promise after a read that worked. After one that failed the reader
// is about to stop, and replies still to come are not held for it.
func (c *conn) promiseAfter(err error) error {
	if err != nil {
		c.w.undefer()
		return err
	}
	c.w.deferred.Store(true)
	return nil
}

// promised reports whether the reader's promise holds: a reply that ends a burst may then
// leave its flush to the reader.
func (c *conn) promised() bool { return c.w.deferred.Load() }

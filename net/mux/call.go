package mux

import (
	"context"
	"fmt"
	"sync"

	"github.com/commitd/commitd/net/wire"
)

// call is one request awaiting its reply. Calls are pooled: a steady
// stream of Calls allocates nothing once buffers have grown.
//
// Fields other than done are written by the caller before the call is in
// the pending table, and by the reader while it holds calls.Mutex and the
// call is in the table; the caller reads them after receiving from done.
type call struct {
	done chan error // cap 1: exactly one send per registration
	// Call: the reply is copied into buf and described by frame.
	buf   []byte
	frame wire.Frame
	// Stream: fn sees every reply frame.
	fn func(wire.Frame) error
}

var callPool = sync.Pool{New: func() any { return &call{done: make(chan error, 1)} }}

// Call sends the request req (a Begin or AdminRequest) with a fresh request
// id and waits for its single reply frame. The reply is copied into buf
// (grown if it is too small) and returned; its Payload aliases that memory,
// so pass f.Payload[:0] as the next call's buf to call without allocating.
//
// The error is a *RemoteError if the peer answered with an Error frame;
// ctx.Err() if ctx ended first (a reply that arrives later is counted in
// Stats.UnknownReplies and dropped — the request may have taken effect);
// the connection's error if it failed first. Call blocks while
// Options.MaxInFlight calls are in flight. No goroutine is started.
func (c *Conn) Call(ctx context.Context, req wire.Message, buf []byte) (wire.Frame, error) {
	cl := callPool.Get().(*call)
	cl.buf = buf[:0]
	err := c.do(ctx, req, cl)
	f := cl.frame
	f.Payload = cl.buf
	*cl = call{done: cl.done}
	callPool.Put(cl)
	if err != nil {
		return wire.Frame{}, err
	}
	return f, nil
}

// Stream sends the request req and calls fn for every reply frame, on the
// reader goroutine, until a frame without wire.FlagMore (or an Error
// frame) ends the reply. The frame's memory is valid only during fn; fn
// must be quick and must not call Call or Stream on c. If fn returns an
// error the call ends with it, and later frames of the reply are counted
// in Stats.UnknownReplies. Errors are otherwise as for Call.
func (c *Conn) Stream(ctx context.Context, req wire.Message, fn func(wire.Frame) error) error {
	cl := callPool.Get().(*call)
	cl.fn = fn
	err := c.do(ctx, req, cl)
	*cl = call{done: cl.done}
	callPool.Put(cl)
	return err
}

// do registers cl under a fresh request id, queues req and waits.
func (c *Conn) do(ctx context.Context, req wire.Message, cl *call) error {
	if err := c.waitSlot(ctx); err != nil {
		return err
	}
	defer func() { <-c.slots }()

	c.calls.Lock()
	if err := c.calls.err; err != nil {
		c.calls.Unlock()
		return err
	}
	c.calls.nextID++
	id := c.calls.nextID
	c.calls.pending[id] = cl
	c.calls.Unlock()

	if err := c.queue(id, req, nil); err != nil {
		if !c.forget(id) {
			<-cl.done // failCalls completed it concurrently
		}
		return err
	}
	select {
	case err := <-cl.done:
		return err
	case <-ctx.Done():
		if c.forget(id) {
			return ctx.Err()
		}
		// The reply, or the connection's failure, won the race.
		return <-cl.done
	}
}

// forget removes call id from the pending table, reporting whether it was
// still there (if not, whoever removed it sends on its done channel).
func (c *Conn) forget(id uint64) bool {
	c.calls.Lock()
	defer c.calls.Unlock()
	if _, ok := c.calls.pending[id]; ok {
		delete(c.calls.pending, id)
		return true
	}
	return false
}

// deliver hands a reply frame (already checked) to its call, on the reader
// goroutine. It runs under calls.Mutex so that a caller giving up (forget)
// never races with the delivery into its memory.
func (c *Conn) deliver(f wire.Frame) {
	c.calls.Lock()
	defer c.calls.Unlock()
	cl := c.calls.pending[f.ReqID]
	if cl == nil {
		c.stats.unknownReplies.Add(1)
		return
	}
	var err error
	final := true
	switch {
	case f.Type == wire.TypeError:
		var e wire.Error
		_ = e.Decode(f) // checked by dispatch
		err = &RemoteError{Code: e.Code, Message: string(e.Message)}
	case cl.fn != nil:
		err = cl.fn(f)
		final = err != nil || f.Flags&wire.FlagMore == 0
	case f.Flags&wire.FlagMore != 0:
		err = fmt.Errorf("mux: %v reply comes in several frames: use Stream", f.Type)
	default:
		cl.buf = append(cl.buf[:0], f.Payload...)
		cl.frame = f
	}
	if final {
		delete(c.calls.pending, f.ReqID)
		cl.done <- err
	}
}

// failCalls fails every pending call with err and refuses new ones.
func (c *Conn) failCalls(err error) {
	c.calls.Lock()
	defer c.calls.Unlock()
	c.calls.err = err
	for id, cl := range c.calls.pending {
		delete(c.calls.pending, id)
		cl.done <- err
	}
}

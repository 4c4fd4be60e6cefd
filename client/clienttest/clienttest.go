package clienttest

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/protocol"
	"github.com/google/uuid"
)

// Coordinator speaks the client's side of the coordinator protocol and
// nothing else: it answers every Begin at once, from the connection's
// reader goroutine, with the outcome Decide picks. It runs no transaction,
// writes no log and refuses admin requests, so what a benchmark against it
// measures is the client's own cost plus loopback.
type Coordinator struct {
	// Addr is the address it listens on (immutable).
	Addr string

	decide  func(uuid.UUID) client.Outcome // immutable; nil: committed
	srv     *mux.Server
	served  chan struct{} // closed when Serve returns
	begins  atomic.Int64
	traced  atomic.Int64 // Begins that carried a trace context
	scratch sync.Pool    // *scratch, one per Begin being answered
}

// scratch is one answer's decode and encode state.
type scratch struct {
	begin   wire.Begin
	outcome wire.Outcome
}

// Start listens on a free loopback port and serves until Close. decide
// picks each transaction's outcome; nil commits every one. An aborted
// outcome is answered as voted no at participant "p1"; a rejected one as
// invalid. decide runs on a connection's reader goroutine and must be
// quick and safe for concurrent use.
func Start(decide func(txn uuid.UUID) client.Outcome) (*Coordinator, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c := &Coordinator{Addr: ln.Addr().String(), decide: decide, served: make(chan struct{})}
	c.scratch.New = func() any { return new(scratch) }
	c.srv = mux.NewServer(mux.ServerOptions{Conn: mux.Options{Handler: mux.HandlerFunc(c.handle)}})
	go func() {
		defer close(c.served)
		_ = c.srv.Serve(ln) // ErrServerClosed after Close
	}()
	return c, nil
}

// Begins reports how many Begins it has answered.
func (c *Coordinator) Begins() int64 { return c.begins.Load() }

// Traced reports how many of them carried a trace context.
func (c *Coordinator) Traced() int64 { return c.traced.Load() }

// Close stops serving, closes every connection (calls in flight end with
// Unknown at the client) and waits for its goroutines.
func (c *Coordinator) Close() error {
	err := c.srv.Close()
	<-c.served
	return err
}

var p1 = []byte("p1")

// handle answers one frame on a connection's reader goroutine.
func (c *Coordinator) handle(conn *mux.Conn, f wire.Frame) error {
	switch f.Type {
	case wire.TypeHello:
		return nil
	case wire.TypeBegin:
	default:
		if f.ReqID != 0 {
			return conn.Reply(f.ReqID, &wire.Error{Code: wire.CodeInvalid, Message: []byte("clienttest: only Begin is served")})
		}
		return nil
	}
	sc := c.scratch.Get().(*scratch)
	defer c.scratch.Put(sc)
	if err := sc.begin.Decode(f); err != nil {
		return err
	}
	if len(sc.begin.Branches) == 0 {
		return errors.New("clienttest: a Begin without branches")
	}
	o := client.Committed
	if c.decide != nil {
		o = c.decide(sc.begin.Txn)
	}
	sc.outcome = wire.Outcome{Txn: sc.begin.Txn, Outcome: o}
	switch o {
	case client.Aborted:
		sc.outcome.Cause, sc.outcome.Participant = protocol.CauseVotedNo, p1
	case client.Rejected:
		sc.outcome.Cause = protocol.CauseInvalid
	}
	c.begins.Add(1)
	if !sc.begin.Trace.IsZero() {
		c.traced.Add(1)
	}
	// Reply encodes the outcome into the connection's queue before it
	// returns, so sc may be reused at once.
	return conn.Reply(f.ReqID, &sc.outcome)
}

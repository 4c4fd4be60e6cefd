package coordinator

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/internal/link"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/net/wire"
)

// frontDoor handles every frame that reaches the coordinator's listener:
// clients' Begins, participants' votes, acks and inquiries, admin queries.
// Well-formed frames that make no sense here get an error reply or are
// dropped and counted; the mux closes the connection on a malformed one.
type frontDoor struct {
	s     *Server
	conns sync.Map // *mux.Conn → *connState
}

// closed forgets a connection that has gone, keeping its write counts.
func (d *frontDoor) closed(c *mux.Conn) {
	d.s.metrics.closedConn(c.Stats())
	d.conns.Delete(c)
	d.s.clients.remove(c)
}

// writeStats sums the write counters of the live connections: the
// clients' (replies) and the participants' (prepares and decisions).
func (d *frontDoor) writeStats() (st mux.Stats) {
	d.conns.Range(func(k, _ any) bool {
		st.Add(k.(*mux.Conn).Stats())
		return true
	})
	for _, p := range d.s.peers {
		st.Add(p.mux.ConnStats())
	}
	return st
}

// connState is the per-connection scratch of the reader goroutine that
// calls HandleFrame for that connection.
type connState struct {
	id       uint64
	client   *clientConn
	begin    wire.Begin
	vote     wire.Vote
	ack      wire.Ack
	inquire  wire.Inquire
	admin    wire.AdminRequest
	msg      engine.Message
	branches [wire.MaxBranches]engine.Branch
	outcome  wire.Outcome
}

// Tags carry the client connection and its request id through the engine
// and back: the high bits name the connection, the low ones the request.
const tagReqBits = 40

func (d *frontDoor) state(c *mux.Conn) *connState {
	if st, ok := d.conns.Load(c); ok {
		return st.(*connState)
	}
	id, cc := d.s.clients.add(c)
	st := &connState{id: id, client: cc}
	d.conns.Store(c, st)
	return st
}

// HandleFrame implements mux.Handler.
func (d *frontDoor) HandleFrame(c *mux.Conn, f wire.Frame) error {
	s := d.s
	st := d.state(c)
	switch f.Type {
	case wire.TypeHello:
		return nil
	case wire.TypeBegin:
		if err := st.begin.Decode(f); err != nil {
			return err // cannot happen after wire.Check; closes the connection
		}
		return d.begin(c, st, f.ReqID)
	case wire.TypeVote:
		if err := st.vote.Decode(f); err != nil {
			return err
		}
		d.toShard(st, engine.MsgVote, st.vote.Txn, st.vote.From, engine.Vote(st.vote.Vote))
	case wire.TypeAck:
		if err := st.ack.Decode(f); err != nil {
			return err
		}
		d.toShard(st, engine.MsgAck, st.ack.Txn, st.ack.From, 0)
	case wire.TypeInquire:
		if err := st.inquire.Decode(f); err != nil {
			return err
		}
		d.toShard(st, engine.MsgInquire, st.inquire.Txn, st.inquire.From, 0)
	case wire.TypeAdminRequest:
		if err := st.admin.Decode(f); err != nil {
			return err
		}
		body, err := s.adminJSON(st.admin.Kind)
		if err != nil {
			return c.Reply(f.ReqID, &wire.Error{Code: wire.CodeInvalid, Message: []byte(err.Error())})
		}
		return link.ReplyJSON(c, f.ReqID, body)
	case wire.TypeRaft:
		return d.raftMessage(c, f)
	default:
		if f.ReqID != 0 {
			return c.Reply(f.ReqID, &wire.Error{Code: wire.CodeInvalid,
				Message: fmt.Appendf(nil, "a coordinator does not serve %v requests", f.Type)})
		}
		s.metrics.ignored.Inc()
	}
	return nil
}

// begin admits a client's transaction: it checks what only the server can
// (that every participant is one it knows) and hands the rest to the shard.
func (d *frontDoor) begin(c *mux.Conn, st *connState, reqID uint64) error {
	s := d.s
	b := &st.begin
	if reqID >= 1<<tagReqBits {
		return fmt.Errorf("request id %d is beyond %d bits", reqID, tagReqBits)
	}
	if s.life.Closing() {
		return c.Reply(reqID, &wire.Error{Code: wire.CodeUnavailable, Message: []byte("coordinator is shutting down")})
	}
	st.msg = engine.Message{Type: engine.MsgBegin, Txn: engine.TxnID(b.Txn), Tag: st.id<<tagReqBits | reqID}
	for i := range b.Branches {
		name, ok := s.names[string(b.Branches[i].Participant)]
		if !ok {
			return d.reject(c, st, reqID, fmt.Sprintf("unknown participant %q", b.Branches[i].Participant))
		}
		st.branches[i] = engine.Branch{Participant: name, Work: b.Branches[i].Work}
	}
	st.msg.Branches = st.branches[:len(b.Branches)]
	p := s.pumpFor(st.msg.Txn)
	if p == nil {
		return s.rep.notLeader(c, reqID)
	}
	s.metrics.begun.Inc()
	st.client.started(reqID)
	p.Submit(&st.msg)
	return nil
}

// reject answers a begin the front door will not hand to a shard. It is
// counted here, once, for both Status and the metrics: no shard sees it.
func (d *frontDoor) reject(c *mux.Conn, st *connState, reqID uint64, why string) error {
	d.s.rejected.Add(1)
	d.s.metrics.outcome(engine.OutcomeRejected)
	st.outcome = wire.Outcome{Txn: st.begin.Txn, Outcome: wire.OutcomeRejected, Cause: wire.CauseInvalid, Detail: []byte(why)}
	return c.Reply(reqID, &st.outcome)
}

// toShard routes a participant's message to the shard that owns the
// transaction. A message from a participant the coordinator does not know
// is dropped and counted: it cannot be part of any of its transactions.
func (d *frontDoor) toShard(st *connState, t engine.MsgType, txn wire.TxnID, from []byte, vote engine.Vote) {
	s := d.s
	name, ok := s.names[string(from)]
	if !ok {
		s.metrics.ignored.Inc()
		return
	}
	st.msg = engine.Message{Type: t, Txn: engine.TxnID(txn), From: name, Vote: vote}
	p := s.pumpFor(st.msg.Txn)
	if p == nil {
		s.metrics.ignored.Inc() // not the leader: the participant asks again
		return
	}
	p.Submit(&st.msg)
}

// clientTable maps the connection part of a tag back to the connection.
type clientTable struct {
	next atomic.Uint64
	mu   sync.RWMutex
	byID map[uint64]*clientConn
	ids  map[*mux.Conn]uint64
}

// startSlots is how many requests per connection have their start time
// kept for the latency histogram. A connection with more in flight
// overwrites older slots; those requests then go unmeasured (or are
// measured short), which skews nothing but the metric.
const startSlots = 4096

// clientConn is a client connection and the arrival times of its
// requests, indexed by request id: written by the connection's reader,
// read by whichever shard answers. Lock-free so that the hot path takes no
// lock for a metric.
type clientConn struct {
	conn   *mux.Conn
	starts [startSlots]atomic.Int64 // UnixNano at arrival; 0 = none
}

func (c *clientConn) started(reqID uint64) {
	c.starts[reqID%startSlots].Store(time.Now().UnixNano())
}

// elapsed returns how long ago request reqID arrived, once.
func (c *clientConn) elapsed(reqID uint64) (time.Duration, bool) {
	t0 := c.starts[reqID%startSlots].Swap(0)
	if t0 == 0 {
		return 0, false
	}
	return time.Duration(time.Now().UnixNano() - t0), true
}

func (t *clientTable) add(c *mux.Conn) (uint64, *clientConn) {
	id := t.next.Add(1)
	cc := &clientConn{conn: c}
	t.mu.Lock()
	if t.byID == nil {
		t.byID = make(map[uint64]*clientConn)
		t.ids = make(map[*mux.Conn]uint64)
	}
	t.byID[id] = cc
	t.ids[c] = id
	t.mu.Unlock()
	return id, cc
}

func (t *clientTable) remove(c *mux.Conn) {
	t.mu.Lock()
	if id, ok := t.ids[c]; ok {
		delete(t.byID, id)
		delete(t.ids, c)
	}
	t.mu.Unlock()
}

func (t *clientTable) lookup(tag uint64) (*clientConn, uint64) {
	t.mu.RLock()
	c := t.byID[tag>>tagReqBits]
	t.mu.RUnlock()
	return c, tag & (1<<tagReqBits - 1)
}

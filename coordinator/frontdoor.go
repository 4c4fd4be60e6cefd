package coordinator

import (
	"fmt"
	"github.com/commitd/commitd/cluster"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/net/link"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/protocol"
)

// frontDoor handles every frame that reaches the coordinator's listener:
// clients' Begins, participants' votes, acks and inquiries, admin queries.
// Well-formed frames that make no sense here get an error reply or are
// dropped and counted; the mux closes the connection on a malformed one.
type frontDoor struct {
	s     *Server
	conns sync.Map // *mux.Conn → *connState
	// participants are the connections participants dialed in, by the
	// name they said Hello as: a removed participant's are closed
	// (participants.go).
	participants sync.Map // *mux.Conn → string
}

// closed forgets a connection that has gone, keeping its write counts.
func (d *frontDoor) closed(c *mux.Conn) {
	d.s.metrics.closedConn(c.Stats())
	d.conns.Delete(c)
	d.participants.Delete(c)
	d.s.clients.remove(c)
}

// writeStats sums the write counters of the live connections: the
// clients' (replies) and the participants' (prepares and decisions).
func (d *frontDoor) writeStats() (st mux.Stats) {
	d.conns.Range(func(k, _ any) bool {
		st.Add(k.(*mux.Conn).Stats())
		return true
	})
	for _, p := range d.s.set().peers {
		st.Add(p.mux.ConnStats())
	}
	return st
}

// connState is the per-connection scratch of the reader goroutine that
// calls HandleFrame for that connection.
type connState struct {
	name     string      // the participant this connection speaks for (its Hello's name)
	id       uint64      // the client's id in tags, once it has begun a transaction
	client   *clientConn // nil until the first Begin: an idle connection costs no start-time table
	begin    wire.Begin
	part     partScratch // votes, acks and inquiries
	admin    wire.AdminRequest
	msg      engine.Message
	branches [protocol.MaxBranches]engine.Branch
	outcome  wire.Outcome
	raft     []byte // a raft message arriving in several frames (replica.go)
}

// Tags carry the client connection and its request id through the engine
// and back: the high bits name the connection, the low ones the request.
const tagReqBits = 40

// state returns c's scratch, made on its first frame. It is kept on the
// connection (mux.Conn.State), where the reader finds it without a lookup
// in a shared map per frame; conns holds it too, for writeStats and closed.
func (d *frontDoor) state(c *mux.Conn) *connState {
	if st, ok := c.State().(*connState); ok {
		return st
	}
	st := &connState{}
	d.conns.Store(c, st)
	c.SetState(st)
	return st
}

// Target implements mux.Decoder: the frames HandleFrame decodes are
// decoded, once, by the mux's check, into the connection's scratch.
func (d *frontDoor) Target(c *mux.Conn, t wire.Type) wire.Message {
	switch t {
	case wire.TypeBegin:
		return &d.state(c).begin
	case wire.TypeVote, wire.TypeAck, wire.TypeInquire:
		return d.state(c).part.target(t)
	case wire.TypeAdminRequest:
		return &d.state(c).admin
	}
	return nil
}

// HandleFrame implements mux.Handler. The mux has decoded a Begin, Vote,
// Ack, Inquire or AdminRequest into the connection's scratch (Target).
func (d *frontDoor) HandleFrame(c *mux.Conn, f wire.Frame) error {
	s := d.s
	st := d.state(c)
	switch f.Type {
	case wire.TypeHello:
		return d.hello(c, st, f)
	case wire.TypeBegin:
		return d.begin(c, st, f.ReqID)
	case wire.TypeVote, wire.TypeAck, wire.TypeInquire:
		return s.fromParticipantDecoded(&st.part, st.name, f.Type)
	case wire.TypeAdminRequest:
		return s.admin(c, f.ReqID, &st.admin)
	case wire.TypeRaft:
		return d.raftMessage(c, st, f)
	default:
		if f.ReqID != 0 {
			return c.Reply(f.ReqID, &wire.Error{Code: wire.CodeInvalid,
				Message: fmt.Appendf(nil, "a coordinator does not serve %v requests", f.Type)})
		}
		s.metrics.ignored.Inc()
	}
	return nil
}

// hello admits a connection by its Hello, before any frame on it is
// handled: clients; participants the coordinator knows, by name (and, with
// TLS, by a certificate for that participant); admin tools (with TLS, the
// identities allowed to read reports); for a replica of a group, the other
// replicas of its Peers (replica.admit). The mux has checked that each later
// frame comes from its sender's role (wire.Sender). A refusal closes the
// connection with an Error frame and is logged.
func (d *frontDoor) hello(c *mux.Conn, st *connState, f wire.Frame) error {
	cfg := &d.s.cfg
	var h wire.Hello
	if err := h.Decode(f); err != nil {
		return err
	}
	switch h.Role {
	case wire.RoleClient:
	case wire.RoleParticipant:
		ps := d.s.set()
		name, ok := ps.names[string(h.Name)]
		if !ok {
			return mux.Refuse("unknown participant %q: not one of this coordinator's participants (--participant, admin participants add)", h.Name)
		}
		if err := link.Identity(c, cfg.participantIdentities(name, ps.peers[name].addr)); err != nil {
			return mux.Refuse("participant %q not accepted: %v", name, err)
		}
		st.name = name
		d.participants.Store(c, name)
		d.s.sawMap(h.MapVersion, "participant "+name)
	case wire.RoleAdmin:
		if err := link.Identity(c, cfg.AdminIdentities); err != nil {
			return mux.Refuse("admin not accepted: %v", err)
		}
	case wire.RoleReplica:
		if err := d.s.rep.admit(c, h.Name); err != nil {
			return err
		}
		d.s.sawMap(h.MapVersion, "replica "+string(h.Name))
	default:
		return mux.Refuse("a coordinator does not take %v connections", h.Role)
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
	if s.cfg.Group != 0 {
		if why := s.refuseGroup(b.Txn); why != "" {
			return d.reject(c, st, reqID, why)
		}
	}
	if st.client == nil {
		st.id, st.client = d.s.clients.add(c)
	}
	// The shard reads no clock: the time of arrival is how it learns the
	// id's age (engine.Shard.checkIDTime). The same reading starts the
	// latency measurement (clientConn.started): one clock read per begin.
	now := time.Now()
	st.msg = engine.Message{Type: engine.MsgBegin, Txn: b.Txn, Tag: st.id<<tagReqBits | reqID,
		UnixMs: now.UnixMilli()}
	set := s.set()
	// Staged only if every participant can prevent: one that cannot
	// could not answer a resolution (docs/protocol.md, "Participants that
	// keep durability elsewhere").
	st.msg.Staged = s.staged
	for i := range b.Branches {
		name, ok := set.names[string(b.Branches[i].Participant)]
		if !ok {
			return d.reject(c, st, reqID, fmt.Sprintf("unknown participant %q", b.Branches[i].Participant))
		}
		st.branches[i] = engine.Branch{Participant: name, Work: b.Branches[i].Work}
		st.msg.Staged = st.msg.Staged && set.peers[name].prevent.Load()
	}
	st.msg.Branches = st.branches[:len(b.Branches)]
	p := s.pumpFor(st.msg.Txn)
	if p == nil {
		return s.rep.notLeader(c, reqID)
	}
	s.metrics.begun.Inc()
	st.client.started(reqID, now)
	if s.tr != nil {
		s.tr.begin(b, st.msg.Tag)
	}
	p.Submit(&st.msg)
	return nil
}

// reject answers a begin the front door will not hand to a shard. It is
// counted here, once, for both Status and the metrics: no shard sees it.
func (d *frontDoor) reject(c *mux.Conn, st *connState, reqID uint64, why string) error {
	d.s.rejected.Add(1)
	d.s.metrics.outcome(protocol.OutcomeRejected)
	st.outcome = wire.Outcome{Txn: st.begin.Txn, Outcome: protocol.OutcomeRejected, Cause: protocol.CauseInvalid, Detail: []byte(why)}
	return c.Reply(reqID, &st.outcome)
}

// partScratch is a reader goroutine's scratch for a participant's
// votes, acks and inquiries (the front door's connections and those a
// replica dialed, replies.go).
type partScratch struct {
	vote    wire.Vote
	ack     wire.Ack
	inquire wire.Inquire
	msg     engine.Message
}

// fromParticipant decodes a vote, ack or inquiry that came on a
// connection speaking for participant name (its Hello, checked to name a
// known participant) and routes it to the shard that owns the
// transaction. A message sent for another participant is refused and
// never reaches a shard.
func (s *Server) fromParticipant(sc *partScratch, name string, f wire.Frame) error {
	if err := sc.target(f.Type).Decode(f); err != nil {
		return err
	}
	return s.fromParticipantDecoded(sc, name, f.Type)
}

// target returns the scratch message a frame of type ft decodes into.
func (sc *partScratch) target(ft wire.Type) wire.Message {
	switch ft {
	case wire.TypeVote:
		return &sc.vote
	case wire.TypeAck:
		return &sc.ack
	case wire.TypeInquire:
		return &sc.inquire
	}
	panic(fmt.Sprintf("coordinator: a participant's scratch has no %v", ft))
}

// fromParticipantDecoded is fromParticipant for a frame of type ft that is
// already decoded into sc (sc.target(ft)).
func (s *Server) fromParticipantDecoded(sc *partScratch, name string, ft wire.Type) error {
	var t engine.MsgType
	var txn protocol.TxnID
	var from []byte
	var vote protocol.Vote
	switch ft {
	case wire.TypeVote:
		t, txn, from, vote = engine.MsgVote, sc.vote.Txn, sc.vote.From, sc.vote.Vote
	case wire.TypeAck:
		t, txn, from = engine.MsgAck, sc.ack.Txn, sc.ack.From
	case wire.TypeInquire:
		t, txn, from = engine.MsgInquire, sc.inquire.Txn, sc.inquire.From
	default:
		panic(fmt.Sprintf("coordinator: fromParticipant given a %v", ft))
	}
	if string(from) != name {
		return mux.Refuse("participant %q sent a %v from %q", name, ft, from)
	}
	if g := s.cfg.Group; g != 0 && cluster.GroupOf(txn) != g {
		// Another group's transaction: this group's shards would presume
		// it aborted, which only its own group may say.
		s.metrics.ignored.Inc()
		s.otherGroup.Add(1)
		return nil
	}
	sc.msg = engine.Message{Type: t, Txn: txn, From: name, Vote: vote}
	p := s.pumpFor(txn)
	if p == nil {
		s.metrics.ignored.Inc() // not the leader: the participant asks again
		s.notLeading.Add(1)
		return nil
	}
	if tr := s.tr; tr != nil && !tr.idle() {
		switch t {
		case engine.MsgVote:
			tr.vote(txn, name, vote)
		case engine.MsgAck:
			tr.ack(txn, name)
		}
	}
	p.Submit(&sc.msg)
	return nil
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

// started notes that request reqID arrived at now.
func (c *clientConn) started(reqID uint64, now time.Time) {
	c.starts[reqID%startSlots].Store(now.UnixNano())
}

// elapsed returns how long before nowNs (UnixNano) request reqID arrived,
// once.
func (c *clientConn) elapsed(reqID uint64, nowNs int64) (time.Duration, bool) {
	t0 := c.starts[reqID%startSlots].Swap(0)
	if t0 == 0 {
		return 0, false
	}
	return time.Duration(nowNs - t0), true
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

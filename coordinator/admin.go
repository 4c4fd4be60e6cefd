package coordinator

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/internal/pump"
	"github.com/commitd/commitd/net/link"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/protocol"
	"github.com/google/uuid"
)

// adminTimeout bounds how long an admin request waits for a shard's pump
// to take its turn (Pump.Do): a round is microseconds to milliseconds, so
// only a stalled coordinator makes it wait this long.
const adminTimeout = 5 * time.Second

// maxInDoubt bounds the transactions one in-doubt report lists (the total
// is always given): the report is one JSON object, read by people.
const maxInDoubt = 1000

// errAdmin is an admin request the coordinator refuses: the reply is an
// Error frame with its code and message, and the connection stays open.
type errAdmin struct {
	code wire.ErrorCode
	msg  string
}

func (e *errAdmin) Error() string { return e.msg }

func invalid(format string, a ...any) error {
	return &errAdmin{code: wire.CodeInvalid, msg: fmt.Sprintf(format, a...)}
}

// admin answers an admin request on the connection's reader goroutine.
// The reports read disk (the outcome index) and wait for the shards'
// pumps: admin tools are few, and their connections carry nothing else.
func (s *Server) admin(c *mux.Conn, reqID uint64, req *wire.AdminRequest) error {
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	var v any
	var err error
	switch req.Kind {
	case wire.AdminStatus:
		v = s.Status()
	case wire.AdminTxn:
		v, err = s.txnStatus(ctx, req.Arg)
	case wire.AdminInDoubt:
		v, err = s.inDoubt(ctx)
	case wire.AdminRetry:
		v, err = s.retry(ctx, req.Arg)
	case wire.AdminParticipantsAdd, wire.AdminParticipantsRemove:
		v, err = s.changeParticipants(ctx, req.Kind, req.Arg)
	case wire.AdminClusterReload:
		v, err = s.ReloadClusterFile()
		if err != nil {
			err = invalid("%v", err) // the map in use is kept: say why, in one line
		}
	case wire.AdminReplicas, wire.AdminReplicasAdd, wire.AdminReplicasRemove:
		body, err := s.adminReplicas(req.Kind, req.Arg)
		if nl, ok := err.(*notLeaderError); ok {
			return c.Reply(reqID, &wire.Error{Code: wire.CodeNotLeader, Message: []byte(nl.Leader)})
		}
		if err != nil {
			return c.Reply(reqID, &wire.Error{Code: wire.CodeInvalid, Message: []byte(trim(err.Error()))})
		}
		return link.ReplyJSON(c, reqID, body)
	default:
		err = invalid("the coordinator does not serve admin request %d", req.Kind)
	}
	if err != nil {
		var ae *errAdmin
		if !errors.As(err, &ae) {
			ae = &errAdmin{code: wire.CodeInternal, msg: err.Error()}
		}
		if ae.code == wire.CodeNotLeader {
			return s.rep.notLeader(c, reqID)
		}
		return c.Reply(reqID, &wire.Error{Code: ae.code, Message: []byte(trim(ae.msg))})
	}
	body, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("coordinator: admin report: %w", err)
	}
	return link.ReplyJSON(c, reqID, body)
}

// trim keeps an error message within what an Error frame carries.
func trim(msg string) string {
	if len(msg) > wire.MaxDetailLen {
		return msg[:wire.MaxDetailLen-3] + "..."
	}
	return msg
}

// ParseTxnID reads a transaction id as an operator types it, refusing
// what no coordinator could have run: not a UUID, or not a UUIDv7 (the
// only ids a coordinator accepts, as their time tells it their age).
func ParseTxnID(arg string) (protocol.TxnID, error) {
	if arg == "" {
		return protocol.TxnID{}, errors.New("no transaction id given")
	}
	id, err := uuid.Parse(arg)
	if err != nil {
		return id, fmt.Errorf("malformed transaction id %q: want a UUID such as 0190f1c2-5e4b-7c3d-9a8b-1234567890ab", arg)
	}
	if _, ok := protocol.IDTime(id); !ok {
		return id, fmt.Errorf("transaction id %s is a version %d UUID: a coordinator accepts only UUIDv7 ids, so none ran it", id, id.Version())
	}
	return id, nil
}

// shardFor returns the pump and shard that own id, or nils when this
// replica does not lead.
func (s *Server) shardFor(id protocol.TxnID) (*pump.Pump, *engine.Shard) {
	pumps, shards := s.pumps, s.shards
	if s.rep != nil {
		g := s.rep.cur.Load()
		if g == nil {
			return nil, nil
		}
		pumps, shards = g.pumps, g.shards
	}
	k := engine.ShardFor(id, len(pumps))
	return pumps[k], shards[k]
}

// txnStatus answers `admin txn ID`: from the shard while the transaction
// is in flight, then from the outcome index, and says plainly when
// neither holds it.
func (s *Server) txnStatus(ctx context.Context, arg []byte) (protocol.TxnStatus, error) {
	id, err := ParseTxnID(string(arg))
	if err != nil {
		return protocol.TxnStatus{}, invalid("%v", err)
	}
	st := protocol.TxnStatus{Txn: id}
	if p, sh := s.shardFor(id); p != nil {
		var v engine.TxnView
		var live bool
		if err := p.Do(ctx, func() { v, live = sh.Lookup(id) }); err != nil {
			return st, fmt.Errorf("asking shard: %w", err)
		}
		if live {
			return inFlight(id, v), nil
		}
	}
	e, ok, err := s.outcomes.lookup(id)
	if err != nil {
		return st, err
	}
	if ok {
		return indexed(id, &e), nil
	}
	if s.rep != nil && s.rep.cur.Load() == nil {
		// A follower: the transaction may be in flight at the leader, or
		// have aborted there.
		return st, &errAdmin{code: wire.CodeNotLeader}
	}
	st.KeptFrom = s.outcomes.horizon()
	idTime, _ := protocol.IDTime(id)
	if idTime.Before(st.KeptFrom) {
		st.State = protocol.TxnExpired
		st.Detail = fmt.Sprintf("the id's time (%s) is older than the oldest outcome this coordinator keeps (%s): whatever it came to is forgotten", idTime.UTC().Format(time.RFC3339Nano), st.KeptFrom.UTC().Format(time.RFC3339Nano))
		return st, nil
	}
	st.State = protocol.TxnNotFound
	st.Detail = "no record of this id: it did not commit through this coordinator (presumed abort) — it aborted, was rejected, or never reached it. Only a one-phase or read-only commit within a second of a machine crash could be missing: its participant's ledger knows (commitd admin outcomes)"
	return st, nil
}

func inFlight(id protocol.TxnID, v engine.TxnView) protocol.TxnStatus {
	st := protocol.TxnStatus{Txn: id, State: protocol.TxnInFlight, AgeMs: v.AgeMs}
	switch v.State {
	case "voting":
		st.Detail = "prepares sent; waiting for votes"
		if v.Resolving {
			st.Detail = "staged, a vote missing: resolving (asking each participant that has not voted to report it prepared or to prevent it)"
		}
	case "aborting":
		st.Detail = "staged: abort decided; its record is not yet durable"
	case "deciding":
		st.Detail = "commit decided; its record is not yet durable"
		if v.Committed {
			// The implicit commit of a staged transaction: decided and
			// durable (its staged record and every prepared record).
			st.State = protocol.TxnCommitted
			st.Detail = "committed (staged: its staged record and every participant's prepared record are durable); its commit record is on its way"
		}
	case "delivering":
		// Decided and durable: committed, whatever the acknowledgements.
		st.State = protocol.TxnCommitted
		st.Detail = fmt.Sprintf("committed (durable %d ms ago); delivering the decision until every participant that voted yes acknowledges", v.DecidedAgeMs)
	case "ending":
		st.State = protocol.TxnCommitted
		st.Detail = "committed; every participant acknowledged"
	}
	for _, b := range v.Branches {
		p := protocol.TxnParticipant{Name: b.Participant}
		if b.Vote != 0 {
			p.Vote = b.Vote.String()
		}
		switch {
		case (v.State == "voting" || v.State == "aborting") && b.Vote == 0:
			p.State = "vote awaited"
		case v.State == "voting" || v.State == "deciding" || v.State == "aborting":
			p.State = "voted"
		case b.Vote != protocol.VoteYes:
			p.State = "read-only: not in phase two"
		case b.Acked:
			p.State = "acknowledged"
		default:
			p.State = "commit sent, acknowledgement awaited"
		}
		st.Participants = append(st.Participants, p)
	}
	return st
}

func indexed(id protocol.TxnID, e *outcomeEntry) protocol.TxnStatus {
	st := protocol.TxnStatus{Txn: id, DecidedAt: time.UnixMilli(e.atMs)}
	switch e.kind {
	case entryCommitted:
		st.State = protocol.TxnCommitted
		st.Detail = "committed: the decision is durable and was acknowledged by every participant that voted yes"
		if e.n == 0 {
			st.Detail = "committed: one-phase or read-only, so no participant waited for a decision"
		}
		for i := range e.n {
			st.Participants = append(st.Participants, protocol.TxnParticipant{Name: string(e.names[i]), Vote: "yes", State: "acknowledged"})
		}
	case entryAborted:
		st.State = protocol.TxnAborted
		st.Cause = e.cause.String()
		st.Detail = "aborted: nothing was or will be committed anywhere"
		if e.n > 0 {
			st.Participant = string(e.names[0])
			st.Detail = fmt.Sprintf("aborted (%v at %s): nothing was or will be committed anywhere", e.cause, st.Participant)
		}
	case entryUnknown:
		st.State = protocol.TxnUnknown
		st.Detail = "unknown to the coordinator: a one-phase transaction whose participant did not answer in time; that participant's ledger has the outcome (commitd admin outcomes)"
	}
	return st
}

// InDoubt is the coordinator's in-doubt report: commits decided and
// durable whose decision has not reached every participant that voted
// yes, oldest first.
type InDoubt struct {
	// Total is how many there are; Txns lists at most 1,000.
	Total int                  `json:"total"`
	Txns  []protocol.TxnStatus `json:"txns"`
	// Waiting counts, per participant, the commits it has not
	// acknowledged: a participant down or cut off shows here.
	Waiting map[string]int `json:"waiting"`
}

// inDoubt asks every shard for its undelivered commits.
func (s *Server) inDoubt(ctx context.Context) (InDoubt, error) {
	pumps, shards := s.pumps, s.shards
	if s.rep != nil {
		g := s.rep.cur.Load()
		if g == nil {
			return InDoubt{}, &errAdmin{code: wire.CodeNotLeader}
		}
		pumps, shards = g.pumps, g.shards
	}
	rep := InDoubt{Txns: []protocol.TxnStatus{}, Waiting: map[string]int{}}
	var all []engine.TxnView
	for i, p := range pumps {
		var views []engine.TxnView
		var n int
		if err := p.Do(ctx, func() { views, n = shards[i].Undelivered(nil, maxInDoubt) }); err != nil {
			return rep, fmt.Errorf("asking shard %d: %w", i, err)
		}
		rep.Total += n
		all = append(all, views...)
	}
	// Oldest decision first over all shards.
	slices.SortStableFunc(all, func(a, b engine.TxnView) int { return cmp.Compare(b.DecidedAgeMs, a.DecidedAgeMs) })
	for i, v := range all {
		for _, b := range v.Branches {
			if b.Vote == protocol.VoteYes && !b.Acked {
				rep.Waiting[b.Participant]++
			}
		}
		if i < maxInDoubt {
			rep.Txns = append(rep.Txns, inFlight(v.Txn, v))
		}
	}
	return rep, nil
}

// Retried is the answer to `admin retry`: how many commit decisions were
// sent again.
type Retried struct {
	Redelivered int `json:"redelivered"`
}

// retry redelivers now what waits for one transaction (arg an id) or one
// participant (arg its name).
func (s *Server) retry(ctx context.Context, arg []byte) (Retried, error) {
	var r Retried
	a := string(arg)
	if a == "" {
		return r, invalid("retry what? give a transaction id or a participant's name")
	}
	var id *protocol.TxnID
	participant := ""
	if _, ok := s.set().peers[a]; ok {
		participant = a
	} else {
		x, err := ParseTxnID(a)
		if err != nil {
			return r, invalid("%q is not one of this coordinator's participants, and not a transaction id: %v", a, err)
		}
		id = &x
	}
	pumps, shards := s.pumps, s.shards
	if s.rep != nil {
		g := s.rep.cur.Load()
		if g == nil {
			return r, &errAdmin{code: wire.CodeNotLeader}
		}
		pumps, shards = g.pumps, g.shards
	}
	for i, p := range pumps {
		if id != nil && i != engine.ShardFor(*id, len(pumps)) {
			continue
		}
		var n int
		if err := p.Do(ctx, func() { n = shards[i].RedeliverNow(id, participant) }); err != nil {
			return r, fmt.Errorf("asking shard %d: %w", i, err)
		}
		r.Redelivered += n
	}
	if id != nil && r.Redelivered == 0 {
		return r, invalid("transaction %s has no commit waiting to be delivered (see commitd admin txn %s)", *id, *id)
	}
	s.metrics.redeliveredByOperator(r.Redelivered)
	return r, nil
}

// oldestInDoubt is the age of the oldest commit not yet acknowledged by
// every participant, over the shards (zero when none, or when this replica
// does not lead), for the metric. It waits for each pump's turn.
func (s *Server) oldestInDoubt() time.Duration {
	pumps, shards := s.pumps, s.shards
	if s.rep != nil {
		g := s.rep.cur.Load()
		if g == nil {
			return 0
		}
		pumps, shards = g.pumps, g.shards
	}
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	var oldest int64
	for i, p := range pumps {
		var ms int64
		if p.Do(ctx, func() { ms = shards[i].OldestUndeliveredMs() }) == nil {
			oldest = max(oldest, ms)
		}
	}
	return time.Duration(oldest) * time.Millisecond
}

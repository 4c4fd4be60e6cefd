// This file holds the admin reports (status, accounts, outcomes) and the
// paced reply that streams the outcomes report.

package participant

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/net/link"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/protocol"
	"github.com/google/uuid"
)

// Accounts is the participant's summary for `commitd admin accounts`.
type Accounts struct {
	Name     string `json:"name"`
	Accounts int    `json:"accounts"`
	Total    int64  `json:"total"`
	Prepared int    `json:"prepared"`
}

// AccountsSummary reads the resource. For a Durable resource that cannot
// be read, Total is -1.
func (s *Server) AccountsSummary() Accounts {
	n, total, prepared := s.resSummary()
	if s.durable != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var err error
		if n, total, err = s.durable.Summary(ctx); err != nil {
			s.cfg.Logger.Warn("participant: reading the resource", "name", s.cfg.Name, "err", err)
			total = -1
		}
		if ids, err := s.durable.InDoubt(ctx); err == nil {
			prepared = ids
		}
	}
	if s.forward != nil {
		prepared = s.forward.Held() // the votes arrived since, too
	}
	return Accounts{Name: s.cfg.Name, Accounts: n, Total: total, Prepared: len(prepared)}
}

// resSummary reads the resource on the pump's goroutine, which owns it
// (guarded), or directly once the pump has stopped and nothing drives it.
// It waits for the pump's round, as the mutex it replaced waited for a
// prepare or commit in progress.
func (s *Server) resSummary() (accounts int, total int64, prepared []protocol.TxnID) {
	err := s.pump.Do(context.Background(), func() { accounts, total, prepared = s.res.summary() })
	if err != nil { // pump.ErrStopped: Run has returned, fn did not run
		return s.res.summary()
	}
	return accounts, total, prepared
}

// Outcome is one line of `commitd admin outcomes`.
type Outcome struct {
	Txn     protocol.TxnID `json:"txn"`
	Outcome string         `json:"outcome"` // committed, aborted or prepared
}

// EachOutcome calls fn for every transaction this participant holds
// prepared now, then for every decision in its ledger (those of the last
// Config.LedgerRetention, at least), oldest first. The ledger is read from disk as fn
// goes, so memory does not grow with it. A transaction may come more than
// once — prepared and then decided meanwhile, or a decision recorded twice
// at recovery — and its last line is its outcome. An error from fn stops
// the listing and is returned, as is an error reading the ledger.
func (s *Server) EachOutcome(fn func(Outcome) error) error {
	_, _, prepared := s.resSummary()
	if s.durable != nil {
		// The resource's own list: it also has what is still being
		// prepared, and what a crash left behind.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if ids, err := s.durable.InDoubt(ctx); err == nil {
			prepared = ids
		}
	}
	if s.forward != nil {
		prepared = s.forward.Held()
	}
	for _, id := range prepared {
		if err := fn(Outcome{Txn: id, Outcome: "prepared"}); err != nil {
			return err
		}
	}
	return s.ledger.each(func(id protocol.TxnID, d protocol.Decision) error {
		o := "committed"
		if d == protocol.DecisionAbort {
			o = "aborted"
		}
		return fn(Outcome{Txn: id, Outcome: o})
	})
}

// Outcomes is EachOutcome gathered in memory, one line per transaction (the
// last), sorted by id: for tests and tools in the same process. Its memory
// grows with the ledger; `commitd admin outcomes` streams instead. An error
// reading the ledger (a failed disk, a stopped server) is logged and ends
// the list where it happened.
func (s *Server) Outcomes() []Outcome {
	last := make(map[protocol.TxnID]string)
	err := s.EachOutcome(func(o Outcome) error {
		last[o.Txn] = o.Outcome
		return nil
	})
	if err != nil {
		s.cfg.Logger.Error("participant: listing outcomes", "name", s.cfg.Name, "err", err)
	}
	out := make([]Outcome, 0, len(last))
	for id, o := range last {
		out = append(out, Outcome{Txn: id, Outcome: o})
	}
	sort.Slice(out, func(i, j int) bool {
		return string(out[i].Txn[:]) < string(out[j].Txn[:])
	})
	return out
}

// Stats is the engine's view of the participant.
func (s *Server) Stats() engine.ParticipantStats {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return s.stats
}

// Status is the participant's summary for `commitd admin status`: the
// engine's counters and its connections to the coordinator (to the first
// address of a replicated coordinator, and to the others in Replicas).
type Status struct {
	engine.ParticipantStats
	Coordinator link.PeerStatus   `json:"coordinator"`
	Replicas    []link.PeerStatus `json:"replicas,omitempty"`
	// UnknownGroup counts votes, acks and inquiries dropped because their
	// transaction's group is not in the cluster map (Config.Cluster).
	UnknownGroup uint64 `json:"unknown_group,omitempty"`
	// MapVersion is the version of the cluster map in use (0: none), and
	// RetiredAborts counts the aborts this participant gave itself for
	// transactions of groups that map retired (docs/protocol.md,
	// "Clusters of groups").
	MapVersion    uint64 `json:"map_version,omitempty"`
	RetiredAborts uint64 `json:"retired_aborts,omitempty"`
	// NewerMapSeen is a cluster map version newer than MapVersion that a
	// coordinator's Hello said it holds (0: none seen): the operator's
	// tooling has not yet pushed it here, or this participant's SIGHUP
	// or admin cluster reload is still to come.
	NewerMapSeen uint64 `json:"newer_map_seen,omitempty"`
	// Resource is a Forwarding resource's own status (its calls to the
	// service, the decisions still to deliver).
	Resource any `json:"resource,omitempty"`
}

// InDoubt is the participant's in-doubt report: the transactions it has
// in hand, oldest first — above all those prepared and undecided, which
// hold the resource until the coordinator's decision arrives.
type InDoubt struct {
	Name string `json:"name"`
	// Total is how many there are; Txns lists at most 1,000.
	Total int            `json:"total"`
	Txns  []InDoubtEntry `json:"txns"`
}

// InDoubtEntry is one line of InDoubt.
type InDoubtEntry struct {
	Txn   protocol.TxnID `json:"txn"`
	State string         `json:"state"`
	// AgeMs is how long ago the prepare arrived (or, after a restart, the
	// transaction was restored).
	AgeMs int64 `json:"age_ms"`
	// WaitsFor says what would end it.
	WaitsFor string `json:"waits_for"`
}

// maxInDoubt bounds the transactions one in-doubt report lists.
const maxInDoubt = 1000

// adminTimeout bounds an admin request's wait for the pump's turn.
const adminTimeout = 5 * time.Second

func (s *Server) inDoubt() (InDoubt, error) {
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	var views []engine.PreparedView
	var n int
	if err := s.pump.Do(ctx, func() { views, n = s.machine.InDoubt(nil, maxInDoubt) }); err != nil {
		return InDoubt{}, err
	}
	rep := InDoubt{Name: s.cfg.Name, Total: n, Txns: []InDoubtEntry{}}
	for _, v := range views {
		e := InDoubtEntry{Txn: v.Txn, State: v.State, AgeMs: v.AgeTicks * s.cfg.Tick.Milliseconds()}
		switch v.State {
		case "prepared":
			e.WaitsFor = "the coordinator's decision (inquiring with backoff; commitd admin retry to ask now)"
		case "preparing":
			e.WaitsFor = "its prepared record to become durable"
		case "voting":
			e.WaitsFor = "the resource's answer to the prepare"
		default:
			e.WaitsFor = "the resource to finish the decision"
		}
		rep.Txns = append(rep.Txns, e)
	}
	return rep, nil
}

// Retried is the participant's answer to `admin retry`: how many
// inquiries were sent at once.
type Retried struct {
	Inquired int `json:"inquired"`
}

// retry inquires now about one prepared transaction (arg its id) or every
// one (arg empty, or this participant's own name).
func (s *Server) retry(arg []byte) (Retried, error) {
	var id *protocol.TxnID
	if a := string(arg); a != "" && a != s.cfg.Name {
		x, err := uuid.Parse(a)
		if err != nil {
			return Retried{}, fmt.Errorf("%q is neither a transaction id nor this participant's name (%s)", a, s.cfg.Name)
		}
		id = &x
	}
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	var n int
	if err := s.pump.Do(ctx, func() { n = s.machine.InquireNow(id) }); err != nil {
		return Retried{}, err
	}
	if id != nil && n == 0 {
		return Retried{}, fmt.Errorf("transaction %s is not prepared here (see commitd admin in-doubt)", *id)
	}
	return Retried{Inquired: n}, nil
}

// oldestPrepared is the age of the oldest transaction prepared here and
// undecided, for the metric.
func (s *Server) oldestPrepared() time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	var ticks int64
	if s.pump.Do(ctx, func() { ticks = s.machine.OldestPreparedTicks() }) != nil {
		return 0
	}
	return time.Duration(ticks) * s.cfg.Tick
}

func (s *Server) adminJSON(c *mux.Conn, kind wire.AdminKind, arg []byte) ([]byte, error) {
	switch kind {
	case wire.AdminTxn:
		rep, err := s.txnStatus(arg)
		if err != nil {
			return nil, err
		}
		return json.Marshal(rep)
	case wire.AdminResolve:
		rep, err := s.resolve(c, arg)
		if err != nil {
			return nil, err
		}
		return json.Marshal(rep)
	case wire.AdminInDoubt:
		rep, err := s.inDoubt()
		if err != nil {
			return nil, err
		}
		return json.Marshal(rep)
	case wire.AdminRetry:
		rep, err := s.retry(arg)
		if err != nil {
			return nil, err
		}
		return json.Marshal(rep)
	case wire.AdminStatus:
		addrs := strings.Split(s.cfg.Coordinator, ",")
		st := Status{ParticipantStats: s.Stats(), Coordinator: link.StatusOf(s.coord, addrs[0]), UnknownGroup: s.unknownGroup.Load(),
			MapVersion: s.ClusterVersion(), RetiredAborts: s.retiredAborts.Load()}
		st.NewerMapSeen = s.newerMap.Seen(st.MapVersion)
		for i, p := range s.replicas {
			st.Replicas = append(st.Replicas, link.StatusOf(p, addrs[i+1]))
		}
		if s.forward != nil {
			st.Resource = s.forward.Status()
		}
		return json.Marshal(st)
	case wire.AdminAccounts:
		return json.Marshal(s.AccountsSummary())
	case wire.AdminClusterReload:
		ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
		defer cancel()
		rep, err := s.ReloadClusterFile(ctx)
		if err != nil {
			return nil, err
		}
		return json.Marshal(rep)
	}
	return nil, fmt.Errorf("a participant does not serve admin request %d", kind)
}

// replyOutcomes answers `admin outcomes` with EachOutcome as one JSON
// array, encoded a line at a time as the ledger is read from disk: the
// report of a participant that has run for years is gigabytes, and neither
// the ledger nor the reply is ever whole in memory. A ledger that cannot be
// read ends the reply with an Error frame, so the client sees the request
// fail rather than a short list.
func (s *Server) replyOutcomes(r *pacedReply) error {
	enc := json.NewEncoder(r) // one Write per Encode
	sep := []byte{'['}
	var connErr error // the connection failed under the reply
	err := s.EachOutcome(func(o Outcome) error {
		if _, connErr = r.Write(sep); connErr != nil {
			return connErr
		}
		sep[0] = ','
		connErr = enc.Encode(o)
		return connErr
	})
	if connErr != nil {
		return connErr // closes the connection: nothing more can be said on it
	}
	if err != nil {
		return r.c.Reply(r.reqID, &wire.Error{Code: wire.CodeInternal, Message: []byte(err.Error())})
	}
	if sep[0] == '[' {
		if _, err := r.Write(sep); err != nil {
			return err
		}
	}
	if _, err := r.Write([]byte{']'}); err != nil {
		return err
	}
	return r.finish()
}

// adminWindow bounds the bytes of an admin reply queued ahead of what the
// connection has written.
const adminWindow = 1 << 20

// adminChunk is the most JSON one AdminResponse frame carries.
const adminChunk = wire.MaxPayload - 8

// pacedReply answers one admin request like link.ReplyJSON, with JSON in as
// many AdminResponse frames as it takes, but waits for the connection to
// write them out as it goes, and takes the JSON as it is made (Write), so
// neither the whole body nor its frames need be in memory at once. The
// outcomes report grows with the ledger (tens of MB after a few minutes of
// load); queued all at once it overran the connection's MaxPendingBytes bound
// whenever the reader was slower than the loop, and the participant cut its
// own admin client off as a slow peer (found by harness/chaos). It runs on
// the connection's reader goroutine, which may wait: nothing else arrives
// on an admin connection.
type pacedReply struct {
	c      *mux.Conn
	reqID  uint64
	base   uint64 // the connection's BytesSent when the reply began
	queued uint64 // JSON bytes queued: fewer than the frames' bytes, so the wait in send ends
	buf    []byte // JSON not yet queued: at most adminChunk bytes between Writes
}

// Write takes more of the reply's JSON, queueing every full frame but the
// last (finish sends that one, so the reply never ends with an empty frame).
// An error is the connection's.
func (r *pacedReply) Write(p []byte) (int, error) {
	r.buf = append(r.buf, p...)
	for len(r.buf) > adminChunk {
		if err := r.send(r.buf[:adminChunk], true); err != nil {
			return 0, err
		}
		r.buf = r.buf[:copy(r.buf, r.buf[adminChunk:])]
	}
	return len(p), nil
}

// finish sends the rest of the reply, in its last frame.
func (r *pacedReply) finish() error { return r.send(r.buf, false) }

// send queues one frame, once the connection has written out all but
// adminWindow bytes of what the reply queued before.
func (r *pacedReply) send(json []byte, more bool) error {
	for r.queued > r.c.Stats().BytesSent-r.base+adminWindow {
		select {
		case <-r.c.Done():
			return r.c.Err()
		case <-time.After(time.Millisecond):
		}
	}
	if err := r.c.Reply(r.reqID, &wire.AdminResponse{More: more, JSON: json}); err != nil {
		return err
	}
	r.queued += uint64(len(json))
	return nil
}

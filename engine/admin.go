package engine

import (
	"slices"

	"github.com/commitd/commitd/protocol"
)

// What an operator may read of a shard, and the one thing an operator may
// make it do (redeliver now). These are not protocol inputs: the server
// calls them on the goroutine that owns the shard (pump.Pump.Do), they
// allocate, and none of them changes what the shard will decide.

// TxnView is what a shard holds of one transaction in flight.
type TxnView struct {
	Txn protocol.TxnID
	// State is where it is: "voting" (prepares sent, votes awaited),
	// "deciding" (commit decided, its record not yet durable),
	// "delivering" (commit durable, acknowledgements awaited) or
	// "ending" (every acknowledgement in).
	State string
	// AgeMs is how long ago it began — or, for a commit restored from the
	// log, how long ago this shard restored it — and DecidedAgeMs how
	// long ago its commit became durable (delivering and ending only;
	// for a restored commit, its restore).
	AgeMs, DecidedAgeMs int64
	Branches            []BranchView
	// Staged decisions: Resolving, a staged transaction whose vote is
	// missing is being resolved (its participants asked to report it
	// prepared or prevent it); Committed, its commit is implicit —
	// RecStaged durable and every vote YES — while RecCommit is on its
	// way ("deciding").
	Resolving, Committed bool
}

// BranchView is one participant's part in a transaction in flight.
type BranchView struct {
	Participant string
	// Vote is zero until it arrives.
	Vote protocol.Vote
	// Acked: the participant has made the commit durable.
	Acked bool
}

// Lookup returns the transaction id in flight at this shard, if any. A
// finished transaction is not in flight (the server's outcome index
// answers for it).
func (s *Shard) Lookup(id protocol.TxnID) (TxnView, bool) {
	t := s.txns.get(id)
	if t == nil {
		return TxnView{}, false
	}
	return s.view(t), true
}

// Undelivered appends to dst the commits this shard is delivering — decided
// and durable, not yet acknowledged by every participant that voted yes —
// oldest decision first, at most max of them (all if max ≤ 0), and returns
// it with how many there are in all.
func (s *Shard) Undelivered(dst []TxnView, max int) ([]TxnView, int) {
	var ts []*coordTxn
	for _, t := range s.txns.all() {
		if t.state == coordDelivering {
			ts = append(ts, t)
		}
	}
	sortByDecided(ts)
	for i, t := range ts {
		if max > 0 && i == max {
			break
		}
		dst = append(dst, s.view(t))
	}
	return dst, len(ts)
}

// OldestUndeliveredMs is how long ago the oldest commit this shard is
// delivering became durable (0 when none): a participant that does not
// acknowledge shows here first.
func (s *Shard) OldestUndeliveredMs() int64 {
	oldest := int64(-1)
	for _, t := range s.txns.all() {
		if t.state == coordDelivering && (oldest < 0 || t.decided < oldest) {
			oldest = t.decided
		}
	}
	if oldest < 0 {
		return 0
	}
	return (s.now - oldest) * int64(s.cfg.TickMicros) / 1000
}

// RedeliverNow sends the commit decision again, at once, to every
// participant that has not acknowledged it: of transaction id if id is
// not nil, else of every transaction participant (if not "") has not
// acknowledged. It returns how many decisions it sent. The backoff of
// the regular redeliveries is left as it is: this is one more of them,
// sooner, and a participant takes a duplicate decision as it takes any.
func (s *Shard) RedeliverNow(id *protocol.TxnID, participant string) int {
	s.start()
	n := 0
	send := func(t *coordTxn) {
		for i := range t.n {
			b := &t.branches[i]
			if b.vote == protocol.VoteYes && !b.acked && (participant == "" || b.name == participant) {
				s.sendDecision(t.id, b.name, protocol.DecisionCommit)
				n++
			}
		}
	}
	// Only a durable commit may be sent: a decision not yet durable
	// could be lost with a crash and presumed abort after.
	delivering := func(t *coordTxn) bool {
		return t.state == coordDelivering || planted(s, bugRedeliverUndecided)
	}
	if id != nil {
		if t := s.txns.get(*id); t != nil && delivering(t) {
			send(t)
		}
	} else {
		// Oldest decision first (the table's own order follows its
		// puts and removals, a Go map's was random): the machine stays
		// deterministic, as the simulation's replays need.
		var ts []*coordTxn
		for _, t := range s.txns.all() {
			if delivering(t) {
				ts = append(ts, t)
			}
		}
		sortByDecided(ts)
		for _, t := range ts {
			send(t)
		}
	}
	s.stats.Redelivered += uint64(n)
	return n
}

func (s *Shard) view(t *coordTxn) TxnView {
	ms := func(ticks int64) int64 { return ticks * int64(s.cfg.TickMicros) / 1000 }
	v := TxnView{Txn: t.id, State: t.state.String(), AgeMs: ms(s.now - t.began)}
	v.Resolving = t.state == coordVoting && t.resolving
	v.Committed = t.state == coordDeciding && s.implicit(t) && s.durable >= t.stagedIndex
	if t.state == coordDelivering || t.state == coordEnding {
		v.DecidedAgeMs = ms(s.now - t.decided)
	}
	for i := range t.n {
		b := &t.branches[i]
		v.Branches = append(v.Branches, BranchView{Participant: b.name, Vote: b.vote, Acked: b.acked})
	}
	return v
}

// sortByDecided sorts ts by decision, oldest first (ties by id, so that
// the report is stable).
func sortByDecided(ts []*coordTxn) {
	slices.SortFunc(ts, func(a, b *coordTxn) int {
		switch {
		case a.decided < b.decided:
			return -1
		case a.decided > b.decided:
			return 1
		}
		return slices.Compare(a.id[:], b.id[:])
	})
}

// PreparedView is what a participant holds of one transaction it has not
// finished: what it waits for, and since when.
type PreparedView struct {
	Txn protocol.TxnID
	// State is "prepared" (voted yes: in doubt, waiting for the
	// coordinator's decision, inquiring with backoff), "preparing" (its
	// prepared record is not yet durable), "voting" (the resource has not
	// answered the prepare), "committing" or "aborting" (the decision is
	// in; the resource has not finished it).
	State string
	// AgeTicks is how long ago, in the participant's ticks, the
	// transaction came into its hands (its prepare, or its restore).
	AgeTicks int64
}

// InDoubt appends to dst the transactions this participant has in hand —
// prepared and undecided, or still being prepared or finished — oldest
// first, at most max of them (all if max ≤ 0), and returns it with how
// many there are in all.
func (p *Participant) InDoubt(dst []PreparedView, max int) ([]PreparedView, int) {
	ts := make([]*partTxn, 0, p.txns.len())
	for _, t := range p.txns.all() {
		ts = append(ts, t)
	}
	slices.SortFunc(ts, func(a, b *partTxn) int {
		switch {
		case a.since < b.since:
			return -1
		case a.since > b.since:
			return 1
		}
		return slices.Compare(a.id[:], b.id[:])
	})
	for i, t := range ts {
		if max > 0 && i == max {
			break
		}
		dst = append(dst, PreparedView{Txn: t.id, State: t.state.String(), AgeTicks: p.now - t.since})
	}
	return dst, len(ts)
}

// OldestPreparedTicks is how long ago, in ticks, the oldest transaction
// this participant holds prepared and undecided came into its hands (0
// when none).
func (p *Participant) OldestPreparedTicks() int64 {
	oldest := int64(-1)
	for _, t := range p.held {
		if t.state == partPrepared && (oldest < 0 || t.since < oldest) {
			oldest = t.since
		}
	}
	if oldest < 0 {
		return 0
	}
	return p.now - oldest
}

// InquireNow asks the coordinator at once for the decision on transaction
// id (if not nil) or on every transaction this participant holds prepared
// and undecided, and returns how many inquiries it sent. The inquiry
// backoff is left as it is: this is one more inquiry, sooner, and the
// coordinator answers it as any.
func (p *Participant) InquireNow(id *protocol.TxnID) int {
	p.start()
	n := 0
	for _, t := range p.held {
		if t.state == partPrepared && (id == nil || t.id == *id) {
			p.sendInquire(t)
			n++
		}
	}
	return n
}

// StateOf is where transaction id stands at this participant: its state's
// name ("prepared", "committing", "committed", "aborted", ...), in hand
// or remembered, and false when it knows nothing of it (never prepared
// here, or decided and forgotten).
func (p *Participant) StateOf(id protocol.TxnID) (string, bool) {
	_, st := p.find(id)
	if st == 0 {
		return "", false
	}
	return st.String(), true
}

// Naming counts the transactions in flight at this shard — voting,
// deciding, delivering or ending — that have a branch at participant: the
// coordinator refuses to forget a participant while any does (`admin
// participants remove`), since its vote or its acknowledgement is still
// awaited, or a decision still owed to it.
func (s *Shard) Naming(participant string) int {
	n := 0
	for _, t := range s.txns.all() {
		for i := range t.n {
			if t.branches[i].name == participant {
				n++
				break
			}
		}
	}
	return n
}

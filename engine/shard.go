package engine

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/google/uuid"

	"github.com/commitd/commitd/protocol"
)

// Default ShardConfig values, used for zero fields.
const (
	DefaultPrepareTimeoutTicks = 50
	DefaultRedeliverMinTicks   = 10
	DefaultRedeliverMaxTicks   = 200
	DefaultRememberTicks       = 1000
	DefaultMaxTxns             = 1 << 18
	DefaultTickMicros          = 10_000 // the servers' tick: 10 ms
	DefaultMaxIDAheadMs        = 1000
)

// ShardConfig tunes a coordinator shard. Durations are in ticks; a zero
// field takes its default.
type ShardConfig struct {
	// PrepareTimeoutTicks is how long after Begin the shard waits for every
	// vote before it aborts (or, for one branch, answers Unknown).
	PrepareTimeoutTicks int
	// RedeliverMinTicks is the wait before the first redelivery of a commit
	// decision to a participant that has not acknowledged it.
	RedeliverMinTicks int
	// RedeliverMaxTicks caps the doubling redelivery backoff.
	RedeliverMaxTicks int
	// RememberTicks is how long a finished transaction is remembered, to
	// answer late votes, inquiries and duplicate begins: at least this
	// long, and at most twice as long (see recent).
	RememberTicks int
	// MaxTxns bounds the transactions the shard holds at once, in flight
	// and remembered together; a begin beyond it is rejected with
	// CauseOverloaded. Remembering is by time (RememberTicks), so without
	// a bound memory grows with the rate of transactions — a flood of
	// quick aborts grew a coordinator's heap to 281 MB. Refusing keeps the
	// promise that a finished transaction is remembered for RememberTicks
	// (what refusing a reused id relies on) where forgetting early to make
	// room would break it; and waiting would not help a client soon: the
	// remembered set shrinks only when a generation rotates. The bound
	// caps throughput at MaxTxns per RememberTicks (to twice that). It
	// also bounds the prepare-timeout queue, which keeps an entry for
	// every transaction begun in the last PrepareTimeoutTicks, finished
	// or not (a quarter of the heap in an unbounded flood of aborts), as
	// long as PrepareTimeoutTicks ≤ RememberTicks, as by default: each of
	// those is still held.
	MaxTxns int
	// TickMicros is the wall-clock length of one tick, in microseconds
	// (default 10,000, the servers' tick). The shard uses it only to
	// turn RememberTicks into the wall-clock window of transaction ids it
	// accepts (checkIDTime).
	TickMicros int
	// MaxIDAheadMs is how far a transaction id's time may be ahead of the
	// Begin's UnixMs — how far a client's clock may run ahead of the
	// coordinator's (default 1000, at most half the remembered window; a
	// larger value panics). The same amount is taken off the oldest age
	// accepted: an id ahead by A stays acceptable A longer than one that
	// is not, and the shard must still remember its first use then.
	MaxIDAheadMs int
	// StartUnixMs is the wall-clock time, in Unix milliseconds, at which
	// this shard was created (before its log was restored): it refuses
	// ids older than that, which it may have forgotten in a restart
	// (checkIDTime). Zero: none refused for that.
	StartUnixMs int64
	// RememberPresumedAborts makes the shard remember, as aborted, a
	// transaction it does not know and presumes aborted (answering an
	// inquiry or a YES about it), so that a begin reusing its id is
	// refused while that abort may still be on its way to a participant
	// that would otherwise apply it to the reuse. A lone coordinator
	// needs none of this: it refuses every id it could have forgotten
	// (StartUnixMs). A replicated coordinator's reign, whose id window
	// reaches back before it took over, does (docs/ha.md).
	RememberPresumedAborts bool
}

func (c ShardConfig) withDefaults() ShardConfig {
	if c.PrepareTimeoutTicks < 0 || c.RedeliverMinTicks < 0 || c.RedeliverMaxTicks < 0 || c.RememberTicks < 0 || c.MaxTxns < 0 ||
		c.TickMicros < 0 || c.MaxIDAheadMs < 0 || c.StartUnixMs < 0 {
		panic(fmt.Sprintf("engine: negative duration or bound in %+v", c))
	}
	c.MaxTxns = orDefault(c.MaxTxns, DefaultMaxTxns)
	c.PrepareTimeoutTicks = orDefault(c.PrepareTimeoutTicks, DefaultPrepareTimeoutTicks)
	c.RedeliverMinTicks, c.RedeliverMaxTicks = backoffRange(c.RedeliverMinTicks, c.RedeliverMaxTicks,
		DefaultRedeliverMinTicks, DefaultRedeliverMaxTicks)
	c.RememberTicks = orDefault(c.RememberTicks, DefaultRememberTicks)
	c.TickMicros = orDefault(c.TickMicros, DefaultTickMicros)
	half := c.rememberedMs() / 2
	c.MaxIDAheadMs = orDefault(c.MaxIDAheadMs, int(min(DefaultMaxIDAheadMs, half)))
	if int64(c.MaxIDAheadMs) > half {
		panic(fmt.Sprintf("engine: MaxIDAheadMs %d is more than half of the %d ms remembered", c.MaxIDAheadMs, c.rememberedMs()))
	}
	return c
}

// rememberedMs is the shortest wall-clock time for which a finished
// transaction is remembered: RememberTicks ticks, less one for a tick
// that comes early (a time.Ticker delivers at most one tick more than the
// time elapsed holds) and one for the time a Begin waits between the
// front door, which stamps it, and the shard (the pump steps its inbox
// between two ticks).
func (c ShardConfig) rememberedMs() int64 {
	return int64(max(c.RememberTicks-2, 0)) * int64(c.TickMicros) / 1000
}

// ShardStats counts what a shard did and what it ignored.
type ShardStats struct {
	Begun     uint64 // transactions started (valid begins)
	Committed uint64 // clients told protocol.OutcomeCommitted
	Aborted   uint64 // clients told protocol.OutcomeAborted
	Unknown   uint64 // clients told protocol.OutcomeUnknown (one-phase, no answer)
	Rejected  uint64 // begins answered rejected: invalid, or overloaded
	// Overloaded counts the begins rejected because the shard held
	// MaxTxns transactions (also counted in Rejected).
	Overloaded uint64

	InFlight    int // begun, client not yet answered
	Undelivered int // commit decided, not yet acknowledged by every YES voter
	Remembered  int // finished, kept for late messages
	// Undecided counts staged transactions whose decision is not yet
	// durable (RecStaged appended, no durable RecCommit or RecAbort),
	// including those restored from the log and being resolved.
	Undecided int

	Redelivered    uint64 // commit decisions sent again after a timeout or restart
	PresumedAborts uint64 // abort answers to a YES vote or an inquiry for an unknown transaction
	NotSent        uint64 // transactions aborted because a prepare could not be sent
	Deferred       uint64 // inquiries that will be answered by the coming decision

	// Staged counts transactions begun with a staged decision (RecStaged);
	// Resolutions those of them that had to be resolved (a prepare
	// timeout, a prepare not sent, a restart), and Resolves the
	// MsgResolve sent for them, first and again.
	Staged      uint64
	Resolutions uint64
	Resolves    uint64

	// Ignored is the number of input messages that changed nothing: the
	// sum of the four below.
	Ignored          uint64
	IgnoredDuplicate uint64 // a second copy of a vote or ack already counted
	IgnoredLate      uint64 // a vote after the transaction was decided
	IgnoredUnknown   uint64 // an ack, or a non-YES vote, for an unknown transaction
	IgnoredInvalid   uint64 // a message that cannot be right (not a branch, wrong state, bad type)
}

// coordState is where one transaction is at the coordinator:
//
//	voting      prepares sent, collecting votes. Nothing logged.
//	deciding    every vote yes or read-only; RecCommit appended but not
//	            durable. Decisions and the reply are held back.
//	delivering  RecCommit durable; client told; commit decisions
//	            redelivered until every YES voter acks.
//	ending      every ack in; RecEnd appended, not yet durable.
//	committed   finished, committed. Remembered (a finishedTxn in
//	            Shard.done) for RememberTicks; never the state of a coordTxn.
//	aborting    staged only: a NO (or a prevention) arrived; RecAbort
//	            appended, not durable. Nobody is told yet.
//	aborted     finished, aborted (logged only when staged). Remembered.
//	unknown     finished, a one-phase transaction whose participant never
//	            answered. Remembered.
type coordState uint8

const (
	coordVoting coordState = iota + 1
	coordDeciding
	coordDelivering
	coordEnding
	coordCommitted
	coordAborted
	coordUnknown
	coordAborting
)

type coordBranch struct {
	name  string
	vote  protocol.Vote // zero until the vote arrives
	acked bool
}

// coordTxn is one transaction at the coordinator. Structs are reused
// through the outbox; its generation (txnLife) tells queued timers and
// durability waits that they are stale.
type coordTxn struct {
	id  protocol.TxnID
	tag uint64
	txnLife[coordState]
	replied  bool // the client has its answer (always true when restored)
	n        int  // branches in use
	votes    int
	unacked  int
	branches [protocol.MaxBranches]coordBranch
	// commitIndex is the index of this transaction's RecCommit, zero if
	// none; LowWater is the smallest of those still open.
	commitIndex uint64
	// began and decided are the shard's ticks at the begin (at the
	// restore, for a restored commit) and at the commit decision's
	// durability: the ages admin reports show.
	began, decided int64
	yes            []string // YES voters: RecCommit.Participants (reused)
	workBuf        []byte   // copies of the branches' work for the prepares (reused)

	// Staged decisions (docs/protocol.md "Staged commits"). staged: a
	// RecStaged was appended for t, at stagedIndex; from then on t is
	// never aborted on the shard's own (no voluntary abort): a timeout
	// or a restart starts resolving — MsgResolve to every branch without
	// a vote, again with backoff — and only a NO (or a prevention)
	// aborts it, through a durable RecAbort. names are the branches'
	// names, RecStaged.Participants (reused; not t.yes, which a decision
	// in the same batch rewrites while the record may still be pending).
	staged, resolving bool
	stagedIndex       uint64
	// stagedLazy: the RecStaged was appended lazily (stage), so the
	// RecCommit of an implicit commit must be forced to take it along.
	stagedLazy bool
	names      []string
	// abortCause and abortWho are the reply of an abort waiting for its
	// RecAbort (aborting).
	abortCause protocol.Cause
	abortWho   string
	// undecided: staged, and no decision record (RecCommit, RecAbort, or
	// for one whose every vote was read-only RecEnd) durable yet.
	undecided bool
	// restored: restored from a RecStaged; its client is gone, and its
	// decision, once durable, is told to nobody in particular — a Reply
	// with Tag 0 — for whoever keeps outcomes (the server's index).
	restored bool
}

// recycleCoordTxns readies retired structs for reuse: zero but for the
// generation (changed again) and the buffers they keep.
func recycleCoordTxns(ts []*coordTxn) {
	for _, t := range ts {
		clear(t.yes)
		clear(t.names)
		*t = coordTxn{txnLife: txnLife[coordState]{gen: t.gen + 1}, yes: t.yes[:0], workBuf: t.workBuf[:0], names: t.names[:0]}
	}
}

func (t *coordTxn) branch(name string) int {
	for i := range t.n {
		if t.branches[i].name == name {
			return i
		}
	}
	return -1
}

// finishedTxn is what a shard remembers of a finished transaction: enough
// to answer a late vote, ack or inquiry and to refuse a duplicate begin,
// with no pointers (see recent). Branches are known by a 32-bit hash of
// their names: two names of one transaction that collide could only
// confuse the answer to a message from a participant that is not a
// branch, which no correct participant sends.
type finishedTxn struct {
	state coordState // coordCommitted, coordAborted or coordUnknown
	n     uint8
	votes [protocol.MaxBranches]protocol.Vote
	names [protocol.MaxBranches]uint32
}

func (f *finishedTxn) branch(name string) int {
	h := nameHash(name)
	for i := range int(f.n) {
		if f.names[i] == h {
			return i
		}
	}
	return -1
}

// nameHash is 32-bit FNV-1a.
func nameHash(name string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(name); i++ {
		h ^= uint32(name[i])
		h *= 16777619
	}
	return h
}

// Shard is the coordinator machine for the transactions routed to one
// shard (see ShardFor). It does no I/O: feed it with Step, Tick and
// Durable, drain it with Ready. It is not safe for concurrent use; one
// goroutine owns it.
type Shard struct {
	// outbox holds the transactions in flight (voting to ending; finished
	// ones move to done) and the output: the commit decisions and replies
	// wait there for RecCommit to be durable.
	outbox[coordTxn]

	cfg ShardConfig
	now int64 // ticks since creation

	done recent[finishedTxn]

	restored []*coordTxn // restored commits, in log order, until start

	open      fifo[wait[coordTxn]] // RecCommit and RecStaged indexes in order, for LowWater
	prepareT  fifo[timer[coordTxn]]
	redeliver retries[coordTxn, *coordTxn]
	// stagedW are the RecStaged records not yet durable, in index order:
	// a staged transaction whose every vote is YES tells its client
	// "committed" when its RecStaged is durable. An entry is stale when
	// its transaction's stagedIndex is no longer the entry's.
	stagedW fifo[wait[coordTxn]]
	resolve retries[coordTxn, *coordTxn]

	stats ShardStats
}

// NewShard returns an empty shard. Zero config fields take their defaults;
// a negative one panics.
func NewShard(cfg ShardConfig) *Shard {
	cfg = cfg.withDefaults()
	return &Shard{
		outbox:    newOutbox[coordTxn](),
		cfg:       cfg,
		done:      newRecent[finishedTxn](cfg.RememberTicks),
		redeliver: retries[coordTxn, *coordTxn]{first: cfg.RedeliverMinTicks, most: cfg.RedeliverMaxTicks},
		resolve:   retries[coordTxn, *coordTxn]{first: cfg.RedeliverMinTicks, most: cfg.RedeliverMaxTicks},
	}
}

// Restore replays one record read back from the log. Call it for every
// record, in log order, before any other input; each takes the next index
// and counts as durable. It returns an error (wrapping ErrBadRecord) for a
// record no coordinator writes or a second RecCommit for one transaction:
// that log is not this shard's, and the shard must not be used.
func (s *Shard) Restore(r Record) error {
	idx := s.restoreRecord("Shard")
	switch r.Type {
	case RecStaged:
		return s.restoreStaged(r, idx)
	case RecAbort:
		t := s.txns.get(r.Txn)
		if t == nil {
			// Its RecStaged was below LowWater and is gone (as RecEnd's
			// commit): it ended. Presumed abort answers for it.
			return nil
		}
		if !t.staged || t.state != coordVoting {
			return fmt.Errorf("%w: abort record for %v, which is %v", ErrBadRecord, r.Txn, t.state)
		}
		s.decidedDurably(t)
		s.becomeFinished(t, coordAborted)
	case RecCommit:
		if t := s.txns.get(r.Txn); t != nil && t.staged && t.state == coordVoting {
			return s.restoreStagedCommit(t, r, idx)
		}
		if s.txns.get(r.Txn) != nil {
			return fmt.Errorf("%w: second commit record for %v", ErrBadRecord, r.Txn)
		}
		// A commit record for a transaction that ended before it in the
		// log: its id was used again once this shard had forgotten the
		// first use (a restart, or no id window). The log is right; the
		// new one replaces the old.
		if len(r.Participants) == 0 || len(r.Participants) > protocol.MaxBranches {
			return fmt.Errorf("%w: commit record for %v with %d participants", ErrBadRecord, r.Txn, len(r.Participants))
		}
		for i, p := range r.Participants {
			if slices.Index(r.Participants[:i], p) >= 0 {
				return fmt.Errorf("%w: commit record for %v names %q twice", ErrBadRecord, r.Txn, p)
			}
		}
		s.done.remove(r.Txn)
		t := s.alloc(r.Txn)
		t.replied = true // the client is gone with the old process
		t.n = len(r.Participants)
		for i, p := range r.Participants {
			t.branches[i] = coordBranch{name: p, vote: protocol.VoteYes}
		}
		t.yes = append(t.yes, r.Participants...)
		t.votes, t.unacked = t.n, t.n
		t.commitIndex = idx
		t.began, t.decided = s.now, s.now
		s.open.push(wait[coordTxn]{index: idx, t: t})
		s.stats.Undelivered++
		// Straight to delivering: the record is durable. The decisions go
		// out when the first real input arrives (start).
		t.become(t.id, coordDelivering, t.state == 0)
		s.restored = append(s.restored, t)
	case RecEnd:
		t := s.txns.get(r.Txn)
		if t != nil && t.staged && t.state == coordVoting {
			// A staged transaction whose every vote was read-only: its
			// RecEnd is its decision (becomeEndingReadOnly).
			s.decidedDurably(t)
			s.becomeFinished(t, coordCommitted)
			return nil
		}
		if t == nil || t.state != coordDelivering {
			// Its RecCommit was below LowWater and is gone: nothing to do.
			return nil
		}
		for i := range t.n {
			t.branches[i].acked = true
		}
		t.unacked = 0
		s.stats.Undelivered--
		s.becomeFinished(t, coordCommitted)
	default:
		return fmt.Errorf("%w: a shard cannot restore a %v record", ErrBadRecord, r.Type)
	}
	return nil
}

// restoreStaged restores a RecStaged: a staged transaction without a
// decision yet (a later record of it may follow), to be resolved once the
// restore phase ends (start). Its client is gone with the old process.
func (s *Shard) restoreStaged(r Record, idx uint64) error {
	if s.txns.get(r.Txn) != nil {
		return fmt.Errorf("%w: staged record for %v, which is in the log already", ErrBadRecord, r.Txn)
	}
	if len(r.Participants) < 2 || len(r.Participants) > protocol.MaxBranches {
		return fmt.Errorf("%w: staged record for %v with %d participants", ErrBadRecord, r.Txn, len(r.Participants))
	}
	for i, p := range r.Participants {
		if slices.Index(r.Participants[:i], p) >= 0 {
			return fmt.Errorf("%w: staged record for %v names %q twice", ErrBadRecord, r.Txn, p)
		}
	}
	s.done.remove(r.Txn) // an earlier use of the id, forgotten (as for RecCommit)
	t := s.alloc(r.Txn)
	t.replied = true
	t.n = len(r.Participants)
	for i, p := range r.Participants {
		t.branches[i] = coordBranch{name: p}
	}
	t.names = append(t.names, r.Participants...)
	t.staged, t.resolving, t.stagedIndex = true, true, idx
	t.began = s.now
	t.undecided = true
	t.restored = true
	s.stats.Undecided++
	s.open.push(wait[coordTxn]{index: idx, t: t})
	t.become(t.id, coordVoting, t.state == 0)
	s.restored = append(s.restored, t)
	return nil
}

// restoreStagedCommit restores the RecCommit of a staged transaction t,
// restored voting: its decision. The YES voters it names go on to hear
// it.
func (s *Shard) restoreStagedCommit(t *coordTxn, r Record, idx uint64) error {
	for _, p := range r.Participants {
		if t.branch(p) < 0 {
			return fmt.Errorf("%w: commit record for %v names %q, not in its staged record", ErrBadRecord, r.Txn, p)
		}
	}
	s.decidedDurably(t)
	t.n = len(r.Participants)
	for i, p := range r.Participants {
		t.branches[i] = coordBranch{name: p, vote: protocol.VoteYes}
	}
	t.yes = append(t.yes[:0], r.Participants...)
	t.votes, t.unacked = t.n, t.n
	t.resolving = false
	t.commitIndex = idx
	t.decided = s.now
	s.open.push(wait[coordTxn]{index: idx, t: t})
	s.stats.Undelivered++
	t.become(t.id, coordDelivering, t.state == coordVoting)
	return nil
}

// RestoreAborted remembers, in the restore phase, a transaction that an
// earlier coordinator aborted without a record (presumed abort writes
// none) but told someone about: a replicated coordinator's new leader
// learns those from the markers its predecessors replicated before any
// abort left them (docs/ha.md, "The id window of a reign"). It is
// remembered as aborted for RememberTicks, as one this shard aborted: a
// begin reusing its id is refused, an inquiry about it answered abort.
// Its branches are not known, so a late YES for it is ignored rather than
// answered; the voter's inquiry is. Call it before any other input; an id
// that a commit record restored is left alone (a commit record decides).
func (s *Shard) RestoreAborted(id protocol.TxnID) {
	if s.outbox.started {
		panic("engine: Shard.RestoreAborted after other input")
	}
	if s.txns.get(id) == nil && !s.done.has(id) {
		s.done.put(id, finishedTxn{state: coordAborted})
	}
}

// start ends the restore phase: every restored commit without an end is
// redelivered at once.
func (s *Shard) start() {
	if !s.outbox.start() {
		return
	}
	for _, t := range s.restored {
		switch t.state {
		case coordDelivering:
			s.sendCommits(t)
			s.stats.Redelivered += uint64(t.n)
			s.redeliver.start(s.now, t, t.gen)
		case coordVoting:
			// A staged transaction without a decision: the implicit
			// commit may hold without this shard knowing. Never abort it
			// on its own: resolve it.
			s.startResolving(t)
		}
	}
	s.restored = nil
}

// Step feeds one message to the shard: MsgBegin from a client, MsgVote,
// MsgAck or MsgInquire from a participant, MsgNotSent from its server. Byte slices in m are copied if
// kept. Anything unexpected is counted in Stats and otherwise ignored.
func (s *Shard) Step(m Message) {
	s.start()
	switch m.Type {
	case MsgBegin:
		s.begin(m)
	case MsgVote:
		s.vote(m)
	case MsgAck:
		s.ack(m)
	case MsgInquire:
		s.inquire(m)
	case MsgNotSent:
		s.notSent(m)
	default:
		s.stats.IgnoredInvalid++
	}
}

// checkBegin returns why a begin is invalid, or "".
func (s *Shard) checkBegin(m Message) string {
	switch {
	case m.Txn == protocol.TxnID{}:
		return "zero transaction id"
	case len(m.Branches) == 0:
		return "no branches"
	case len(m.Branches) > protocol.MaxBranches:
		return "too many branches"
	case s.txns.get(m.Txn) != nil || s.done.has(m.Txn):
		return "transaction id in use"
	}
	for i, b := range m.Branches {
		switch {
		case b.Participant == "":
			return "empty participant name"
		case len(b.Participant) > protocol.MaxNameLen:
			return "participant name too long"
		case len(b.Work) > protocol.MaxWorkLen:
			return "work too long"
		}
		for _, o := range m.Branches[:i] {
			if o.Participant == b.Participant {
				return "duplicate participant"
			}
		}
	}
	return ""
}

// overloadedDetail is the Detail of a begin rejected with CauseOverloaded.
const overloadedDetail = "the coordinator holds as many transactions as it may (in flight and remembered); nothing was started, retry later"

// checkIDTime returns why a begin's id cannot be checked for reuse, or 0.
//
// The shard refuses a begin whose id it has in flight or remembers
// (checkBegin), but it forgets a finished transaction after RememberTicks,
// and a restarted shard knows only what its log kept. A reused id it has
// forgotten would start a second transaction under the first one's id,
// which participants that still remember the first refuse or, worse,
// answer as a duplicate (see Participant.prepareAgain). So it accepts only
// ids whose UUIDv7 time shows that, had the id been used before, the
// shard would still remember it: an id whose time is ts, stamped U, is
// accepted when
//
//	-MaxIDAheadMs ≤ U - ts ≤ rememberedMs - MaxIDAheadMs  and  ts ≥ StartUnixMs
//
// An earlier use was stamped U1 ≥ ts - MaxIDAheadMs and finished after
// that, so U - U1 ≤ rememberedMs: it is still remembered. And an id older
// than this shard's start may have been used before a restart and
// forgotten: refused. The one gap is a client whose clock runs ahead of
// the coordinator's by more than a restart takes: its id used just before
// a crash can look younger than the restart. The participants refuse such
// a reuse (Participant.prepareAgain) unless a vote of theirs for the
// first use was still on its way when it began (docs/protocol.md).
func (s *Shard) checkIDTime(m Message) (protocol.Cause, string) {
	if m.UnixMs == 0 {
		return 0, "" // no wall time: the engine's own tests
	}
	if m.Txn.Version() != 7 || m.Txn.Variant() != uuid.RFC4122 {
		return protocol.CauseInvalid, "transaction id is not a UUIDv7: its age, and so whether it may be a reused id, cannot be checked"
	}
	ts := int64(binary.BigEndian.Uint64(m.Txn[:8]) >> 16) // the first 48 bits: Unix ms
	age := m.UnixMs - ts
	ahead := int64(s.cfg.MaxIDAheadMs)
	if age < -ahead {
		return protocol.CauseStaleID, fmt.Sprintf("transaction id is %d ms ahead of the coordinator's clock, more than the %d ms allowed", -age, ahead)
	}
	if ts < s.cfg.StartUnixMs {
		return protocol.CauseStaleID, fmt.Sprintf("transaction id is %d ms older than this coordinator's start: it may have been used before a restart and forgotten", s.cfg.StartUnixMs-ts)
	}
	window := s.cfg.rememberedMs() - ahead
	if age > window {
		return protocol.CauseStaleID, fmt.Sprintf("transaction id is %d ms old; the coordinator checks ids at most %d ms old for reuse", age, window)
	}
	return 0, ""
}

func (s *Shard) begin(m Message) {
	cause, detail := protocol.CauseInvalid, s.checkBegin(m)
	if detail == "" {
		cause, detail = s.checkIDTime(m)
	}
	if detail != "" {
		s.stats.Rejected++
		s.rd.Replies = append(s.rd.Replies, Reply{
			Txn: m.Txn, Tag: m.Tag, Outcome: protocol.OutcomeRejected, Cause: cause, Detail: detail,
		})
		return
	}
	// After checkBegin, so that a duplicate begin is still told its id is
	// in use rather than to retry.
	if s.txns.len()+s.done.len() >= s.cfg.MaxTxns {
		s.stats.Rejected++
		s.stats.Overloaded++
		s.rd.Replies = append(s.rd.Replies, Reply{
			Txn: m.Txn, Tag: m.Tag, Outcome: protocol.OutcomeRejected, Cause: protocol.CauseOverloaded, Detail: overloadedDetail,
		})
		return
	}
	t := s.alloc(m.Txn)
	t.tag = m.Tag
	t.n = len(m.Branches)
	for i, b := range m.Branches {
		t.branches[i] = coordBranch{name: b.Participant}
		t.workBuf = append(t.workBuf, b.Work...)
	}
	s.becomeVoting(t)
	if m.Staged && t.n > 1 {
		s.stage(t)
	}
	// The prepares carry slices of workBuf, taken after every append so
	// that none points into an array append abandoned.
	off := 0
	for _, b := range m.Branches {
		w := t.workBuf[off : off+len(b.Work) : off+len(b.Work)]
		off += len(b.Work)
		s.rd.Messages = append(s.rd.Messages, Message{
			Type: MsgPrepare, Txn: t.id, To: b.Participant, Work: w, OnePhase: t.n == 1, Staged: t.staged,
		})
	}
}

func (s *Shard) vote(m Message) {
	t := s.txns.get(m.Txn)
	if t == nil {
		if f, ok := s.done.get(m.Txn); ok {
			s.voteFinished(m, &f)
			return
		}
		if m.Vote == protocol.VoteYes {
			// Forgotten, or lost with a crash before any decision: a
			// prepared participant must not wait for ever.
			s.presumeAbort(m.Txn, m.From)
		} else {
			s.stats.IgnoredUnknown++
		}
		return
	}
	i := t.branch(m.From)
	if i < 0 || m.Vote < protocol.VoteYes || m.Vote > protocol.VoteReadOnly {
		s.stats.IgnoredInvalid++
		return
	}
	b := &t.branches[i]
	if t.state != coordVoting {
		if b.vote != 0 {
			s.stats.IgnoredDuplicate++
		} else {
			s.stats.IgnoredLate++
		}
		return
	}
	if b.vote != 0 {
		s.stats.IgnoredDuplicate++
		return
	}
	b.vote = m.Vote
	t.votes++
	switch {
	case t.staged:
		switch {
		case m.Vote == protocol.VoteNo:
			// A NO of a staged transaction is durable at its participant
			// (RecPrevented, or RecAborted after its decision): T can no
			// longer commit. After a resolution began, the NO is most
			// likely the prevention of a participant that never voted.
			cause := protocol.CauseVotedNo
			if t.resolving {
				cause = protocol.CauseTimeout
			}
			s.becomeAborting(t, cause, b.name)
		case t.votes == t.n:
			s.decide(t)
		}
	case t.n == 1:
		// One-phase: the vote is the outcome.
		if m.Vote == protocol.VoteNo {
			s.becomeAborted(t, protocol.CauseVotedNo, b.name)
		} else {
			s.reply(t, protocol.OutcomeCommitted, 0, "")
			s.becomeFinished(t, coordCommitted)
		}
	case m.Vote == protocol.VoteNo:
		s.becomeAborted(t, protocol.CauseVotedNo, b.name)
	case t.votes == t.n:
		s.decide(t)
	}
}

// voteFinished handles a vote for a finished transaction.
func (s *Shard) voteFinished(m Message, f *finishedTxn) {
	i := f.branch(m.From)
	if i < 0 || m.Vote < protocol.VoteYes || m.Vote > protocol.VoteReadOnly {
		s.stats.IgnoredInvalid++
		return
	}
	if f.votes[i] != 0 {
		s.stats.IgnoredDuplicate++
	} else {
		s.stats.IgnoredLate++
	}
	if f.state == coordAborted && m.Vote == protocol.VoteYes {
		// A late YES holds locks: tell it at once rather than make it
		// wait to inquire.
		s.sendDecision(m.Txn, m.From, protocol.DecisionAbort)
	}
}

// notSent: the prepare to m.From was dropped before it left the process.
// That participant cannot have prepared, so aborting now is safe — even
// for a one-phase transaction, which otherwise could only be answered
// Unknown after the prepare timeout — and the client need not wait for
// the timeout to hear it. A staged transaction is not aborted on the
// shard's own even so (the model has no such rule): it is resolved at
// once, as on a prepare timeout, which the prevention of m.From — it
// never had the prepare — turns into an abort.
func (s *Shard) notSent(m Message) {
	t := s.txns.get(m.Txn)
	if t == nil || t.state != coordVoting {
		s.stats.IgnoredLate++
		return
	}
	i := t.branch(m.From)
	if i < 0 || t.branches[i].vote != 0 {
		s.stats.IgnoredInvalid++
		return
	}
	s.stats.NotSent++
	if t.staged {
		if !t.resolving {
			s.startResolving(t)
		}
		return
	}
	s.becomeAborted(t, protocol.CauseUnreachable, m.From)
}

// decide runs when every vote is yes or read-only.
func (s *Shard) decide(t *coordTxn) {
	t.yes = t.yes[:0]
	for i := range t.n {
		if t.branches[i].vote == protocol.VoteYes {
			t.yes = append(t.yes, t.branches[i].name)
		}
	}
	if len(t.yes) == 0 && t.staged {
		s.becomeEndingReadOnly(t)
		return
	}
	if len(t.yes) == 0 {
		// All read-only: nothing to commit anywhere, nothing to log.
		s.reply(t, protocol.OutcomeCommitted, 0, "")
		s.becomeFinished(t, coordCommitted)
		return
	}
	s.becomeDeciding(t)
}

func (s *Shard) ack(m Message) {
	t := s.txns.get(m.Txn)
	if t == nil {
		if f, ok := s.done.get(m.Txn); ok {
			i := f.branch(m.From)
			switch {
			case i < 0 || f.votes[i] != protocol.VoteYes || f.state != coordCommitted:
				s.stats.IgnoredInvalid++
			default:
				s.stats.IgnoredDuplicate++
			}
			return
		}
		s.stats.IgnoredUnknown++
		return
	}
	i := t.branch(m.From)
	if i < 0 || t.branches[i].vote != protocol.VoteYes {
		s.stats.IgnoredInvalid++
		return
	}
	b := &t.branches[i]
	switch t.state {
	case coordDelivering:
		if b.acked {
			s.stats.IgnoredDuplicate++
			return
		}
		b.acked = true
		t.unacked--
		if t.unacked == 0 {
			s.becomeEnding(t)
		}
	case coordEnding:
		s.stats.IgnoredDuplicate++
	default:
		// No commit decision has left this shard yet.
		s.stats.IgnoredInvalid++
	}
}

func (s *Shard) inquire(m Message) {
	t := s.txns.get(m.Txn)
	if t == nil {
		if f, ok := s.done.get(m.Txn); ok {
			s.inquireFinished(m, &f)
			return
		}
		s.presumeAbort(m.Txn, m.From)
		return
	}
	i := t.branch(m.From)
	if i < 0 {
		// Not a branch of the transaction this shard runs under the id:
		// the asker prepared an earlier one under the same id, which this
		// shard forgot before the id was begun again (it accepts a begin
		// only for an id it does not know). That one never committed — a
		// commit is remembered until every YES voter acks — so abort it
		// now rather than leave it holding locks until this one is
		// forgotten too.
		s.presumeAbort(m.Txn, m.From)
		return
	}
	switch t.state {
	case coordVoting, coordDeciding, coordAborting:
		// Undecided, or the decision's record is not durable yet:
		// presuming abort now could contradict the coming commit. The
		// decision will be sent to this participant when it is made. A
		// staged transaction is held from the step that appends its
		// RecStaged until it ends, so "voting" covers a RecStaged not yet
		// durable too: answering abort because it is not durable would
		// be wrong once it is (BUG_INQUIRY_LATE_STAGED).
		if planted(s, bugInquiryLateStaged) && t.staged && s.durable < t.stagedIndex {
			s.sendDecision(t.id, m.From, protocol.DecisionAbort)
			return
		}
		s.stats.Deferred++
	case coordDelivering, coordEnding:
		if t.branches[i].vote != protocol.VoteYes {
			s.stats.IgnoredInvalid++
			return
		}
		s.sendDecision(t.id, m.From, protocol.DecisionCommit)
	default:
		s.stats.IgnoredInvalid++
	}
}

// inquireFinished answers an inquiry about a finished transaction.
func (s *Shard) inquireFinished(m Message, f *finishedTxn) {
	i := f.branch(m.From)
	switch {
	case i < 0:
		// An earlier transaction under the same id, as in inquire.
		s.presumeAbort(m.Txn, m.From)
	case f.state == coordCommitted && f.votes[i] == protocol.VoteYes:
		s.sendDecision(m.Txn, m.From, protocol.DecisionCommit)
	case f.state == coordAborted:
		s.sendDecision(m.Txn, m.From, protocol.DecisionAbort)
	case f.state == coordUnknown:
		// A one-phase transaction whose participant did not answer in
		// time: the client was told unknown, so either outcome keeps
		// every promise. A participant that asks has not committed it
		// (it would not be in doubt), so abort it now rather than leave
		// it holding locks until this shard forgets and presumes abort.
		s.sendDecision(m.Txn, m.From, protocol.DecisionAbort)
	default:
		s.stats.IgnoredInvalid++
	}
}

// Tick advances the shard's clock by one tick: prepare timeouts,
// redeliveries and forgetting.
func (s *Shard) Tick() {
	s.start()
	s.now++
	for s.prepareT.len() > 0 && s.prepareT.front().at <= s.now {
		e := *s.prepareT.front()
		s.prepareT.pop()
		if e.t.gen == e.gen {
			s.timeout(e.t)
		}
	}
	for t := s.redeliver.due(s.now); t != nil; t = s.redeliver.due(s.now) {
		if t.state != coordDelivering {
			panic(fmt.Sprintf("engine: redelivery timer for %v in state %v", t.id, t.state))
		}
		s.sendCommits(t)
		s.stats.Redelivered += uint64(t.unacked)
	}
	for t := s.resolve.due(s.now); t != nil; t = s.resolve.due(s.now) {
		if t.state != coordVoting || !t.resolving {
			panic(fmt.Sprintf("engine: resolution timer for %v in state %v", t.id, t.state))
		}
		s.sendResolves(t)
	}
	s.done.tick(s.now)
}

func (s *Shard) timeout(t *coordTxn) {
	if t.state != coordVoting {
		panic(fmt.Sprintf("engine: prepare timeout for %v in state %v", t.id, t.state))
	}
	if t.staged {
		if t.resolving {
			return // a prepare not sent started it already
		}
		if planted(s, bugStagedTimeoutAbort) {
			for i := range t.n {
				if t.branches[i].vote == 0 {
					s.becomeAborting(t, protocol.CauseTimeout, t.branches[i].name)
					return
				}
			}
		}
		// No voluntary abort: a YES may be on its way, and with it the
		// implicit commit.
		s.startResolving(t)
		return
	}
	if t.n == 1 {
		// The participant may have committed on its own: never guess.
		s.reply(t, protocol.OutcomeUnknown, 0, "")
		s.becomeFinished(t, coordUnknown)
		return
	}
	for i := range t.n {
		if t.branches[i].vote == 0 {
			s.becomeAborted(t, protocol.CauseTimeout, t.branches[i].name)
			return
		}
	}
	panic(fmt.Sprintf("engine: prepare timeout for %v with every vote in", t.id))
}

// Durable tells the shard that every record up to index is durable: the
// commit decisions and replies waiting on them go out.
func (s *Shard) Durable(index uint64) {
	s.start()
	if !s.markDurable(index) {
		return
	}
	for s.stagedW.len() > 0 && s.stagedW.front().index <= s.durable {
		e := *s.stagedW.front()
		s.stagedW.pop()
		if t := e.t; t.stagedIndex == e.index && t.state == coordDeciding && !t.replied && s.implicit(t) {
			// The implicit commit: RecStaged durable, every branch
			// durably prepared. RecCommit is still on its way.
			s.reply(t, protocol.OutcomeCommitted, 0, "")
		}
	}
	for e, ok := s.popDurable(); ok; e, ok = s.popDurable() {
		if e.t.gen != e.gen {
			panic(fmt.Sprintf("engine: transaction %v changed while its record %d was not durable", e.t.id, e.index))
		}
		switch e.t.state {
		case coordDeciding:
			s.becomeDelivering(e.t)
		case coordEnding:
			// Staged, every vote read-only: RecEnd was the decision
			// (the client may be gone with an earlier process).
			decision := e.t.undecided
			s.decidedDurably(e.t)
			if !e.t.replied {
				s.reply(e.t, protocol.OutcomeCommitted, 0, "")
			} else if e.t.restored && decision {
				s.replyNobody(e.t, protocol.OutcomeCommitted, 0, "")
			}
			s.becomeFinished(e.t, coordCommitted)
		case coordAborting:
			s.becomeAborted(e.t, 0, "")
		default:
			panic(fmt.Sprintf("engine: record %d durable for %v in state %v", e.index, e.t.id, e.t.state))
		}
	}
}

// --- transitions: each asserts where it comes from ---

func (s *Shard) becomeVoting(t *coordTxn) {
	t.become(t.id, coordVoting, t.state == 0)
	t.began = s.now
	s.stats.Begun++
	s.stats.InFlight++
	s.prepareT.push(timer[coordTxn]{at: s.now + int64(s.cfg.PrepareTimeoutTicks), t: t, gen: t.gen})
}

func (s *Shard) becomeDeciding(t *coordTxn) {
	t.become(t.id, coordDeciding, t.state == coordVoting)
	t.unacked = len(t.yes)
	s.stats.Undelivered++
	idx := s.appendRecord(Record{Type: RecCommit, Txn: t.id, Participants: t.yes})
	t.commitIndex = idx
	s.waits.push(wait[coordTxn]{index: idx, t: t, gen: t.gen}) // the reply and the decisions
	// Forced, unless the decision is implicit: then only phase two waits
	// for RecCommit, and it rides with the next batch (the next begin's
	// RecStaged, or LazyDelay) — one fsync per transaction at the
	// coordinator, not two. The participants hold their locks until
	// phase two: at most LazyDelay longer, and only at low load. But an
	// implicit commit whose RecStaged was appended lazily (stage) and is
	// not yet durable waits for it: RecCommit is forced then, and takes
	// the RecStaged before it along — at the last vote, when classic
	// forces its RecCommit too. (One forced at begin is on its way
	// already: a second sync right behind it would buy nothing.)
	if !s.implicit(t) || t.stagedLazy && s.durable < t.stagedIndex {
		s.forced = true
	}
	s.open.push(wait[coordTxn]{index: idx, t: t})
	if planted(s, bugDecideBeforeDurable) {
		s.reply(t, protocol.OutcomeCommitted, 0, "")
		s.sendCommits(t)
		return
	}
	if t.staged {
		if planted(s, bugCommitMsgEarly) {
			s.sendCommits(t)
		}
		// The implicit commit holds once RecStaged is durable: tell the
		// client then (now, if it is), not when RecCommit is — which
		// phase two still waits for.
		if !t.replied && s.implicit(t) && (s.durable >= t.stagedIndex || planted(s, bugStagedReplyEarly)) {
			s.reply(t, protocol.OutcomeCommitted, 0, "")
		}
	}
}

// implicit reports whether the decision of t, deciding, is implicit:
// staged, and every branch voted YES, each after its prepared record was
// durable. A read-only branch holds nothing and a resolution would
// prevent it, so a read-only vote leaves only the explicit RecCommit to
// decide (BUG_STAGED_RO).
func (s *Shard) implicit(t *coordTxn) bool {
	if !t.staged {
		return false
	}
	if planted(s, bugStagedRO) {
		return len(t.yes) > 0
	}
	return len(t.yes) == t.n
}

// stage makes t, just begun, staged: RecStaged is appended in the same
// step as the prepares, which do not wait for it.
func (s *Shard) stage(t *coordTxn) {
	t.staged = true
	for i := range t.n {
		t.names = append(t.names, t.branches[i].name)
	}
	idx := s.appendRecord(Record{Type: RecStaged, Txn: t.id, Participants: t.names})
	t.stagedIndex = idx
	// Forced only when no other transaction of this shard waits for its
	// reply: then nothing else will start a batch soon, and this fsync
	// runs in parallel with the participants' prepares — the one-fsync
	// latency at low load. Otherwise forcing it would start a sync per
	// few begins, as they arrive one by one (the 100-caller profile:
	// 16 % of the coordinator's CPU in fdatasync against 7 % classic).
	// It rides lazily instead, until the last vote forces the RecCommit
	// appended after it (becomeDeciding), as classic does: the implicit
	// commit needs it no sooner.
	if s.stats.InFlight == 1 {
		s.forced = true
	} else {
		t.stagedLazy = true
	}
	s.stagedW.push(wait[coordTxn]{index: idx, t: t})
	s.open.push(wait[coordTxn]{index: idx, t: t})
	s.stats.Staged++
	t.undecided = true
	s.stats.Undecided++
}

// startResolving starts the resolution of t, staged and voting: every
// branch whose vote is missing is asked to report it prepared or to
// prevent it, again with backoff until it answers. Its answers decide
// (vote).
func (s *Shard) startResolving(t *coordTxn) {
	t.resolving = true
	s.stats.Resolutions++
	s.sendResolves(t)
	s.resolve.start(s.now, t, t.gen)
}

func (s *Shard) sendResolves(t *coordTxn) {
	for i := range t.n {
		if b := &t.branches[i]; b.vote == 0 {
			s.stats.Resolves++
			s.rd.Messages = append(s.rd.Messages, Message{Type: MsgResolve, Txn: t.id, To: b.name})
		}
	}
}

// becomeEndingReadOnly: a staged t, voting, whose every vote was
// read-only. The decision must be explicit (a resolution would prevent
// every branch: BUG_STAGED_RO), and with nobody to deliver it to, the
// record that decides is the one that ends it: RecEnd, forced, the reply
// waiting for it. (The model writes RecCommit naming nobody, then RecEnd;
// one record carries both.)
func (s *Shard) becomeEndingReadOnly(t *coordTxn) {
	t.become(t.id, coordEnding, t.state == coordVoting && t.staged && len(t.yes) == 0)
	idx := s.appendRecord(Record{Type: RecEnd, Txn: t.id})
	s.waits.push(wait[coordTxn]{index: idx, t: t, gen: t.gen}) // the reply
	s.forced = true
}

// decidedDurably notes that the decision of t, staged, is durable.
func (s *Shard) decidedDurably(t *coordTxn) {
	if t.undecided {
		t.undecided = false
		s.stats.Undecided--
	}
}

// becomeAborting: a staged t, voting, must abort (a NO, a prevention).
// The abort is logged and told to nobody before RecAbort is durable: an
// abort that a crash could lose would be resolved again, and a
// resolution can come out commit.
func (s *Shard) becomeAborting(t *coordTxn, cause protocol.Cause, who string) {
	t.become(t.id, coordAborting, t.state == coordVoting && t.staged)
	t.abortCause, t.abortWho = cause, who
	idx := s.appendRecord(Record{Type: RecAbort, Txn: t.id})
	s.waits.push(wait[coordTxn]{index: idx, t: t, gen: t.gen}) // the reply and the aborts
	s.forced = true
}

func (s *Shard) becomeDelivering(t *coordTxn) {
	t.become(t.id, coordDelivering, t.state == coordDeciding)
	t.decided = s.now
	s.decidedDurably(t)
	if !t.replied {
		s.reply(t, protocol.OutcomeCommitted, 0, "")
		if !t.staged {
			s.sendCommits(t)
		}
	} else if t.restored {
		s.replyNobody(t, protocol.OutcomeCommitted, 0, "")
	}
	if t.staged && !planted(s, bugCommitMsgEarly) {
		// The client may have been told at the implicit commit; phase
		// two waits for RecCommit all the same.
		s.sendCommits(t)
	}
	s.redeliver.start(s.now, t, t.gen)
}

func (s *Shard) becomeEnding(t *coordTxn) {
	t.become(t.id, coordEnding, t.state == coordDelivering && t.unacked == 0)
	s.stats.Undelivered--
	idx := s.appendRecord(Record{Type: RecEnd, Txn: t.id})
	s.waits.push(wait[coordTxn]{index: idx, t: t, gen: t.gen}) // only the end and the low water
}

func (s *Shard) becomeAborted(t *coordTxn, cause protocol.Cause, who string) {
	switch {
	case t.state == coordVoting && !t.staged:
	case t.state == coordAborting:
		cause, who = t.abortCause, t.abortWho // RecAbort is durable
		s.decidedDurably(t)
		if t.restored {
			s.replyNobody(t, protocol.OutcomeAborted, cause, who)
		}
	default:
		panic(fmt.Sprintf("engine: %v: %v → aborted", t.id, t.state))
	}
	if !t.replied {
		s.reply(t, protocol.OutcomeAborted, cause, who)
	}
	// Best effort, once: whoever holds locks and misses this will inquire,
	// or vote late and be told.
	for i := range t.n {
		if b := &t.branches[i]; b.vote == 0 || b.vote == protocol.VoteYes {
			s.sendDecision(t.id, b.name, protocol.DecisionAbort)
		}
	}
	s.becomeFinished(t, coordAborted)
}

// becomeFinished moves t to a final state: what late messages need of it
// goes to done, and t itself is released. t must not be used after.
func (s *Shard) becomeFinished(t *coordTxn, st coordState) {
	switch {
	case st == coordCommitted && (t.state == coordVoting || t.state == coordEnding || t.state == coordDelivering && t.unacked == 0):
	case (st == coordAborted || st == coordUnknown) && t.state == coordVoting:
	case st == coordAborted && t.state == coordAborting:
	default:
		panic(fmt.Sprintf("engine: %v: %v → %v", t.id, t.state, st))
	}
	if !t.replied {
		panic(fmt.Sprintf("engine: %v finished (%v) without a reply", t.id, st))
	}
	f := finishedTxn{state: st, n: uint8(t.n)}
	for i := range t.n {
		f.votes[i] = t.branches[i].vote
		f.names[i] = nameHash(t.branches[i].name)
	}
	s.done.put(t.id, f)
	t.state = st
	t.gen++ // its timers and waits go stale
	s.retire(t.id, t)
}

// --- output ---

func (s *Shard) reply(t *coordTxn, o protocol.Outcome, cause protocol.Cause, who string) {
	if t.replied {
		panic(fmt.Sprintf("engine: second reply for %v", t.id))
	}
	t.replied = true
	s.stats.InFlight--
	switch o {
	case protocol.OutcomeCommitted:
		s.stats.Committed++
	case protocol.OutcomeAborted:
		s.stats.Aborted++
	case protocol.OutcomeUnknown:
		s.stats.Unknown++
	}
	r := Reply{Txn: t.id, Tag: t.tag, Outcome: o, Cause: cause, Participant: who}
	if o == protocol.OutcomeCommitted {
		r.Participants = t.yes
	}
	s.rd.Replies = append(s.rd.Replies, r)
}

// replyNobody reports the durable decision of t, a staged transaction
// restored from the log and resolved, whose client went with the old
// process: a Reply with Tag 0, which no client is waiting for (the stats
// do not count it). The server keeps it in its outcome index: the client
// may have been told "committed" at the implicit commit, before a
// RecCommit the crash lost, and asks for the outcome by id.
func (s *Shard) replyNobody(t *coordTxn, o protocol.Outcome, cause protocol.Cause, who string) {
	r := Reply{Txn: t.id, Outcome: o, Cause: cause, Participant: who}
	if o == protocol.OutcomeCommitted {
		r.Participants = t.yes
	}
	s.rd.Replies = append(s.rd.Replies, r)
}

func (s *Shard) sendCommits(t *coordTxn) {
	for i := range t.n {
		if b := &t.branches[i]; b.vote == protocol.VoteYes && !b.acked {
			s.sendDecision(t.id, b.name, protocol.DecisionCommit)
		}
	}
}

func (s *Shard) sendDecision(id protocol.TxnID, to string, d protocol.Decision) {
	s.rd.Messages = append(s.rd.Messages, Message{Type: MsgDecision, Txn: id, To: to, Decision: d})
}

func (s *Shard) presumeAbort(id protocol.TxnID, to string) {
	s.stats.PresumedAborts++
	if s.cfg.RememberPresumedAborts && s.txns.get(id) == nil && !s.done.has(id) {
		s.done.put(id, finishedTxn{state: coordAborted})
	}
	s.sendDecision(id, to, protocol.DecisionAbort)
}

func (s *Shard) lowWater() uint64 {
	for s.open.len() > 0 {
		e := s.open.front()
		// A finished transaction's coordTxn is committed until recycled
		// (commitIndex zeroed), and may serve another one after: the
		// state and the index tell.
		if (e.t.commitIndex == e.index || e.t.stagedIndex == e.index) && e.t.state != coordCommitted && e.t.state != coordAborted {
			return e.index
		}
		s.open.pop()
	}
	return s.nextIndex
}

// HasReady reports whether Ready has anything to hand out.
func (s *Shard) HasReady() bool {
	s.start()
	return s.hasReady(s.lowWater())
}

// Ready drains the pending output. Its slices stay valid until the next
// call into s.
func (s *Shard) Ready() Ready {
	s.start()
	recycleCoordTxns(s.reuse())
	return s.take(s.lowWater())
}

// Stats returns the shard's counters.
func (s *Shard) Stats() ShardStats {
	st := s.stats
	st.Remembered = s.done.len()
	st.Ignored = st.IgnoredDuplicate + st.IgnoredLate + st.IgnoredUnknown + st.IgnoredInvalid
	return st
}

func (s *Shard) alloc(id protocol.TxnID) *coordTxn {
	t := s.outbox.alloc(id)
	t.id = id
	return t
}

// ShardFor routes a transaction to one of n shards (FNV-1a of its id), so
// that every message about a transaction reaches the same shard.
func ShardFor(id protocol.TxnID, n int) int {
	if n <= 0 {
		panic(fmt.Sprintf("engine: ShardFor with %d shards", n))
	}
	h := uint64(14695981039346656037)
	for _, b := range id {
		h ^= uint64(b)
		h *= 1099511628211
	}
	return int(h % uint64(n))
}

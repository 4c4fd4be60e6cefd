package engine

import (
	"encoding/binary"
	"fmt"

	"github.com/commitd/commitd/protocol"
)

// Default ParticipantConfig values, used for zero fields.
const (
	DefaultInquireAfterTicks = 20
	DefaultInquireMaxTicks   = 200
)

// ParticipantConfig tunes a participant. Durations are in ticks; a zero
// field takes its default.
type ParticipantConfig struct {
	// Name is how the coordinator addresses this participant (1..MaxNameLen bytes).
	Name string
	// InquireAfterTicks is how long a YES-prepared transaction waits for its
	// decision before the first inquiry.
	InquireAfterTicks int
	// InquireMaxTicks caps the doubling inquiry backoff.
	InquireMaxTicks int
	// RememberTicks is how long a decided transaction is remembered, to
	// answer duplicate prepares and decisions (default 1000).
	RememberTicks int
	// CheckpointEvery is the number of decisions applied between
	// checkpoints; 0 means never (then the whole log stays needed).
	// Ignored with DurableResource.
	CheckpointEvery int
	// DurableResource says the resource keeps its prepared and committed
	// state durably itself (a database's PREPARE TRANSACTION and COMMIT
	// PREPARED) and finishes Commit and Abort on its own goroutines. The
	// machine then writes no records at all: a YES vote goes out as soon
	// as the resource has prepared, an ack (or a one-phase YES) when the
	// resource reports MsgResFinished; after a restart the transactions
	// in doubt come from the resource (MsgResInDoubt), not from a log.
	DurableResource bool
}

func (c ParticipantConfig) withDefaults() ParticipantConfig {
	if c.Name == "" || len(c.Name) > protocol.MaxNameLen {
		panic(fmt.Sprintf("engine: participant name %q", c.Name))
	}
	if c.InquireAfterTicks < 0 || c.InquireMaxTicks < 0 || c.RememberTicks < 0 || c.CheckpointEvery < 0 {
		panic(fmt.Sprintf("engine: negative value in %+v", c))
	}
	c.InquireAfterTicks, c.InquireMaxTicks = backoffRange(c.InquireAfterTicks, c.InquireMaxTicks,
		DefaultInquireAfterTicks, DefaultInquireMaxTicks)
	c.RememberTicks = orDefault(c.RememberTicks, DefaultRememberTicks)
	return c
}

// ParticipantStats counts what a participant did and what it ignored.
type ParticipantStats struct {
	Prepared   int // YES-prepared and not yet decided: holding the resource
	Remembered int // decided, kept for duplicates
	Voting     int // the resource's answer to Prepare is pending

	Committed   uint64 // commits applied (two- and one-phase)
	Aborted     uint64 // aborts applied to YES-prepared transactions
	VotedNo     uint64
	ReadOnly    uint64
	Inquiries   uint64 // inquiries sent
	Checkpoints uint64 // checkpoint records appended
	// AckedUnknown counts commit decisions for forgotten transactions,
	// acknowledged without doing anything (they were committed earlier).
	AckedUnknown uint64
	// SkippedCheckpoints counts checkpoints not written because the
	// snapshot was over MaxCheckpointLen.
	SkippedCheckpoints uint64
	// InDoubtFound counts prepared transactions a durable resource
	// reported that this machine did not know (after a restart, or a
	// prepare whose answer was lost): each inquires.
	InDoubtFound uint64
	// OrphansAborted counts prepared transactions a durable resource
	// reported for which this participant had voted no or that were
	// already aborted: each is rolled back.
	OrphansAborted uint64
	// ResourceFailures counts commits and aborts a durable resource could
	// not finish (MsgResFailed); each transaction goes back to prepared.
	ResourceFailures uint64
	// RefusedReuse counts prepares voted no because this participant
	// already had the transaction id with other work or as the other
	// kind (one- or two-phase), or had committed it two-phase: the id
	// was reused by a coordinator that had forgotten it (see prepare).
	RefusedReuse uint64
	// Prevented counts transactions this participant made durably
	// unpreparable (RecPrevented): a staged NO vote, or the answer to a
	// MsgResolve for a transaction not prepared here. RefusedPrevented
	// counts the prepares refused because of one.
	Prevented        uint64
	RefusedPrevented uint64
	// PreventFoundPrepared counts preventions a durable resource answered
	// with "prepared" (Preventer: the compare-and-swap found the
	// transaction prepared or committed there).
	PreventFoundPrepared uint64

	// Ignored is the number of input messages that changed nothing: the
	// sum of the three below.
	Ignored          uint64
	IgnoredDuplicate uint64 // a second copy of a prepare or decision already handled
	IgnoredUnknown   uint64 // an abort for an unknown transaction (remembered, in case its prepare follows)
	IgnoredInvalid   uint64 // cannot be right: misaddressed, contradicts what this participant did
}

// partState is where one transaction is at a participant.
type partState uint8

const (
	// partPreparing: voted yes in the resource; RecPrepared appended, not
	// durable. The YES vote is held back.
	partPreparing partState = iota + 1
	// partVoting: the resource answered VotePending; its answer comes as
	// a MsgResPrepared. Nothing is logged and nothing sent yet.
	partVoting
	// partAborting: durable resource only: the abort is started in the
	// resource (which still holds the transaction prepared); a
	// MsgResFinished ends it.
	partAborting
	// partPrepared: RecPrepared durable, YES sent; in doubt until the
	// decision arrives; inquires with backoff. Never aborts on its own.
	partPrepared
	// partCommitting: RecCommitted appended, not durable; the ack (or,
	// one-phase, the YES vote) is held back. Two-phase: the commit is
	// already applied and the resource released (early lock release, see
	// becomeCommitting). One-phase: the resource commit waits for
	// durability too. With a durable resource: the commit is started in
	// the resource; the ack waits for its MsgResFinished.
	partCommitting
	// partCommitted: committed; remembered for RememberTicks.
	partCommitted
	// partAborted: voted no or aborted; remembered.
	partAborted
	// partReadOnly: voted read-only, held nothing; remembered.
	partReadOnly
	// partPreventing: staged only: RecPrevented appended, not durable;
	// the NO (the answer to the prepare or to a MsgResolve) is held back.
	// Holds nothing.
	partPreventing
	// partPrevented: RecPrevented durable: this transaction never
	// prepares here; every prepare of it is answered NO. Remembered.
	partPrevented
)

// partTxn is one transaction at a participant; reused through
// the outbox, with a generation as coordTxn.
type partTxn struct {
	id protocol.TxnID
	txnLife[partState]
	onePhase bool
	// abortWanted: an abort decision arrived while voting; applied when
	// the resource answers.
	abortWanted bool
	// refused: a prepare that reused this id for other work was voted
	// no, so the coordinator now runs a new transaction under this id
	// and this one is dead there (it forgot it, so presumes abort): a
	// YES sent for this one from now on would count as a vote for the
	// new one. No YES (and no read-only) goes out for t any more; it
	// learns its abort by inquiry.
	refused bool
	// staged: the prepare said the transaction is staged, so its NO vote
	// must be a durable prevention (becomePreventing).
	staged bool
	heldAt int    // position in Participant.held while holding
	work   []byte // copy of the work, for checkpoints (reused)
	// since is the participant's tick when the transaction came into its
	// hands (the prepare, or the restore): the age admin reports show.
	since int64
}

// recyclePartTxns readies retired structs for reuse: zero but for the
// generation (changed again) and the work buffer.
func recyclePartTxns(ts []*partTxn) {
	for _, t := range ts {
		*t = partTxn{txnLife: txnLife[partState]{gen: t.gen + 1}, work: t.work[:0], heldAt: -1}
	}
}

// Participant is the machine for one named participant and its Resource.
// It does no I/O: feed it with Step, Tick and Durable, drain it with
// Ready. It is not safe for concurrent use; one goroutine owns it and the
// Resource.
type Participant struct {
	// outbox holds the transactions in hand (voting to committing;
	// decided ones move to done) and the output: YES votes wait there for
	// RecPrepared to be durable, acks and one-phase YES votes for
	// RecCommitted. A decided partTxn's work may be in the pending or last
	// Ready's records (RecPrepared, a one-phase RecCommitted): it is
	// reused only once that Ready is superseded.
	outbox[partTxn]

	cfg ParticipantConfig
	res Resource
	// mode keeps transactions durable: in the participant's log, or in
	// the resource (ParticipantConfig.DurableResource). Chosen once.
	mode partMode
	now  int64

	done recent[partDone]
	// held lists the transactions holding the resource, in a
	// deterministic order (swap-removal), for checkpoints and recovery.
	held []*partTxn

	lowWater uint64 // index of the latest durable checkpoint, or 1

	inquire retries[partTxn, *partTxn]

	decided  int // decisions applied since the last checkpoint
	ckptSize int // size of the last checkpoint's data
	// ckptBufs are the checkpoints' buffers, reused once no Ready the
	// caller may read refers to them.
	ckptBufs recordBufs

	stats ParticipantStats
}

// NewParticipant returns a participant with no transactions. It panics on
// an empty or over-long name or a negative duration.
func NewParticipant(cfg ParticipantConfig, res Resource) *Participant {
	cfg = cfg.withDefaults()
	var mode partMode = logMode{}
	if cfg.DurableResource {
		pv, _ := res.(Preventer)
		mode = resMode{preventer: pv}
		cfg.CheckpointEvery = 0 // the resource's state is not ours to snapshot
	}
	return &Participant{
		outbox:   newOutbox[partTxn](),
		mode:     mode,
		cfg:      cfg,
		done:     newRecent[partDone](cfg.RememberTicks),
		res:      res,
		lowWater: 1,
		inquire:  retries[partTxn, *partTxn]{first: cfg.InquireAfterTicks, most: cfg.InquireMaxTicks},
	}
}

// Checkpoint data:
//
//	u32 len, resource snapshot
//	u32 n, n × { txn [16], u8 kind (1 prepared, 2 committed), u16 len, work }
//
// "prepared" transactions are in doubt after a restore; "committed" ones
// had their RecCommitted appended (before the checkpoint) but not yet
// applied, so the restore applies them.
const (
	ckptPrepared  = 1
	ckptCommitted = 2
)

func (p *Participant) appendCheckpoint() {
	// A buffer no Ready the caller may still read refers to (ckptBufs):
	// the record's Data must stay valid until the caller drains Ready,
	// and one Ready may carry two checkpoints. The size hint avoids
	// regrowing a new one.
	b := p.checkpointData(p.ckptBufs.get(p.ckptSize))
	p.ckptSize = len(b)
	if len(b) > MaxCheckpointLen {
		p.ckptBufs.unused(b)
		p.stats.SkippedCheckpoints++
		return
	}
	p.ckptBufs.use(b)
	p.stats.Checkpoints++
	idx := p.appendRecord(Record{Type: RecCheckpoint, Data: b})
	p.waits.push(wait[partTxn]{index: idx}) // the low water
}

// checkpointData appends a checkpoint's data to b.
func (p *Participant) checkpointData(b []byte) []byte {
	start := len(b)
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = p.res.Snapshot(b)
	binary.LittleEndian.PutUint32(b[start:], uint32(len(b)-start-4))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(p.held)))
	for _, t := range p.held {
		b = append(b, t.id[:]...)
		kind := byte(ckptPrepared)
		if t.state == partCommitting {
			kind = ckptCommitted
		}
		b = append(b, kind)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(t.work)))
		b = append(b, t.work...)
	}
	return b
}

func (p *Participant) restoreCheckpoint(data []byte) error {
	bad := func(what string) error {
		return fmt.Errorf("%w: checkpoint: %s", ErrBadRecord, what)
	}
	if len(data) < 4 {
		return bad("truncated")
	}
	n := uint64(binary.LittleEndian.Uint32(data))
	data = data[4:]
	if n > uint64(len(data)) {
		return bad("snapshot truncated")
	}
	if err := p.res.Load(data[:n]); err != nil {
		return fmt.Errorf("%w: checkpoint: %w", ErrBadRecord, err)
	}
	data = data[n:]
	// Everything before the checkpoint is replaced.
	p.txns.clear()
	clear(p.held)
	p.held = p.held[:0]
	p.stats.Prepared = 0
	p.done.reset()
	p.inquire.reset()
	if len(data) < 4 {
		return bad("truncated")
	}
	count := binary.LittleEndian.Uint32(data)
	data = data[4:]
	for range count {
		if len(data) < 16+1+2 {
			return bad("truncated entry")
		}
		var id protocol.TxnID
		copy(id[:], data)
		kind := data[16]
		l := int(binary.LittleEndian.Uint16(data[17:]))
		data = data[19:]
		if l > protocol.MaxWorkLen || l > len(data) || (kind != ckptPrepared && kind != ckptCommitted) || p.txns.get(id) != nil {
			return bad("bad entry")
		}
		work := data[:l]
		data = data[l:]
		p.res.Restore(id, work)
		t := p.alloc(id, work)
		p.hold(t)
		if kind == ckptPrepared {
			t.become(t.id, partPrepared, t.state == 0)
			continue
		}
		t.state = partCommitting
		t.onePhase = true // only a one-phase commit is held while committing
		p.res.Commit(id)
		p.unhold(t)
		p.becomeDone(t, partCommitted)
	}
	if len(data) != 0 {
		return bad("trailing bytes")
	}
	return nil
}

// start ends the restore phase: every in-doubt transaction inquires at
// once, then with backoff.
func (p *Participant) start() {
	if !p.outbox.start() {
		return
	}
	for _, t := range p.held {
		if t.state != partPrepared {
			panic(fmt.Sprintf("engine: restored %v in state %v", t.id, t.state))
		}
		p.sendInquire(t)
		p.inquire.start(p.now, t, t.gen)
	}
}

// Step feeds one message to the participant: MsgPrepare or MsgDecision
// from the coordinator, or a MsgRes* result from its own resource.
// Anything unexpected from the network is counted in Stats and otherwise
// ignored; a resource result that contradicts what the machine asked of
// the resource is a programmer error and panics.
func (p *Participant) Step(m Message) {
	p.start()
	if m.To != p.cfg.Name {
		p.stats.IgnoredInvalid++
		return
	}
	switch m.Type {
	case MsgPrepare:
		p.prepare(m)
	case MsgDecision:
		switch m.Decision {
		case protocol.DecisionCommit:
			p.commit(m)
		case protocol.DecisionAbort:
			p.abort(m)
		default:
			p.stats.IgnoredInvalid++
		}
	case MsgResPrepared:
		p.resPrepared(m)
	case MsgResFinished:
		p.mode.resFinished(p, m)
	case MsgResFailed:
		p.mode.resFailed(p, m)
	case MsgResInDoubt:
		p.mode.resInDoubt(p, m)
	case MsgResolve:
		p.resolve(m)
	case MsgResPrevented:
		p.mode.resPrevented(p, m)
	default:
		p.stats.IgnoredInvalid++
	}
}

func (p *Participant) prepare(m Message) {
	if len(m.Work) > protocol.MaxWorkLen {
		p.stats.IgnoredInvalid++
		return
	}
	if t, st := p.find(m.Txn); st != 0 {
		p.prepareAgain(m, t, st)
		return
	}
	t := p.alloc(m.Txn, m.Work)
	t.onePhase = m.OnePhase
	t.staged = m.Staged && !m.OnePhase
	v := p.res.Prepare(m.Txn, m.Work)
	if v == protocol.VotePending {
		p.becomeVoting(t)
		if planted(p, bugResVoteEarly) {
			p.sendVote(m.Txn, protocol.VoteYes)
		}
		return
	}
	p.voted(t, v)
}

// prepareAgain answers a prepare for a transaction id this participant
// already has in hand (t) or remembers decided (t nil). It never prepares
// twice. The prepare is either a copy of the one it handled (a network
// duplicate: answer from what was done) or a new transaction reusing the
// id at a coordinator that forgot the old one (a client reused the id
// after the coordinator's window, or the coordinator restarted): its
// work, its other branches or both differ, and a YES here would make the
// coordinator commit them while this participant applies nothing new —
// half a transaction. So a YES (or read-only) is answered only where a
// copy of the same prepare may still need it and no reuse can be hurt by
// it; everything else is voted no, which is always safe: the coordinator
// ignores a no from a branch that has voted or for a transaction past
// voting, and a transaction still voting merely aborts. In detail:
//
//   - Committed two-phase: no. Its coordinator decided commit, so it is
//     past voting and ignores a copy's answer; only a reuse can still be
//     voting, and it must not count this commit as a YES for its work.
//   - Committed one-phase, the same work: yes. The coordinator may still
//     be voting (the first YES lost or overtaken) and a yes is the only
//     true answer: "committed". A reuse with the same single branch and
//     work is the same request, and its answer is also true.
//   - Prepared (or preparing, voting, committing) with the same work and
//     kind: as before — yes once durable. A reuse that sends the same work
//     takes over the prepared state; the old transaction is dead at the
//     coordinator (it forgot it, so it is aborted there), so the work is
//     done at most once, under the new one.
//   - Read-only with the same work: read-only; aborted: no.
//   - Anything with other work or the other kind (one- vs two-phase): no,
//     and a transaction still in hand is marked refused, so that its own
//     YES, pending on a record or a resource, never goes out (see
//     partTxn.refused).
func (p *Participant) prepareAgain(m Message, t *partTxn, st partState) {
	switch st {
	case partPreventing:
		// The NO goes out when RecPrevented is durable.
		p.stats.IgnoredDuplicate++
		return
	case partPrevented:
		if !planted(p, bugNoRefuseAfterPrevent) {
			// A late prepare after a prevention: refused, for as long as
			// a prepare of this id can arrive. Preparing it could make
			// every branch prepared — the implicit commit — of a
			// transaction the prevention has aborted.
			p.stats.RefusedPrevented++
			p.sendVote(m.Txn, protocol.VoteNo)
			return
		}
		// The planted bug: prepare it as new.
		p.done.remove(m.Txn)
		nt := p.alloc(m.Txn, m.Work)
		nt.onePhase = m.OnePhase
		nt.staged = m.Staged && !m.OnePhase
		v := p.res.Prepare(m.Txn, m.Work)
		if v == protocol.VotePending {
			p.becomeVoting(nt)
			return
		}
		p.voted(nt, v)
		return
	}
	var same bool
	if t != nil {
		same = !t.refused && t.onePhase == m.OnePhase && string(t.work) == string(m.Work)
	} else {
		d, _ := p.done.get(m.Txn)
		same = d.onePhase == m.OnePhase && d.work == workHash(m.Work)
		if st == partCommitted && !d.onePhase {
			same = false
		}
	}
	if planted(p, bugReuseYes) {
		same = true
	}
	if !same && st != partAborted && st != partAborting {
		p.stats.RefusedReuse++
		if t != nil {
			t.refused = true
		}
		p.sendVote(m.Txn, protocol.VoteNo)
		return
	}
	p.stats.IgnoredDuplicate++
	switch st {
	case partPreparing, partCommitting, partVoting:
		// The vote goes out when the record is durable (or the
		// resource has answered).
	case partPrepared:
		if t.onePhase {
			// A durable resource failed this one-phase commit
			// (MsgResFailed): it is prepared, not committed, and a
			// one-phase YES would say committed. Its outcome is now
			// the coordinator's answer to an inquiry.
			break
		}
		p.sendVote(m.Txn, protocol.VoteYes)
	case partCommitted:
		p.sendVote(m.Txn, protocol.VoteYes) // one-phase: "committed"
	case partAborted, partAborting:
		p.sendVote(m.Txn, protocol.VoteNo)
	case partReadOnly:
		p.sendVote(m.Txn, protocol.VoteReadOnly)
	}
}

// partDone is what a participant remembers of a decided transaction, with
// no pointers (see recent): its final state, and enough of its prepare to
// tell a copy of it from a reuse of its id (prepareAgain).
type partDone struct {
	state    partState
	onePhase bool
	work     uint64 // workHash of the prepare's work
}

// workHash is 64-bit FNV-1a. A collision can only make a reused id with
// other work pass for a copy of a one-phase (single-branch) transaction
// or a read-only one: that client is told committed for work not done,
// and no other participant is involved to be left half done.
func workHash(w []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, b := range w {
		h ^= uint64(b)
		h *= 1099511628211
	}
	return h
}

// voted acts on the resource's vote for t (new, or voting).
func (p *Participant) voted(t *partTxn, v protocol.Vote) {
	switch v {
	case protocol.VoteNo:
		p.stats.VotedNo++
		if t.staged && !t.abortWanted && !t.refused && p.mode.canPrevent() {
			// A staged NO is a durable fact: a volatile one, forgotten in
			// a crash, could turn into a YES for a late copy of the
			// prepare, and the implicit commit could then hold for a
			// transaction whose coordinator heard the NO.
			p.becomePreventing(t)
			return
		}
		if !t.abortWanted && !t.refused {
			p.sendVote(t.id, protocol.VoteNo)
		}
		p.becomeDone(t, partAborted)
	case protocol.VoteReadOnly:
		p.stats.ReadOnly++
		if !t.abortWanted && !t.refused {
			p.sendVote(t.id, protocol.VoteReadOnly)
		}
		p.becomeDone(t, partReadOnly)
	case protocol.VoteYes:
		switch {
		case t.abortWanted:
			// The abort overtook the resource's answer: undo the prepare
			// at once. Nothing was logged and no vote went out.
			p.hold(t)
			p.startAbort(t)
		case t.onePhase:
			p.hold(t)
			p.becomeCommitting(t)
		default:
			p.hold(t)
			p.mode.prepared(p, t)
		}
	default:
		panic(fmt.Sprintf("engine: resource voted %v for %v", v, t.id))
	}
}

// resPrepared: the resource answers a Prepare that returned VotePending.
func (p *Participant) resPrepared(m Message) {
	t := p.txns.get(m.Txn)
	if t == nil || t.state != partVoting || m.Vote == protocol.VotePending {
		panic(fmt.Sprintf("engine: resource answered %v for %v, which is in state %v", m.Vote, m.Txn, stateOf(t)))
	}
	p.stats.Voting--
	p.voted(t, m.Vote)
}

// stateOf is t's state for a panic message; "unknown" for nil.
func stateOf(t *partTxn) string {
	if t == nil {
		return "unknown"
	}
	return t.state.String()
}

func (p *Participant) commit(m Message) {
	t, st := p.find(m.Txn)
	if st == 0 {
		// A commit decision exists only if this participant voted YES
		// durably, and it forgets only decided transactions: it committed
		// this one long ago.
		p.stats.AckedUnknown++
		p.sendAck(m.Txn)
		return
	}
	switch st {
	case partPrepared:
		p.becomeCommitting(t)
	case partCommitting:
		p.stats.IgnoredDuplicate++ // the ack goes out when durable (finished)
	case partCommitted:
		p.stats.IgnoredDuplicate++
		p.sendAck(m.Txn)
	default:
		// Preparing (our YES is not out yet), aborted or read-only: no
		// coordinator could have decided commit. Never trust it.
		p.stats.IgnoredInvalid++
	}
}

// resolve answers a coordinator resolving a staged transaction: "prepared"
// (VoteYes) if the transaction is durably prepared here (or committed),
// and otherwise a durable prevention (VoteNo once RecPrevented is
// durable), after which every prepare of it is refused. A transaction
// whose prepared record or prevention is on its way, or whose resource
// has not answered yet, is answered when that is settled (its YES or NO
// goes out then); the coordinator asks again meanwhile.
func (p *Participant) resolve(m Message) {
	if m.Txn == (protocol.TxnID{}) {
		p.stats.IgnoredInvalid++
		return
	}
	t, st := p.find(m.Txn)
	switch st {
	case 0, partAborted, partReadOnly:
		if t != nil {
			// Aborted or read-only in hand: a durable resource still
			// finishing an orphan's abort. It cannot prevent anyway.
			p.stats.IgnoredInvalid++
			return
		}
		if !p.mode.canPrevent() {
			// A participant whose resource keeps its own durability and
			// is no Preventer cannot prevent: no coordinator stages its
			// transactions.
			p.stats.IgnoredInvalid++
			return
		}
		p.done.remove(m.Txn)
		nt := p.alloc(m.Txn, nil)
		nt.staged = true
		p.becomePreventing(nt)
	case partPrevented:
		p.sendVote(m.Txn, protocol.VoteNo)
	case partPrepared, partCommitting, partCommitted:
		if t != nil && (t.onePhase || t.refused) {
			// One-phase transactions are never resolved; a refused one
			// is dead at the coordinator, whose id now names another.
			p.stats.IgnoredInvalid++
			return
		}
		if t == nil {
			if d, _ := p.done.get(m.Txn); d.onePhase {
				p.stats.IgnoredInvalid++
				return
			}
		}
		p.sendVote(m.Txn, protocol.VoteYes)
	default:
		// Preparing, preventing or voting: the answer goes out when its
		// record is durable or the resource has answered. Aborting: a
		// durable resource's orphan.
		p.stats.IgnoredDuplicate++
	}
}

func (p *Participant) abort(m Message) {
	t, st := p.find(m.Txn)
	if st == 0 {
		// Probably overtook its prepare: remember the abort so that the
		// prepare, if it comes, is answered no without taking locks.
		p.stats.IgnoredUnknown++
		p.done.put(m.Txn, partDone{state: partAborted})
		return
	}
	switch st {
	case partPreparing, partPrepared:
		p.startAbort(t)
	case partVoting:
		// The coordinator gave up on this vote (or another branch voted
		// no). The resource is still preparing: abort once it answers.
		t.abortWanted = true
	case partAborted, partReadOnly, partAborting, partPreventing, partPrevented:
		p.stats.IgnoredDuplicate++
	default:
		// Committing or committed: a commit was decided, so this abort is
		// a forgery or a bug elsewhere.
		p.stats.IgnoredInvalid++
	}
}

// startAbort aborts a YES-prepared t in the resource: at once, or, for a
// durable resource, by starting it and waiting for MsgResFinished.
func (p *Participant) startAbort(t *partTxn) {
	p.res.Abort(t.id)
	p.mode.abort(p, t)
}

func (p *Participant) finishAbort(t *partTxn) {
	p.unhold(t)
	p.stats.Aborted++
	p.rd.Applied = append(p.rd.Applied, Applied{Txn: t.id, Decision: protocol.DecisionAbort})
	p.becomeDone(t, partAborted)
	p.noteDecided()
}

// releaseCommit releases t, whose commit is applied to the resource (or,
// for a durable resource, finished there), and reports it.
func (p *Participant) releaseCommit(t *partTxn) {
	p.unhold(t)
	p.stats.Committed++
	p.rd.Applied = append(p.rd.Applied, Applied{Txn: t.id, Decision: protocol.DecisionCommit})
}

// finishCommit runs when t's commit is durable (RecCommitted, or the
// durable resource's own commit): it applies the commit if that has not
// happened yet and sends the ack (or the one-phase YES).
func (p *Participant) finishCommit(t *partTxn) {
	if t.heldAt >= 0 {
		p.mode.applyCommit(p, t)
	}
	if t.onePhase {
		if !t.refused {
			p.sendVote(t.id, protocol.VoteYes)
		}
	} else if !planted(p, bugAckBeforeDurable) {
		p.sendAck(t.id)
	}
	p.becomeDone(t, partCommitted)
	p.noteDecided()
}

// Tick advances the participant's clock by one tick: inquiries and
// forgetting.
func (p *Participant) Tick() {
	p.start()
	p.now++
	for t := p.inquire.due(p.now); t != nil; t = p.inquire.due(p.now) {
		if t.state != partPrepared {
			panic(fmt.Sprintf("engine: inquiry timer for %v in state %v", t.id, t.state))
		}
		p.sendInquire(t)
	}
	p.done.tick(p.now)
}

// Durable tells the participant that every record up to index is durable:
// the votes, commits and acks waiting on them go out.
func (p *Participant) Durable(index uint64) {
	p.start()
	if !p.markDurable(index) {
		return
	}
	for e, ok := p.popDurable(); ok; e, ok = p.popDurable() {
		if e.t == nil {
			p.lowWater = e.index // a checkpoint
			continue
		}
		if e.t.gen != e.gen {
			continue // aborted while its prepared record was on the way
		}
		switch t := e.t; t.state {
		case partPreparing:
			p.becomePrepared(t, false)
		case partCommitting:
			p.finishCommit(t)
		case partPreventing:
			p.sendVote(t.id, protocol.VoteNo)
			p.becomeDone(t, partPrevented)
		default:
			panic(fmt.Sprintf("engine: record %d durable for %v in state %v", e.index, t.id, t.state))
		}
	}
}

// --- transitions ---

func (p *Participant) becomeVoting(t *partTxn) {
	t.become(t.id, partVoting, t.state == 0)
	p.stats.Voting++
}

func (p *Participant) becomePreparing(t *partTxn) {
	t.become(t.id, partPreparing, t.state == 0 || t.state == partVoting)
	idx := p.appendRecord(Record{Type: RecPrepared, Txn: t.id, Work: t.work})
	p.waits.push(wait[partTxn]{index: idx, t: t, gen: t.gen}) // the YES vote
	p.forced = true
	if planted(p, bugVoteBeforeDurable) {
		p.sendVote(t.id, protocol.VoteYes)
	}
}

// becomePrepared sends the YES vote for t: its prepared state is durable,
// in RecPrepared, or at once (durableNow) in a durable resource.
func (p *Participant) becomePrepared(t *partTxn, durableNow bool) {
	t.become(t.id, partPrepared, t.state == partPreparing || durableNow && (t.state == 0 || t.state == partVoting || t.state == partPreventing))
	if !t.refused && !planted(p, bugVoteBeforeDurable) {
		p.sendVote(t.id, protocol.VoteYes)
	}
	p.inquire.start(p.now, t, t.gen)
}

// becomePreventing makes t durably unpreparable: new (a MsgResolve for a
// transaction not prepared here) or just voted NO by the resource. Its NO
// goes out when the prevention is durable: RecPrevented in the log, or
// the resource's compare-and-swap (MsgResPrevented).
func (p *Participant) becomePreventing(t *partTxn) {
	t.become(t.id, partPreventing, t.state == 0 || t.state == partVoting)
	p.mode.prevent(p, t)
}

func (p *Participant) becomeCommitting(t *partTxn) {
	fresh := t.state == 0 || t.state == partVoting
	t.become(t.id, partCommitting, t.state == partPrepared || fresh && t.onePhase)
	p.mode.commit(p, t, fresh)
}

// becomeDone moves t to a final state: the state goes to done, to answer
// duplicates, and t itself is released. t must not be used after.
func (p *Participant) becomeDone(t *partTxn, st partState) {
	ok := false
	switch st {
	case partCommitted:
		ok = t.state == partCommitting
	case partAborted:
		switch t.state {
		case 0, partVoting, partPreparing, partPrepared, partAborting, partAborted:
			ok = true
		}
	case partReadOnly:
		ok = t.state == 0 || t.state == partVoting
	case partPrevented:
		ok = t.state == partPreventing
	}
	if !ok || t.heldAt >= 0 {
		panic(fmt.Sprintf("engine: %v: %v → %v (held %v)", t.id, t.state, st, t.heldAt >= 0))
	}
	p.done.put(t.id, partDone{state: st, onePhase: t.onePhase, work: workHash(t.work)})
	t.state = st
	t.gen++ // its timers and waits go stale
	p.retire(t.id, t)
}

func (p *Participant) noteDecided() {
	if p.cfg.CheckpointEvery == 0 {
		return
	}
	p.decided++
	if p.decided >= p.cfg.CheckpointEvery {
		p.decided = 0
		p.appendCheckpoint()
	}
}

// --- bookkeeping ---

func (p *Participant) hold(t *partTxn) {
	t.heldAt = len(p.held)
	p.held = append(p.held, t)
	p.stats.Prepared++
}

func (p *Participant) unhold(t *partTxn) {
	last := p.held[len(p.held)-1]
	p.held[t.heldAt] = last
	last.heldAt = t.heldAt
	p.held[len(p.held)-1] = nil
	p.held = p.held[:len(p.held)-1]
	t.heldAt = -1
	p.stats.Prepared--
}

func (p *Participant) alloc(id protocol.TxnID, work []byte) *partTxn {
	t := p.outbox.alloc(id)
	t.id = id
	t.heldAt = -1
	t.work = append(t.work[:0], work...)
	t.since = p.now
	return t
}

// find returns the transaction in hand for id and its state, or, for a
// decided one, nil and its remembered state; (nil, 0) if unknown.
func (p *Participant) find(id protocol.TxnID) (*partTxn, partState) {
	if t := p.txns.get(id); t != nil {
		return t, t.state
	}
	if d, ok := p.done.get(id); ok {
		return nil, d.state
	}
	return nil, 0
}

func (p *Participant) sendVote(id protocol.TxnID, v protocol.Vote) {
	if v == protocol.VotePending {
		panic(fmt.Sprintf("engine: sending a pending vote for %v", id))
	}
	p.rd.Messages = append(p.rd.Messages, Message{Type: MsgVote, Txn: id, From: p.cfg.Name, Vote: v})
}

func (p *Participant) sendAck(id protocol.TxnID) {
	p.rd.Messages = append(p.rd.Messages, Message{Type: MsgAck, Txn: id, From: p.cfg.Name})
}

func (p *Participant) sendInquire(t *partTxn) {
	p.stats.Inquiries++
	p.rd.Messages = append(p.rd.Messages, Message{Type: MsgInquire, Txn: t.id, From: p.cfg.Name})
}

// HasReady reports whether Ready has anything to hand out.
func (p *Participant) HasReady() bool {
	p.start()
	return p.hasReady(p.lowWater)
}

// Ready drains the pending output. Its slices stay valid until the next
// call into p.
func (p *Participant) Ready() Ready {
	p.start()
	recyclePartTxns(p.reuse())
	p.ckptBufs.handOut()
	return p.take(p.lowWater)
}

// Stats returns the participant's counters.
func (p *Participant) Stats() ParticipantStats {
	st := p.stats
	st.Remembered = p.done.len()
	st.Ignored = st.IgnoredDuplicate + st.IgnoredUnknown + st.IgnoredInvalid
	return st
}

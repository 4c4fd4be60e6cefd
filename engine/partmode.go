package engine

import (
	"fmt"

	"github.com/commitd/commitd/protocol"
)

// partMode is where a participant keeps its transactions durable: in its
// own log (logMode), or in the resource itself (resMode, with
// ParticipantConfig.DurableResource). Each mode is a set of step
// functions, chosen once in NewParticipant as raft chooses r.step for a
// role, so no step tests the config. Both are stateless: the state is the
// Participant's, passed in.
type partMode interface {
	// restore replays one record of the participant's log (Restore).
	restore(p *Participant, r Record) error
	// prepared acts on the resource's YES to a two-phase prepare of t,
	// now held: the YES vote goes out once the prepared state is durable.
	prepared(p *Participant, t *partTxn)
	// commit commits t, now committing: two-phase from prepared, or
	// fresh, a one-phase commit the resource has just voted yes for. The
	// ack (one-phase: the YES vote) goes out once the commit is durable
	// (finishCommit).
	commit(p *Participant, t *partTxn, fresh bool)
	// applyCommit applies the commit of t, still held, when it is durable
	// (finishCommit), and releases t.
	applyCommit(p *Participant, t *partTxn)
	// abort aborts t, YES-prepared (or voting: the abort overtook the
	// resource's YES), once the resource has been asked to (startAbort).
	abort(p *Participant, t *partTxn)
	// resFinished, resFailed and resInDoubt act on the resource's reports
	// (MsgResFinished, MsgResFailed, MsgResInDoubt).
	resFinished(p *Participant, m Message)
	resFailed(p *Participant, m Message)
	resInDoubt(p *Participant, m Message)
	// canPrevent reports whether a transaction not prepared here can be
	// made durably unpreparable (becomePreventing): by a participant with
	// a log of its own (RecPrevented), or whose durable resource is a
	// Preventer (docs/protocol.md "Participants that keep durability
	// elsewhere").
	canPrevent() bool
	// prevent starts making t, now preventing, durably unpreparable; its
	// NO goes out when that is durable (Durable, or resPrevented).
	prevent(p *Participant, t *partTxn)
	// resPrevented acts on the resource's MsgResPrevented.
	resPrevented(p *Participant, m Message)
}

// logMode: the participant's log keeps what the resource cannot keep
// itself — RecPrepared before the YES vote, RecCommitted before the ack —
// and checkpoints the resource's state. The resource answers at once and
// reports nothing on its own.
type logMode struct{}

// resMode: the resource keeps its prepared and committed state durably
// (a database's PREPARE TRANSACTION), so the participant writes no
// records. Commit and abort finish on the resource's goroutines: the
// machine waits for MsgResFinished, and learns what is in doubt after a
// restart from MsgResInDoubt. If the resource is a Preventer (preventer
// set), it prevents too, in the resource (MsgResPrevented).
type resMode struct {
	preventer Preventer
}

// Restore replays one record read back from the log, rebuilding both the
// machine and the resource. Call it for every record, in log order, before
// any other input; each takes the next index and counts as durable. A
// checkpoint replaces everything before it. Decisions replayed here are
// not reported in Ready.Applied. It returns an error (wrapping
// ErrBadRecord) for a record that contradicts the ones before it, or for
// any record at a participant with a durable resource, which writes none.
func (p *Participant) Restore(r Record) error {
	return p.mode.restore(p, r)
}

func (logMode) restore(p *Participant, r Record) error {
	idx := p.restoreRecord("Participant")
	t, st := p.find(r.Txn)
	switch r.Type {
	case RecCheckpoint:
		if err := p.restoreCheckpoint(r.Data); err != nil {
			return err
		}
		p.lowWater = idx
	case RecPrepared:
		if t != nil {
			return fmt.Errorf("%w: %v prepared twice", ErrBadRecord, r.Txn)
		}
		// Decided before, forgotten, and prepared again by a late
		// duplicate prepare: the new incarnation replaces the old.
		p.done.remove(r.Txn)
		p.res.Restore(r.Txn, r.Work)
		t = p.alloc(r.Txn, r.Work)
		p.hold(t)
		t.become(t.id, partPrepared, t.state == 0)
	case RecCommitted:
		switch {
		case st == 0 || t == nil:
			// One-phase: prepared and committed in one record. (t nil
			// with a state: decided before, forgotten, and the id used
			// again; the new transaction replaces the old, as for
			// RecPrepared above.)
			p.done.remove(r.Txn)
			p.res.Restore(r.Txn, r.Work)
			t = p.alloc(r.Txn, r.Work)
			t.onePhase = true
			t.state = partCommitting
			p.hold(t)
		case st == partPrepared:
			t.state = partCommitting
		default:
			return fmt.Errorf("%w: %v committed while %v", ErrBadRecord, r.Txn, st)
		}
		p.res.Commit(r.Txn)
		p.unhold(t)
		p.becomeDone(t, partCommitted)
	case RecPrevented:
		switch st {
		case 0, partAborted, partReadOnly, partPrevented:
			if t != nil {
				return fmt.Errorf("%w: %v prevented while %v", ErrBadRecord, r.Txn, st)
			}
			p.done.remove(r.Txn)
			p.done.put(r.Txn, partDone{state: partPrevented})
		default:
			return fmt.Errorf("%w: %v prevented while %v", ErrBadRecord, r.Txn, st)
		}
	case RecAborted:
		switch {
		case st == 0:
			p.done.put(r.Txn, partDone{state: partAborted})
		case st == partPrepared:
			p.res.Abort(r.Txn)
			p.unhold(t)
			p.becomeDone(t, partAborted)
		default:
			return fmt.Errorf("%w: %v aborted while %v", ErrBadRecord, r.Txn, st)
		}
	default:
		return fmt.Errorf("%w: a participant cannot restore a %v record", ErrBadRecord, r.Type)
	}
	return nil
}

func (resMode) restore(p *Participant, r Record) error {
	if p.started {
		panic("engine: Participant.Restore after other input")
	}
	// This machine never wrote one: the log belongs to another kind of
	// participant (a data directory reused with another resource).
	return fmt.Errorf("%w: a participant with a durable resource keeps no records, found a %v record", ErrBadRecord, r.Type)
}

func (logMode) canPrevent() bool { return true }

// canPrevent: a durable resource keeps its prepared state where this
// machine cannot make "never prepare" atomic with it; only the resource
// can, if it is a Preventer.
func (m resMode) canPrevent() bool { return m.preventer != nil }

// prevent appends RecPrevented; the NO goes out when it is durable.
func (logMode) prevent(p *Participant, t *partTxn) {
	p.stats.Prevented++
	idx := p.appendRecord(Record{Type: RecPrevented, Txn: t.id})
	p.waits.push(wait[partTxn]{index: idx, t: t, gen: t.gen}) // the NO
	p.forced = true
}

// prevent asks the resource: its compare-and-swap is the durable record
// (this machine writes none), and its answer comes as MsgResPrevented.
// After a restart this machine has forgotten the prevention; the
// resource has not, and refuses a late prepare itself.
func (m resMode) prevent(p *Participant, t *partTxn) {
	if m.preventer == nil {
		panic(fmt.Sprintf("engine: %v: preventing with a resource that cannot", t.id))
	}
	m.preventer.Prevent(t.id)
}

// resPrevented: a participant with a log prevents in it, never in the
// resource.
func (logMode) resPrevented(p *Participant, m Message) { p.badReport("prevented", m) }

// resPrevented: the resource's compare-and-swap is done. Prevented (NO):
// the NO goes out and every later prepare is refused, here from memory
// and after a restart by the resource. Prepared (YES): the resource
// holds t prepared — a prepare that lost its connection and ran all the
// same, or one an earlier incarnation made — or committed: t is held
// prepared here as a scan would have found it, and YES answers the
// coordinator, which is true (rule 8 of "Staged commits").
func (resMode) resPrevented(p *Participant, m Message) {
	t := p.txns.get(m.Txn)
	if t == nil || t.state != partPreventing {
		p.badReport("prevented", m)
	}
	switch m.Vote {
	case protocol.VoteNo:
		p.stats.Prevented++
		p.sendVote(t.id, protocol.VoteNo)
		p.becomeDone(t, partPrevented)
	case protocol.VoteYes:
		p.stats.PreventFoundPrepared++
		p.res.Restore(t.id, nil)
		p.hold(t)
		p.becomePrepared(t, true)
	default:
		panic(fmt.Sprintf("engine: resource answered prevent of %v with %v", t.id, m.Vote))
	}
}

func (logMode) prepared(p *Participant, t *partTxn) {
	p.becomePreparing(t)
}

func (resMode) prepared(p *Participant, t *partTxn) {
	// The resource's prepare is durable in the resource: vote now.
	p.becomePrepared(t, true)
}

func (logMode) commit(p *Participant, t *partTxn, fresh bool) {
	if fresh {
		idx := p.appendRecord(Record{Type: RecCommitted, Txn: t.id, Work: t.work})
		p.waits.push(wait[partTxn]{index: idx, t: t, gen: t.gen}) // the one-phase YES (= committed)
		p.forced = true
		return
	}
	idx := p.appendRecord(Record{Type: RecCommitted, Txn: t.id})
	// Early lock release: the decision is logged (appended) and the
	// commit is already durable at the coordinator, so apply it now
	// rather than hold the resource's locks through an fsync. Safe
	// because (1) only the ack waits for durability, and until the
	// ack the coordinator keeps the decision: a crash that loses this
	// record leaves the transaction in doubt, and the inquiry's answer
	// is commit again; (2) anything a later transaction does on top
	// of this commit reaches the log after this record, so its own
	// forced RecPrepared makes this record durable first.
	logMode{}.applyCommit(p, t)
	if planted(p, bugAckBeforeDurable) {
		p.sendAck(t.id)
	}
	p.waits.push(wait[partTxn]{index: idx, t: t, gen: t.gen}) // the ack
}

func (resMode) commit(p *Participant, t *partTxn, _ bool) {
	// The resource's commit is the durable record; its MsgResFinished
	// releases the ack (or the one-phase YES).
	p.res.Commit(t.id)
	if !t.onePhase && planted(p, bugResAckEarly) {
		p.sendAck(t.id)
	}
}

func (logMode) applyCommit(p *Participant, t *partTxn) {
	p.res.Commit(t.id)
	p.releaseCommit(t)
}

func (resMode) applyCommit(p *Participant, t *partTxn) {
	p.releaseCommit(t) // the resource committed it: MsgResFinished
}

func (logMode) abort(p *Participant, t *partTxn) {
	if t.state == partVoting {
		// Nothing was logged for it: nothing to undo after a crash.
		t.state = partPrepared
	} else {
		// Not forced: if lost, the restarted participant is in doubt and
		// inquires, and the answer is abort again.
		p.appendRecord(Record{Type: RecAborted, Txn: t.id})
	}
	p.finishAbort(t)
}

func (resMode) abort(_ *Participant, t *partTxn) {
	// Finished when the resource reports it (resFinished).
	// A new generation cancels the inquiry timer.
	t.become(t.id, partAborting, t.state == partPrepared || t.state == partVoting || t.state == partAborted || t.state == partReadOnly)
}

// A resource with a log behind it answers at once and finishes nothing
// later: a report from it is a programmer error.
func (logMode) resFinished(p *Participant, m Message) { p.badReport("finished", m) }
func (logMode) resFailed(p *Participant, m Message)   { p.badReport("failed", m) }

// resInDoubt: only a durable resource holds transactions the machine
// might not know; from any other it is junk, ignored and counted.
func (logMode) resInDoubt(p *Participant, _ Message) { p.stats.IgnoredInvalid++ }

// badReport panics: the resource reported the end of work the machine
// did not ask of it.
func (p *Participant) badReport(what string, m Message) {
	panic(fmt.Sprintf("engine: resource %s %v for %v, which is in state %v", what, m.Decision, m.Txn, stateOf(p.txns.get(m.Txn))))
}

// resFinished: a durable resource has made a commit or abort durable.
func (resMode) resFinished(p *Participant, m Message) {
	t := p.txns.get(m.Txn)
	switch {
	case t == nil:
	case m.Decision == protocol.DecisionCommit && t.state == partCommitting:
		p.finishCommit(t)
		return
	case m.Decision == protocol.DecisionAbort && t.state == partAborting:
		p.finishAbort(t)
		return
	}
	p.badReport("finished", m)
}

// resFailed: a durable resource could not finish a commit or abort. The
// transaction is still prepared there: back to in doubt, so that the
// coordinator's redelivery or the next inquiry's answer tries again.
func (resMode) resFailed(p *Participant, m Message) {
	t := p.txns.get(m.Txn)
	if t == nil ||
		!(m.Decision == protocol.DecisionCommit && t.state == partCommitting || m.Decision == protocol.DecisionAbort && t.state == partAborting) {
		p.badReport("failed", m)
	}
	p.stats.ResourceFailures++
	// No vote goes out: the YES (if any) went out before, and a one-phase
	// YES would mean "committed".
	t.become(t.id, partPrepared, t.state == partCommitting || t.state == partAborting)
	p.inquire.start(p.now, t, t.gen)
}

// resInDoubt: a durable resource holds m.Txn prepared.
func (resMode) resInDoubt(p *Participant, m Message) {
	if m.Txn == (protocol.TxnID{}) {
		p.stats.IgnoredInvalid++
		return
	}
	_, st := p.find(m.Txn)
	var t *partTxn
	if st == 0 {
		// Prepared by an earlier incarnation, or a prepare whose answer
		// was lost: in doubt, exactly like a restored RecPrepared. It
		// never aborts on its own: it asks.
		p.stats.InDoubtFound++
		p.res.Restore(m.Txn, nil)
		t = p.alloc(m.Txn, nil)
		p.hold(t)
		t.become(t.id, partPrepared, t.state == 0)
		p.sendInquire(t)
		p.inquire.start(p.now, t, t.gen)
		return
	}
	switch st {
	case partAborted, partReadOnly:
		// This participant voted no (its prepare's answer was lost and
		// the resource prepared after all) or already aborted it: an
		// orphan holding locks. No YES went out for it from here, or the
		// abort was decided, so rolling it back is safe.
		p.stats.OrphansAborted++
		p.done.remove(m.Txn)
		t = p.alloc(m.Txn, nil)
		t.state = st
		p.hold(t)
		p.startAbort(t)
	default:
		// In hand (voting, prepared, committing, aborting), or a scan
		// older than the commit that finished since.
		p.stats.IgnoredDuplicate++
	}
}

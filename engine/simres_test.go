package engine_test

import (
	"bytes"
	"fmt"
	"sort"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/protocol"
)

// simRes is the simulation's durable resource, a stand-in for
// participant/postgres (docs/protocol.md, "Asynchronous and durable
// resources"): a bank whose prepared transactions, their locks and its
// commits live in the resource itself, as PREPARE TRANSACTION keeps them
// in PostgreSQL, so they survive a crash of the participant. A simRes
// outlives every incarnation of its participant; only the answers it owes
// an incarnation die with it.
//
// The work it is asked to do takes effect later (resOp), in random order,
// and is answered later still; during the fault phase a prepare may lose
// its connection (answered no, and run in the resource or not: an
// orphan), and a commit or abort may fail (MsgResFailed, nothing done). A
// crash leaves the work not yet done either undone or still to be done
// (the database finishes a query whose client died). Scans list what is
// prepared: at every restart, before any other input, as the participant
// server does, and every scanEvery ticks, delivered up to scanLag ticks
// late (so a result may be stale).
//
// Commit and abort are idempotent as participant/postgres makes them: a
// commit of a transaction no longer prepared succeeds if its commit
// marker says it committed, an abort succeeds unless the marker says
// committed. Either failing that way means the protocol asked for
// something impossible, and the simulation reports it as a violation.
type simRes struct {
	s *sim
	n *simNode
	// bank holds the committed balances and, as holds, the row locks of
	// the prepared transactions.
	bank      *bank.Bank
	prepared  map[protocol.TxnID]bool // pg_prepared_xacts
	committed map[protocol.TxnID]bool // commit markers
	prevented map[protocol.TxnID]bool // prevention markers (commitd_prevented)
	nextScan  int64
}

var _ engine.Preventer = (*simRes)(nil)

// resOp is work a simRes was asked for, or a scan result on its way to
// the machine. Fields are the simulator's (one goroutine).
type resOp struct {
	n *simNode
	// inc is the incarnation of n that asked, and the only one its answer
	// may reach; 0 for work left behind by a crash (it still runs).
	inc  int
	typ  engine.MsgType // MsgResPrepared: a prepare; MsgResFinished: a commit or abort; MsgResInDoubt: a scan result; MsgResPrevented: a prevention
	txn  protocol.TxnID
	work []byte
	dec  protocol.Decision
	// runAt is when the work takes effect in the resource; -1 once it has
	// (or for a scan result): then answer goes to the machine at answerAt.
	runAt    int64
	answerAt int64
	answer   engine.Message
	lostConn bool // a prepare whose connection breaks: answered no, runs or not
	fail     bool // a commit or abort that fails: answered MsgResFailed, nothing done
	dead     bool // dropped by a crash of n
}

func newSimRes(s *sim, n *simNode) *simRes {
	return &simRes{
		s: s, n: n,
		bank:      bank.New(s.p.accounts, initialBalance),
		prepared:  map[protocol.TxnID]bool{},
		committed: map[protocol.TxnID]bool{},
		prevented: map[protocol.TxnID]bool{},
	}
}

// Prevent starts the compare-and-swap participant/postgres runs on its
// marker's primary key: it takes effect later, atomically with respect
// to prepares (the simulator runs one op at a time), and answers
// "prepared" if the transaction is prepared or committed by then, or
// records the prevention, which every later prepare meets.
func (r *simRes) Prevent(txn protocol.TxnID) {
	s := r.s
	s.tracef("%s: resource prevent %s started", r.n.name, short(txn))
	s.resOps = append(s.resOps, &resOp{n: r.n, inc: r.n.inc, typ: engine.MsgResPrevented, txn: txn,
		runAt: s.now + int64(s.r.IntN(s.p.resMaxDelay+1))})
	s.stats.cov["res.prevent pending"]++
}

// runPrevent makes a prevention take effect and returns its answer.
func (r *simRes) runPrevent(txn protocol.TxnID) protocol.Vote {
	if r.prepared[txn] || r.committed[txn] {
		r.s.stats.cov["res.prevent found prepared"]++
		return protocol.VoteYes
	}
	r.prevented[txn] = true
	r.s.tracef("%s: resource prevented %s", r.n.name, short(txn))
	return protocol.VoteNo
}

// Prepare answers read-only and malformed work at once, as
// participant/postgres does; otherwise it runs the prepare at once
// (sometimes) or starts it and answers VotePending.
func (r *simRes) Prepare(txn protocol.TxnID, work []byte) protocol.Vote {
	s := r.s
	_, amount, ok := bank.DecodeWork(work)
	switch {
	case !ok:
		return protocol.VoteNo
	case amount == 0:
		return protocol.VoteReadOnly
	case s.r.Float64() < s.p.resSyncP:
		s.stats.cov["res.prepare answered at once"]++
		return r.runPrepare(txn, work)
	}
	op := &resOp{n: r.n, inc: r.n.inc, typ: engine.MsgResPrepared, txn: txn, work: append([]byte(nil), work...),
		runAt: s.now + int64(s.r.IntN(s.p.resMaxDelay+1))}
	op.lostConn = s.faults && s.r.Float64() < s.p.resErrP
	s.resOps = append(s.resOps, op)
	s.stats.cov["res.prepare pending"]++
	return protocol.VotePending
}

// Commit starts COMMIT PREPARED.
func (r *simRes) Commit(txn protocol.TxnID) { r.start(txn, protocol.DecisionCommit) }

// Abort starts ROLLBACK PREPARED.
func (r *simRes) Abort(txn protocol.TxnID) { r.start(txn, protocol.DecisionAbort) }

func (r *simRes) start(txn protocol.TxnID, d protocol.Decision) {
	s := r.s
	s.tracef("%s: resource %v %s started", r.n.name, d, short(txn))
	op := &resOp{n: r.n, inc: r.n.inc, typ: engine.MsgResFinished, txn: txn, dec: d,
		runAt: s.now + int64(s.r.IntN(s.p.resMaxDelay+1))}
	op.fail = s.faults && s.r.Float64() < s.p.resFailP
	s.resOps = append(s.resOps, op)
}

// Restore is called for each transaction a scan reports that the machine
// did not know: the resource holds it already.
func (r *simRes) Restore(protocol.TxnID, []byte) {}

// Snapshot is never called: a durable resource is not checkpointed.
func (r *simRes) Snapshot([]byte) []byte {
	panic("simRes: Snapshot of a durable resource")
}

// Load is never called: a durable-resource participant restores nothing.
func (r *simRes) Load([]byte) error {
	panic("simRes: Load of a durable resource")
}

// runPrepare makes the prepare take effect: BEGIN; UPDATE; INSERT marker;
// PREPARE TRANSACTION. A global id already prepared or with a marker is
// refused, as PostgreSQL refuses it.
func (r *simRes) runPrepare(txn protocol.TxnID, work []byte) protocol.Vote {
	if r.prepared[txn] || r.committed[txn] {
		return protocol.VoteNo
	}
	if r.prevented[txn] {
		r.s.stats.cov["res.prepare refused: prevented"]++
		if !r.s.o.resNoRefuse {
			return protocol.VoteNo
		}
	}
	v := r.bank.Prepare(txn, work)
	if v == protocol.VoteYes {
		r.prepared[txn] = true
		t := r.s.partInc[r.n.pi][txn]
		r.s.durPrepared[r.n.pi][t] = true
		// Staged, this may be the last branch the implicit commit waits
		// for.
		defer r.s.checkImplicit(t)
		r.s.tracef("%s: resource prepared %s", r.n.name, short(txn))
	}
	return v
}

// runFinish makes a commit or abort take effect and says whether it
// succeeded.
func (r *simRes) runFinish(txn protocol.TxnID, d protocol.Decision) bool {
	s, n := r.s, r.n
	t := s.partInc[n.pi][txn]
	if t == nil {
		s.fail("%s: resource asked to %v unknown %s", n.name, d, short(txn))
		return false
	}
	switch {
	case d == protocol.DecisionCommit && r.prepared[txn]:
		if len(t.branches) > 1 && !s.coordCommit[t] {
			s.fail("%s: resource committed %s before the coordinator's commit record was durable", n.name, short(txn))
		}
		amt, _ := t.amount(n.pi)
		r.bank.Commit(txn)
		delete(r.prepared, txn)
		r.committed[txn] = true
		s.tracef("%s: resource committed %s", n.name, short(txn))
		s.durCommitted[n.pi][t] = true
		s.expected[n.pi] += amt
		s.committed(n, t, txn)
		return true
	case d == protocol.DecisionCommit && r.committed[txn]:
		s.stats.cov["res.commit found committed (marker)"]++
		return true
	case d == protocol.DecisionCommit:
		s.fail("atomicity: %s asked its resource to commit %s, which it does not hold prepared and never committed", n.name, short(txn))
		return false
	case r.prepared[txn]:
		if s.coordCommit[t] {
			s.fail("atomicity: %s rolled back %s, whose commit record is durable", n.name, short(txn))
		}
		if p, ok := s.committedAt[t]; ok {
			s.fail("atomicity: %s rolled back at %s but committed at %s", short(txn), n.name, s.parts[p].name)
		}
		r.bank.Abort(txn)
		delete(r.prepared, txn)
		s.abortedAt[t] = n.pi
		s.tracef("%s: resource rolled back %s", n.name, short(txn))
		return true
	case r.committed[txn]:
		s.fail("%s asked its resource to roll back %s, which it committed", n.name, short(txn))
		return false
	}
	s.stats.cov["res.abort of nothing prepared"]++
	return true
}

// run makes op take effect in the resource and readies its answer.
func (r *simRes) run(op *resOp) {
	s := r.s
	op.runAt = -1
	op.answerAt = s.now + int64(s.r.IntN(3))
	op.answer = engine.Message{Type: op.typ, Txn: op.txn, To: r.n.name, Decision: op.dec}
	switch {
	case op.typ == engine.MsgResPrepared && op.lostConn:
		// The connection broke: the resource answers no, and the
		// prepare may yet run in the database (an orphan).
		op.answer.Vote = protocol.VoteNo
		op.lostConn = false
		if s.r.IntN(2) == 0 {
			s.stats.cov["res.prepare lost its connection, runs later"]++
			s.resOps = append(s.resOps, &resOp{n: r.n, typ: engine.MsgResPrepared, txn: op.txn, work: op.work,
				runAt: s.now + int64(s.r.IntN(s.p.resMaxDelay+1))})
		}
	case op.typ == engine.MsgResPrepared:
		op.answer.Vote = r.runPrepare(op.txn, op.work)
	case op.typ == engine.MsgResPrevented:
		op.answer.Vote = r.runPrevent(op.txn)
	case op.fail:
		s.stats.cov["res.failed"]++
		op.answer.Type = engine.MsgResFailed
	case !r.runFinish(op.txn, op.dec):
		op.answer.Type = engine.MsgResFailed
	}
	if op.inc == 0 {
		s.stats.cov["res.work nobody waits for ran"]++
	}
}

// scan lists the prepared transactions, in a deterministic order.
func (r *simRes) scan() []protocol.TxnID {
	ids := make([]protocol.TxnID, 0, len(r.prepared))
	for id := range r.prepared {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return bytes.Compare(ids[i][:], ids[j][:]) < 0 })
	return ids
}

// runResources is the durable resources' share of a tick: work that is
// due takes effect (in random order: it competes for locks), answers
// that are due reach the incarnation that asked, and scans are taken.
func (s *sim) runResources() {
	var due []*resOp
	for _, op := range s.resOps {
		if !op.dead && op.runAt >= 0 && op.runAt <= s.now {
			due = append(due, op)
		}
	}
	s.r.Shuffle(len(due), func(i, j int) { due[i], due[j] = due[j], due[i] })
	for _, op := range due {
		if s.err != nil {
			return
		}
		if op.dead {
			continue // its participant crashed at an earlier op's buggify
		}
		op.n.res.run(op)
		if n := op.n; s.faults && n.up && op.inc == n.inc && s.r.Float64() < s.p.buggifyP {
			// Done in the resource, its answer not yet delivered.
			s.crash(n, "after resource work")
		}
	}
	var answers []*resOp
	kept := s.resOps[:0]
	for _, op := range s.resOps {
		switch {
		case op.dead:
		case op.runAt < 0 && op.answerAt <= s.now:
			answers = append(answers, op)
		default:
			kept = append(kept, op)
		}
	}
	clear(s.resOps[len(kept):])
	s.resOps = kept
	s.r.Shuffle(len(answers), func(i, j int) { answers[i], answers[j] = answers[j], answers[i] })
	for _, op := range answers {
		n := op.n
		if s.err != nil {
			return
		}
		if !n.up || op.inc != n.inc {
			continue // work of a crashed incarnation: nobody to tell
		}
		if op.typ == engine.MsgResInDoubt && !n.res.prepared[op.txn] {
			s.stats.cov["res.stale scan result"]++
		}
		s.tracef("%s resource → %s: %v %s %v%v", n.name, n.name, op.answer.Type, short(op.txn), op.answer.Vote, op.answer.Decision)
		n.part.Step(op.answer)
		s.pump(n)
	}
	for _, n := range s.parts {
		if n.res == nil || !n.up || s.now < n.res.nextScan || s.err != nil {
			continue
		}
		n.res.nextScan = s.now + int64(s.p.scanEvery)
		for _, id := range n.res.scan() {
			s.resOps = append(s.resOps, &resOp{n: n, inc: n.inc, typ: engine.MsgResInDoubt, txn: id, runAt: -1,
				answerAt: s.now + int64(s.r.IntN(s.p.scanLag+1)),
				answer:   engine.Message{Type: engine.MsgResInDoubt, Txn: id, To: n.name}})
		}
	}
}

// crashRes is a crash of n's participant as its resource sees it: the
// answers it owes are lost, and work not yet done is either never done
// or done later all the same.
func (s *sim) crashRes(n *simNode) {
	for _, op := range s.resOps {
		if op.n != n || op.inc != n.inc || op.dead {
			continue
		}
		if op.runAt >= 0 && s.r.IntN(2) == 0 {
			op.inc = 0
			op.lostConn = false // its answer is lost anyway
			s.stats.cov["crash leaves resource work to run"]++
			continue
		}
		if op.runAt >= 0 {
			s.stats.cov["crash cancels resource work"]++
		}
		op.dead = true
	}
}

// restartRes tells a restarted participant what its resource holds
// prepared, before anything else reaches it.
func (s *sim) restartRes(n *simNode) {
	if !s.o.lateLeftovers {
		// Work a crashed incarnation left running ends before the
		// restarted one scans: otherwise a one-phase commit still running
		// can finish after the scan listed its transaction prepared, and
		// the coordinator, which never logs one-phase commits, answers
		// the inquiry abort, which the resource can never do.
		var left []*resOp
		for _, op := range s.resOps {
			if op.n == n && op.inc == 0 && !op.dead && op.runAt >= 0 {
				left = append(left, op)
			}
		}
		s.r.Shuffle(len(left), func(i, j int) { left[i], left[j] = left[j], left[i] })
		for _, op := range left {
			n.res.run(op)
		}
	}
	ids := n.res.scan()
	if len(ids) > 0 {
		s.stats.cov["restart finds prepared transactions in the resource"]++
	}
	for _, id := range ids {
		s.tracef("%s: scan finds %s prepared", n.name, short(id))
		n.part.Step(engine.Message{Type: engine.MsgResInDoubt, Txn: id, To: n.name})
	}
	n.res.nextScan = s.now + int64(s.p.scanEvery)
}

// resPending says what keeps a durable resource from being quiescent,
// or "" if nothing does.
func (s *sim) resPending(n *simNode) string {
	ops := 0
	for _, op := range s.resOps {
		if op.n == n && !op.dead {
			ops++
		}
	}
	if ops == 0 && len(n.res.prepared) == 0 && (!n.up || n.part.Stats().Voting == 0) {
		return ""
	}
	return fmt.Sprintf("resource prepared=%d work=%d", len(n.res.prepared), ops)
}

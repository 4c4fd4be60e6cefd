package engine_test

import (
	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/protocol"
)

// asyncBank is a participant's bank answering prepares asynchronously, in
// the participant's ordinary log mode: what the engine sees of
// participant/remote forwarding to an HTTP service. The prepare takes
// effect in the bank at once (the service prepared); the vote reaches the
// machine later, as a MsgResPrepared to the incarnation that asked, or
// never, if it crashes first. A crash loses the bank with every hold that
// no durable RecPrepared brings back — as the restarted remote resource's
// scan aborts at the service every prepared transaction it has no record
// of. During the fault phase a prepare may lose its connection: answered
// no, and its hold released (remote sends the abort). Commits and aborts
// are applied at once: remote's deliveries are kept until the service
// takes them, so to the machine they are done when called.
type asyncBank struct {
	*bank.Bank
	s *sim
	n *simNode
}

var _ engine.Resource = (*asyncBank)(nil)

// Prepare prepares in the bank and, mostly, answers VotePending.
func (a *asyncBank) Prepare(txn protocol.TxnID, work []byte) protocol.Vote {
	s := a.s
	v := a.Bank.Prepare(txn, work)
	if s.r.Float64() < s.p.resSyncP {
		s.stats.cov["async.prepare answered at once"]++
		return v
	}
	if s.faults && s.r.Float64() < s.p.resErrP {
		s.stats.cov["async.prepare lost its connection"]++
		if v == protocol.VoteYes {
			a.Bank.Abort(txn) // the abort remote sends after a NO it had to assume
		}
		v = protocol.VoteNo
	}
	s.stats.cov["async.prepare pending"]++
	s.resOps = append(s.resOps, &resOp{n: a.n, inc: a.n.inc, typ: engine.MsgResPrepared, txn: txn, runAt: -1,
		answerAt: s.now + int64(s.r.IntN(s.p.resMaxDelay+1)),
		answer:   engine.Message{Type: engine.MsgResPrepared, Txn: txn, To: a.n.name, Vote: v}})
	return protocol.VotePending
}

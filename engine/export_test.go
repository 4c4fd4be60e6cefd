package engine

import (
	"fmt"
	"sync"

	"github.com/commitd/commitd/protocol"
)

// Test-only access to the deliberately broken variants (planted.go), so
// that the simulation can show it catches each. The bugs planted in each
// machine are kept here, keyed by the machine, not in the machine: the
// simulation runs seeds on several goroutines at once, hence the sync.Map
// and the sync.Once that sets the hook before any machine reads it (every
// goroutine that builds a machine plants into it, if only nothing).
var (
	plantOnce sync.Once
	plants    sync.Map // *Shard or *Participant → plantedBug
)

func plant(machine any, bugs plantedBug) {
	plantOnce.Do(func() {
		plantedBugs = func(machine any) plantedBug {
			b, _ := plants.Load(machine)
			bugs, _ := b.(plantedBug)
			return bugs
		}
	})
	if bugs == 0 {
		plants.Delete(machine) // nothing to remember: the map stays small
		return
	}
	plants.Store(machine, bugs)
}

// set returns bugs with bug added when on is true.
func set(bugs, bug plantedBug, on bool) plantedBug {
	if on {
		return bugs | bug
	}
	return bugs
}

// SetParticipantBugs makes p vote YES before its prepared record is
// durable and/or ack a commit before its committed record is durable, and
// with reuseYes answer a prepare for an id it already has as a copy of
// the one it handled, whatever its work: the code before the fix of issue
// 13 (a reused id committed half a transaction). p keeps a log.
// With pendingVoteEarly a participant whose resource answers VotePending
// (an asynchronous resource in log mode, as participant/remote) votes YES
// as soon as the resource's prepare has started.
func SetParticipantBugs(p *Participant, voteBeforeDurable, ackBeforeDurable, reuseYes, pendingVoteEarly bool) {
	if p.cfg.DurableResource {
		panic("engine: SetParticipantBugs on a participant with a durable resource")
	}
	plant(p, set(set(set(set(0, bugVoteBeforeDurable, voteBeforeDurable), bugAckBeforeDurable, ackBeforeDurable), bugReuseYes, reuseYes), bugResVoteEarly, pendingVoteEarly))
}

// SetDurableResourceBugs makes p, a participant with a durable resource,
// vote YES (one-phase: committed) as soon as its resource has started the
// prepare and/or ack a commit as soon as its resource has started it, not
// when the resource reports either durable; reuseYes as in
// SetParticipantBugs.
func SetDurableResourceBugs(p *Participant, voteEarly, ackEarly, reuseYes bool) {
	if !p.cfg.DurableResource {
		panic("engine: SetDurableResourceBugs on a participant with a log")
	}
	plant(p, set(set(set(0, bugResVoteEarly, voteEarly), bugResAckEarly, ackEarly), bugReuseYes, reuseYes))
}

// ParticipantKnows reports whether p has id in hand or remembers it
// decided: a prepare for it would not be prepared as a new transaction.
func ParticipantKnows(p *Participant, id protocol.TxnID) bool {
	_, st := p.find(id)
	return st != 0
}

// SetShardBugs makes s send commit decisions and the client's reply
// before the commit record is durable, and (redeliverUndecided) its
// RedeliverNow send commit decisions for transactions not yet decided.
func SetShardBugs(s *Shard, decideBeforeDurable, redeliverUndecided bool) {
	plant(s, set(set(0, bugDecideBeforeDurable, decideBeforeDurable), bugRedeliverUndecided, redeliverUndecided))
}

// SetStagedShardBugs plants the staged-decision bugs of the SPIN model
// (docs/model/check.sh) in s: replyEarly (BUG_STAGED_REPLY_EARLY),
// timeoutAbort (BUG_STAGED_TIMEOUT_ABORT), inquiryLate
// (BUG_INQUIRY_LATE_STAGED), readOnly (BUG_STAGED_RO) and commitEarly
// (BUG_COMMIT_MSG_EARLY), besides the bugs SetShardBugs plants.
func SetStagedShardBugs(s *Shard, decideBeforeDurable, redeliverUndecided, replyEarly, timeoutAbort, inquiryLate, readOnly, commitEarly bool) {
	b := set(set(0, bugDecideBeforeDurable, decideBeforeDurable), bugRedeliverUndecided, redeliverUndecided)
	b = set(set(set(b, bugStagedReplyEarly, replyEarly), bugStagedTimeoutAbort, timeoutAbort), bugInquiryLateStaged, inquiryLate)
	plant(s, set(set(b, bugStagedRO, readOnly), bugCommitMsgEarly, commitEarly))
}

// AddPreventBug makes p, besides the bugs planted in it already, prepare a
// staged transaction it has prevented (BUG_NO_REFUSE_AFTER_PREVENT).
func AddPreventBug(p *Participant) {
	b, _ := plants.Load(p)
	bugs, _ := b.(plantedBug)
	plant(p, bugs|bugNoRefuseAfterPrevent)
}

// UndecidedTxns lists the staged transactions s holds undecided, with
// their states (for a failing simulation's report).
func UndecidedTxns(s *Shard) []string {
	var out []string
	for id, t := range s.txns.all() {
		if t.undecided {
			out = append(out, fmt.Sprintf("%x:%v resolving=%v replied=%v", id[14:], t.state, t.resolving, t.replied))
		}
	}
	return out
}

// CheckpointFresh builds a checkpoint's data as appendCheckpoint did
// before its buffers were reused (recordBufs): into a fresh buffer each
// time, of the last checkpoint's size. The "before" of
// BenchmarkCheckpoint.
func (p *Participant) CheckpointFresh() []byte {
	b := p.checkpointData(make([]byte, 0, p.ckptSize))
	p.ckptSize = len(b)
	return b
}

// CheckpointReused builds a checkpoint's data as appendCheckpoint does,
// into a buffer of ckptBufs, and hands it out with a Ready (handOut) as
// the pump's next Ready would. The "after" of BenchmarkCheckpoint.
func (p *Participant) CheckpointReused() []byte {
	b := p.checkpointData(p.ckptBufs.get(p.ckptSize))
	p.ckptSize = len(b)
	p.ckptBufs.use(b)
	p.ckptBufs.handOut()
	return b
}

package engine

// A planted bug is a deliberately broken variant of a machine that the
// simulation must catch (TestSimulationCatchesBugs): each releases an
// output before what it promises is durable, or answers a reused id as a
// copy. None is part of a machine or its config: the engine's own tests
// plant them through plantedBugs (export_test.go), which is nil in every
// other program, so a production machine pays one nil check per site.
type plantedBug uint16

const (
	// bugVoteBeforeDurable: a participant with a log votes YES as soon
	// as RecPrepared is appended, not when it is durable.
	bugVoteBeforeDurable plantedBug = 1 << iota
	// bugAckBeforeDurable: a participant with a log acks a commit as soon
	// as RecCommitted is appended.
	bugAckBeforeDurable
	// bugResVoteEarly: a participant whose resource answers VotePending
	// — a durable resource, or an asynchronous one in log mode — votes
	// YES (one-phase: committed) as soon as the resource's prepare has
	// started.
	bugResVoteEarly
	// bugResAckEarly: a participant with a durable resource acks a commit
	// as soon as the resource's commit has started.
	bugResAckEarly
	// bugReuseYes: a participant answers a prepare for an id it has as a
	// copy of the one it handled, whatever its work (before issue 13's
	// fix).
	bugReuseYes
	// bugDecideBeforeDurable: a shard sends its commit decisions and the
	// client's reply as soon as RecCommit is appended.
	bugDecideBeforeDurable
	// bugRedeliverUndecided: an operator's RedeliverNow sends the commit
	// decision for every transaction in flight, not only those whose
	// commit is durable.
	bugRedeliverUndecided

	// The staged-decision bugs, as docs/model/check.sh plants them in the
	// SPIN model (docs/protocol.md "Staged commits").

	// bugStagedReplyEarly: a shard tells the client "committed" from the
	// implicit commit before RecStaged is durable.
	bugStagedReplyEarly
	// bugNoRefuseAfterPrevent: a participant prepares a staged
	// transaction it has prevented.
	bugNoRefuseAfterPrevent
	// bugStagedTimeoutAbort: a shard's prepare timeout aborts a staged
	// transaction (logged) instead of resolving it.
	bugStagedTimeoutAbort
	// bugInquiryLateStaged: a shard answers an inquiry about a staged
	// transaction "abort" while its RecStaged is not yet durable.
	bugInquiryLateStaged
	// bugStagedRO: a shard counts a read-only vote as prepared for the
	// implicit commit.
	bugStagedRO
	// bugCommitMsgEarly: a shard sends a staged transaction's commit
	// decisions before its RecCommit is durable.
	bugCommitMsgEarly
)

// plantedBugs returns the bugs planted in machine (a *Shard or a
// *Participant). Only the engine's tests set it.
var plantedBugs func(machine any) plantedBug

// planted reports whether bug is planted in machine.
func planted(machine any, bug plantedBug) bool {
	return plantedBugs != nil && plantedBugs(machine)&bug != 0
}

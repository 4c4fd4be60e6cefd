package engine

import (
	"fmt"

	"github.com/commitd/commitd/protocol"
)

// Branch is one participant's share of a transaction: who, and what to do.
// The work is opaque to the coordinator; the participant's Resource reads it.
type Branch struct {
	Participant string
	Work        []byte
}

// MsgType says what a Message is.
type MsgType uint8

// Message types. The comment says who sends each to whom and which fields
// it uses besides Type and Txn.
const (
	// MsgBegin: client → coordinator. Branches, Tag.
	MsgBegin MsgType = iota + 1
	// MsgPrepare: coordinator → participant To. Work, OnePhase.
	MsgPrepare
	// MsgVote: participant From → coordinator. Vote; for a one-phase
	// prepare, VoteYes means "committed" and VoteNo "aborted".
	MsgVote
	// MsgDecision: coordinator → participant To, as a decision or as the
	// answer to an inquiry. Decision.
	MsgDecision
	// MsgAck: participant From → coordinator. The commit decision is
	// durable at the participant.
	MsgAck
	// MsgInquire: participant From → coordinator. "I am prepared: what was
	// decided?"
	MsgInquire

	// The Res messages carry the results of a resource's asynchronous work
	// back to the participant that started it (like raft's local messages
	// for asynchronous storage): the resource's goroutines hand them to
	// whoever drives the machine, which Steps them like any input. They
	// never cross the network. To is the participant's name.

	// MsgResPrepared: the answer to a Prepare that returned VotePending.
	// Vote (yes, no or read-only).
	MsgResPrepared
	// MsgResFinished: a durable resource (ParticipantConfig.DurableResource)
	// has made the commit or abort it was asked for durable. Decision.
	MsgResFinished
	// MsgResFailed: a durable resource could not finish the commit or
	// abort it was asked for; the transaction is still prepared there.
	// Decision.
	MsgResFailed
	// MsgResInDoubt: a durable resource holds Txn prepared (found by a
	// scan of the resource, at start or later).
	MsgResInDoubt

	// MsgNotSent: the coordinator's server → its shard. The MsgPrepare
	// for Txn to participant From was dropped before it left this
	// process (no connection to From), so From cannot have prepared or,
	// one-phase, committed it. Never crosses the network.
	MsgNotSent

	// MsgResolve: coordinator → participant To (staged decisions,
	// docs/protocol.md "Staged commits"). "Are you durably prepared for
	// Txn? If not, prevent it": the participant answers VoteYes if it is
	// (or once it is) durably prepared, and otherwise makes RecPrevented
	// durable — after which it refuses every prepare of Txn — and answers
	// VoteNo. A coordinator that has appended RecStaged for Txn sends it
	// instead of aborting on its own (a prepare timeout, a restart).
	MsgResolve

	// MsgResPrevented: a durable resource's answer to Preventer.Prevent.
	// Vote: VoteNo, "Txn is durably prevented here: every later prepare
	// of it is refused"; VoteYes, "Txn is durably prepared (or committed)
	// here", which the compare-and-swap found instead.
	MsgResPrevented
)

func (t MsgType) String() string {
	switch t {
	case MsgBegin:
		return "begin"
	case MsgPrepare:
		return "prepare"
	case MsgVote:
		return "vote"
	case MsgDecision:
		return "decision"
	case MsgAck:
		return "ack"
	case MsgInquire:
		return "inquire"
	case MsgResPrepared:
		return "res-prepared"
	case MsgResFinished:
		return "res-finished"
	case MsgResFailed:
		return "res-failed"
	case MsgResInDoubt:
		return "res-in-doubt"
	case MsgNotSent:
		return "not-sent"
	case MsgResolve:
		return "resolve"
	case MsgResPrevented:
		return "res-prevented"
	}
	return fmt.Sprintf("MsgType(%d)", uint8(t))
}

// Message is every protocol message, in or out of either machine. Only the
// fields its Type names are meaningful. Byte slices in a Message handed to
// Step may be retained by the machine only if it copies them; slices in a
// Ready stay valid until the next call into the machine.
type Message struct {
	Type MsgType
	Txn  protocol.TxnID
	// From is the sending participant (votes, acks, inquiries).
	From string
	// To is the receiving participant (prepares, decisions).
	To       string
	Vote     protocol.Vote
	Decision protocol.Decision
	// OnePhase marks a prepare that the participant must commit on its own
	// if it can: the transaction has a single branch.
	OnePhase bool
	// Staged, on a MsgBegin, asks the shard to run the transaction with a
	// staged decision (docs/protocol.md "Staged commits"): whoever
	// delivers the begin (the server's front door) sets it only when
	// every branch's participant can prevent, which only it knows (the
	// participant's Hello). A single-branch transaction ignores it (one
	// phase). On a MsgPrepare it tells the participant that the
	// transaction is staged: a NO vote must be a durable prevention.
	Staged   bool
	Work     []byte
	Branches []Branch
	// Tag is chosen by whoever delivers a MsgBegin (the server: which
	// client connection and request) and is echoed in the Reply.
	Tag uint64
	// UnixMs is the wall-clock time, in Unix milliseconds, at which
	// whoever delivers a MsgBegin received it (the server's front door).
	// The shard reads no clock: this is how it learns the age of the
	// Begin's id, which it refuses when it can no longer check it for
	// reuse (see Shard.checkIDTime). Zero: no wall time is known, and the
	// id's age is not checked (the engine's own tests).
	UnixMs int64
}

// Reply answers a client's MsgBegin. A Reply with Tag 0 answers no client:
// it is the decision of a staged transaction restored from the log and
// resolved (its client went with the old process), for whoever keeps
// outcomes by id.
type Reply struct {
	Txn     protocol.TxnID
	Tag     uint64
	Outcome protocol.Outcome
	// Cause and Participant say why an aborted transaction aborted;
	// Detail is a human-readable reason for a rejected one.
	Cause       protocol.Cause
	Participant string
	Detail      string
	// Participants, for a committed transaction, are those that voted
	// yes and must hear the commit (its RecCommit's); none for a
	// one-phase commit or one every branch of which was read-only.
	Participants []string
}

// RecordType says what a log Record is.
type RecordType uint8

// Record types. Coordinator records first, then participant records.
const (
	// RecCommit (coordinator, forced): the commit decision, with the
	// participants that must hear it (Participants).
	RecCommit RecordType = iota + 1
	// RecEnd (coordinator, not forced): every participant acknowledged the
	// commit; the RecCommit is no longer needed.
	RecEnd
	// RecPrepared (participant, forced before the YES vote): Work, so the
	// resource can re-establish the prepared state after a restart.
	RecPrepared
	// RecCommitted (participant, durable before the ack): commit decision.
	// Also written, with Work, for a one-phase commit (forced: the YES
	// vote waits for it). A two-phase commit is applied to the resource
	// as soon as this record is appended (early lock release) and is
	// written lazily: only its ack waits for it.
	RecCommitted
	// RecAborted (participant, not forced): abort decision.
	RecAborted
	// RecCheckpoint (participant): Data is a snapshot of the resource and
	// of every transaction still prepared; every record before it is no
	// longer needed once it is durable.
	RecCheckpoint
	// RecStaged (coordinator, forced, but nothing waits for it to send
	// the prepares, and it is forced at once only when no other
	// transaction of the shard waits for its reply; else the RecCommit
	// forced at the last vote takes it along): a staged transaction
	// began, with every branch's
	// participant (Participants). Once it is durable and every branch has
	// durably prepared, the transaction is committed (the implicit
	// commit); a restart that finds it without a decision resolves it.
	RecStaged
	// RecAbort (coordinator, forced): the abort decision of a staged
	// transaction; nobody is told before it is durable.
	RecAbort
	// RecPrevented (participant, forced): the participant will never
	// prepare the transaction; a staged NO vote and the answer to a
	// MsgResolve for a transaction not prepared here wait for it.
	RecPrevented
)

func (t RecordType) String() string {
	switch t {
	case RecCommit:
		return "commit"
	case RecEnd:
		return "end"
	case RecPrepared:
		return "prepared"
	case RecCommitted:
		return "committed"
	case RecAborted:
		return "aborted"
	case RecCheckpoint:
		return "checkpoint"
	case RecStaged:
		return "staged"
	case RecAbort:
		return "abort"
	case RecPrevented:
		return "prevented"
	}
	return fmt.Sprintf("RecordType(%d)", uint8(t))
}

// Record is one log record written by a machine. Machines number their
// records 1, 2, 3... in the order they emit them (or restore them); that
// number is the record's Index, and Durable(i) tells a machine that every
// record up to index i is durable. Mapping indexes to the log's own
// positions is the caller's business.
type Record struct {
	Type         RecordType
	Txn          protocol.TxnID
	Participants []string // RecCommit (the YES voters), RecStaged (every branch)
	Work         []byte   // RecPrepared, RecCommitted (one-phase)
	Data         []byte   // RecCheckpoint
}

// Applied reports one decision a participant has applied to its resource.
type Applied struct {
	Txn      protocol.TxnID
	Decision protocol.Decision
}

// Ready is everything a machine asks its caller to do, as plain data. The
// caller appends Records to its log (in order; Records[i] has index
// FirstIndex+i), sends Messages, answers clients with Replies, and may
// discard log records below LowWater. Outputs that depend on a record being
// durable (a YES vote, an ack, a commit decision, a "committed" reply) are
// already held back by the machine until the caller has said so with
// Durable, so the caller may send everything at once and never needs to
// order messages after records itself.
//
// The slices (and the byte slices and strings inside them) stay valid only
// until the next call into the machine that produced the Ready: encode or
// copy what must outlive that.
type Ready struct {
	// FirstIndex is the index of Records[0]; meaningless when Records is
	// empty.
	FirstIndex uint64
	// Records to append to the log, in order.
	Records []Record
	// Lazy is true when nothing waits urgently for Records to become
	// durable (only unforced records, or a commit record whose ack may go
	// out a little late): the log may write them with its next batch, or
	// after a short delay, rather than at once (wal.Log.AppendLazy).
	// Correctness never depends on it; it saves fsyncs at low load.
	Lazy bool
	// Messages to send now.
	Messages []Message
	// Replies to clients (coordinator shard only).
	Replies []Reply
	// Applied lists decisions applied to the resource, in order
	// (participant only).
	Applied []Applied
	// LowWater: records with a smaller index are no longer needed.
	LowWater uint64
}

// Resource is the local data service a participant commits into. The
// participant machine calls it from the one goroutine that drives the
// machine, so an implementation needs no locking of its own for these
// calls, and no call may block on I/O: a resource that must wait for a
// server starts the work and reports the result later (VotePending,
// ParticipantConfig.DurableResource).
type Resource interface {
	// Prepare checks that work can be done and, for VoteYes, holds
	// whatever it needs (locks, reserved amounts) until Commit or Abort.
	// VoteNo and VoteReadOnly hold nothing. VotePending means the answer
	// comes later as a MsgResPrepared; until then the transaction may
	// hold things, and after a YES it holds them until Commit or Abort.
	Prepare(txn protocol.TxnID, work []byte) protocol.Vote
	// Commit makes a YES-prepared transaction's work permanent and
	// releases its holds. For a durable resource it only starts that: a
	// MsgResFinished (or MsgResFailed) reports the end.
	Commit(txn protocol.TxnID)
	// Abort releases a YES-prepared transaction's holds. For a durable
	// resource it only starts that, as Commit.
	Abort(txn protocol.TxnID)
	// Restore re-establishes a YES-prepared hold during recovery, from the
	// work logged at prepare time. It must not fail: the hold existed.
	Restore(txn protocol.TxnID, work []byte)
	// Snapshot appends the committed state (not the holds) to dst.
	Snapshot(dst []byte) []byte
	// Load replaces all state, holds included, with a snapshot.
	Load(snapshot []byte) error
}

// Preventer is a durable resource (ParticipantConfig.DurableResource)
// that can prevent: make "Txn never prepares here" durable in the
// resource, atomically against a prepare of Txn — a compare-and-swap
// "record prevented(Txn) unless prepared(Txn)" where the prepared state
// lives (participant/postgres: the primary key of its marker table). A
// participant whose resource is one takes part in staged decisions
// (docs/protocol.md, "Participants that keep durability elsewhere");
// without it, it cannot prevent and its transactions run classic.
type Preventer interface {
	Resource
	// Prevent starts the compare-and-swap for txn; its result comes back
	// as a MsgResPrevented: VoteNo once "never prepares" is durable
	// there (and every later Prepare of txn votes no), VoteYes if txn is
	// durably prepared or committed there instead.
	Prevent(txn protocol.TxnID)
}

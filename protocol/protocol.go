package protocol

import (
	"fmt"

	"github.com/google/uuid"
)

// TxnID names one distributed transaction. Clients use a time-ordered
// UUID (version 7): the records of transactions begun close together sit
// close together in the logs, and the id's time tells a coordinator
// whether it can still check the id for reuse. On the wire it is its 16
// raw bytes.
type TxnID = uuid.UUID

// Limits on a transaction, checked by the wire before anything is
// allocated and by the engine when it reads its log.
const (
	// MaxBranches is the most participants one transaction may name.
	MaxBranches = 10
	// MaxNameLen bounds a participant name in bytes.
	MaxNameLen = 64
	// MaxWorkLen bounds one branch's work in bytes.
	MaxWorkLen = 4096
)

// Vote is a participant's answer to Prepare.
type Vote uint8

// Votes start at 1 so that a zero value is never mistaken for a real vote.
const (
	VoteYes      Vote = iota + 1 // prepared durably; will obey the decision
	VoteNo                       // cannot do the work; the transaction must abort
	VoteReadOnly                 // nothing to change; leave me out of phase two
	// VotePending is not a vote: a resource's Prepare returns it when it
	// has started work that finishes on the resource's own goroutines (a
	// round trip to a database server). It never leaves the participant,
	// and it is not Valid on the wire.
	VotePending
)

// Valid reports whether v is a vote that may cross the wire: yes, no or
// read-only.
func (v Vote) Valid() bool { return v >= VoteYes && v <= VoteReadOnly }

func (v Vote) String() string {
	switch v {
	case VoteYes:
		return "yes"
	case VoteNo:
		return "no"
	case VoteReadOnly:
		return "read-only"
	case VotePending:
		return "pending"
	}
	return fmt.Sprintf("Vote(%d)", uint8(v))
}

// Decision is the outcome the coordinator chose for a transaction.
type Decision uint8

// Decisions start at 1; the zero value means "none yet".
const (
	DecisionCommit Decision = iota + 1
	DecisionAbort
)

// Valid reports whether d is a decision: commit or abort.
func (d Decision) Valid() bool { return d >= DecisionCommit && d <= DecisionAbort }

func (d Decision) String() string {
	switch d {
	case DecisionCommit:
		return "commit"
	case DecisionAbort:
		return "abort"
	}
	return fmt.Sprintf("Decision(%d)", uint8(d))
}

// Outcome is what a client is told about its transaction.
type Outcome uint8

// Outcomes start at 1.
const (
	// OutcomeCommitted: the commit decision is durable; it will reach every
	// participant.
	OutcomeCommitted Outcome = iota + 1
	// OutcomeAborted: nothing was or will be committed anywhere.
	OutcomeAborted
	// OutcomeUnknown: the coordinator cannot say (a one-phase commit whose
	// participant did not answer, or a caller that lost the coordinator).
	// Never a guess.
	OutcomeUnknown
	// OutcomeRejected: the request was refused and nothing was started:
	// it was invalid (too many branches, a duplicate participant, an id
	// in use...: CauseInvalid), the coordinator was full (CauseOverloaded,
	// worth retrying later), or the id was too old or too new
	// (CauseStaleID, retry with a new id).
	OutcomeRejected
)

// Valid reports whether o is one of the four outcomes.
func (o Outcome) Valid() bool { return o >= OutcomeCommitted && o <= OutcomeRejected }

func (o Outcome) String() string {
	switch o {
	case OutcomeCommitted:
		return "committed"
	case OutcomeAborted:
		return "aborted"
	case OutcomeUnknown:
		return "unknown"
	case OutcomeRejected:
		return "rejected"
	}
	return fmt.Sprintf("Outcome(%d)", uint8(o))
}

// Cause says why a transaction was aborted or rejected.
type Cause uint8

// Causes start at 1; zero means none.
const (
	CauseVotedNo     Cause = iota + 1 // a participant voted no
	CauseTimeout                      // a participant did not vote within the prepare timeout
	CauseInvalid                      // the request was rejected; the detail says why
	CauseUnreachable                  // a participant was not connected: its prepare was never sent
	// CauseOverloaded: the begin was rejected because the coordinator
	// holds its maximum of transactions (in flight and remembered).
	// Nothing was started, so retrying later, with the same id, is safe.
	CauseOverloaded
	// CauseStaleID: the begin was rejected because its transaction id's
	// time (UUIDv7) is older than the coordinator can check for reuse, or
	// too far ahead of its clock; the detail says which. Retry with a new
	// id.
	CauseStaleID
)

// Valid reports whether c may be sent on the wire: zero (none) or one of
// the causes above.
func (c Cause) Valid() bool { return c <= CauseStaleID }

func (c Cause) String() string {
	switch c {
	case CauseVotedNo:
		return "voted-no"
	case CauseTimeout:
		return "timeout"
	case CauseInvalid:
		return "invalid"
	case CauseUnreachable:
		return "unreachable"
	case CauseOverloaded:
		return "overloaded"
	case CauseStaleID:
		return "stale-id"
	}
	return fmt.Sprintf("Cause(%d)", uint8(c))
}

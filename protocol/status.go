package protocol

import (
	"encoding/binary"
	"time"

	"github.com/google/uuid"
)

// TxnState is where a transaction stands, as a coordinator's outcome index
// and its shards tell it (`commitd admin txn`, client.Outcome).
type TxnState string

// The states an answer about one transaction may give. Only the first
// three are facts the coordinator's records prove; the last two say that
// it holds no record of the id, and why that proves nothing.
const (
	// TxnCommitted: the commit decision is durable. It reaches, or has
	// reached, every participant that voted yes (Participants say which
	// have acknowledged it while the coordinator still delivers it).
	TxnCommitted TxnState = "committed"
	// TxnAborted: the coordinator decided abort (Cause and Participant
	// say why). Nothing was or will be committed anywhere.
	TxnAborted TxnState = "aborted"
	// TxnUnknown: the coordinator itself could not tell — a one-phase
	// transaction whose only participant did not answer in time; that
	// participant knows (its ledger: `commitd admin outcomes`).
	TxnUnknown TxnState = "unknown"
	// TxnInFlight: the coordinator is running it now and has not decided:
	// prepares sent, votes awaited (Participants say whose), or a commit
	// decided whose record is not yet durable.
	TxnInFlight TxnState = "in-flight"
	// TxnNotFound: no record of the id, which is younger than the oldest
	// transaction the index keeps. Under presumed abort nothing of it
	// committed through this coordinator — except that an abort, a
	// rejection, or a transaction that never reached the coordinator
	// leave no record anyone must keep, and a one-phase or read-only
	// commit's entry could be lost by a power failure in the second
	// before it was written: see docs/operations.md.
	TxnNotFound TxnState = "not-found"
	// TxnExpired: the id is older than the oldest transaction the index
	// keeps (its retention or its size cap): whatever it came to has been
	// forgotten.
	TxnExpired TxnState = "expired"
)

// TxnStatus is the answer to "where does transaction Txn stand?".
type TxnStatus struct {
	Txn   TxnID    `json:"txn"`
	State TxnState `json:"state"`
	// Cause and Participant say why an aborted transaction aborted.
	Cause       string `json:"cause,omitempty"`
	Participant string `json:"participant,omitempty"`
	// DecidedAt is when the coordinator recorded the outcome in its
	// index (zero while in flight).
	DecidedAt time.Time `json:"decided_at,omitzero"`
	// AgeMs, in flight, is how long ago the transaction began (or, for a
	// commit restored after a restart, how long ago it was restored).
	AgeMs int64 `json:"age_ms,omitempty"`
	// Participants says where each participant stands, as far as the
	// coordinator knows.
	Participants []TxnParticipant `json:"participants,omitempty"`
	// KeptFrom is the time of the oldest transaction id the index is sure
	// to answer for: an id older than it is expired.
	KeptFrom time.Time `json:"kept_from,omitzero"`
	// Resolves are the operators' overrides of this transaction
	// (`commitd admin resolve`), applied or refused, from the audit logs
	// of the participants asked.
	Resolves []Resolve `json:"resolves,omitempty"`
	// Detail says in words what the answer means.
	Detail string `json:"detail"`
}

// Resolve is one operator's override of a transaction at a participant,
// as its audit log recorded it.
type Resolve struct {
	At       time.Time `json:"at"`
	Where    string    `json:"where"` // the participant
	Decision string    `json:"decision"`
	Reason   string    `json:"reason"`
	Who      string    `json:"who,omitempty"` // the admin tool's certificate identity, with TLS
	Peer     string    `json:"peer"`          // the admin tool's address
	Result   string    `json:"result"`        // "applied", or "refused: " and why
}

// TxnParticipant is one participant's state in a TxnStatus.
type TxnParticipant struct {
	Name string `json:"name"`
	// Vote is "yes", "no", "read-only", or "" (none received, or not
	// known to the index).
	Vote string `json:"vote,omitempty"`
	// State says what the coordinator knows of it: for example
	// "acknowledged", "commit sent, acknowledgement awaited", "vote
	// awaited", "voted no".
	State string `json:"state"`
}

// IDTime is the time a UUIDv7 transaction id carries (its first 48 bits,
// Unix milliseconds), and whether id is a UUIDv7 at all: a coordinator
// accepts no other.
func IDTime(id TxnID) (time.Time, bool) {
	if id.Version() != 7 || id.Variant() != uuid.RFC4122 {
		return time.Time{}, false
	}
	return time.UnixMilli(int64(binary.BigEndian.Uint64(id[:8]) >> 16)), true
}

package engine

import (
	"fmt"

	"github.com/commitd/commitd/protocol"
)

// txnLife is what a transaction struct of either machine carries to move
// through its states (coordState, partState): the state, and a generation
// that changes with every transition and again when the struct is retired
// and recycled, so that a timer or durability wait queued for it can tell
// it has gone stale (see queue.go).
type txnLife[S ~uint8] struct {
	state S
	gen   uint32
}

// become moves the transaction to state to. ok says the transition is
// possible from where it is; an impossible one is a programmer error and
// panics with both states.
func (l *txnLife[S]) become(id protocol.TxnID, to S, ok bool) {
	if !ok {
		panic(badTransition[S]{id, l.state, to})
	}
	l.state = to
	l.gen++
}

// badTransition is the panic of an impossible transition (a value, not a
// message: formatting it here would keep become from being inlined).
type badTransition[S ~uint8] struct {
	id       protocol.TxnID
	from, to S
}

func (b badTransition[S]) Error() string {
	return fmt.Sprintf("engine: %v: %v → %v", b.id, b.from, b.to)
}

func (l *txnLife[S]) generation() uint32 { return l.gen }

// stateName is names[s], or typ(s) for a state without a name.
func stateName[S ~uint8](names []string, s S, typ string) string {
	if int(s) < len(names) && names[s] != "" {
		return names[s]
	}
	return fmt.Sprintf("%s(%d)", typ, uint8(s))
}

// The machines' states by name, for panics and tests.

var coordStateNames = [...]string{
	coordVoting: "voting", coordDeciding: "deciding", coordDelivering: "delivering", coordEnding: "ending",
	coordCommitted: "committed", coordAborted: "aborted", coordUnknown: "unknown", coordAborting: "aborting",
}

func (s coordState) String() string { return stateName(coordStateNames[:], s, "coordState") }

var partStateNames = [...]string{
	partPreparing: "preparing", partVoting: "voting", partAborting: "aborting", partPrepared: "prepared",
	partCommitting: "committing", partCommitted: "committed", partAborted: "aborted", partReadOnly: "read-only",
	partPreventing: "preventing", partPrevented: "prevented",
}

func (s partState) String() string { return stateName(partStateNames[:], s, "partState") }

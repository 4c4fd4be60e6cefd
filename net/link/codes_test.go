package link

import (
	"testing"

	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/protocol"
)

// The servers convert between engine and wire codes by number; wire cannot
// import engine, so this is where the numbers are held equal.
func TestWireCodesMatchEngine(t *testing.T) {
	pairs := []struct {
		name      string
		wire, eng uint8
	}{
		{"vote yes", uint8(wire.VoteYes), uint8(protocol.VoteYes)},
		{"vote no", uint8(wire.VoteNo), uint8(protocol.VoteNo)},
		{"vote read-only", uint8(wire.VoteReadOnly), uint8(protocol.VoteReadOnly)},
		{"decision commit", uint8(wire.DecisionCommit), uint8(protocol.DecisionCommit)},
		{"decision abort", uint8(wire.DecisionAbort), uint8(protocol.DecisionAbort)},
		{"outcome committed", uint8(wire.OutcomeCommitted), uint8(protocol.OutcomeCommitted)},
		{"outcome aborted", uint8(wire.OutcomeAborted), uint8(protocol.OutcomeAborted)},
		{"outcome unknown", uint8(wire.OutcomeUnknown), uint8(protocol.OutcomeUnknown)},
		{"outcome rejected", uint8(wire.OutcomeRejected), uint8(protocol.OutcomeRejected)},
		{"cause voted no", uint8(wire.CauseVotedNo), uint8(protocol.CauseVotedNo)},
		{"cause timeout", uint8(wire.CauseTimeout), uint8(protocol.CauseTimeout)},
		{"cause invalid", uint8(wire.CauseInvalid), uint8(protocol.CauseInvalid)},
		{"cause unreachable", uint8(wire.CauseUnreachable), uint8(protocol.CauseUnreachable)},
		{"cause overloaded", uint8(wire.CauseOverloaded), uint8(protocol.CauseOverloaded)},
		{"cause stale id", uint8(wire.CauseStaleID), uint8(protocol.CauseStaleID)},
	}
	for _, p := range pairs {
		if p.wire != p.eng {
			t.Errorf("%s: wire %d, engine %d", p.name, p.wire, p.eng)
		}
	}
	if wire.MaxBranches != protocol.MaxBranches || wire.MaxNameLen != protocol.MaxNameLen || wire.MaxWorkLen != protocol.MaxWorkLen {
		t.Errorf("limits differ: wire %d/%d/%d, engine %d/%d/%d", wire.MaxBranches, wire.MaxNameLen, wire.MaxWorkLen,
			protocol.MaxBranches, protocol.MaxNameLen, protocol.MaxWorkLen)
	}
}

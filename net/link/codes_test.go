package link

import (
	"testing"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/net/wire"
)

// The servers convert between engine and wire codes by number; wire cannot
// import engine, so this is where the numbers are held equal.
func TestWireCodesMatchEngine(t *testing.T) {
	pairs := []struct {
		name      string
		wire, eng uint8
	}{
		{"vote yes", uint8(wire.VoteYes), uint8(engine.VoteYes)},
		{"vote no", uint8(wire.VoteNo), uint8(engine.VoteNo)},
		{"vote read-only", uint8(wire.VoteReadOnly), uint8(engine.VoteReadOnly)},
		{"decision commit", uint8(wire.DecisionCommit), uint8(engine.DecisionCommit)},
		{"decision abort", uint8(wire.DecisionAbort), uint8(engine.DecisionAbort)},
		{"outcome committed", uint8(wire.OutcomeCommitted), uint8(engine.OutcomeCommitted)},
		{"outcome aborted", uint8(wire.OutcomeAborted), uint8(engine.OutcomeAborted)},
		{"outcome unknown", uint8(wire.OutcomeUnknown), uint8(engine.OutcomeUnknown)},
		{"outcome rejected", uint8(wire.OutcomeRejected), uint8(engine.OutcomeRejected)},
		{"cause voted no", uint8(wire.CauseVotedNo), uint8(engine.CauseVotedNo)},
		{"cause timeout", uint8(wire.CauseTimeout), uint8(engine.CauseTimeout)},
		{"cause invalid", uint8(wire.CauseInvalid), uint8(engine.CauseInvalid)},
		{"cause unreachable", uint8(wire.CauseUnreachable), uint8(engine.CauseUnreachable)},
		{"cause overloaded", uint8(wire.CauseOverloaded), uint8(engine.CauseOverloaded)},
		{"cause stale id", uint8(wire.CauseStaleID), uint8(engine.CauseStaleID)},
	}
	for _, p := range pairs {
		if p.wire != p.eng {
			t.Errorf("%s: wire %d, engine %d", p.name, p.wire, p.eng)
		}
	}
	if wire.MaxBranches != engine.MaxBranches || wire.MaxNameLen != engine.MaxNameLen || wire.MaxWorkLen != engine.MaxWorkLen {
		t.Errorf("limits differ: wire %d/%d/%d, engine %d/%d/%d", wire.MaxBranches, wire.MaxNameLen, wire.MaxWorkLen,
			engine.MaxBranches, engine.MaxNameLen, engine.MaxWorkLen)
	}
}

package protocol

import "testing"

// The numbers are the wire's (docs/wire-format.md): they must never change.
func TestValuesAreTheWires(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uint8
	}{
		{"vote yes", uint8(VoteYes), 1},
		{"vote no", uint8(VoteNo), 2},
		{"vote read-only", uint8(VoteReadOnly), 3},
		{"decision commit", uint8(DecisionCommit), 1},
		{"decision abort", uint8(DecisionAbort), 2},
		{"outcome committed", uint8(OutcomeCommitted), 1},
		{"outcome aborted", uint8(OutcomeAborted), 2},
		{"outcome unknown", uint8(OutcomeUnknown), 3},
		{"outcome rejected", uint8(OutcomeRejected), 4},
		{"cause voted-no", uint8(CauseVotedNo), 1},
		{"cause timeout", uint8(CauseTimeout), 2},
		{"cause invalid", uint8(CauseInvalid), 3},
		{"cause unreachable", uint8(CauseUnreachable), 4},
		{"cause overloaded", uint8(CauseOverloaded), 5},
		{"cause stale-id", uint8(CauseStaleID), 6},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, the wire says %d", c.name, c.got, c.want)
		}
	}
}

func TestValid(t *testing.T) {
	for v := range 256 {
		if got, want := Vote(v).Valid(), v >= 1 && v <= 3; got != want {
			t.Errorf("Vote(%d).Valid() = %v", v, got)
		}
		if got, want := Decision(v).Valid(), v >= 1 && v <= 2; got != want {
			t.Errorf("Decision(%d).Valid() = %v", v, got)
		}
		if got, want := Outcome(v).Valid(), v >= 1 && v <= 4; got != want {
			t.Errorf("Outcome(%d).Valid() = %v", v, got)
		}
		if got, want := Cause(v).Valid(), v <= 6; got != want {
			t.Errorf("Cause(%d).Valid() = %v", v, got)
		}
	}
	if VotePending.Valid() {
		t.Error("VotePending is valid on the wire")
	}
}

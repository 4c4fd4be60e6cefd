package chaos

import (
	"strings"
	"testing"

	"github.com/google/uuid"
)

// txn returns a fixed, readable transaction id.
func txn(n byte) uuid.UUID { return uuid.UUID{15: n} }

// cleanHistory is a history that breaks nothing: three participants, one
// transaction of each answer, every branch writing.
func cleanHistory() *History {
	return &History{
		Acks: []Ack{
			{Txn: txn(1), Told: ToldCommitted, Participants: "p1,p2"},
			{Txn: txn(2), Told: ToldAborted, Participants: "p2,p3"},
			{Txn: txn(3), Told: ToldUnknown, Participants: "p1,p3"}, // recovery committed it
			{Txn: txn(4), Told: ToldUnknown, Participants: "p2,p3"}, // recovery aborted it
			{Txn: txn(5), Told: ToldRejected, Participants: "p1,p2"},
			{Txn: txn(6), Told: ToldAborted, Participants: "p1,p3"}, // p1 voted no: absent there
		},
		EveryBranchWrites: true,
		Ledgers: map[string]map[uuid.UUID]State{
			"p1": {txn(1): StateCommitted, txn(3): StateCommitted},
			"p2": {txn(1): StateCommitted, txn(2): StateAborted, txn(4): StateAborted},
			"p3": {txn(2): StateAborted, txn(3): StateCommitted, txn(6): StateAborted},
		},
		StartTotal:      3000,
		Totals:          map[string]int64{"p1": 990, "p2": 1010, "p3": 1000},
		MinBalance:      map[string]int64{"p1": 0, "p2": 3, "p3": 7},
		RecoveredTotals: map[string]int64{"p1": 990, "p2": 1010, "p3": 1000},
		Prepared:        map[string]int{"p1": 0, "p2": 0, "p3": 0},
		ProbesRun:       5,
		ProbesCommitted: 5,
	}
}

func TestCheckerPassesACleanHistory(t *testing.T) {
	r, err := Check(cleanHistory())
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() {
		t.Fatalf("clean history reported violations: %v", r.Violations)
	}
	if r.UnknownCommitted != 1 || r.UnknownAborted != 1 {
		t.Errorf("unknowns resolved: %d committed, %d aborted; want 1 and 1", r.UnknownCommitted, r.UnknownAborted)
	}
	if r.Told[ToldCommitted] != 1 || r.Told[ToldAborted] != 2 || r.Told[ToldUnknown] != 2 || r.Told[ToldRejected] != 1 {
		t.Errorf("told counts %v", r.Told)
	}
}

// TestCheckerCatchesEachViolation breaks a clean history in one way at a
// time and checks that exactly that invariant is reported broken.
func TestCheckerCatchesEachViolation(t *testing.T) {
	cases := []struct {
		name  string
		want  Kind
		words string // in the violation's text
		mut   func(h *History)
	}{
		{"committed at one participant, aborted at another", Atomicity, "aborted at p3", func(h *History) {
			h.Ledgers["p3"][txn(3)] = StateAborted // told unknown: not a durability question
		}},
		{"committed at one participant, missing at the other", Atomicity, "not at p3", func(h *History) {
			delete(h.Ledgers["p3"], txn(3)) // told unknown: not a durability question
		}},
		{"told committed, lost at a participant", Durability, "not committed at p2", func(h *History) {
			delete(h.Ledgers["p2"], txn(1))
		}},
		{"told committed, committed nowhere", Durability, "told committed", func(h *History) {
			h.EveryBranchWrites = false
			delete(h.Ledgers["p1"], txn(1))
			delete(h.Ledgers["p2"], txn(1))
		}},
		{"told aborted, committed everywhere", Durability, "client told aborted", func(h *History) {
			h.Ledgers["p2"][txn(2)] = StateCommitted
			h.Ledgers["p3"][txn(2)] = StateCommitted
		}},
		{"told rejected, committed", Durability, "client told rejected", func(h *History) {
			h.Ledgers["p1"][txn(5)] = StateCommitted
			h.Ledgers["p2"][txn(5)] = StateCommitted
		}},
		{"restart from disk loses a commit", Durability, "after a restart from disk", func(h *History) {
			h.RecoveredTotals["p1"] = 980
		}},
		{"money created", Conservation, "+5", func(h *History) { h.Totals["p2"] += 5; h.RecoveredTotals["p2"] += 5 }},
		{"negative balance", Conservation, "balance of -1", func(h *History) { h.MinBalance["p1"] = -1 }},
		{"a participant's total missing", Conservation, "no total", func(h *History) { delete(h.Totals, "p3"); delete(h.RecoveredTotals, "p3"); h.StartTotal -= 1000 }},
		{"left prepared in a ledger", Liveness, "still prepared at p2", func(h *History) {
			h.Ledgers["p2"][txn(9)] = StatePrepared
		}},
		{"participant holding prepared transactions", Liveness, "holds 2 prepared", func(h *History) { h.Prepared["p3"] = 2 }},
		{"coordinator with undelivered decisions", Liveness, "1 commit decisions undelivered", func(h *History) { h.CoordinatorInDoubt = 1 }},
		{"no longer commits", Liveness, "4 of 5 fresh", func(h *History) { h.ProbesCommitted = 4 }},
		{"never probed", Liveness, "0 of 0 fresh", func(h *History) { h.ProbesRun, h.ProbesCommitted = 0, 0 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := cleanHistory()
			tc.mut(h)
			r, err := Check(h)
			if err != nil {
				t.Fatal(err)
			}
			if r.OK() {
				t.Fatal("no violation reported")
			}
			found := false
			for _, v := range r.Violations {
				if v.Kind != tc.want {
					t.Errorf("unexpected %v violation: %v", v.Kind, v)
				}
				if strings.Contains(v.String(), tc.words) {
					found = true
				}
			}
			if !found {
				t.Errorf("no violation mentions %q: %v", tc.words, r.Violations)
			}
			for _, k := range Kinds {
				if r.Failed(k) != (k == tc.want) {
					t.Errorf("Failed(%v) = %v", k, r.Failed(k))
				}
			}
		})
	}
}

func TestCheckerBoundsItsReport(t *testing.T) {
	h := cleanHistory()
	for i := range 100 {
		id := uuid.UUID{0: 1, 15: byte(i)}
		h.Acks = append(h.Acks, Ack{Txn: id, Told: ToldCommitted, Participants: "p1,p2"})
	}
	r, _ := Check(h)
	if n := len(r.Violations); n != maxPerKind+1 {
		t.Fatalf("%d violations reported, want %d and a count of the rest", n, maxPerKind+1)
	}
	if last := r.Violations[maxPerKind].Detail; last != "... and 80 more" {
		t.Errorf("last line %q", last)
	}
}

func TestParseAckLog(t *testing.T) {
	in := txn(1).String() + " committed p1,p2\n" +
		txn(2).String() + " unknown p2,p3\n" +
		txn(3).String() + " abort" // torn last line: ignored
	acks, err := ParseAckLog(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(acks) != 2 || acks[0].Told != ToldCommitted || acks[1].Told != ToldUnknown ||
		acks[1].Txn != txn(2) || strings.Join(acks[1].Branches(), "+") != "p2+p3" {
		t.Fatalf("parsed %+v", acks)
	}
	for _, bad := range []string{
		"not-a-uuid committed p1\n",
		txn(1).String() + " maybe p1,p2\n",
		txn(1).String() + " committed\n",
	} {
		if _, err := ParseAckLog(strings.NewReader(bad)); err == nil {
			t.Errorf("%q parsed without error", bad)
		}
	}
}

// TestCheckerStreamsTheAckLog checks a history whose acknowledgements come
// from an ack log: the same verdicts as from a slice.
func TestCheckerStreamsTheAckLog(t *testing.T) {
	h := cleanHistory()
	var log strings.Builder
	for _, a := range h.Acks {
		log.WriteString(a.Txn.String() + " " + a.Told.String() + " " + a.Participants + "\n")
	}
	h.Acks = nil
	h.AckLog = strings.NewReader(log.String())
	if r, err := Check(h); err != nil || !r.OK() || r.Told[ToldAborted] != 2 {
		t.Fatalf("clean history from a log: %v %v %v", r.Violations, r.Told, err)
	}
	h = cleanHistory()
	h.Acks = nil
	h.AckLog = strings.NewReader(log.String())
	delete(h.Ledgers["p2"], txn(1))
	if r, err := Check(h); err != nil || !r.Failed(Durability) {
		t.Fatalf("lost commit not found from a log: %v %v", r.Violations, err)
	}
	h = cleanHistory()
	h.AckLog = strings.NewReader("garbage\n")
	if _, err := Check(h); err == nil {
		t.Fatal("a malformed ack log was accepted")
	}
}

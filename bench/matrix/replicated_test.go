package main

import (
	"fmt"
	"strings"
	"testing"
)

// A replicated cell is shown beside the one-coordinator run it is paired
// with, and the 100-caller share is judged against the 50 %.
func TestReplicatedCellsArePairedAndJudged(t *testing.T) {
	cells := matrix(false, 0)
	var rep []int
	for i, c := range cells {
		if c.group != groupReplicated {
			continue
		}
		rep = append(rep, c.callers)
		b := cells[c.base]
		if b.group != groupPaired || b.callers != c.callers || b.replicas != 0 || c.replicas != 3 || c.base != i-1 {
			t.Errorf("cell %q is paired with %q (replicas %d, base %d)", c.name, b.name, c.replicas, c.base)
		}
	}
	if fmt.Sprint(rep) != fmt.Sprint(replicatedAt) {
		t.Fatalf("replicated cells at %v callers, want %v", rep, replicatedAt)
	}
	for _, tc := range []struct {
		one, three float64
		verdict    string
	}{{40000, 24000, "met"}, {40000, 18000, "**missed**"}} {
		cs := []cell{
			{group: groupPaired, callers: 100, ok: true},
			{group: groupReplicated, callers: 100, replicas: 3, base: 0, ok: true},
		}
		cs[0].rep.CommittedPerS, cs[1].rep.CommittedPerS = tc.one, tc.three
		var got *target
		for _, tg := range targets(cs) {
			if strings.HasPrefix(tg.what, "3 replicas") {
				got = &tg
			}
		}
		want := fmt.Sprintf("%.0f %%", 100*tc.three/tc.one)
		if got == nil || got.measured != want || got.verdict != tc.verdict {
			t.Errorf("%v vs %v: target %+v, want %s %s", tc.three, tc.one, got, want, tc.verdict)
		}
		var b strings.Builder
		replicatedTable(func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }, cs)
		if !strings.Contains(b.String(), "**"+want+"**") {
			t.Errorf("table does not show the share %s:\n%s", want, b.String())
		}
	}
}

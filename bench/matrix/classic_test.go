package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// A classic (--staged=false) cell is shown beside the default, staged run
// it is paired with; --staged reaches the coordinator only; and the
// issue's two targets are judged from the pair.
func TestClassicCellsArePairedAndJudged(t *testing.T) {
	cells := matrix(false, 0)
	var at []int
	for i, c := range cells {
		if c.group != groupClassic {
			continue
		}
		at = append(at, c.callers)
		b := cells[c.base]
		if b.group != groupPaired || b.callers != c.callers || len(b.flags) != 0 || c.base != i-1 ||
			!slices.Equal(c.flags, []string{"--staged=false"}) {
			t.Errorf("cell %q (flags %v) is paired with %q (flags %v, base %d)", c.name, c.flags, b.name, b.flags, c.base)
		}
	}
	if fmt.Sprint(at) != fmt.Sprint(stagedAt) {
		t.Fatalf("classic cells at %v callers, want %v", at, stagedAt)
	}
	if got := serverFlags([]string{"--staged=false"}, false); len(got) != 0 {
		t.Errorf("a participant is given %v", got)
	}
	if got := serverFlags([]string{"--staged=false"}, true); !slices.Equal(got, []string{"--staged=false"}) {
		t.Errorf("the coordinator is given %v", got)
	}
	for _, tc := range []struct {
		stagedMs, classicMs float64
		verdict             string
	}{{0.3, 0.6, "met"}, {0.5, 0.6, "**missed**"}} {
		cs := []cell{
			{group: groupPaired, callers: 1, ok: true},
			{group: groupClassic, callers: 1, base: 0, ok: true, flags: []string{"--staged=false"}},
		}
		cs[0].rep.P50ms, cs[1].rep.P50ms = tc.stagedMs, tc.classicMs
		var got *target
		for _, tg := range targets(cs) {
			if strings.HasPrefix(tg.what, "staged, 1 caller") {
				got = &tg
			}
		}
		if got == nil || got.verdict != tc.verdict {
			t.Errorf("%v vs %v ms: target %+v, want %s", tc.stagedMs, tc.classicMs, got, tc.verdict)
		}
		var b strings.Builder
		classicTable(func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }, cs)
		if want := fmt.Sprintf("**%.2f**", tc.stagedMs/tc.classicMs); !strings.Contains(b.String(), want) {
			t.Errorf("table does not show the ratio %s:\n%s", want, b.String())
		}
	}
}

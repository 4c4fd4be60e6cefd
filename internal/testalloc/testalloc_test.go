package testalloc

import (
	"testing"
)

var sink []byte

// One allocation in every ten runs is 0.1 per run, not 0 as
// testing.AllocsPerRun reports it.
func TestPerRunCountsRareAllocations(t *testing.T) {
	i := 0
	f := func() {
		if i++; i%10 == 0 {
			sink = make([]byte, 64)
		}
	}
	if got := testing.AllocsPerRun(1000, f); got != 0 {
		t.Fatalf("testing.AllocsPerRun = %v: the rounding this package exists for is gone; reconsider it", got)
	}
	i = 0
	if got := PerRun(1000, f); got < 0.09 || got > 0.11 {
		t.Fatalf("PerRun = %v, want 0.1", got)
	}
	if got := PerRun(1000, func() {}); got != 0 {
		t.Fatalf("PerRun of nothing = %v, want 0", got)
	}
}

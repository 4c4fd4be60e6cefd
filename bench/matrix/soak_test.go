package main

import "testing"

// The soak is judged from 30 s on: the remembered transactions fill the
// heap in the first seconds, and only growth after that counts.
func TestHeapGrowth(t *testing.T) {
	mib := uint64(1 << 20)
	samples := func(bytes ...uint64) []heapSample {
		var hs []heapSample
		for i, b := range bytes {
			hs = append(hs, heapSample{t: float64(10 * (i + 1)), bytes: b * mib})
		}
		return hs
	}
	for _, tc := range []struct {
		name   string
		heap   []heapSample
		growth float64
		ok     bool
	}{
		{"flat after filling", samples(40, 80, 84, 84, 85, 86), 86.0/84 - 1, true},
		{"a leak", samples(40, 80, 84, 90, 96, 102), 102.0/84 - 1, true},
		{"shrinks", samples(80, 90, 90, 85, 85, 81), 81.0/90 - 1, true},
		{"too short to judge", samples(40, 80, 84, 85), 0, false},
		{"no samples", nil, 0, false},
	} {
		c := &cell{liveHeap: tc.heap}
		mid, _, growth, ok := heapGrowth(c)
		if ok != tc.ok || (ok && (mid.t != 30 || growth-tc.growth > 1e-9 || tc.growth-growth > 1e-9)) {
			t.Errorf("%s: growth %.4f from %.0f s, ok %v; want %.4f from 30 s, ok %v", tc.name, growth, mid.t, ok, tc.growth, tc.ok)
		}
		if tc.name == "a leak" && growth <= maxSoakGrowth {
			t.Errorf("a leak of %.0f%% passes the limit of %.0f%%", 100*growth, 100*maxSoakGrowth)
		}
	}
}

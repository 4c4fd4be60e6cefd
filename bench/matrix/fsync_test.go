package main

import "testing"

// The probe measures something and orders its quantiles.
func TestProbeFsync(t *testing.T) {
	p, err := probeFsync(t.TempDir(), 20)
	if err != nil {
		t.Fatal(err)
	}
	if p.n != 20 || p.p50 <= 0 || p.p50 > p.p90 || p.p90 > p.p99 {
		t.Fatalf("probe %+v: want 20 samples, 0 < p50 ≤ p90 ≤ p99", p)
	}
}

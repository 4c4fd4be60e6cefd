package main

import "testing"

// The probe measures something and orders its quantiles.
func TestProbeFsync(t *testing.T) {
	p, err := probeFsync(t.TempDir(), 20)
	if err != nil {
		t.Fatal(err)
	}
	if p.n != 20 || p.files != 1 || p.p50 <= 0 || p.p50 > p.p90 || p.p90 > p.p99 {
		t.Fatalf("probe %+v: want 20 samples of 1 file, 0 < p50 ≤ p90 ≤ p99", p)
	}
	if p, err = probeFsyncParallel(t.TempDir(), 10, 3); err != nil || p.files != 3 || p.p50 <= 0 {
		t.Fatalf("3 files: %+v, %v", p, err)
	}
}

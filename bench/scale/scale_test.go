package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRunCluster runs one short measured run of two groups with the real
// binary and checks that every figure the comparison rests on was read:
// throughput, each process's CPU per transaction, each coordinator's per
// transaction of its own group, and each process's fdatasyncs (a figure
// left at zero by a metrics name that changed would silently empty the
// table).
func TestRunCluster(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "commitd")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/commitd/commitd/cmd/commitd").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	o := options{bin: bin, duration: 2 * time.Second, warmup: 500 * time.Millisecond, callers: 20, accounts: 1000, procs: 2}
	res, err := runCluster(o, filepath.Join(dir, "run"), setup{name: "2 groups", groups: 2, callers: 20})
	if err != nil {
		t.Fatal(err)
	}
	if res.committedPerS <= 0 || res.answered <= 0 || res.benchUs <= 0 {
		t.Fatalf("%+v", res)
	}
	if len(res.names) != 4 {
		t.Fatalf("processes %v, want 2 participants and 2 coordinators", res.names)
	}
	for _, name := range res.names {
		if res.usPerTxn[name] <= 0 || res.syncsPerKTxn[name] <= 0 {
			t.Errorf("%s: %.1f µs/txn, %.1f fdatasyncs per 1000 txns", name, res.usPerTxn[name], res.syncsPerKTxn[name])
		}
		if strings.HasPrefix(name, "coordinator") && res.ownUsPerTxn[name] <= res.usPerTxn[name] {
			// Its own group had only a share of the transactions.
			t.Errorf("%s: %.1f µs per own transaction, %.1f per transaction of the run", name, res.ownUsPerTxn[name], res.usPerTxn[name])
		}
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		v    []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(tc.v); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.v, got, tc.want)
		}
	}
}

package main

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		in := append([]float64(nil), c.in...)
		if got := median(in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
		for i := range in {
			if in[i] != c.in[i] {
				t.Fatalf("median reordered its argument: %v", in)
			}
		}
	}
	if !math.IsNaN(median(nil)) || !math.IsNaN(ratio(1, 0)) {
		t.Error("median of nothing and a ratio over 0 must be NaN, not a number that looks measured")
	}
}

func TestCheckPairsRefusesWhatCannotBeCompared(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "commitd")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	only := regexp.MustCompile("x")
	for _, c := range []struct {
		o    options
		want string
	}{
		{options{bin: exe, against: exe, rounds: 3, noBuild: true}, "needs -only"},
		{options{bin: exe, against: exe, rounds: 0, noBuild: true, only: only}, "-rounds 0"},
		{options{bin: exe, against: filepath.Join(dir, "nope"), rounds: 3, noBuild: true, only: only}, "no such file"},
		{options{bin: exe, against: plain, rounds: 3, noBuild: true, only: only}, "not an executable"},
		{options{bin: exe, against: dir, rounds: 3, noBuild: true, only: only}, "not an executable"},
		{options{bin: exe, against: exe, rounds: 3, only: only}, "-no-build"},
		{options{bin: exe, against: exe, rounds: 3, noBuild: true, only: only}, ""},
	} {
		err := checkPairs(&c.o)
		if c.want == "" {
			if err != nil {
				t.Errorf("%+v: %v", c.o, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want one saying %q", c.o, err, c.want)
		}
	}
}

// The summary pairs each round's two runs and takes medians of the
// per-pair ratios, not a ratio of medians.
func TestPrintPairs(t *testing.T) {
	run := func(coord, parts, rate, p50 float64) pairRun {
		return pairRun{ok: true, coordCPU: coord, partsCPU: parts, committedPerS: rate, p50: p50}
	}
	runs := map[string][][2]pairRun{"cell": {
		{run(10, 10, 100, 1), run(5, 5, 200, 1)},   // B/A CPU 0.5
		{run(10, 10, 100, 1), run(10, 10, 100, 2)}, // 1.0
		{run(20, 20, 50, 1), run(10, 8, 100, 1)},   // 0.45
		{run(1, 1, 1, 1), pairRun{}},               // B failed: left out
	}}
	var b bytes.Buffer
	printPairs(&b, &options{bin: "B", against: "A"}, []string{"cell"}, runs)
	// Compare words, not column widths.
	var lines []string
	for _, l := range strings.Split(b.String(), "\n") {
		lines = append(lines, strings.Join(strings.Fields(l), " "))
	}
	out := strings.Join(lines, "\n")
	for _, want := range []string{
		"\n4 failed\n",
		"\nmedian 20.0, 100, 1.00 18.0, 100, 1.00 0.50, 2.00, 1.00",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
}

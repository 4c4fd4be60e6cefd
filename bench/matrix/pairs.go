package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Paired runs (-against): two binaries, the same cells, alternated.
//
// One round of a closed-loop cell says little about a change: CPU per
// transaction follows the throughput the round happens to get (bigger
// batches cost less per transaction), and on a shared machine that moves
// between rounds minutes apart by as much as a change does. So the cells
// run for each binary in turn, seconds apart, for several rounds, the
// binary that goes first alternating; each cell's figures are compared
// pair by pair (the two runs of one round) and summed up by medians.

// pairRun is one cell's figures from one binary in one round.
type pairRun struct {
	ok                      bool
	committedPerS, p50, p99 float64
	coordCPU, partsCPU      float64
	load                    float64
}

// cpu is the whole rig's CPU per transaction: coordinator + participants.
func (p pairRun) cpu() float64 { return p.coordCPU + p.partsCPU }

// row is p's column of a round's line.
func (p pairRun) row() string {
	return fmt.Sprintf("%.1f+%.1f=%.1f, %.0f, %.2f", p.coordCPU, p.partsCPU, p.cpu(), p.committedPerS, p.p50)
}

// checkPairs validates -against and -rounds.
func checkPairs(o *options) error {
	if o.only == nil {
		return errors.New("-against needs -only: the cells to compare (the document is not written)")
	}
	if o.rounds < 1 || o.rounds > 100 {
		return fmt.Errorf("-rounds %d: want 1 to 100", o.rounds)
	}
	for _, b := range []string{o.bin, o.against} {
		if st, err := os.Stat(b); err != nil {
			return fmt.Errorf("-against: %w", err)
		} else if st.IsDir() || st.Mode()&0o111 == 0 {
			return fmt.Errorf("-against: %s is not an executable file", b)
		}
	}
	if !o.noBuild {
		return errors.New("-against compares two built binaries: give -no-build (and -bin)")
	}
	return nil
}

// runPairs runs the -only cells for o.against ("A") and o.bin ("B") in
// turn, o.rounds times, and prints every pair and the medians.
func runPairs(o *options) error {
	names := []string{o.against, o.bin}
	label := []string{"A", "B"}
	fmt.Fprintf(os.Stderr, "paired runs: A = %s, B = %s, %d rounds, cells of %v\n", o.against, o.bin, o.rounds, o.duration)
	// runs[cell name][round][binary]
	runs := map[string][][2]pairRun{}
	var order []string
	profileDir := o.profileDir
	for r := range o.rounds {
		first := r % 2 // A first in even rounds, B first in odd ones
		for k := range 2 {
			b := (first + k) % 2
			oo := *o
			oo.bin = names[b]
			if profileDir != "" {
				oo.profileDir = filepath.Join(profileDir, fmt.Sprintf("round%d-%s", r+1, label[b]))
				if err := os.MkdirAll(oo.profileDir, 0o755); err != nil {
					return err
				}
			}
			fmt.Fprintf(os.Stderr, "\n-- round %d, %s (%s)\n", r+1, label[b], names[b])
			for _, c := range runCells(&oo) {
				if !c.ok && c.err == nil {
					continue // not selected
				}
				if _, seen := runs[c.name]; !seen {
					order = append(order, c.name)
					runs[c.name] = make([][2]pairRun, o.rounds)
				}
				runs[c.name][r][b] = pairRun{ok: c.ok && c.err == nil, committedPerS: c.rep.CommittedPerS,
					p50: c.rep.P50ms, p99: c.rep.P99ms, coordCPU: c.cpu.coordinator, partsCPU: c.cpu.participants,
					load: c.load[0]}
			}
		}
	}
	if len(order) == 0 {
		return fmt.Errorf("-only %q selects no cell", o.only)
	}
	printPairs(os.Stdout, o, order, runs)
	for _, name := range order {
		for r, pr := range runs[name] {
			for b := range 2 {
				if !pr[b].ok {
					return fmt.Errorf("cell %q failed in round %d for %s", name, r+1, label[b])
				}
			}
		}
	}
	return nil
}

// printPairs writes, per cell, one line per round and a line of medians:
// whole-rig CPU per transaction (coordinator + participants), committed/s
// and p50 for A and B, and B/A of each (medians of the per-pair ratios).
func printPairs(w io.Writer, o *options, order []string, runs map[string][][2]pairRun) {
	fmt.Fprintf(w, "\npaired runs (%s): A = %s, B = %s\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), o.against, o.bin)
	for _, name := range order {
		fmt.Fprintf(w, "\n%s\n", name)
		fmt.Fprintf(w, "%-7s %-26s %-26s %s\n", "round", "A: CPU µs/txn, /s, p50 ms", "B: CPU µs/txn, /s, p50 ms", "B/A: CPU, /s, p50 (load)")
		var cpu [2][]float64
		var rate [2][]float64
		var p50 [2][]float64
		var rCPU, rRate, rP50 []float64
		for r, pr := range runs[name] {
			if !pr[0].ok || !pr[1].ok {
				fmt.Fprintf(w, "%-7d failed\n", r+1)
				continue
			}
			for b := range 2 {
				cpu[b] = append(cpu[b], pr[b].cpu())
				rate[b] = append(rate[b], pr[b].committedPerS)
				p50[b] = append(p50[b], pr[b].p50)
			}
			rc := ratio(pr[1].cpu(), pr[0].cpu())
			rr := ratio(pr[1].committedPerS, pr[0].committedPerS)
			rp := ratio(pr[1].p50, pr[0].p50)
			rCPU, rRate, rP50 = append(rCPU, rc), append(rRate, rr), append(rP50, rp)
			fmt.Fprintf(w, "%-7d %-26s %-26s %.2f, %.2f, %.2f (%.1f, %.1f)\n", r+1,
				pr[0].row(), pr[1].row(), rc, rr, rp, pr[0].load, pr[1].load)
		}
		if len(rCPU) == 0 {
			continue
		}
		fmt.Fprintf(w, "%-7s %-26s %-26s %.2f, %.2f, %.2f\n", "median",
			fmt.Sprintf("%.1f, %.0f, %.2f", median(cpu[0]), median(rate[0]), median(p50[0])),
			fmt.Sprintf("%.1f, %.0f, %.2f", median(cpu[1]), median(rate[1]), median(p50[1])),
			median(rCPU), median(rRate), median(rP50))
	}
}

// ratio is b/a, or NaN when a is 0.
func ratio(b, a float64) float64 {
	if a == 0 {
		return math.NaN()
	}
	return b / a
}

// median is the middle value of xs (the mean of the two middle ones for an
// even count); xs is not modified.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

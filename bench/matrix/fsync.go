package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"
)

// fsyncProbe is the disk measured in the run it names: n times a 4 KiB
// pwrite + fdatasync into blocks of a file already written (as the WAL
// writes its prepared segments; FACTS.md "Disk"), in dir, on this one
// goroutine. A benchmark's latency is a share of what this allows, and
// the disk's speed moves between days, so it is measured beside the
// cells rather than quoted from elsewhere.
type fsyncProbe struct {
	n, files      int // fsyncs per file, files flushed at once
	p50, p90, p99 time.Duration
}

const (
	probeBlockBytes = 4096
	probeFileBytes  = 1 << 20
)

func probeFsync(dir string, n int) (fsyncProbe, error) {
	return probeFsyncParallel(dir, n, 1)
}

// probeFsyncParallel runs the probe on files goroutines at once, each on
// a file of its own — as a coordinator and its participants flush three
// logs on one disk at once — and pools their times.
func probeFsyncParallel(dir string, n, files int) (fsyncProbe, error) {
	type result struct {
		took []time.Duration
		err  error
	}
	results := make(chan result, files)
	for range files {
		go func() {
			took, err := probeFile(dir, n)
			results <- result{took, err}
		}()
	}
	var took []time.Duration
	var first error
	for range files {
		r := <-results
		if r.err != nil && first == nil {
			first = r.err
		}
		took = append(took, r.took...)
	}
	if first != nil {
		return fsyncProbe{}, first
	}
	slices.Sort(took)
	at := func(q float64) time.Duration { return took[min(len(took)-1, int(q*float64(len(took))))] }
	return fsyncProbe{n: n, files: files, p50: at(0.50), p90: at(0.90), p99: at(0.99)}, nil
}

func probeFile(dir string, n int) ([]time.Duration, error) {
	f, err := os.CreateTemp(dir, "fsync-probe-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	block := make([]byte, probeBlockBytes)
	if _, err := f.WriteAt(make([]byte, probeFileBytes), 0); err != nil {
		return nil, err
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	took := make([]time.Duration, n)
	for i := range n {
		block[0] = byte(i) // not the same bytes twice in a row
		start := time.Now()
		if _, err := f.WriteAt(block, int64(i%(probeFileBytes/probeBlockBytes))*probeBlockBytes); err != nil {
			return nil, err
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return nil, fmt.Errorf("fdatasync %s: %w", filepath.Base(f.Name()), err)
		}
		took[i] = time.Since(start)
	}
	return took, nil
}

func (p fsyncProbe) String() string {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return fmt.Sprintf("4 KiB pwrite + fdatasync into written blocks, %d times on each of %d files at once: p50 %.3f ms, p90 %.3f ms, p99 %.3f ms",
		p.n, p.files, ms(p.p50), ms(p.p90), ms(p.p99))
}

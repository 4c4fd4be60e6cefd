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
	n             int
	p50, p90, p99 time.Duration
}

const (
	probeBlockBytes = 4096
	probeFileBytes  = 1 << 20
)

func probeFsync(dir string, n int) (fsyncProbe, error) {
	f, err := os.CreateTemp(dir, "fsync-probe-")
	if err != nil {
		return fsyncProbe{}, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	block := make([]byte, probeBlockBytes)
	if _, err := f.WriteAt(make([]byte, probeFileBytes), 0); err != nil {
		return fsyncProbe{}, err
	}
	if err := f.Sync(); err != nil {
		return fsyncProbe{}, err
	}
	took := make([]time.Duration, n)
	for i := range n {
		block[0] = byte(i) // not the same bytes twice in a row
		start := time.Now()
		if _, err := f.WriteAt(block, int64(i%(probeFileBytes/probeBlockBytes))*probeBlockBytes); err != nil {
			return fsyncProbe{}, err
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return fsyncProbe{}, fmt.Errorf("fdatasync %s: %w", filepath.Base(f.Name()), err)
		}
		took[i] = time.Since(start)
	}
	slices.Sort(took)
	at := func(q float64) time.Duration { return took[min(n-1, int(q*float64(n)))] }
	return fsyncProbe{n: n, p50: at(0.50), p90: at(0.90), p99: at(0.99)}, nil
}

func (p fsyncProbe) String() string {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return fmt.Sprintf("4 KiB pwrite + fdatasync into written blocks, %d times: p50 %.3f ms, p90 %.3f ms, p99 %.3f ms",
		p.n, ms(p.p50), ms(p.p90), ms(p.p99))
}

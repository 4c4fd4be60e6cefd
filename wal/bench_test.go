package wal_test

import (
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commitd/commitd/wal"
)

// BenchmarkAppendSync: n appenders each call AppendSync in a loop with
// 64-byte records, on a real file (b.TempDir), default 64 MiB segments.
// ns/op and allocs/op are per record; records/s and fsyncs/record are
// reported as metrics. Timing excludes preparing segments (once per 64 MiB). "group" is group commit, "sync-per-append" is
// NoGroupCommit (one write+fsync per record).
func BenchmarkAppendSync(b *testing.B) {
	for _, mode := range []struct {
		name    string
		noGroup bool
	}{{"group", false}, {"sync-per-append", true}} {
		for _, n := range []int{1, 10, 100, 1000} {
			l, err := wal.Open(b.TempDir(), wal.Options{NoGroupCommit: mode.noGroup, SegmentsAhead: 1})
			if err != nil {
				b.Fatal(err)
			}
			waitReady(b, l, 1)
			b.Run(fmt.Sprintf("%s/appenders=%d", mode.name, n), func(b *testing.B) {
				benchAppendSync(b, l, n)
			})
			if err := l.Close(); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func benchAppendSync(b *testing.B, l *wal.Log, appenders int) {
	b.ReportAllocs()
	data := make([]byte, 64)
	var next atomic.Int64
	var wg sync.WaitGroup
	// Steady state between rollovers: the first append takes the ready
	// segment; wait until the preparer has zero-filled the next one, so
	// that its 64 MiB of writes do not share the disk with the timed run.
	if _, err := l.AppendSync(data); err != nil {
		b.Fatal(err)
	}
	waitReady(b, l, 1)
	syncs := l.Stats().Syncs
	b.ResetTimer()
	start := time.Now()
	for range appenders {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if _, err := l.AppendSync(data); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
	b.ReportMetric(float64(l.Stats().Syncs-syncs)/float64(b.N), "fsyncs/record")
}

// BenchmarkReadiedBesideFlush: with one P (GOMAXPROCS=1, as a container
// with one CPU gives), a goroutine readied right after an urgent Append —
// the pump's message to a participant, sent beside the log's flush — waits
// for the flusher's write and fdatasync unless the flusher yields first.
// The pump readies the flusher, then two goroutines; the second runs first
// (Go's runnext), the first is queued behind the flusher. The metric is
// the first one's wait from the Append, median over the run ("p50-wait-µs");
// yield=off is the flusher without its yield.
func BenchmarkReadiedBesideFlush(b *testing.B) {
	for _, yield := range []bool{true, false} {
		name := "yield=on"
		if !yield {
			name = "yield=off"
		}
		b.Run(name, func(b *testing.B) {
			defer wal.SetYieldBeforeWrite(wal.SetYieldBeforeWrite(yield))
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
			l, err := wal.Open(b.TempDir(), wal.Options{SegmentsAhead: 1})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			data := make([]byte, 64)
			if _, err := l.AppendSync(data); err != nil {
				b.Fatal(err)
			}
			waitReady(b, l, 1)
			waits := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				first, second := make(chan struct{}), make(chan struct{})
				ran := make(chan time.Time, 2)
				go func() { <-first; ran <- time.Now() }()
				go func() { <-second; ran <- time.Now() }()
				time.Sleep(50 * time.Microsecond) // both parked
				t0 := time.Now()
				if _, err := l.Append(data); err != nil {
					b.Fatal(err)
				}
				close(first)
				close(second)
				<-ran // the second, from runnext
				waits = append(waits, (<-ran).Sub(t0))
				if _, err := l.AppendSync(data); err != nil { // the first flush is done
					b.Fatal(err)
				}
			}
			b.StopTimer()
			slices.Sort(waits)
			b.ReportMetric(float64(waits[len(waits)/2].Microseconds()), "p50-wait-µs")
		})
	}
}

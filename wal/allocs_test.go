package wal_test

import (
	"sync/atomic"
	"testing"

	"github.com/commitd/commitd/wal"
)

// countWaiter is a reusable Waiter: pointer receiver, no allocation. It is
// called on the flusher, or on Notify's caller when the LSN is already
// durable, hence the atomics.
type countWaiter struct{ n, failed atomic.Int64 }

func (w *countWaiter) LogDurable(wal.LSN) { w.n.Add(1) }

func (w *countWaiter) LogFailed(wal.LSN, error) {
	w.n.Add(1)
	w.failed.Add(1)
}

// TestAppendDoesNotAllocate proves the hot path allocates nothing per record
// once the log's buffers have grown to their working size: Append copies
// into a reused batch buffer, Notify with a reused Waiter appends to a
// reused slice, and the flusher (write, fsync, watermark, callbacks) reuses
// everything too. It uses a real file: the OS file system does not
// allocate per write. AllocsPerRun counts every allocation in the process,
// the flusher's included.
func TestAppendDoesNotAllocate(t *testing.T) {
	l, err := wal.Open(t.TempDir(), wal.Options{SegmentBytes: 8 << 20, SegmentsAhead: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	waitReady(t, l, 1)
	data := make([]byte, 64)
	w := &countWaiter{}
	const burst = 2000
	appendNotify := func() {
		lsn, err := l.Append(data)
		if err != nil {
			t.Fatal(err)
		}
		l.Notify(lsn, w)
	}
	// Warm up: grow both batch buffers, the waiter lists and the first
	// segment to the size a burst needs.
	for range 4 {
		for range burst {
			appendNotify()
		}
		if err := l.Sync(l.LastLSN()); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name string
		f    func()
	}{
		{"Append+Notify", appendNotify},
		{"AppendLazy+Notify", func() {
			lsn, err := l.AppendLazy(data)
			if err != nil {
				t.Fatal(err)
			}
			l.Notify(lsn, w)
		}},
		{"AppendNotify", func() {
			if _, err := l.AppendNotify(data, w); err != nil {
				t.Fatal(err)
			}
		}},
		{"AppendSync", func() {
			if _, err := l.AppendSync(data); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, c := range cases {
		runs := burst
		if c.name == "AppendSync" {
			runs = 200 // one fsync each
		}
		allocs := testing.AllocsPerRun(runs, c.f)
		if err := l.Sync(l.LastLSN()); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %.3f allocations per record", c.name, allocs)
		if allocs != 0 && !raceEnabled {
			t.Errorf("%s allocates %.3f times per record", c.name, allocs)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if want := int64(7*burst + 3); w.n.Load() != want || w.failed.Load() != 0 {
		t.Fatalf("waiter called %d times (%d failed), want %d", w.n.Load(), w.failed.Load(), want)
	}
}

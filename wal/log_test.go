package wal_test

import (
	"bytes"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commitd/commitd/wal"
	"github.com/commitd/commitd/wal/waltest"
)

func TestAppendReplayAcrossSegmentsAndReopen(t *testing.T) {
	fs := waltest.NewMemFS()
	l := openMem(t, fs, wal.Options{})
	const n = 500
	for i := range uint64(n) {
		lsn, err := l.Append(record(i, 150))
		if err != nil {
			t.Fatal(err)
		}
		if lsn != wal.LSN(i+1) {
			t.Fatalf("Append %d got LSN %d", i, lsn)
		}
	}
	if err := l.Sync(n); err != nil {
		t.Fatal(err)
	}
	if got := l.DurableLSN(); got != n {
		t.Fatalf("DurableLSN %d, want %d", got, n)
	}
	st := l.Stats()
	if st.Segments < 10 || st.Appends != n {
		t.Fatalf("expected many 1 KiB segments and %d appends: %+v", n, st)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append([]byte("x")); !errors.Is(err, wal.ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}

	l = openMem(t, fs, wal.Options{})
	defer l.Close()
	if rec := l.Recovery(); rec.LastLSN != n || rec.FirstLSN != 1 || rec.Torn {
		t.Fatalf("recovery %+v", rec)
	}
	lsns, recs := replayAll(t, l, 1)
	if len(lsns) != n {
		t.Fatalf("replayed %d records, want %d", len(lsns), n)
	}
	for i, r := range recs {
		if !bytes.Equal(r, record(uint64(i), 150)) {
			t.Fatalf("record %d differs", i)
		}
	}
	// Appends continue the numbering.
	lsn, err := l.AppendSync([]byte("after reopen"))
	if err != nil || lsn != n+1 {
		t.Fatalf("AppendSync after reopen: %d, %v", lsn, err)
	}
}

func TestReplayFrom(t *testing.T) {
	fs := waltest.NewMemFS()
	l := openMem(t, fs, wal.Options{})
	defer l.Close()
	for i := range uint64(200) {
		if _, err := l.Append(record(i, 100)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Sync(200); err != nil {
		t.Fatal(err)
	}
	for _, from := range []wal.LSN{0, 1, 2, 57, 199, 200, 201, 1000} {
		lsns, recs := replayAll(t, l, from)
		want := 200 - int(max(from, 1)) + 1
		if from > 200 {
			want = 0
		}
		if len(lsns) != want {
			t.Fatalf("Replay(%d): %d records, want %d", from, len(lsns), want)
		}
		for i, lsn := range lsns {
			if !bytes.Equal(recs[i], record(uint64(lsn-1), 100)) {
				t.Fatalf("Replay(%d): LSN %d has the wrong data", from, lsn)
			}
		}
	}
	// Replay stops early when fn fails.
	stop := errors.New("stop")
	calls := 0
	err := l.Replay(10, func(wal.LSN, []byte) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("Replay with failing fn: %v after %d calls", err, calls)
	}
}

func TestTooLarge(t *testing.T) {
	l := openMem(t, waltest.NewMemFS(), wal.Options{SegmentBytes: 4096, MaxRecordBytes: 100})
	defer l.Close()
	if _, err := l.Append(make([]byte, 101)); !errors.Is(err, wal.ErrTooLarge) {
		t.Fatalf("101-byte record: %v", err)
	}
	if _, err := l.AppendSync(make([]byte, 100)); err != nil {
		t.Fatalf("100-byte record: %v", err)
	}
	if _, err := l.AppendSync(nil); err != nil {
		t.Fatalf("empty record: %v", err)
	}
}

// TestGroupCommitBatches: while the flusher syncs a batch, every other
// writer's record queues up and goes into the next batch. On the in-memory
// file system a sync is instant, so left alone the flusher would often take
// each record before the next writer appended it, and whether appends batch
// would depend on scheduling (it failed most runs without -race). So each
// sync of segment data holds until every writer still running has its
// record appended — the state a real fsync's ~100 µs leaves behind.
func TestGroupCommitBatches(t *testing.T) {
	fs := waltest.NewMemFS()
	l := openMem(t, fs, wal.Options{SegmentBytes: 1 << 20})
	defer l.Close()
	const writers, each = 50, 40
	var finished atomic.Int64
	fs.Inject(func(op waltest.Op) error {
		if op.Kind != waltest.OpSync || !strings.HasSuffix(op.Path, ".wal") {
			return nil
		}
		// Each running writer has exactly one record appended and not yet
		// durable, or is about to append one.
		deadline := time.Now().Add(10 * time.Second)
		for l.LastLSN()-l.DurableLSN() < wal.LSN(writers-finished.Load()) {
			if time.Now().After(deadline) {
				t.Errorf("writers did not queue: last %d durable %d finished %d", l.LastLSN(), l.DurableLSN(), finished.Load())
				return nil
			}
			runtime.Gosched()
		}
		return nil
	})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			defer finished.Add(1)
			for i := range each {
				if _, err := l.AppendSync(record(uint64(w*each+i), 64)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	fs.Inject(nil)
	st := l.Stats()
	if st.Appends != writers*each || st.DurableLSN != writers*each {
		t.Fatalf("stats %+v", st)
	}
	t.Logf("%d syncs for %d records", st.Syncs, st.Appends)
	// Each sync finds every running writer waiting, so a round of 50
	// records takes at most two batches: the one being synced and the one
	// queued behind it.
	if st.Syncs > 2*each+2 {
		t.Fatalf("group commit did not batch: %d syncs for %d records", st.Syncs, st.Appends)
	}
}

func TestNoGroupCommitSyncsEveryRecord(t *testing.T) {
	fs := waltest.NewMemFS()
	var mu sync.Mutex
	var calls, records, bytesWritten int
	l := openMem(t, fs, wal.Options{SegmentBytes: 1 << 16, NoGroupCommit: true,
		OnSync: func(r, b int, _ time.Duration) {
			mu.Lock()
			calls, records, bytesWritten = calls+1, records+r, bytesWritten+b
			mu.Unlock()
		}})
	var wg sync.WaitGroup
	const writers, each = 20, 25
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if _, err := l.AppendSync(record(uint64(w*each+i), 64)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	st := l.Stats()
	if st.Syncs != writers*each {
		t.Fatalf("NoGroupCommit: %d syncs for %d records", st.Syncs, writers*each)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != writers*each || records != writers*each || bytesWritten <= 8*writers*each {
		t.Fatalf("OnSync saw %d calls, %d records, %d bytes", calls, records, bytesWritten)
	}
}

func TestSyncOfDurableLSNDoesNoIO(t *testing.T) {
	fs := waltest.NewMemFS()
	l := openMem(t, fs, wal.Options{SegmentBytes: 1 << 16})
	defer l.Close()
	lsn, err := l.AppendSync([]byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, l, 2)
	var ops atomic.Int64
	fs.Inject(func(waltest.Op) error { ops.Add(1); return nil })
	for range 100 {
		if err := l.Sync(lsn); err != nil {
			t.Fatal(err)
		}
	}
	var r recorder
	l.Notify(lsn, &r)
	fs.Inject(nil)
	if n := ops.Load(); n != 0 {
		t.Fatalf("Sync/Notify of a durable LSN did %d file operations", n)
	}
	if lsns, errs := r.snapshot(); len(lsns) != 1 || lsns[0] != lsn || errs[0] != nil {
		t.Fatalf("Notify of a durable LSN: %v %v", lsns, errs)
	}
}

// The flusher completes waiters in LSN order. A Notify for an LSN that is
// already durable is answered at once on the caller's goroutine, which may
// interleave with the flusher's delivery of a batch — so order is checked
// for the waiters registered with AppendNotify (always the flusher's), and
// exactly-once delivery for everyone.
func TestNotifyOrder(t *testing.T) {
	fs := waltest.NewMemFS()
	l := openMem(t, fs, wal.Options{SegmentBytes: 4096})
	var ordered, any recorder
	var wg sync.WaitGroup
	const writers, each = 16, 100
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				data := record(uint64(w*each+i), 40)
				if w%2 == 0 {
					if _, err := l.AppendNotify(data, &ordered); err != nil {
						t.Error(err)
						return
					}
					continue
				}
				// Separate Append and Notify race with other writers, so
				// registrations arrive out of LSN order.
				lsn, err := l.Append(data)
				if err != nil {
					t.Error(err)
					return
				}
				l.Notify(lsn, &any)
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	seen := make(map[wal.LSN]bool)
	for _, r := range []*recorder{&ordered, &any} {
		lsns, errs := r.snapshot()
		for i, lsn := range lsns {
			if errs[i] != nil {
				t.Fatalf("LSN %d: %v", lsn, errs[i])
			}
			if seen[lsn] {
				t.Fatalf("LSN %d notified twice", lsn)
			}
			seen[lsn] = true
			if r == &ordered && i > 0 && lsn <= lsns[i-1] {
				t.Fatalf("flusher notification %d is for LSN %d after LSN %d: not in LSN order", i, lsn, lsns[i-1])
			}
		}
	}
	if len(seen) != writers*each {
		t.Fatalf("%d LSNs notified, want %d", len(seen), writers*each)
	}
}

func TestCloseSyncsPending(t *testing.T) {
	fs := waltest.NewMemFS()
	l := openMem(t, fs, wal.Options{})
	for i := range uint64(100) {
		if _, err := l.Append(record(i, 30)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if l.DurableLSN() != 100 {
		t.Fatalf("DurableLSN after Close: %d", l.DurableLSN())
	}
	// Only synced data survives a crash, and all 100 records were synced.
	l = openMem(t, fs.Crash(nil), wal.Options{})
	defer l.Close()
	if lsns, _ := replayAll(t, l, 1); len(lsns) != 100 {
		t.Fatalf("after crash: %d records", len(lsns))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); !errors.Is(err, wal.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
}

func TestBackPressure(t *testing.T) {
	fs := waltest.NewMemFS()
	l := openMem(t, fs, wal.Options{SegmentBytes: 1 << 16, MaxPendingBytes: 256})
	defer l.Close()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 200 {
				if _, err := l.Append(record(uint64(w*200+i), 100)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := l.Sync(l.LastLSN()); err != nil {
		t.Fatal(err)
	}
	if lsns, _ := replayAll(t, l, 1); len(lsns) != 1600 {
		t.Fatalf("%d records", len(lsns))
	}
}

// TestWaitersAreBounded floods a log whose fsync is stuck with Notify calls
// (many for one record) and AppendNotify calls: the waiter list must stop
// growing at MaxWaiters, the flood blocking (back-pressure) instead, and
// every waiter must be told once the fsync completes. Before the bound, the
// list grew with every call: 200,000 Notify calls made 200,000 entries.
func TestWaitersAreBounded(t *testing.T) {
	fs := waltest.NewMemFS()
	l := openMem(t, fs, wal.Options{SegmentBytes: 1 << 20})
	defer l.Close()
	waitReady(t, l, 2)
	release := make(chan struct{})
	fs.Inject(func(op waltest.Op) error {
		if op.Kind == waltest.OpSync && strings.HasSuffix(op.Path, ".wal") {
			<-release
		}
		return nil
	})
	first, err := l.Append([]byte("stuck in fsync"))
	if err != nil {
		t.Fatal(err)
	}
	const notifies, appends = 200_000, 100_000
	w := &countWaiter{}
	var wg sync.WaitGroup
	wg.Go(func() {
		for range notifies {
			l.Notify(first, w)
		}
	})
	wg.Go(func() {
		for range appends {
			if _, err := l.AppendNotify(nil, w); err != nil {
				t.Error(err)
				return
			}
		}
	})
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	// Watch until the flood finishes or stops making progress.
	peak, last, still := 0, -1, 0
	for still < 100 {
		select {
		case <-done:
			still = 100
		case <-time.After(time.Millisecond):
		}
		n := l.Waiters()
		peak = max(peak, n)
		if n == last {
			still++
		} else {
			still = 0
		}
		last = n
	}
	close(release)
	<-done
	if peak > wal.DefaultMaxWaiters {
		t.Fatalf("waiter list grew to %d entries, bound %d", peak, wal.DefaultMaxWaiters)
	}
	if err := l.Sync(l.LastLSN()); err != nil {
		t.Fatal(err)
	}
	if got := w.n.Load(); got != notifies+appends || w.failed.Load() != 0 {
		t.Fatalf("%d waiters told (%d failed), want %d", got, w.failed.Load(), notifies+appends)
	}
	t.Logf("peak %d waiters", peak)
}

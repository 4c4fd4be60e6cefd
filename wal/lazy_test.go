package wal_test

import (
	"testing"
	"time"

	"github.com/commitd/commitd/wal"
	"github.com/commitd/commitd/wal/waltest"
)

// A lazy record does not wake the flusher: with a long LazyDelay it stays
// pending until something else makes the flusher write — here a Sync of
// that very record, which must hurry it rather than wait out the delay.
func TestAppendLazyWaitsForAReason(t *testing.T) {
	l := openMem(t, waltest.NewMemFS(), wal.Options{LazyDelay: time.Hour})
	defer l.Close()
	lsn, err := l.AppendLazy([]byte("end of something"))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if d := l.DurableLSN(); d >= lsn {
		t.Fatalf("a lazy record alone was made durable (durable %d, lsn %d) without a reason", d, lsn)
	}
	if st := l.Stats(); st.Syncs != 0 {
		t.Fatalf("%d syncs for a lone lazy record", st.Syncs)
	}
	done := make(chan error, 1)
	go func() { done <- l.Sync(lsn) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Sync of a lazy record waited for LazyDelay (1 h)")
	}
}

// Lazy records ride in the next urgent batch: one write and one fsync for
// all of them, and their waiters are told in LSN order.
func TestAppendLazyRidesInTheNextBatch(t *testing.T) {
	l := openMem(t, waltest.NewMemFS(), wal.Options{LazyDelay: time.Hour})
	defer l.Close()
	rec := &recorder{}
	for i := range uint64(5) {
		lsn, err := l.AppendLazy(record(i, 40))
		if err != nil {
			t.Fatal(err)
		}
		l.Notify(lsn, rec)
	}
	if lsns, _ := rec.snapshot(); len(lsns) != 0 {
		t.Fatalf("waiters of lazy records told %v before any batch", lsns)
	}
	lsn, err := l.AppendSync(record(5, 40))
	if err != nil {
		t.Fatal(err)
	}
	if lsn != 6 {
		t.Fatalf("urgent record got LSN %d, want 6", lsn)
	}
	if st := l.Stats(); st.Syncs != 1 || st.Batches != 1 {
		t.Fatalf("want the five lazy records and the urgent one in one batch, got %d syncs in %d batches", st.Syncs, st.Batches)
	}
	lsns, errs := rec.snapshot()
	if len(lsns) != 5 {
		t.Fatalf("told %v, want LSNs 1-5", lsns)
	}
	for i, got := range lsns {
		if got != wal.LSN(i+1) || errs[i] != nil {
			t.Fatalf("waiter %d told LSN %d (err %v)", i, got, errs[i])
		}
	}
}

// With nothing else going on, a lazy record is written on its own once its
// delay runs out.
func TestAppendLazyDelayBoundsTheWait(t *testing.T) {
	l := openMem(t, waltest.NewMemFS(), wal.Options{LazyDelay: 5 * time.Millisecond})
	defer l.Close()
	rec := &recorder{}
	lsn, err := l.AppendLazy([]byte("lonely"))
	if err != nil {
		t.Fatal(err)
	}
	l.Notify(lsn, rec)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if lsns, _ := rec.snapshot(); len(lsns) == 1 && lsns[0] == lsn {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a lone lazy record never became durable")
		}
		time.Sleep(time.Millisecond)
	}
	// The timer is re-armed for later lazy records.
	lsn, err = l.AppendLazy([]byte("lonely again"))
	if err != nil {
		t.Fatal(err)
	}
	l.Notify(lsn, rec)
	for {
		if lsns, _ := rec.snapshot(); len(lsns) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a second lone lazy record never became durable")
		}
		time.Sleep(time.Millisecond)
	}
}

// Lazy appends that fill MaxPendingBytes do not wait out LazyDelay for
// room: a blocked appender hurries the flusher.
func TestAppendLazyBackPressureDoesNotStall(t *testing.T) {
	l := openMem(t, waltest.NewMemFS(), wal.Options{LazyDelay: time.Hour, MaxPendingBytes: 4096})
	defer l.Close()
	done := make(chan error, 1)
	go func() {
		for i := range uint64(2000) {
			if _, err := l.AppendLazy(record(i, 100)); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("lazy appends beyond MaxPendingBytes stalled")
	}
	if st := l.Stats(); st.Syncs == 0 {
		t.Fatal("nothing was written although appends needed room")
	}
}

// Close writes and syncs pending lazy records: nothing appended is lost.
func TestCloseWritesLazyRecords(t *testing.T) {
	fs := waltest.NewMemFS()
	l := openMem(t, fs, wal.Options{LazyDelay: time.Hour})
	for i := range uint64(3) {
		if _, err := l.AppendLazy(record(i, 40)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	crashed := fs.Crash(nil) // only what was synced survives
	l = openMem(t, crashed, wal.Options{})
	defer l.Close()
	if _, recs := replayAll(t, l, 1); len(recs) != 3 {
		t.Fatalf("replayed %d records after Close and a crash, want 3", len(recs))
	}
}

// A batch that takes lazy records along disarms their timer: a lazy record
// appended after it waits its own LazyDelay, rather than being written
// alone when the earlier record's timer runs out (an extra fsync). The
// record is looked at between the earlier record's deadline and its own
// (LazyDelay/6 after the first, LazyDelay/6 before the second); a slow
// machine that oversleeps past its own skips the check rather than fail.
func TestAppendLazyTimerDisarmedByBatch(t *testing.T) {
	const delay = 900 * time.Millisecond
	l := openMem(t, waltest.NewMemFS(), wal.Options{LazyDelay: delay})
	defer l.Close()
	start := time.Now()
	if _, err := l.AppendLazy([]byte("rides along")); err != nil {
		t.Fatal(err)
	}
	if _, err := l.AppendSync([]byte("urgent")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(delay / 3)
	second := time.Now()
	lsn, err := l.AppendLazy([]byte("later"))
	if err != nil {
		t.Fatal(err)
	}
	// The first record's timer would have fired at start+delay.
	time.Sleep(time.Until(start.Add(delay + delay/6)))
	if time.Since(second) < delay {
		if d := l.DurableLSN(); d >= lsn {
			t.Fatalf("lazy record written %v after its append, before its own LazyDelay (%v): the earlier record's timer fired for it", time.Since(second), delay)
		}
	}
	if err := l.Sync(lsn); err != nil {
		t.Fatal(err)
	}
}

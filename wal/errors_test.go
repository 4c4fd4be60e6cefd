package wal_test

import (
	"errors"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/commitd/commitd/wal"
	"github.com/commitd/commitd/wal/waltest"
)

// segmentData matches operations on segment files, not on files being
// prepared (".wal.tmp") or on the directory.
func segmentData(op waltest.Op) bool { return strings.HasSuffix(op.Path, ".wal") }

func TestFsyncErrorPoisonsWithoutRetry(t *testing.T) {
	fs := waltest.NewMemFS()
	l := openMem(t, fs, wal.Options{SegmentBytes: 1 << 16})
	first, err := l.AppendSync([]byte("durable before the failure"))
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, l, 2)

	var mu sync.Mutex
	failed, syncsAfter := false, 0
	fs.Inject(func(op waltest.Op) error {
		mu.Lock()
		defer mu.Unlock()
		if op.Kind != waltest.OpSync || !segmentData(op) {
			return nil
		}
		if failed {
			syncsAfter++
			return nil // a retry would succeed: the log must not make one
		}
		failed = true
		return errInjected
	})

	var r recorder
	var wg sync.WaitGroup
	errs := make([]error, 8)
	registered := make([]bool, len(errs))
	for i := range errs {
		wg.Go(func() {
			lsn, err := l.AppendNotify([]byte("doomed"), &r)
			if err == nil {
				registered[i] = true
				err = l.Sync(lsn)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for _, err := range errs {
		if !errors.Is(err, wal.ErrFailed) || !errors.Is(err, errInjected) {
			t.Fatalf("append during fsync failure: %v", err)
		}
	}
	if !strings.Contains(errs[0].Error(), "fsync") {
		t.Fatalf("error does not say what failed: %v", errs[0])
	}
	// Every later append fails with the same error; no new LSN is handed out.
	last := l.LastLSN()
	if _, err := l.Append([]byte("later")); !errors.Is(err, errInjected) {
		t.Fatalf("Append after failure: %v", err)
	}
	if _, err := l.AppendSync([]byte("later")); !errors.Is(err, errInjected) {
		t.Fatalf("AppendSync after failure: %v", err)
	}
	if l.LastLSN() != last {
		t.Fatal("a failed log assigned new LSNs")
	}
	// Waiters all failed, each once, in LSN order. (Appends that came after
	// the failure failed at once and registered nothing.)
	want := 0
	for _, ok := range registered {
		if ok {
			want++
		}
	}
	lsns, werrs := r.snapshot()
	if want == 0 || len(lsns) != want {
		t.Fatalf("%d waiter calls, want %d", len(lsns), want)
	}
	for i := range lsns {
		if !errors.Is(werrs[i], errInjected) || (i > 0 && lsns[i] <= lsns[i-1]) {
			t.Fatalf("waiter calls %v / %v", lsns, werrs)
		}
	}
	// Notify and Sync of a record that never became durable fail at once;
	// a record made durable before the failure stays durable.
	var late recorder
	l.Notify(last, &late)
	if _, e := late.snapshot(); len(e) != 1 || !errors.Is(e[0], errInjected) {
		t.Fatalf("Notify after failure: %v", e)
	}
	if err := l.Sync(last); !errors.Is(err, errInjected) {
		t.Fatalf("Sync after failure: %v", err)
	}
	if err := l.Sync(first); err != nil {
		t.Fatalf("Sync of a record durable before the failure: %v", err)
	}
	if err := l.Retire(last); !errors.Is(err, errInjected) {
		t.Fatalf("Retire after failure: %v", err)
	}
	if err := l.Close(); !errors.Is(err, errInjected) {
		t.Fatalf("Close after failure: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if syncsAfter != 0 {
		t.Fatalf("the log retried fsync %d times after it failed", syncsAfter)
	}
}

func TestDiskFullMessage(t *testing.T) {
	for _, tc := range []struct {
		name string
		kind waltest.OpKind
		data bool // fail only on segment data, after the segments are ready
	}{
		{"write", waltest.OpWrite, true},
		{"fsync", waltest.OpSync, true},
		{"create", waltest.OpCreate, false},
		{"zero-fill", waltest.OpWrite, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := waltest.NewMemFS()
			hook := func(op waltest.Op) error {
				if op.Kind == tc.kind && (!tc.data || segmentData(op)) {
					return waltest.ErrNoSpace
				}
				return nil
			}
			if !tc.data {
				// Open waits for the first segment, so preparing it
				// fails Open.
				fs.Inject(hook)
				_, err := wal.Open(testDir, wal.Options{FS: fs})
				if !errors.Is(err, syscall.ENOSPC) || !errors.Is(err, wal.ErrFailed) || !strings.Contains(err.Error(), "disk full") {
					t.Fatalf("Open: %v", err)
				}
				return
			}
			l := openMem(t, fs, wal.Options{})
			if tc.data {
				waitReady(t, l, 2)
				fs.Inject(hook)
			}
			_, err := l.AppendSync([]byte("x"))
			if !errors.Is(err, syscall.ENOSPC) || !errors.Is(err, wal.ErrFailed) {
				t.Fatalf("got %v", err)
			}
			if !strings.Contains(err.Error(), "disk full") {
				t.Fatalf("ENOSPC message does not say the disk is full: %v", err)
			}
			if _, err := l.Append([]byte("y")); !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("Append after ENOSPC: %v", err)
			}
			if err := l.Close(); !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("Close: %v", err)
			}
		})
	}
}

func TestDirectoryErrorsPoison(t *testing.T) {
	for _, tc := range []struct {
		kind waltest.OpKind
		nth  int
	}{
		// The second segment's, prepared after Open returned (it waits
		// for the first; a failure there fails Open).
		{waltest.OpRename, 2},
		{waltest.OpSyncDir, 3}, // Open's own directory fsync is the first
	} {
		t.Run(tc.kind.String(), func(t *testing.T) {
			fs := waltest.NewMemFS()
			fs.Inject(waltest.FailNth(tc.kind, tc.nth, errInjected, false))
			l, err := wal.Open(testDir, wal.Options{FS: fs, SegmentBytes: 1024})
			if err != nil {
				// The log failed before Open had returned.
				if !errors.Is(err, errInjected) {
					t.Fatalf("Open: %v", err)
				}
				return
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				_, err := l.AppendSync([]byte("x"))
				if errors.Is(err, errInjected) {
					break
				}
				if err != nil || time.Now().After(deadline) {
					t.Fatalf("got %v", err)
				}
			}
			if err := l.Close(); !errors.Is(err, errInjected) {
				t.Fatalf("Close: %v", err)
			}
		})
	}
}

func TestRetireErrorPoisons(t *testing.T) {
	fs := waltest.NewMemFS()
	l := openMem(t, fs, wal.Options{SegmentsAhead: 1})
	for i := range uint64(100) {
		if _, err := l.AppendSync(record(i, 100)); err != nil {
			t.Fatal(err)
		}
	}
	waitReady(t, l, 1)
	fs.Inject(waltest.FailNth(waltest.OpRemove, 1, errInjected, false))
	if err := l.Retire(90); !errors.Is(err, errInjected) {
		t.Fatalf("Retire: %v", err)
	}
	if _, err := l.Append([]byte("x")); !errors.Is(err, errInjected) {
		t.Fatalf("Append after a failed Retire: %v", err)
	}
	_ = l.Close()
}

func TestOpenErrors(t *testing.T) {
	fs := waltest.NewMemFS()
	fs.Inject(waltest.FailNth(waltest.OpReadDir, 1, errInjected, false))
	if _, err := wal.Open(testDir, wal.Options{FS: fs}); !errors.Is(err, errInjected) {
		t.Fatalf("Open with failing ReadDir: %v", err)
	}
	if _, err := wal.Open(testDir, wal.Options{FS: fs, SegmentBytes: 100}); err == nil {
		t.Fatal("Open accepted a 100-byte SegmentBytes")
	}
}

// TestOpenFailsWhenNoSegmentFits: Open waits for the first segment to be
// prepared, so a disk that cannot hold one fails Open — the server never
// says it is serving — with an error that says what failed: preparing
// which segment, which operation, disk full. Before, Open succeeded and
// the failure surfaced later, at the first append or under "retiring log
// segments".
func TestOpenFailsWhenNoSegmentFits(t *testing.T) {
	fs := waltest.NewMemFS()
	fs.Inject(func(op waltest.Op) error {
		if op.Kind == waltest.OpWrite {
			return waltest.ErrNoSpace
		}
		return nil
	})
	l, err := wal.Open(testDir, wal.Options{FS: fs, SegmentBytes: 1024})
	if err == nil {
		_ = l.Close()
		t.Fatal("Open succeeded on a disk with no room for a segment")
	}
	if !errors.Is(err, syscall.ENOSPC) || !errors.Is(err, wal.ErrFailed) {
		t.Fatalf("Open: %v", err)
	}
	for _, want := range []string{"preparing segment 0000000000000001.wal", "zero-fill", "disk full"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not mention %q", err, want)
		}
	}
}

package wal_test

import (
	"bytes"
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/commitd/commitd/wal"
	"github.com/commitd/commitd/wal/waltest"
)

// entries returns n records of size bytes each, back to back, each
// distinct.
func entries(n, size, seed int) []byte {
	b := make([]byte, 0, n*size)
	for i := range n {
		e := fmt.Appendf(nil, "%d/%d:", seed, i)
		for len(e) < size {
			e = append(e, byte('a'+(i+len(e))%26))
		}
		b = append(b, e[:size]...)
	}
	return b
}

// AppendEach writes what Append of each record would: the same bytes in
// every segment (so the same frames, LSNs and checksums), between records
// appended one by one, across segment rollovers, and with a batch larger
// than MaxPendingBytes, which must wait for the flusher in the middle.
func TestAppendEachIsAppendOfEachRecord(t *testing.T) {
	const size = 17
	batches := [][]byte{entries(3, size, 1), entries(1, size, 2), nil, entries(400, size, 3), entries(2000, size, 4)}
	opts := wal.Options{SegmentBytes: 4096, MaxPendingBytes: 8192}
	one, each := waltest.NewMemFS(), waltest.NewMemFS()
	lo, le := openMem(t, one, opts), openMem(t, each, opts)
	for k, b := range batches {
		single, err := lo.Append([]byte(fmt.Sprint("between ", k)))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := le.Append([]byte(fmt.Sprint("between ", k))); err != nil || got != single {
			t.Fatalf("batch %d: Append got LSN %d, %v; want %d", k, got, err, single)
		}
		var want wal.LSN
		for off := 0; off < len(b); off += size {
			lsn, err := lo.Append(b[off : off+size])
			if err != nil {
				t.Fatal(err)
			}
			if off == 0 {
				want = lsn
			}
		}
		first, n, err := le.AppendEach(b, size)
		if err != nil || n != len(b)/size || n > 0 && first != want {
			t.Fatalf("batch %d: AppendEach = %d, %d, %v; want %d, %d", k, first, n, err, want, len(b)/size)
		}
	}
	for _, l := range []*wal.Log{lo, le} {
		if err := l.Sync(l.LastLSN()); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// The segments prepared ahead of use may differ in number (the
	// preparer runs in the background): compare those both logs have,
	// which include every one written.
	segs, segsEach := segFiles(one), segFiles(each)
	segs = segs[:min(len(segs), len(segsEach))]
	if len(segs) < 10 || fmt.Sprint(segs) != fmt.Sprint(segsEach[:len(segs)]) {
		t.Fatalf("segments %v and %v", segs, segsEach)
	}
	for _, name := range segs {
		a, err1 := one.ReadFile(name)
		b, err2 := each.ReadFile(name)
		if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
			t.Fatalf("segment %s differs (%d and %d bytes)", name, len(a), len(b))
		}
	}
	l := openMem(t, each, opts)
	defer l.Close()
	lsns, recs := replayAll(t, l, 1)
	if len(lsns) != len(batches)+2404 || !bytes.Equal(recs[len(recs)-1], batches[4][len(batches[4])-size:]) {
		t.Fatalf("replayed %d records, last %q", len(lsns), recs[len(recs)-1])
	}
}

// AppendEach refuses records over the limit and appends nothing to a
// failed or closed log, with the log's error; data that is not whole
// records is a programmer's error.
func TestAppendEachErrors(t *testing.T) {
	fs := waltest.NewMemFS()
	l := openMem(t, fs, wal.Options{SegmentBytes: 1 << 16, MaxRecordBytes: 100})
	if _, n, err := l.AppendEach(make([]byte, 202), 101); !errors.Is(err, wal.ErrTooLarge) || n != 0 {
		t.Fatalf("records of 101 bytes, limit 100: %d, %v", n, err)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("AppendEach of 10 bytes in records of 3 did not panic")
			}
		}()
		l.AppendEach(make([]byte, 10), 3)
	}()
	if _, err := l.AppendSync([]byte("durable")); err != nil {
		t.Fatal(err)
	}
	fs.Inject(waltest.FailNth(waltest.OpSync, 1, syscall.EIO, true))
	lsn, err := l.Append([]byte("doomed"))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(lsn); !errors.Is(err, syscall.EIO) {
		t.Fatalf("sync through the fault: %v", err)
	}
	last := l.LastLSN()
	if _, n, err := l.AppendEach(entries(5, 17, 0), 17); !errors.Is(err, syscall.EIO) || n != 0 || l.LastLSN() != last {
		t.Fatalf("AppendEach on a failed log: %d appended, %v, last LSN %d (was %d)", n, err, l.LastLSN(), last)
	}
	l.Close()
	l = openMem(t, waltest.NewMemFS(), wal.Options{})
	l.Close()
	if _, n, err := l.AppendEach(entries(2, 17, 0), 17); !errors.Is(err, wal.ErrClosed) || n != 0 {
		t.Fatalf("AppendEach on a closed log: %d, %v", n, err)
	}
}

// discardFS is a memory file system whose files drop what is written to
// them: BenchmarkLedgerBatch measures the log, not a file system's copy.
type discardFS struct{ *waltest.MemFS }

func (d discardFS) Create(name string) (wal.File, error) {
	f, err := d.MemFS.Create(name)
	return discardFile{f}, err
}

type discardFile struct{ wal.File }

func (discardFile) WriteAt(p []byte, _ int64) (int, error) { return len(p), nil }

// BenchmarkLedgerBatch appends a batch of 1,024 ledger entries (17 bytes)
// as the participant's ledger does once a second under load, and syncs:
// "append" one Append per entry (before AppendEach), "each" one
// AppendEach. The flusher writes (into files that drop the bytes) and
// syncs concurrently, as in production.
func BenchmarkLedgerBatch(b *testing.B) {
	const size, n = 17, 1024
	batch := entries(n, size, 0)
	for _, how := range []string{"append", "each"} {
		b.Run(how, func(b *testing.B) {
			l, err := wal.Open(testDir, wal.Options{FS: discardFS{waltest.NewMemFS()}, SegmentBytes: 64 << 20})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			for b.Loop() {
				if how == "each" {
					if _, _, err := l.AppendEach(batch, size); err != nil {
						b.Fatal(err)
					}
				} else {
					for off := 0; off < len(batch); off += size {
						if _, err := l.Append(batch[off : off+size]); err != nil {
							b.Fatal(err)
						}
					}
				}
				if err := l.Sync(l.LastLSN()); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/entry")
		})
	}
}

package wal_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/commitd/commitd/wal"
	"github.com/commitd/commitd/wal/waltest"
)

// TestDamagedHeaderRefusesToOpen flips one byte of a segment header — in
// the magic (offset 3) and in the first-LSN field (offset 16) — of the
// first, a middle and the last segment of a log made of real files, and
// expects Open to refuse, naming the file and the offset, exactly as it
// refuses a bad checksum in the middle of a segment. Before, such a file
// was taken for a spare and recycled: a log of one segment opened empty.
func TestDamagedHeaderRefusesToOpen(t *testing.T) {
	dir := t.TempDir()
	const segSize = 4096
	l, err := wal.Open(dir, wal.Options{SegmentBytes: segSize})
	if err != nil {
		t.Fatal(err)
	}
	for i := range uint64(200) {
		if _, err := l.Append(record(i, 100)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	var used []string // segment files holding records, in log order
	names, _ := filepath.Glob(filepath.Join(dir, "*.wal"))
	slices.Sort(names)
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if string(b[:8]) == "commitdW" {
			used = append(used, name)
		}
	}
	if len(used) < 3 {
		t.Fatalf("want several used segments, have %d", len(used))
	}
	for _, c := range []struct {
		which string
		path  string
	}{{"first", used[0]}, {"middle", used[len(used)/2]}, {"last", used[len(used)-1]}} {
		for _, off := range []int64{3, 16} {
			t.Run(fmt.Sprintf("%s segment byte %d", c.which, off), func(t *testing.T) {
				flipByte(t, c.path, off)
				defer flipByte(t, c.path, off)
				l, err := wal.Open(dir, wal.Options{SegmentBytes: segSize})
				if err == nil {
					st := l.Stats()
					_ = l.Close()
					t.Fatalf("Open succeeded on a damaged header: log holds LSNs %d..%d of 1..200", st.FirstLSN, st.LastLSN)
				}
				if !errors.Is(err, wal.ErrCorrupt) {
					t.Fatalf("Open: %v, want ErrCorrupt", err)
				}
				for _, want := range []string{c.path, "offset 0", "header"} {
					if !strings.Contains(err.Error(), want) {
						t.Fatalf("error %q does not mention %q", err, want)
					}
				}
			})
		}
	}
	// Repaired, the log opens whole.
	l, err = wal.Open(dir, wal.Options{SegmentBytes: segSize})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if st := l.Stats(); st.FirstLSN != 1 || st.LastLSN != 200 {
		t.Fatalf("repaired log holds LSNs %d..%d", st.FirstLSN, st.LastLSN)
	}
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x20
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestZeroedHeaderRefusesToOpen: a header wiped to zeroes — a lost sector,
// say — in front of valid frames is damage too, not a spare.
func TestZeroedHeaderRefusesToOpen(t *testing.T) {
	fs := writeLog(t, 100)
	segs := usedSegments(t, fs)
	s := segs[0]
	clear(s.data[:wal.SegmentHeaderSize])
	fs.WriteFile(s.path, s.data)
	_, err := wal.Open(testDir, wal.Options{FS: fs, SegmentBytes: 1024})
	if !errors.Is(err, wal.ErrCorrupt) || !strings.Contains(err.Error(), s.path) {
		t.Fatalf("Open with a zeroed header: %v", err)
	}
}

// TestSparesAreReused: files that never held a record under their name —
// zero-filled, recycled (an intact header of an earlier incarnation), or
// either with a torn start of their first write — are spares, and Open
// hands them to the preparer instead of creating new files.
func TestSparesAreReused(t *testing.T) {
	fs := writeLog(t, 30)
	segs := usedSegments(t, fs)
	old := segs[0].data // an intact header naming another sequence number
	const segSize = 1024
	torn := func(b []byte) []byte {
		b = slices.Clone(b)
		copy(b, "commitdW\x07\x07\x07") // a new header's first bytes, then it stopped
		copy(b[11:], "\xde\xad\xbe\xef junk")
		return b
	}
	spares := map[string][]byte{
		"0000000000000100.wal": make([]byte, segSize),
		"0000000000000101.wal": torn(make([]byte, segSize)),
		"0000000000000102.wal": old,
		"0000000000000103.wal": torn(old),
	}
	for name, b := range spares {
		fs.WriteFile(filepath.Join(testDir, name), b)
	}
	l := openMem(t, fs, wal.Options{SegmentBytes: segSize, SegmentsAhead: 4})
	defer l.Close()
	waitReady(t, l, 4)
	if st := l.Stats(); st.SegmentsRecycled != 4 || st.SegmentsCreated != 0 || st.LastLSN != 30 {
		t.Fatalf("stats %+v, want the 4 spares recycled and none created", st)
	}
	// The preparer takes the highest-named spares first: these four.
	for name := range spares {
		if slices.Contains(fs.Files(), filepath.Join(testDir, name)) {
			t.Fatalf("spare %s was not recycled: %v", name, fs.Files())
		}
	}
	if _, err := l.AppendSync([]byte("after")); err != nil {
		t.Fatal(err)
	}
}

// TestCrashDuringSegmentPreparation crashes the file system at every
// operation, in turn, of a run that creates, zero-fills, renames, uses,
// retires and recycles segments — between a create and its fsync, a rename
// and its directory fsync, a header's write and its fsync — keeping only
// what was synced, or a torn part of the rest. Open must accept every such
// state (none is damage) and keep every record that was reported durable.
func TestCrashDuringSegmentPreparation(t *testing.T) {
	for _, ahead := range []int{1, 2} {
		for _, life := range []int{0, 1} { // crash in the first life, or after a reopen (spares in the pool)
			for k := 1; ; k++ {
				var rngs []*rand.Rand
				rngs = append(rngs, nil)
				for s := range uint64(3) {
					rngs = append(rngs, rand.New(rand.NewPCG(uint64(k), s)))
				}
				crashed := false
				for _, rng := range rngs {
					crashed = crashPrepareRun(t, ahead, life, k, rng) || crashed
					if t.Failed() {
						t.Fatalf("SegmentsAhead %d, life %d, crash at operation %d (rng %v)", ahead, life, k, rng != nil)
					}
				}
				if !crashed {
					// No run reached operation k: every point was tried.
					t.Logf("SegmentsAhead %d, life %d: crashed at each of %d operations", ahead, life, k-1)
					break
				}
			}
		}
	}
}

// crashPrepareRun runs the life-th life of a log (the earlier ones end
// cleanly) and crashes at its k-th file system operation; it reports
// whether operation k was reached.
func crashPrepareRun(t *testing.T, ahead, crashLife, k int, rng *rand.Rand) bool {
	fs := waltest.NewMemFS()
	opts := wal.Options{FS: fs, SegmentBytes: 256, SegmentsAhead: ahead}
	acked := map[wal.LSN]uint64{}
	var retired wal.LSN
	for life := 0; life < crashLife; life++ {
		l, err := wal.Open(testDir, opts)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		crashPrepareLife(l, life, acked, &retired)
		if err := l.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	var ops atomic.Int64
	var image *waltest.MemFS
	var once sync.Once
	fs.Inject(func(waltest.Op) error {
		if ops.Add(1) == int64(k) {
			once.Do(func() { image = fs.Crash(rng) })
		}
		return nil
	})
	if l, err := wal.Open(testDir, opts); err == nil {
		crashPrepareLife(l, crashLife, acked, &retired)
		_ = l.Close()
	}
	if image == nil {
		return false
	}
	l, err := wal.Open(testDir, wal.Options{FS: image, SegmentBytes: 256, SegmentsAhead: ahead})
	if err != nil {
		t.Errorf("Open after a crash at operation %d: %v", k, err)
		return true
	}
	defer l.Close()
	got := map[wal.LSN]uint64{}
	if first := l.Stats().FirstLSN; first > 0 {
		if first > max(retired, 1) {
			t.Errorf("log starts at LSN %d, records from %d on were needed", first, retired)
		}
		lsns, recs := replayAll(t, l, first)
		for i, lsn := range lsns {
			id, ok := checkRecord(recs[i], 20)
			if !ok {
				t.Errorf("LSN %d holds bytes never appended", lsn)
			}
			got[lsn] = id
		}
	}
	for lsn, id := range acked {
		if lsn >= retired && got[lsn] != id {
			t.Errorf("durable LSN %d (record %x) lost after a crash at operation %d", lsn, id, k)
		}
	}
	// The recovered log goes on.
	if _, err := l.AppendSync(record(1<<40, 20)); err != nil {
		t.Errorf("AppendSync after recovery: %v", err)
	}
	return true
}

// crashPrepareLife appends records one by one through several 256-byte
// segments, retiring all but the last few now and then so that segments
// are recycled as well as created.
func crashPrepareLife(l *wal.Log, life int, acked map[wal.LSN]uint64, retired *wal.LSN) {
	for i := range 40 {
		id := uint64(life)<<32 | uint64(i+1)
		lsn, err := l.AppendSync(record(id, 20))
		if err != nil {
			return
		}
		acked[lsn] = id
		if i%8 == 7 && lsn > 4 {
			*retired = max(*retired, lsn-4)
			if l.Retire(lsn-4) != nil {
				return
			}
		}
	}
}

// TestDamagedHeaderAfterSegmentSizeChange: once the segment size changed
// (--segment-size), a file of the old size with a damaged header used to be
// deleted as an odd-sized leftover. It holds records: Open must refuse and
// leave it in place.
func TestDamagedHeaderAfterSegmentSizeChange(t *testing.T) {
	fs := writeLog(t, 100) // 1 KiB segments
	s := usedSegments(t, fs)[0]
	s.data[16] ^= 0x01
	fs.WriteFile(s.path, s.data)
	_, err := wal.Open(testDir, wal.Options{FS: fs, SegmentBytes: 4096})
	if !errors.Is(err, wal.ErrCorrupt) || !strings.Contains(err.Error(), s.path+" offset 0") {
		t.Fatalf("Open with a damaged header and another segment size: %v", err)
	}
	if !slices.Contains(fs.Files(), s.path) {
		t.Fatalf("%s was deleted", s.path)
	}
}

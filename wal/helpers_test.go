package wal_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commitd/commitd/wal"
	"github.com/commitd/commitd/wal/waltest"
)

const testDir = "/db/wal"

// openMem opens a log on fs with small segments unless opts says otherwise.
func openMem(t testing.TB, fs *waltest.MemFS, opts wal.Options) *wal.Log {
	t.Helper()
	opts.FS = fs
	if opts.SegmentBytes == 0 {
		opts.SegmentBytes = 1024
	}
	l, err := wal.Open(testDir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return l
}

// record returns the test record number i: distinct, self-describing and
// of varying length (8..8+maxExtra).
func record(i uint64, maxExtra int) []byte {
	extra := int(i*2654435761%uint64(maxExtra+1)) & 0xffff
	b := make([]byte, 8+extra)
	binary.LittleEndian.PutUint64(b, i)
	for j := range extra {
		b[8+j] = byte(i*31 + uint64(j)*7)
	}
	return b
}

// checkRecord reports whether b is record(id) for the id it carries.
func checkRecord(b []byte, maxExtra int) (uint64, bool) {
	if len(b) < 8 {
		return 0, false
	}
	id := binary.LittleEndian.Uint64(b)
	want := record(id, maxExtra)
	return id, string(want) == string(b)
}

// replayAll returns every durable record from lsn from on.
func replayAll(t testing.TB, l *wal.Log, from wal.LSN) (lsns []wal.LSN, recs [][]byte) {
	t.Helper()
	err := l.Replay(from, func(lsn wal.LSN, data []byte) error {
		if n := len(lsns); n > 0 && lsn != lsns[n-1]+1 {
			return fmt.Errorf("replay jumped from LSN %d to %d", lsns[n-1], lsn)
		}
		lsns = append(lsns, lsn)
		recs = append(recs, append([]byte(nil), data...))
		return nil
	})
	if err != nil {
		t.Fatalf("Replay(%d): %v", from, err)
	}
	return lsns, recs
}

// waitReady waits until the log has n segments ready, so that tests can
// inject faults knowing the preparer is idle.
func waitReady(t testing.TB, l *wal.Log, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for l.Stats().ReadySegments < n {
		if time.Now().After(deadline) {
			t.Fatalf("segments not ready: %+v", l.Stats())
		}
		time.Sleep(time.Millisecond)
	}
}

// segFiles lists the used-or-ready segment files in testDir.
func segFiles(fs *waltest.MemFS) []string {
	var out []string
	for _, f := range fs.Files() {
		if filepath.Dir(f) == testDir && strings.HasSuffix(f, ".wal") {
			out = append(out, f)
		}
	}
	return out
}

// frameCRC computes a frame checksum from the format description alone
// (docs/wal-format.md), independently of the package's code.
func frameCRC(seq uint64, frame []byte, n int) uint32 {
	tab := crc32.MakeTable(crc32.Castagnoli)
	var s [8]byte
	binary.LittleEndian.PutUint64(s[:], seq)
	return crc32.Update(crc32.Checksum(s[:], tab), tab, frame[4:16+n])
}

// recorder is a Waiter that records the order of its calls.
type recorder struct {
	mu   sync.Mutex
	lsns []wal.LSN
	errs []error
}

func (r *recorder) LogDurable(lsn wal.LSN) { r.add(lsn, nil) }

func (r *recorder) LogFailed(lsn wal.LSN, err error) { r.add(lsn, err) }

func (r *recorder) add(lsn wal.LSN, err error) {
	r.mu.Lock()
	r.lsns = append(r.lsns, lsn)
	r.errs = append(r.errs, err)
	r.mu.Unlock()
}

func (r *recorder) snapshot() ([]wal.LSN, []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]wal.LSN(nil), r.lsns...), append([]error(nil), r.errs...)
}

var errInjected = errors.New("injected I/O error")

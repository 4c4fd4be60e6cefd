package coordinator

import (
	"encoding/binary"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/protocol"
	"github.com/commitd/commitd/wal"
	"github.com/commitd/commitd/wal/waltest"
	"github.com/google/uuid"
)

// idAt is a UUIDv7 whose time is at.
func idAt(at time.Time, n uint16) protocol.TxnID {
	id := uuid.Must(uuid.NewV7())
	binary.BigEndian.PutUint64(id[:8], uint64(at.UnixMilli())<<16|uint64(0x7000|n&0x0fff))
	return id
}

func openTestIndex(t *testing.T, fs wal.FS, dir string, clock *time.Time, retention time.Duration, maxBytes int64) *outcomeIndex {
	t.Helper()
	x, err := openOutcomes(dir, wal.Options{FS: fs, SegmentBytes: 1 << 16, LazyDelay: time.Hour}, retention, maxBytes)
	if err != nil {
		t.Fatal(err)
	}
	x.now = func() time.Time { return *clock }
	return x
}

// The index answers each kind of outcome after a restart, and a commit
// entry outranks an abort for the same id.
func TestOutcomeIndexLookupAndRestart(t *testing.T) {
	fs := waltest.NewMemFS()
	clock := time.Now()
	x := openTestIndex(t, fs, "outcomes", &clock, time.Hour, 1<<30)
	committed, aborted, unknown, absent := idAt(clock, 1), idAt(clock, 2), idAt(clock, 3), idAt(clock, 4)
	x.recordReply(&engine.Reply{Txn: committed, Outcome: protocol.OutcomeCommitted, Participants: []string{"p1", "p2"}}, clock.UnixMilli())
	x.recordReply(&engine.Reply{Txn: aborted, Outcome: protocol.OutcomeAborted, Cause: protocol.CauseVotedNo, Participant: "p2"}, clock.UnixMilli())
	x.recordReply(&engine.Reply{Txn: unknown, Outcome: protocol.OutcomeUnknown}, clock.UnixMilli())
	x.recordReply(&engine.Reply{Txn: absent, Outcome: protocol.OutcomeRejected, Cause: protocol.CauseInvalid}, clock.UnixMilli())
	x.recordCommit(aborted, []string{"p1"}) // cannot happen; the commit would win
	check := func(x *outcomeIndex) {
		t.Helper()
		e, ok, err := x.lookup(committed)
		if err != nil || !ok || e.kind != entryCommitted || e.n != 2 || string(e.names[1]) != "p2" {
			t.Fatalf("committed: %+v %v %v", e, ok, err)
		}
		if e, ok, _ := x.lookup(aborted); !ok || e.kind != entryCommitted {
			t.Fatalf("a commit entry must outrank an abort: %+v %v", e, ok)
		}
		if e, ok, _ := x.lookup(unknown); !ok || e.kind != entryUnknown {
			t.Fatalf("unknown: %+v %v", e, ok)
		}
		if _, ok, _ := x.lookup(absent); ok {
			t.Fatal("a rejection was indexed")
		}
	}
	check(x)
	if err := x.close(); err != nil {
		t.Fatal(err)
	}
	x = openTestIndex(t, fs, "outcomes", &clock, time.Hour, 1<<30)
	defer x.close()
	check(x)
	if h := x.horizon(); h.Sub(clock).Abs() > time.Minute {
		t.Fatalf("horizon of a new index %v, want its creation %v", h, clock)
	}
}

// What was synced survives a machine crash (the crashable file system
// drops what was not); a lookup syncs first.
func TestOutcomeIndexSyncedSurvivesCrash(t *testing.T) {
	fs := waltest.NewMemFS()
	clock := time.Now()
	x := openTestIndex(t, fs, "outcomes", &clock, time.Hour, 1<<30)
	synced, lost := idAt(clock, 1), idAt(clock, 2)
	x.recordCommit(synced, []string{"p1"})
	if err := x.sync(); err != nil {
		t.Fatal(err)
	}
	x.recordCommit(lost, []string{"p1"})
	after := fs.Crash(nil)
	_ = x.log.Close()
	x = openTestIndex(t, after, "outcomes", &clock, time.Hour, 1<<30)
	defer x.close()
	if _, ok, err := x.lookup(synced); !ok || err != nil {
		t.Fatalf("a synced entry was lost: %v %v", ok, err)
	}
	if _, ok, _ := x.lookup(lost); ok {
		t.Fatal("an entry never synced survived a crash: the test's file system keeps too much")
	}
}

// Retention by time and by size: the oldest spans go, the horizon moves
// past them (and survives a restart), and what is younger stays.
func TestOutcomeIndexRetention(t *testing.T) {
	fs := waltest.NewMemFS()
	start := time.Now()
	clock := start
	x := openTestIndex(t, fs, "outcomes", &clock, time.Hour, 1<<30)
	var ids []protocol.TxnID
	for i := range 200 {
		at := start.Add(time.Duration(i) * time.Minute)
		clock = at
		id := idAt(at, uint16(i))
		ids = append(ids, id)
		x.recordCommit(id, []string{"participant-with-a-long-name", "another-participant"})
		if err := x.sync(); err != nil { // a record (a span) per minute
			t.Fatal(err)
		}
	}
	clock = start.Add(200 * time.Minute)
	if err := x.retire(); err != nil {
		t.Fatal(err)
	}
	// Kept: ids younger than an hour; the horizon is past the rest.
	if _, ok, _ := x.lookup(ids[199]); !ok {
		t.Fatal("the youngest id was retired")
	}
	if _, ok, _ := x.lookup(ids[10]); ok {
		t.Fatal("an id 190 minutes old is still answered with a retention of an hour")
	}
	h := x.horizon()
	if !h.After(start.Add(130*time.Minute)) || h.After(start.Add(141*time.Minute)) {
		t.Fatalf("horizon %v after retiring, want about 140 minutes after the start", h.Sub(start))
	}
	if err := x.close(); err != nil {
		t.Fatal(err)
	}
	x = openTestIndex(t, fs, "outcomes", &clock, time.Hour, 1<<30)
	if got := x.horizon(); !got.Equal(h) {
		t.Fatalf("horizon after restart %v, want %v", got, h)
	}
	// The size cap: at most 4 segments' worth.
	x.maxBytes = 4 << 16
	x.retention = 24 * time.Hour
	for i := range 5000 {
		x.recordCommit(idAt(clock, uint16(i)), []string{"participant-with-a-long-name", "another-participant"})
		if i%100 == 0 {
			if err := x.sync(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := x.sync(); err != nil {
		t.Fatal(err)
	}
	if err := x.retire(); err != nil {
		t.Fatal(err)
	}
	if x.bytes > x.maxBytes {
		t.Fatalf("%d bytes kept, cap %d", x.bytes, x.maxBytes)
	}
	if !x.horizon().After(h) {
		t.Fatal("the size cap retired nothing")
	}
	_ = x.close()
}

// A damaged entry refuses to start, naming the record: never an index
// that silently answers not-found.
func TestOutcomeIndexCorruptEntryRefusesToStart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "outcomes")
	log, err := wal.Open(dir, wal.Options{SegmentBytes: 1 << 16})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := log.AppendSync([]byte{9, 1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	_ = log.Close()
	_, err = openOutcomes(dir, wal.Options{SegmentBytes: 1 << 16}, time.Hour, 1<<30)
	if !errors.Is(err, wal.ErrCorrupt) {
		t.Fatalf("open of a damaged index: %v, want ErrCorrupt", err)
	}
}

// BenchmarkRecordReply is what the index costs each reply on a shard's
// pump goroutine: an entry appended to a buffer under a mutex, and now and
// then a block handed to the index's log (no fdatasync: that is the
// retirer's, once a second).
func BenchmarkRecordReply(b *testing.B) {
	x, err := openOutcomes(b.TempDir(), wal.Options{SegmentBytes: 16 << 20}, time.Hour, 1<<40)
	if err != nil {
		b.Fatal(err)
	}
	defer x.close()
	r := engine.Reply{Txn: uuid.Must(uuid.NewV7()), Outcome: protocol.OutcomeCommitted, Participants: []string{"p1", "p2"}}
	now := time.Now().UnixMilli()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i%(1<<16) == 0 {
			if err := x.sync(); err != nil {
				b.Fatal(err)
			}
		}
		x.recordReply(&r, now)
	}
}

package participant

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/protocol"
	"github.com/commitd/commitd/wal"
	"github.com/commitd/commitd/wal/waltest"
	"github.com/google/uuid"
)

func openTestLedger(t *testing.T, fs *waltest.MemFS) *ledger {
	t.Helper()
	l, err := openLedger("/ledger", wal.Options{FS: fs, SegmentBytes: 64 << 10}, &fakeProtocol{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func decisionOf(i int) protocol.Decision {
	if i%3 == 0 {
		return protocol.DecisionAbort
	}
	return protocol.DecisionCommit
}

// pendingEntries is how many entries wait in memory.
func (l *ledger) pendingEntries() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.mu.pending) / ledgerEntryLen
}

type entry struct {
	id protocol.TxnID
	d  protocol.Decision
}

func listLedger(t *testing.T, l *ledger) []entry {
	t.Helper()
	var got []entry
	if err := l.each(func(id protocol.TxnID, d protocol.Decision) error {
		got = append(got, entry{id, d})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// However many decisions are recorded, at most maxPending wait in memory,
// and the listing, read from disk, still has every one, in order.
func TestLedgerMemoryIsBounded(t *testing.T) {
	const n, bound = 5003, 8
	l := openTestLedger(t, waltest.NewMemFS())
	defer l.close()
	l.maxPending = bound
	want := make([]entry, n)
	for i := range want {
		want[i] = entry{uuid.Must(uuid.NewV7()), decisionOf(i)}
		l.record(engine.Applied{Txn: want[i].id, Decision: want[i].d})
		if p := l.pendingEntries(); p > bound {
			t.Fatalf("after %d records, %d entries in memory, bound %d", i+1, p, bound)
		}
	}
	if p := l.pendingEntries(); p == 0 || p >= bound {
		// 5003 is not a multiple of 8: some wait for the next sync.
		t.Fatalf("%d entries waiting, want 1 to %d", p, bound-1)
	}
	got := listLedger(t, l)
	if len(got) != n {
		t.Fatalf("listed %d entries, want %d", len(got), n)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("entry %d is %v, want %v", i, got[i], want[i])
		}
	}
	if p := l.pendingEntries(); p != 0 {
		t.Fatalf("%d entries still in memory after a listing, which syncs", p)
	}
}

// Recovery hands the ledger the decisions the protocol log holds; settle
// appends only those the ledger lacks, and each once.
func TestLedgerSettleRecordsOnlyWhatItLacks(t *testing.T) {
	fs := waltest.NewMemFS()
	l := openTestLedger(t, fs)
	a, b, c := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	l.record(engine.Applied{Txn: a, Decision: protocol.DecisionCommit})
	l.record(engine.Applied{Txn: b, Decision: protocol.DecisionAbort})
	if err := l.close(); err != nil {
		t.Fatal(err)
	}

	l = openTestLedger(t, fs)
	defer l.close()
	l.ensure(engine.Applied{Txn: b, Decision: protocol.DecisionAbort})
	l.ensure(engine.Applied{Txn: c, Decision: protocol.DecisionCommit})
	l.ensure(engine.Applied{Txn: a, Decision: protocol.DecisionCommit})
	l.ensure(engine.Applied{Txn: c, Decision: protocol.DecisionCommit}) // found twice
	if err := l.settle(); err != nil {
		t.Fatal(err)
	}
	got := listLedger(t, l)
	want := []entry{{a, protocol.DecisionCommit}, {b, protocol.DecisionAbort}, {c, protocol.DecisionCommit}}
	if len(got) != len(want) {
		t.Fatalf("ledger %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("ledger %v, want %v", got, want)
		}
	}
	if l.wanted != nil || l.order != nil {
		t.Fatal("settle kept the recovered decisions in memory")
	}
}

// A corrupt entry refuses the start, naming where it is.
func TestLedgerRefusesACorruptEntry(t *testing.T) {
	fs := waltest.NewMemFS()
	lg, err := wal.Open("/ledger", wal.Options{FS: fs, SegmentBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lg.AppendSync([]byte("short")); err != nil {
		t.Fatal(err)
	}
	if err := lg.Close(); err != nil {
		t.Fatal(err)
	}
	l := openTestLedger(t, fs)
	defer l.close()
	if err := l.settle(); !errors.Is(err, wal.ErrCorrupt) {
		t.Fatalf("settle over a 5-byte entry: %v, want wal.ErrCorrupt", err)
	}
}

// An append that fails in record, where nobody can be told, is reported by
// the next sync (which the server treats as fatal): the entries it dropped
// must not be lost silently.
func TestLedgerSyncReportsAFailedAppend(t *testing.T) {
	fs := waltest.NewMemFS()
	l := openTestLedger(t, fs)
	defer l.close()
	l.maxPending = 4
	fs.Inject(waltest.FailNth(waltest.OpWrite, 1, syscall.EIO, true))
	for range 4 { // the fourth appends: the flusher's write fails
		l.record(engine.Applied{Txn: uuid.Must(uuid.NewV7()), Decision: protocol.DecisionCommit})
	}
	if err := l.sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("sync after a failed write: %v, want EIO", err)
	}
	for range 4 { // appends into the failed log: record keeps the error
		l.record(engine.Applied{Txn: uuid.Must(uuid.NewV7()), Decision: protocol.DecisionCommit})
	}
	l.mu.Lock()
	kept := l.mu.err
	l.mu.Unlock()
	if !errors.Is(kept, wal.ErrFailed) {
		t.Fatalf("record kept %v, want the failed log's error", kept)
	}
	if err := l.sync(); !errors.Is(err, wal.ErrFailed) {
		t.Fatalf("sync after a failed append: %v, want wal.ErrFailed", err)
	}
}

// fakeProtocol stands in for the protocol log: its last LSN grows as the
// test "appends" a decision's record, and its first is set by the test.
type fakeProtocol struct{ first, last wal.LSN }

func (p *fakeProtocol) LastLSN() wal.LSN { return p.last }
func (p *fakeProtocol) Stats() wal.Stats { return wal.Stats{FirstLSN: p.first, LastLSN: p.last} }

// Retention retires the ledger's segments whose every entry is older than
// the retention and whose decisions the protocol log has retired, keeps
// the young ones and those the protocol log still holds, and the ledger
// still recovers — and retires by its marks — after a restart.
func TestLedgerRetention(t *testing.T) {
	const retention = time.Hour
	fs := waltest.NewMemFS()
	proto := &fakeProtocol{first: 1}
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	open := func() *ledger {
		t.Helper()
		l, err := openLedger("/ledger", wal.Options{FS: fs, SegmentBytes: 64 << 10}, proto, retention)
		if err != nil {
			t.Fatal(err)
		}
		l.now = func() time.Time { return clock }
		return l
	}
	// decide records n decisions over span, syncing (and so marking) as
	// the retirer would, and returns them.
	decide := func(l *ledger, n int, span time.Duration) []entry {
		t.Helper()
		es := make([]entry, n)
		for i := range es {
			es[i] = entry{uuid.Must(uuid.NewV7()), decisionOf(i)}
			proto.last++ // the decision's protocol record comes first
			l.record(engine.Applied{Txn: es[i].id, Decision: es[i].d})
			if i%100 == 99 {
				clock = clock.Add(span / time.Duration(n/100))
				if err := l.sync(); err != nil {
					t.Fatal(err)
				}
			}
		}
		return es
	}
	// kept lists the ledger and reports which of es it still has; it
	// checks that what it has is a suffix of es (retirement cuts the
	// oldest) and that nothing else is listed.
	kept := func(l *ledger, es []entry) int {
		t.Helper()
		got := listLedger(t, l)
		if len(got) > len(es) {
			t.Fatalf("listed %d entries, more than the %d recorded", len(got), len(es))
		}
		tail := es[len(es)-len(got):]
		for i := range got {
			if got[i] != tail[i] {
				t.Fatalf("entry %d of the listing is %v, want %v: not the newest recorded, in order", i, got[i], tail[i])
			}
		}
		return len(got)
	}
	retire := func(l *ledger) {
		t.Helper()
		if err := l.sync(); err != nil {
			t.Fatal(err)
		}
		if err := l.retire(); err != nil {
			t.Fatal(err)
		}
	}

	l := open()
	if err := l.settle(); err != nil {
		t.Fatal(err)
	}
	const n = 6000 // about 4 segments of 64 KiB
	old := decide(l, n, 10*time.Minute)
	oldLast := proto.last
	clock = clock.Add(2 * retention)
	young := decide(l, n, 10*time.Minute)
	all := append(append([]entry(nil), old...), young...)

	// Old enough, but the protocol log still holds every decision:
	// recovery could hand them back, so nothing goes.
	retire(l)
	if got := kept(l, all); got != 2*n {
		t.Fatalf("with the protocol log holding everything the ledger kept %d of %d entries", got, 2*n)
	}
	// The protocol log has retired the old decisions' records.
	proto.first = oldLast + 1
	retire(l)
	got := kept(l, all)
	segs := l.log.Stats().Segments
	t.Logf("after retiring: %d of %d entries kept, %d segments", got, 2*n, segs)
	if got < n {
		t.Fatalf("kept %d entries: young ones (the newest %d) were retired", got, n)
	}
	if got > n+n/2 {
		t.Fatalf("kept %d entries: fewer than half of the %d old ones were retired", got, n)
	}

	// A restart: the ledger recovers from what is left, and the protocol
	// log's decisions it lacks are recorded again (one young, one new).
	if err := l.close(); err != nil {
		t.Fatal(err)
	}
	l = open()
	defer l.close()
	extra := entry{uuid.Must(uuid.NewV7()), protocol.DecisionCommit}
	l.ensure(engine.Applied{Txn: young[n-1].id, Decision: young[n-1].d})
	l.ensure(engine.Applied{Txn: extra.id, Decision: extra.d})
	if err := l.settle(); err != nil {
		t.Fatalf("settle after retirement: %v", err)
	}
	all = append(all, extra)
	if k := kept(l, all); k != got+1 {
		t.Fatalf("after the restart %d entries, want the %d kept and the one recovery added", k, got+1)
	}
	// The marks on disk still date the young entries: once they are
	// old and out of the protocol log, they go too.
	clock = clock.Add(2 * retention)
	proto.last++
	proto.first = proto.last + 1
	retire(l)
	if k := kept(l, all); k > n/2 {
		t.Fatalf("after the restart and another retention, %d entries kept; want most of the young ones retired", k)
	}
}

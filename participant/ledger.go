package participant

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/protocol"
	"github.com/commitd/commitd/wal"
)

// ledger is the participant's audit trail: one entry per decided
// transaction it took part in, kept in a log of its own for the retention
// (Config.LedgerRetention) and retired after it. Entries are appended by
// the pump goroutine as decisions are applied and are made durable before
// the protocol log retires the records that imply them, so no decision
// drops out of both before the retention has passed.
//
// Memory does not grow with the ledger: the disk holds it, and the
// outcomes report streams it from there (each). In memory are only the
// entries recorded and not yet appended — at most maxPending of them (plus
// a spare buffer of that size) — the time marks of what is on disk (a few
// per retention), and, while the server starts, the decisions recovery
// found, which settle checks against the disk and then drops. Nothing
// looks a transaction up in memory, so nothing needs a map of every
// decision.
//
// Readers keep the last entry per transaction: settle keeps recovery from
// recording a decision the ledger already has, but nothing promises one
// entry per transaction, and every entry for it says the same decision.
//
// Entries are not appended to the ledger's log as they are recorded but
// collected in memory and appended in bulk — by sync, or by record itself
// once maxPending are waiting: the log's flusher writes and syncs whatever
// is appended at once, so appending each entry would cost the participant
// a second fdatasync stream (and its wake-ups) beside the protocol log's —
// for entries that need to be durable only before a retirement. An entry
// lost from memory in a crash is one the protocol log still holds, and
// recovery puts it back (ensure).
//
// # Retention
//
// Entries carry no time, so sync appends a time mark now and then (every
// markEvery, when entries came since the last): "every entry before me was
// recorded before time T, and the protocol-log records of their decisions
// are at or below protocol LSN P". Marks are entries too, so they survive
// restarts; settle collects them. The rule (retire): the ledger's segments
// below a mark M may be retired when
//
//   - T is older than the retention — every entry below M is; and
//   - P is below the protocol log's first LSN — the protocol log has retired
//     every record those decisions came from, so recovery will never hand
//     them back (ensure) and the ledger is their only copy, which the
//     retention says may go.
//
// The coordinator never asks a participant about a decision (a participant
// asks the coordinator: inquiries), and the participant's machine answers
// duplicates from its protocol log and memory, never from the ledger, so
// the ledger's only readers are recovery (settle, which the second
// condition keeps whole) and `admin outcomes`, which lists what the
// retention keeps. Retirement works by segment, so an entry may outlive
// the retention by up to a segment's worth of entries and markEvery.
type ledger struct {
	log        *wal.Log // immutable
	maxPending int      // entries; immutable after openLedger (tests lower it)

	// protocol is the participant's protocol log, for the marks (its last
	// LSN) and for retirement (its first); retention is how long entries
	// are kept, markEvery how often a mark is written. Set before settle,
	// immutable after. now is the clock (tests replace it).
	protocol  protocolLog
	retention time.Duration
	markEvery time.Duration
	now       func() time.Time

	// reading is held (shared) while the ledger is read from disk, so
	// that retire, which skips a round rather than wait for a long
	// listing, never retires what a reader is about to replay.
	reading sync.RWMutex
	// marks are the time marks on disk at or after the retired part, in
	// LSN order; owned by whoever holds reading exclusively, or by Start's
	// goroutine before the retirer runs.
	marks []ledgerMark

	// appendMu serializes moving entries from pending into the log, so they
	// reach it in record order; spare is the buffer swapped in for pending,
	// guarded by appendMu.
	appendMu sync.Mutex
	spare    []byte

	mu struct {
		sync.Mutex
		pending []byte // entries recorded, not yet appended: ledgerEntryLen bytes each
		err     error  // the first append record failed, for sync to return
		// lastMark is when the last mark was recorded; unmarked says
		// whether decisions were recorded since.
		lastMark time.Time
		unmarked bool
		// marks are recorded, not yet known to be on disk (sync moves
		// them to ledger.marks once appended).
		marks []ledgerMark
	}

	// appended are marks appended to the log, not yet in marks; guarded
	// by appendMu.
	appended []ledgerMark

	// wanted are the decisions recovery found (ensure), in the order found,
	// until settle checks them against the disk. Used only by Start's
	// goroutine, before the pump runs.
	wanted map[protocol.TxnID]wantedEntry
	order  []protocol.TxnID
}

// wantedEntry is a decision recovery found, and whether the ledger's last
// entry for the transaction already says it.
type wantedEntry struct {
	d    protocol.Decision
	have bool
}

// protocolLog is what the ledger asks of the protocol log.
type protocolLog interface {
	LastLSN() wal.LSN
	Stats() wal.Stats
}

// ledgerMark is a time mark: every entry below lsn was recorded before
// at, and the protocol log held each one's record at or below protocol.
type ledgerMark struct {
	lsn      wal.LSN // the mark's own LSN in the ledger (0 until appended)
	at       time.Time
	protocol wal.LSN
}

// markDecision is the decision byte of a mark entry, which carries the
// time (Unix nanoseconds) and the protocol LSN, 8 bytes each little
// endian, where a decision entry has its transaction id.
const markDecision = 0

const (
	ledgerEntryLen = 17 // txn id (16) + decision (1)
	// DefaultLedgerRetention is how long ledger entries are kept by
	// default: an hour of `admin outcomes`, enough to check a run or look
	// into what just happened. An entry takes 40 bytes on disk (a 17-byte
	// record in a 16-byte frame header, 8-byte aligned), so an hour is
	// 1.4 GB at 10,000 decisions/s and 19 GB at 130,000/s, the most a
	// participant was measured to decide (a flood of aborts); raise it to
	// keep a longer audit trail.
	DefaultLedgerRetention = time.Hour
	// marksPerRetention sets markEvery: a retention's worth of entries
	// carries this many marks, so entries are retired at most 1/64 of the
	// retention late (and never less than a second apart).
	marksPerRetention = 64
	// defaultLedgerPending bounds the entries waiting in memory: ~1.1 MB,
	// about a second of decisions at a high rate. The retirer syncs the
	// ledger every second, so record appends by itself only under a load
	// that outpaces it.
	defaultLedgerPending = 1 << 16
)

// openLedger opens the ledger in dir. protocol is the participant's
// protocol log; retention (≤ 0: DefaultLedgerRetention) is how long
// entries are kept.
func openLedger(dir string, opts wal.Options, protocol protocolLog, retention time.Duration) (*ledger, error) {
	log, err := wal.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	if retention <= 0 {
		retention = DefaultLedgerRetention
	}
	return &ledger{log: log, maxPending: defaultLedgerPending, protocol: protocol,
		retention: retention, markEvery: max(retention/marksPerRetention, time.Second), now: time.Now}, nil
}

// decodeEntry checks and decodes the ledger entry at lsn. A mark comes
// back with decision markDecision and its content in m.
func decodeEntry(lsn wal.LSN, data []byte) (id protocol.TxnID, d protocol.Decision, m ledgerMark, err error) {
	if len(data) != ledgerEntryLen {
		return id, 0, m, fmt.Errorf("ledger entry at LSN %d is %d bytes, want %d: %w", lsn, len(data), ledgerEntryLen, wal.ErrCorrupt)
	}
	copy(id[:], data[:16])
	d = protocol.Decision(data[16])
	switch d {
	case protocol.DecisionCommit, protocol.DecisionAbort:
	case markDecision:
		m = ledgerMark{lsn: lsn, at: time.Unix(0, int64(binary.LittleEndian.Uint64(data[:8]))),
			protocol: wal.LSN(binary.LittleEndian.Uint64(data[8:16]))}
	default:
		return id, 0, m, fmt.Errorf("ledger entry at LSN %d has decision %d: %w", lsn, data[16], wal.ErrCorrupt)
	}
	return id, d, m, nil
}

// replay calls fn for every entry still in the ledger, marks included,
// oldest first. The caller holds reading, so nothing retires meanwhile.
func (l *ledger) replay(fn func(lsn wal.LSN, id protocol.TxnID, d protocol.Decision, m ledgerMark) error) error {
	// From the first entry still there: replaying from 1 fails with
	// wal.ErrRetired once a segment was retired.
	return l.log.Replay(l.log.Stats().FirstLSN, func(lsn wal.LSN, data []byte) error {
		id, d, m, err := decodeEntry(lsn, data)
		if err != nil {
			return err
		}
		return fn(lsn, id, d, m)
	})
}

// record notes one applied decision. It does not wait for durability (sync
// does), and appends only once maxPending entries are waiting. It runs on
// the pump goroutine and returns no error: a failed append is kept for the
// next sync, which the server treats as fatal.
func (l *ledger) record(a engine.Applied) {
	l.mu.Lock()
	l.mu.pending = append(l.mu.pending, a.Txn[:]...)
	l.mu.pending = append(l.mu.pending, byte(a.Decision))
	l.mu.unmarked = true
	full := len(l.mu.pending) >= l.maxPending*ledgerEntryLen
	l.mu.Unlock()
	if full {
		if err := l.appendPending(); err != nil {
			l.mu.Lock()
			if l.mu.err == nil {
				l.mu.err = err
			}
			l.mu.Unlock()
		}
	}
}

// ensure notes a decision found at recovery (in the protocol log, or in a
// Durable resource); settle records it unless the ledger already has it.
// Only Start's goroutine calls it, before settle.
func (l *ledger) ensure(a engine.Applied) {
	if l.wanted == nil {
		l.wanted = make(map[protocol.TxnID]wantedEntry)
	}
	if _, ok := l.wanted[a.Txn]; !ok {
		l.order = append(l.order, a.Txn)
	}
	l.wanted[a.Txn] = wantedEntry{d: a.Decision}
}

// settle reads the whole ledger once, at start: it checks every entry (a
// corrupt ledger refuses to start) and records, in the order recovery found
// them, the decisions passed to ensure whose last entry on disk does not
// already say the same. Then it forgets them: the memory they took is
// bounded by the protocol log, which retirement bounds, and held only
// while the server starts.
func (l *ledger) settle() error {
	l.reading.RLock()
	err := l.replay(func(_ wal.LSN, id protocol.TxnID, d protocol.Decision, m ledgerMark) error {
		if d == markDecision {
			l.marks = append(l.marks, m)
			return nil
		}
		if w, ok := l.wanted[id]; ok {
			w.have = w.d == d
			l.wanted[id] = w
		}
		return nil
	})
	l.reading.RUnlock()
	if err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	for _, id := range l.order {
		if w := l.wanted[id]; !w.have {
			l.record(engine.Applied{Txn: id, Decision: w.d})
		}
	}
	l.wanted, l.order = nil, nil
	return nil
}

// appendPending appends every entry recorded so far to the ledger's log,
// without waiting for durability.
func (l *ledger) appendPending() error {
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	l.mu.Lock()
	batch := l.mu.pending
	l.mu.pending = l.spare[:0]
	marks := l.mu.marks // the marks in batch, in order
	l.mu.marks = nil
	l.mu.Unlock()
	// One lock of the log for the whole batch, not one per entry.
	first, n, err := l.log.AppendEach(batch, ledgerEntryLen)
	for i := range n {
		// Marks were recorded in entry order, and only marks have the
		// mark decision byte: hand each its LSN.
		if batch[i*ledgerEntryLen+16] == markDecision && len(marks) > 0 {
			marks[0].lsn = first + wal.LSN(i)
			l.appended = append(l.appended, marks[0])
			marks = marks[1:]
		}
	}
	if err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	l.spare = batch[:0]
	return nil
}

// mark records a time mark if markEvery has passed since the last one and
// decisions were recorded since. It reads the protocol log's last LSN
// under the lock that orders the entries, so every entry recorded before
// the mark — whose protocol record the pump appended before handing the
// decision over — has its record at or below it.
func (l *ledger) mark() {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.mu.unmarked || now.Sub(l.mu.lastMark) < l.markEvery {
		return
	}
	m := ledgerMark{at: now, protocol: l.protocol.LastLSN()}
	var e [ledgerEntryLen]byte
	binary.LittleEndian.PutUint64(e[:8], uint64(now.UnixNano()))
	binary.LittleEndian.PutUint64(e[8:16], uint64(m.protocol))
	e[16] = markDecision
	l.mu.pending = append(l.mu.pending, e[:]...)
	l.mu.marks = append(l.mu.marks, m)
	l.mu.lastMark, l.mu.unmarked = now, false
}

// sync makes every entry recorded before the call durable.
func (l *ledger) sync() error {
	l.mark()
	// Entries recorded before now are in pending, or in a batch another
	// appendPending holds appendMu for: either way in the log once ours
	// has the mutex and is done, so LastLSN below covers them.
	if err := l.appendPending(); err != nil {
		return err
	}
	l.mu.Lock()
	err := l.mu.err
	l.mu.Unlock()
	if err != nil {
		return err
	}
	if err := l.log.Sync(l.log.LastLSN()); err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	return nil
}

// each calls fn for every entry in the ledger, oldest first, reading them
// from disk after making every entry recorded so far durable. A transaction
// may come more than once; its last entry is its decision. An error from fn
// stops the reading and is returned. fn must not call into the ledger.
func (l *ledger) each(fn func(protocol.TxnID, protocol.Decision) error) error {
	if err := l.sync(); err != nil {
		return err
	}
	l.reading.RLock()
	defer l.reading.RUnlock()
	err := l.replay(func(_ wal.LSN, id protocol.TxnID, d protocol.Decision, _ ledgerMark) error {
		if d == markDecision {
			return nil
		}
		return fn(id, d)
	})
	if errors.Is(err, wal.ErrCorrupt) {
		return fmt.Errorf("ledger: %w", err)
	}
	return err
}

// retire retires the ledger's segments below the newest durable mark that
// the rule in the type's comment allows: older than the retention, and
// every decision below it gone from the protocol log. It runs on the
// retirer, after sync; while a listing reads the ledger it does nothing
// (the next round retires).
func (l *ledger) retire() error {
	if !l.reading.TryLock() {
		return nil
	}
	defer l.reading.Unlock()
	l.appendMu.Lock()
	l.marks = append(l.marks, l.appended...)
	l.appended = l.appended[:0]
	l.appendMu.Unlock()
	st := l.protocol.Stats()
	protocolFirst := st.FirstLSN
	if protocolFirst == 0 { // no segment: nothing is left in it
		protocolFirst = st.LastLSN + 1
	}
	durable := l.log.DurableLSN()
	oldest := l.now().Add(-l.retention)
	n := 0 // marks[:n] are retired through
	for i, m := range l.marks {
		if m.lsn > durable || m.at.After(oldest) || m.protocol >= protocolFirst {
			break
		}
		n = i + 1
	}
	if n == 0 {
		return nil
	}
	below := l.marks[n-1].lsn
	if err := l.log.Retire(below); err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	// The mark at below stays on disk (it opens the segment it is in or a
	// later one); those before it are gone or no longer needed.
	l.marks = append(l.marks[:0], l.marks[n-1:]...)
	return nil
}

func (l *ledger) close() error {
	err := l.sync()
	return errors.Join(err, l.log.Close())
}

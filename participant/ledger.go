package participant

import (
	"errors"
	"fmt"
	"sync"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/wal"
)

// ledger is the participant's audit trail: one entry per decided
// transaction it took part in since its data directory was created, kept in
// a log of its own that is never retired (the protocol log is). Entries are
// appended by the pump goroutine as decisions are applied and are made
// durable before the protocol log retires the records that imply them, so
// no decision ever drops out of both.
//
// Memory does not grow with the ledger: the disk holds it, and the
// outcomes report streams it from there (each). In memory are only the
// entries recorded and not yet appended — at most maxPending of them (plus
// a spare buffer of that size) — and, while the server starts, the
// decisions recovery found, which settle checks against the disk and then
// drops. Nothing looks a transaction up in memory, so nothing needs a map of
// every decision.
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
type ledger struct {
	log        *wal.Log // immutable
	maxPending int      // entries; immutable after openLedger (tests lower it)

	// appendMu serializes moving entries from pending into the log, so they
	// reach it in record order; spare is the buffer swapped in for pending,
	// guarded by appendMu.
	appendMu sync.Mutex
	spare    []byte

	mu struct {
		sync.Mutex
		pending []byte // entries recorded, not yet appended: ledgerEntryLen bytes each
		err     error  // the first append record failed, for sync to return
	}

	// wanted are the decisions recovery found (ensure), in the order found,
	// until settle checks them against the disk. Used only by Start's
	// goroutine, before the pump runs.
	wanted map[engine.TxnID]wantedEntry
	order  []engine.TxnID
}

// wantedEntry is a decision recovery found, and whether the ledger's last
// entry for the transaction already says it.
type wantedEntry struct {
	d    engine.Decision
	have bool
}

const (
	ledgerEntryLen = 17 // txn id (16) + decision (1)
	// defaultLedgerPending bounds the entries waiting in memory: ~1.1 MB,
	// about a second of decisions at a high rate. The retirer syncs the
	// ledger every second, so record appends by itself only under a load
	// that outpaces it.
	defaultLedgerPending = 1 << 16
)

func openLedger(dir string, opts wal.Options) (*ledger, error) {
	log, err := wal.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	return &ledger{log: log, maxPending: defaultLedgerPending}, nil
}

// decodeEntry checks and decodes the ledger entry at lsn.
func decodeEntry(lsn wal.LSN, data []byte) (engine.TxnID, engine.Decision, error) {
	var id engine.TxnID
	if len(data) != ledgerEntryLen {
		return id, 0, fmt.Errorf("ledger entry at LSN %d is %d bytes, want %d: %w", lsn, len(data), ledgerEntryLen, wal.ErrCorrupt)
	}
	copy(id[:], data[:16])
	d := engine.Decision(data[16])
	if d != engine.DecisionCommit && d != engine.DecisionAbort {
		return id, 0, fmt.Errorf("ledger entry at LSN %d has decision %d: %w", lsn, data[16], wal.ErrCorrupt)
	}
	return id, d, nil
}

// record notes one applied decision. It does not wait for durability (sync
// does), and appends only once maxPending entries are waiting. It runs on
// the pump goroutine and returns no error: a failed append is kept for the
// next sync, which the server treats as fatal.
func (l *ledger) record(a engine.Applied) {
	l.mu.Lock()
	l.mu.pending = append(l.mu.pending, a.Txn[:]...)
	l.mu.pending = append(l.mu.pending, byte(a.Decision))
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
		l.wanted = make(map[engine.TxnID]wantedEntry)
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
	err := l.log.Replay(1, func(lsn wal.LSN, data []byte) error {
		id, d, err := decodeEntry(lsn, data)
		if err != nil {
			return err
		}
		if w, ok := l.wanted[id]; ok {
			w.have = w.d == d
			l.wanted[id] = w
		}
		return nil
	})
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
	l.mu.Unlock()
	for off := 0; off < len(batch); off += ledgerEntryLen {
		if _, err := l.log.Append(batch[off : off+ledgerEntryLen]); err != nil {
			return fmt.Errorf("ledger: %w", err)
		}
	}
	l.spare = batch[:0]
	return nil
}

// sync makes every entry recorded before the call durable.
func (l *ledger) sync() error {
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
func (l *ledger) each(fn func(engine.TxnID, engine.Decision) error) error {
	if err := l.sync(); err != nil {
		return err
	}
	return l.log.Replay(1, func(lsn wal.LSN, data []byte) error {
		id, d, err := decodeEntry(lsn, data)
		if err != nil {
			return fmt.Errorf("ledger: %w", err)
		}
		return fn(id, d)
	})
}

func (l *ledger) close() error {
	err := l.sync()
	return errors.Join(err, l.log.Close())
}

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
// A decision replayed from the protocol log at recovery may be appended a
// second time; readers keep the last entry per transaction, which is the
// same decision.
//
// Entries are not appended to the ledger's log as they are recorded but
// collected in memory and appended in bulk by sync: the log's flusher
// writes and syncs whatever is appended at once, so appending each entry
// would cost the participant a second fdatasync stream (and its wake-ups)
// beside the protocol log's — for entries that need to be durable only
// before a retirement. An entry lost from memory in a crash is one the
// protocol log still holds, and recovery puts it back (ensure).
type ledger struct {
	log *wal.Log

	// syncMu serializes sync, so entries reach the log in record order;
	// spare is the buffer sync swaps in, guarded by syncMu.
	syncMu sync.Mutex
	spare  []byte

	mu struct {
		sync.Mutex
		outcomes map[engine.TxnID]engine.Decision
		pending  []byte // entries recorded, not yet appended: ledgerEntryLen bytes each
	}
}

const ledgerEntryLen = 17 // txn id (16) + decision (1)

func openLedger(dir string, opts wal.Options) (*ledger, error) {
	log, err := wal.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	l := &ledger{log: log}
	l.mu.outcomes = make(map[engine.TxnID]engine.Decision)
	err = log.Replay(1, func(lsn wal.LSN, data []byte) error {
		if len(data) != ledgerEntryLen {
			return fmt.Errorf("ledger entry at LSN %d is %d bytes, want %d: %w", lsn, len(data), ledgerEntryLen, wal.ErrCorrupt)
		}
		var id engine.TxnID
		copy(id[:], data[:16])
		d := engine.Decision(data[16])
		if d != engine.DecisionCommit && d != engine.DecisionAbort {
			return fmt.Errorf("ledger entry at LSN %d has decision %d: %w", lsn, data[16], wal.ErrCorrupt)
		}
		l.mu.outcomes[id] = d
		return nil
	})
	if err != nil {
		log.Close()
		return nil, fmt.Errorf("ledger: %w", err)
	}
	return l, nil
}

// record notes one applied decision. It neither appends nor waits for
// durability: sync does both, before the protocol log is retired.
func (l *ledger) record(a engine.Applied) {
	l.mu.Lock()
	l.mu.pending = append(l.mu.pending, a.Txn[:]...)
	l.mu.pending = append(l.mu.pending, byte(a.Decision))
	l.mu.outcomes[a.Txn] = a.Decision
	l.mu.Unlock()
}

// ensure records a decision found in the protocol log at recovery, unless
// the ledger already has it.
func (l *ledger) ensure(a engine.Applied) {
	l.mu.Lock()
	d, ok := l.mu.outcomes[a.Txn]
	l.mu.Unlock()
	if ok && d == a.Decision {
		return
	}
	l.record(a)
}

// sync appends every entry recorded so far to the ledger's log and makes
// them durable.
func (l *ledger) sync() error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
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
	if err := l.log.Sync(l.log.LastLSN()); err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	return nil
}

// each calls fn for every transaction in the ledger, in no particular order.
func (l *ledger) each(fn func(engine.TxnID, engine.Decision)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, d := range l.mu.outcomes {
		fn(id, d)
	}
}

func (l *ledger) close() error {
	err := l.sync()
	return errors.Join(err, l.log.Close())
}

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
type ledger struct {
	log *wal.Log
	buf [17]byte // owned by the pump goroutine

	mu struct {
		sync.Mutex
		outcomes map[engine.TxnID]engine.Decision
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

// record appends one applied decision. It does not wait for durability:
// sync does, before the protocol log is retired.
func (l *ledger) record(a engine.Applied) error {
	copy(l.buf[:16], a.Txn[:])
	l.buf[16] = byte(a.Decision)
	if _, err := l.log.Append(l.buf[:]); err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	l.mu.Lock()
	l.mu.outcomes[a.Txn] = a.Decision
	l.mu.Unlock()
	return nil
}

// ensure records a decision found in the protocol log at recovery, unless
// the ledger already has it.
func (l *ledger) ensure(a engine.Applied) error {
	l.mu.Lock()
	d, ok := l.mu.outcomes[a.Txn]
	l.mu.Unlock()
	if ok && d == a.Decision {
		return nil
	}
	return l.record(a)
}

// sync makes every entry appended so far durable.
func (l *ledger) sync() error { return l.log.Sync(l.log.LastLSN()) }

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

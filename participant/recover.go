// This file holds both recovery paths at start: from the participant's own
// log, and from a Durable resource.

package participant

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/protocol"
	"github.com/commitd/commitd/wal"
)

// recover replays the log into the machine and the resource, and hands
// the ledger every decision the log holds (a ledger entry is written
// lazily, so a crash can lose one that the log kept); the ledger's settle
// then records the ones it lacks.
//
// Once segments were retired the log no longer starts at LSN 1, and its
// first records may be decisions whose prepare was retired: the machine is
// then restored from the first checkpoint left, which supersedes every
// record before it (retirement keeps everything from the latest durable
// checkpoint on), while the ledger still gets every decision before it.
func (s *Server) recover() error {
	from := s.log.Recovery().FirstLSN
	if from > 1 {
		var err error
		if from, err = s.firstCheckpoint(from); err != nil {
			return fmt.Errorf("participant: recovering from %s: %w", s.cfg.DataDir, err)
		}
	}
	var idx uint64
	var rec engine.Record
	err := s.log.Replay(from, func(lsn wal.LSN, data []byte) error {
		rec = engine.Record{}
		if err := rec.UnmarshalBinary(data); err != nil {
			return fmt.Errorf("record at LSN %d: %v: %w", lsn, err, wal.ErrCorrupt)
		}
		if err := s.machine.Restore(rec); err != nil {
			return fmt.Errorf("record at LSN %d: %w", lsn, err)
		}
		idx++
		s.pump.Restored(idx, lsn)
		switch rec.Type {
		case engine.RecCommitted:
			s.ledger.ensure(engine.Applied{Txn: rec.Txn, Decision: protocol.DecisionCommit})
		case engine.RecAborted:
			s.ledger.ensure(engine.Applied{Txn: rec.Txn, Decision: protocol.DecisionAbort})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("participant: recovering from %s: %w", s.cfg.DataDir, err)
	}
	if idx > 0 {
		s.cfg.Logger.Info("participant recovered", "name", s.cfg.Name, "records", idx)
	}
	return nil
}

// errFound stops a replay early.
var errFound = errors.New("found")

// firstCheckpoint returns the LSN of the first checkpoint at or after
// first, making sure the ledger has every decision before it.
func (s *Server) firstCheckpoint(first wal.LSN) (wal.LSN, error) {
	var at wal.LSN
	var rec engine.Record
	err := s.log.Replay(first, func(lsn wal.LSN, data []byte) error {
		rec = engine.Record{}
		if err := rec.UnmarshalBinary(data); err != nil {
			return fmt.Errorf("record at LSN %d: %v: %w", lsn, err, wal.ErrCorrupt)
		}
		switch rec.Type {
		case engine.RecCheckpoint:
			at = lsn
			return errFound
		case engine.RecCommitted:
			s.ledger.ensure(engine.Applied{Txn: rec.Txn, Decision: protocol.DecisionCommit})
		case engine.RecAborted:
			s.ledger.ensure(engine.Applied{Txn: rec.Txn, Decision: protocol.DecisionAbort})
		}
		return nil
	})
	if err != nil && !errors.Is(err, errFound) {
		return 0, err
	}
	if at == 0 {
		return 0, fmt.Errorf("the log starts at LSN %d but holds no checkpoint: %w", first, wal.ErrCorrupt)
	}
	return at, nil
}

// recoverDurable brings the ledger up to the decisions the log holds and a
// Durable resource still remembers (the ledger is synced lazily, the
// resource's commits are not), lets the resource forget those, and queues
// every transaction the resource holds prepared as in doubt: the machine
// inquires for each before anything else happens.
func (s *Server) recoverDurable() error {
	s.durable.Attach(func(m engine.Message) {
		m.To = s.cfg.Name
		s.pump.Inject(&m) // the resource's answers: bounded by what it was asked
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	decided, err := s.durable.Decided(ctx)
	if err != nil {
		return fmt.Errorf("participant: %w", err)
	}
	ids := make([]protocol.TxnID, 0, len(decided))
	for _, a := range decided {
		s.ledger.ensure(a)
		ids = append(ids, a.Txn)
	}
	if err := s.ledger.settle(); err != nil {
		return fmt.Errorf("participant: reading ledger in %s: %w", s.cfg.DataDir, err)
	}
	if err := s.ledger.sync(); err != nil {
		return fmt.Errorf("participant: %w", err)
	}
	if err := s.durable.Forget(ctx, ids); err != nil {
		return fmt.Errorf("participant: %w", err)
	}
	inDoubt, err := s.durable.InDoubt(ctx)
	if err != nil {
		return fmt.Errorf("participant: %w", err)
	}
	for _, id := range inDoubt {
		s.pump.Inject(&engine.Message{Type: engine.MsgResInDoubt, Txn: id, To: s.cfg.Name})
	}
	if len(decided) > 0 || len(inDoubt) > 0 {
		s.cfg.Logger.Info("participant recovered from its resource", "name", s.cfg.Name,
			"decisions", len(decided), "in_doubt", len(inDoubt))
	}
	return nil
}

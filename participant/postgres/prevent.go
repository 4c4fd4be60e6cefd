package postgres

import (
	"errors"
	"fmt"
	"time"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/protocol"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Prevent makes "txn never prepares here" durable, unless txn is
// prepared (or committed) here already: the compare-and-swap a staged
// decision's resolution needs (engine.Preventer; docs/postgres.md,
// "Staged commits"). It runs on a goroutine of its own and reports a
// MsgResPrevented: VoteNo once the prevention is committed, VoteYes if
// PostgreSQL holds txn prepared or committed instead.
//
// What serializes a prevention and a prepare is the primary key of
// commitd_decisions (participant, txn). A prepare inserts (name, txn,
// true) inside the transaction it then PREPAREs; a prevention inserts
// (name, txn, false) and commits it, with a row in commitd_prevented
// that keeps Forget from dropping the marker. A unique index lets one
// transaction at a time hold a key:
//
//   - the prevention first: the prepare's INSERT meets a committed row
//     (or waits for the prevention to end, then meets it) and fails with
//     unique_violation; the prepare votes no. For ever after, until
//     Forget drops the expired prevention (PreventRetention).
//   - the prepare first: the prevention's INSERT waits for the prepare's
//     transaction, which holds the key until COMMIT or ROLLBACK PREPARED
//     — possibly until this very resolution decides. So it waits no
//     longer than lock_timeout (Config.LockTimeout), then reads
//     pg_prepared_xacts: listed means the PREPARE is durable (PostgreSQL
//     lists a prepared transaction only once its record is flushed), and
//     the answer is "prepared". Not listed means the holder had not yet
//     prepared (or has just ended): try again.
//   - the key's row is committed already: committed = true means txn
//     committed here ("prepared", the coordinator's commit is what made
//     it so); false is an abort marker or an earlier prevention, both of
//     which a prepare can no longer pass: the prevention row is added
//     to keep it.
func (r *Resource) Prevent(txn protocol.TxnID) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		v, err := r.prevent(txn)
		if err != nil {
			// Closing: the coordinator asks again after the restart.
			return
		}
		r.report(engine.Message{Type: engine.MsgResPrevented, Txn: txn, Vote: v})
	}()
}

// prevent runs the compare-and-swap until it has an answer, retrying
// connection errors and a holder that is not yet prepared with backoff;
// it returns an error only when the resource is closing.
func (r *Resource) prevent(txn protocol.TxnID) (protocol.Vote, error) {
	backoff := time.Millisecond
	for {
		v, again, err := r.preventOnce(txn)
		if err == nil && !again {
			if v == protocol.VoteNo {
				r.prevented.Add(1)
			} else {
				r.foundPrepared.Add(1)
			}
			return v, nil
		}
		if r.ctx.Err() != nil {
			return 0, r.ctx.Err()
		}
		if err != nil {
			r.retries.Add(1)
			var pe *pgconn.PgError
			if errors.As(err, &pe) && !transient(pe) {
				// Not a connection error: worth a human's look, and tried
				// again (a prevention cannot be given up: the coordinator
				// waits for it).
				r.cfg.Logger.Error("postgres: preventing", "txn", txn, "err", err)
			}
		}
		if err := r.pause(&backoff); err != nil {
			return 0, err
		}
	}
}

// preventOnce is one attempt: the vote, or again if the key is held by a
// transaction that is not (yet) prepared, or an error.
func (r *Resource) preventOnce(txn protocol.TxnID) (v protocol.Vote, again bool, err error) {
	conn, err := r.pool.Acquire(r.ctx)
	if err != nil {
		return 0, false, err
	}
	defer conn.Release()
	id := txn.String()
	tx, err := conn.Begin(r.ctx)
	if err != nil {
		return 0, false, err
	}
	defer func() { _ = tx.Rollback(r.ctx) }() // after Commit: a no-op
	// The prevention must be durable before its NO goes out, whatever
	// the database's default says.
	if _, err := tx.Exec(r.ctx, "SET LOCAL synchronous_commit = on"); err != nil {
		return 0, false, err
	}
	tag, err := tx.Exec(r.ctx, "INSERT INTO commitd_decisions VALUES ($1, $2, false) ON CONFLICT DO NOTHING", r.cfg.Name, id)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == codeLockNotAvailable {
		// Another transaction holds the key: a prepare of txn.
		_ = tx.Rollback(r.ctx)
		var n int
		if err := conn.QueryRow(r.ctx, "SELECT count(*) FROM pg_prepared_xacts WHERE gid = $1", r.gid(txn)).Scan(&n); err != nil {
			return 0, false, err
		}
		if n > 0 {
			return protocol.VoteYes, false, nil
		}
		return 0, true, nil
	}
	if err != nil {
		return 0, false, err
	}
	if tag.RowsAffected() == 0 {
		var committed bool
		err := tx.QueryRow(r.ctx, "SELECT committed FROM commitd_decisions WHERE participant = $1 AND txn = $2", r.cfg.Name, id).Scan(&committed)
		if errors.Is(err, pgx.ErrNoRows) {
			// Forgotten between the two statements: start over.
			return 0, true, nil
		}
		if err != nil {
			return 0, false, err
		}
		if committed {
			return protocol.VoteYes, false, nil
		}
	}
	if _, err := tx.Exec(r.ctx, "INSERT INTO commitd_prevented (participant, txn) VALUES ($1, $2) ON CONFLICT DO NOTHING", r.cfg.Name, id); err != nil {
		return 0, false, err
	}
	if err := tx.Commit(r.ctx); err != nil {
		// Perhaps committed: the next attempt finds the rows and says so.
		return 0, false, fmt.Errorf("committing a prevention: %w", err)
	}
	return protocol.VoteNo, false, nil
}

// pause waits backoff before the next attempt of a retry loop (finish,
// prevent) and doubles it up to Config.RetryMax; it returns the context's
// error instead when the resource closes meanwhile.
func (r *Resource) pause(backoff *time.Duration) error {
	select {
	case <-r.ctx.Done():
		return r.ctx.Err()
	case <-time.After(*backoff):
	}
	*backoff = min(2**backoff, r.cfg.RetryMax)
	return nil
}

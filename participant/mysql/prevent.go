package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/protocol"
	gomysql "github.com/go-sql-driver/mysql"
)

// Prevent makes "txn never prepares here" durable, unless txn is
// prepared (or committed) here already: the compare-and-swap a staged
// decision's resolution needs (engine.Preventer; docs/mysql.md, "Staged
// decisions"). It runs on a goroutine of its own and reports a
// MsgResPrevented: VoteNo once the prevention is committed, VoteYes if
// the server holds txn prepared or committed instead.
//
// What serializes a prevention and a prepare is the primary key of
// commitd_decisions (participant, txn), as for PostgreSQL. A branch
// inserts (name, txn, TRUE) inside its XA transaction, and InnoDB keeps
// that record locked while the branch is XA PREPARED; a prevention
// inserts (name, txn, FALSE) with INSERT IGNORE and a commitd_prevented
// row that keeps it, and commits:
//
//   - the prevention first: the branch's INSERT meets the committed key
//     (or waits for the prevention and then meets it) and fails with a
//     duplicate entry (1062), or times out on its lock (1205): a no.
//   - the branch first: the prevention's INSERT waits for its lock —
//     held until XA COMMIT or ROLLBACK, possibly this resolution's — for
//     innodb_lock_wait_timeout (Config.LockWaitSeconds, 0 by default on
//     MariaDB; MySQL rounds 0 up to 1 s), fails with 1205, and XA
//     RECOVER then says whether the branch is prepared (answer "prepared")
//     or still running (try again).
//   - the key is committed already: committed TRUE means txn committed
//     here ("prepared"); FALSE is an abort marker or an earlier
//     prevention, which no branch can pass: the prevention row keeps it.
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
// connection errors, busy locks and a branch still running with backoff;
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
			var me *gomysql.MySQLError
			if errors.As(err, &me) && !transient(me) {
				r.cfg.Logger.Error("mysql: preventing", "txn", txn, "err", err)
			}
		}
		if err := r.pause(&backoff); err != nil {
			return 0, err
		}
	}
}

// preventOnce is one attempt: the vote, or again if the key is held by a
// branch that is not (yet) prepared, or an error.
func (r *Resource) preventOnce(txn protocol.TxnID) (v protocol.Vote, again bool, err error) {
	if !r.acquire(r.ctx) {
		return 0, false, r.ctx.Err()
	}
	defer r.release()
	conn, err := r.db.Conn(r.ctx)
	if err != nil {
		return 0, false, err
	}
	defer conn.Close()
	id := txn.String()
	if _, err := conn.ExecContext(r.ctx, readCommitted+"START TRANSACTION"); err != nil {
		return 0, false, err
	}
	done := false
	defer func() {
		if !done {
			if _, err := conn.ExecContext(r.ctx, "ROLLBACK"); err != nil {
				discard(conn)
			}
		}
	}()
	res, err := conn.ExecContext(r.ctx, "INSERT IGNORE INTO commitd_decisions VALUES (?, ?, FALSE)", r.cfg.Name, id)
	var me *gomysql.MySQLError
	if errors.As(err, &me) && (me.Number == erLockWaitTimeout || me.Number == erDeadlock) {
		// A branch of txn holds the key: prepared, or still running.
		ids, err := r.InDoubt(r.ctx)
		if err != nil {
			return 0, false, err
		}
		for _, p := range ids {
			if p == txn {
				return protocol.VoteYes, false, nil
			}
		}
		return 0, true, nil
	}
	if err != nil {
		return 0, false, err
	}
	if n, err := res.RowsAffected(); err != nil {
		return 0, false, err
	} else if n == 0 {
		var committed bool
		err := conn.QueryRowContext(r.ctx, "SELECT committed FROM commitd_decisions WHERE participant = ? AND txn = ?", r.cfg.Name, id).Scan(&committed)
		if errors.Is(err, sql.ErrNoRows) {
			return 0, true, nil // forgotten meanwhile: start over
		}
		if err != nil {
			return 0, false, err
		}
		if committed {
			return protocol.VoteYes, false, nil
		}
	}
	if _, err := conn.ExecContext(r.ctx, "INSERT IGNORE INTO commitd_prevented (participant, txn) VALUES (?, ?)", r.cfg.Name, id); err != nil {
		return 0, false, err
	}
	if _, err := conn.ExecContext(r.ctx, "COMMIT"); err != nil {
		// Perhaps committed: the next attempt finds the rows and says so.
		discard(conn)
		done = true
		return 0, false, fmt.Errorf("committing a prevention: %w", err)
	}
	done = true
	return protocol.VoteNo, false, nil
}

// expirePrevented drops the preventions older than age, and their
// markers, in one transaction: a marker never outlives its prevention
// (Forget would never drop it), nor the other way round (a late prepare
// would pass).
func (r *Resource) expirePrevented(ctx context.Context, age time.Duration) error {
	tx, err := r.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return fmt.Errorf("mysql: dropping expired preventions: %w", err)
	}
	defer tx.Rollback()
	secs := int64(age / time.Second)
	if _, err := tx.ExecContext(ctx, `DELETE d FROM commitd_decisions d JOIN commitd_prevented p
		ON p.participant = d.participant AND p.txn = d.txn
		WHERE p.participant = ? AND p.at <= NOW() - INTERVAL ? SECOND`, r.cfg.Name, secs); err != nil {
		return fmt.Errorf("mysql: dropping expired preventions: %w", err)
	}
	if _, err := tx.ExecContext(ctx, "DELETE FROM commitd_prevented WHERE participant = ? AND at <= NOW() - INTERVAL ? SECOND", r.cfg.Name, secs); err != nil {
		return fmt.Errorf("mysql: dropping expired preventions: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("mysql: dropping expired preventions: %w", err)
	}
	return nil
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

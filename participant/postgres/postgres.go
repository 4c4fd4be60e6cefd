package postgres

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/participant/statements"
	"github.com/commitd/commitd/protocol"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// GIDPrefix starts the global id of every transaction commitd prepares:
// "commitd:NAME:UUID", with the participant's name and the transaction id.
// The name keeps two participants sharing one database server from
// resolving each other's prepared transactions.
const GIDPrefix = "commitd:"

// ErrNoPreparedTransactions is returned by Open when the server's
// max_prepared_transactions is 0 (PostgreSQL's default).
var ErrNoPreparedTransactions = errors.New("postgres: the server has max_prepared_transactions = 0")

// SQLSTATE codes the resource branches on.
const (
	codeUndefinedObject   = "42704" // COMMIT/ROLLBACK PREPARED: no such prepared transaction
	codeCheckViolation    = "23514" // the balance would go negative
	codeLockNotAvailable  = "55P03" // lock_timeout: the account is held by another transaction
	codeDeadlockDetected  = "40P01"
	codeSerialization     = "40001"
	codeTooManyPreparedTx = "53400" // configuration_limit_exceeded: max_prepared_transactions reached
	codeUniqueViolation   = "23505" // the marker row exists: prevented (or decided) before this prepare
	codeDivisionByZero    = "22012" // the bank's UPDATE found no account (prepare)
)

// Config describes a PostgreSQL resource. Zero values take the defaults
// noted.
type Config struct {
	// DSN is the database to connect to, as a URL or key=value string
	// (pgx's syntax). Required.
	DSN string
	// Name is the participant's name (1..64 bytes of letters, digits and
	// "._-"): it is part of every global id and marker row. Required.
	Name string
	// Accounts and Balance seed the accounts table when it is empty: ids 0
	// to Accounts-1, each with Balance. A table that has rows is kept.
	Accounts int
	Balance  int64
	// Statements, if set, are the only work accepted: a branch names one
	// and passes its arguments (participant/statements), which run as
	// bind parameters of a prepared statement. The bank's work is then
	// refused (the accounts table is still seeded: bank.statements uses it).
	Statements *statements.Set
	// MaxConns bounds the connection pool (default 32): the number of
	// PostgreSQL round trips in flight.
	MaxConns int32
	// LockTimeout is how long a prepare waits for an account another
	// transaction holds before voting no (default 10ms). Short, because
	// the holder may be a prepared transaction waiting for its decision,
	// and two participants waiting on each other's prepared rows would
	// otherwise deadlock until the coordinator's prepare timeout.
	LockTimeout time.Duration
	// RetryMax caps the backoff between attempts of a commit, abort or
	// prevention that failed on a connection error (default 1s).
	RetryMax time.Duration
	// PreventRetention is how long a prevention is kept
	// (commitd_prevented) before Forget may drop it (default 1h). It
	// must outlast every prepare of the transaction that can still
	// arrive: a coordinator refuses ids older than a few seconds (its id
	// window, docs/protocol.md "Transaction ids have a lifetime"), so an
	// hour is a wide margin for messages held up in the network.
	PreventRetention time.Duration
	// Logger receives errors worth a human's attention (default
	// slog.Default()).
	Logger *slog.Logger
}

// Resource is a bank of accounts in a PostgreSQL database, behind the
// engine's Resource interface. Prepare runs the branch's UPDATE in a
// transaction and PREPARE TRANSACTION; Commit and Abort run COMMIT
// PREPARED and ROLLBACK PREPARED. Every round trip runs on a goroutine of
// its own (bounded by the pool), never on the caller's: results come back
// through the function given to Attach.
//
// Besides the accounts, the database holds one marker row per decided
// transaction (commitd_decisions), written in the same transaction as the
// work for a commit and after the rollback for an abort. It tells a
// commit that finished from one PostgreSQL never saw, and lets the
// participant's ledger catch up after a crash; Forget deletes the rows
// once the ledger has them.
type Resource struct {
	// Immutable after Open.
	cfg      Config
	pool     *pgxpool.Pool
	prefix   string // "commitd:NAME:"
	accounts int    // rows in commitd_accounts at Open
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup // round trips in flight
	// report is set once by Attach, before the first Prepare, Commit or
	// Abort; read by the worker goroutines after that.
	report func(engine.Message)

	// lastWarnNs is when a statement's NO vote was last logged at WARN.
	lastWarnNs atomic.Int64

	// lastExpireNs is when Forget last dropped expired preventions.
	lastExpireNs atomic.Int64

	// Counters, written by the workers.
	retries       atomic.Uint64
	failures      atomic.Uint64
	refused       atomic.Uint64
	prevented     atomic.Uint64
	foundPrepared atomic.Uint64
	refusedPrev   atomic.Uint64
}

var _ engine.Preventer = (*Resource)(nil)

// Open connects to the database, checks that it can prepare
// transactions, creates the tables if they are missing and seeds the
// accounts once.
func Open(ctx context.Context, cfg Config) (*Resource, error) {
	if cfg.DSN == "" {
		return nil, errors.New("postgres: a DSN is required")
	}
	if err := checkName(cfg.Name); err != nil {
		return nil, err
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 32
	}
	if cfg.LockTimeout <= 0 {
		cfg.LockTimeout = 10 * time.Millisecond
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = time.Second
	}
	if cfg.PreventRetention <= 0 {
		cfg.PreventRetention = time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	pcfg, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("postgres: DSN: %w", err)
	}
	pcfg.MaxConns = cfg.MaxConns
	pcfg.ConnConfig.RuntimeParams["lock_timeout"] = fmt.Sprintf("%dms", max(1, cfg.LockTimeout.Milliseconds()))
	// Every incarnation names its connections uniquely, so that the next
	// one can find and end what this one leaves running (endLeftovers).
	var nonce [6]byte
	if _, err := crand.Read(nonce[:]); err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	appName := appNamePrefix(cfg.Name) + hex.EncodeToString(nonce[:])
	pcfg.ConnConfig.RuntimeParams["application_name"] = appName
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	r := &Resource{cfg: cfg, pool: pool, prefix: GIDPrefix + cfg.Name + ":"}
	if err := r.setup(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	if err := r.endLeftovers(ctx, appName); err != nil {
		pool.Close()
		return nil, err
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	return r, nil
}

// appNamePrefix starts the application_name of every connection of the
// participant called name (a unique suffix per incarnation follows).
func appNamePrefix(name string) string { return "commitd participant " + name + " " }

// endLeftovers ends the database sessions an earlier incarnation of this
// participant left behind, and waits until they are gone, before anything
// reads pg_prepared_xacts. A participant killed while a COMMIT PREPARED or
// a PREPARE TRANSACTION of its was running in PostgreSQL leaves that
// statement running: the startup scan could then list a transaction as
// prepared that is committed a moment later — a one-phase commit the
// coordinator, asked, would answer with abort, and whose rollback could
// then never succeed. Terminating a backend cannot split a commit (it is
// not interruptible), so once they are gone the prepared set is settled.
// Sessions of another role cannot be ended without privileges: that is
// logged, and the start goes on.
func (r *Resource) endLeftovers(ctx context.Context, self string) error {
	const match = `datname = current_database() AND application_name <> $2 AND
		(starts_with(application_name, $1) OR application_name = rtrim($1))`
	prefix := appNamePrefix(r.cfg.Name)
	var ended, failed int
	rows, err := r.pool.Query(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "+match, prefix, self)
	if err != nil {
		return fmt.Errorf("postgres: ending an earlier incarnation's sessions: %w", err)
	}
	for rows.Next() {
		var ok bool
		if err := rows.Scan(&ok); err != nil {
			rows.Close()
			return fmt.Errorf("postgres: ending an earlier incarnation's sessions: %w", err)
		}
		if ok {
			ended++
		} else {
			failed++
		}
	}
	if err := rows.Err(); err != nil {
		// Permission denied for another role's sessions, for example.
		r.cfg.Logger.Warn("postgres: could not end an earlier incarnation's sessions", "participant", r.cfg.Name, "err", err)
		return nil
	}
	if ended == 0 {
		return nil
	}
	r.cfg.Logger.Info("postgres: ended sessions an earlier incarnation left", "participant", r.cfg.Name, "sessions", ended, "failed", failed)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var left int
		if err := r.pool.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE "+match, prefix, self).Scan(&left); err != nil {
			return fmt.Errorf("postgres: waiting for an earlier incarnation's sessions to end: %w", err)
		}
		if left <= failed {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres: %d sessions of an earlier incarnation of %s still running after 30 s", left, r.cfg.Name)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func checkName(name string) error {
	if name == "" || len(name) > protocol.MaxNameLen {
		return fmt.Errorf("postgres: participant name %q must be 1 to %d bytes", name, protocol.MaxNameLen)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("postgres: participant name %q: only letters, digits and ._- go into a global transaction id", name)
		}
	}
	return nil
}

const schema = `
CREATE TABLE IF NOT EXISTS commitd_accounts (
	id      integer PRIMARY KEY,
	balance bigint  NOT NULL CHECK (balance >= 0)
);
CREATE TABLE IF NOT EXISTS commitd_decisions (
	participant text    NOT NULL,
	txn         uuid    NOT NULL,
	committed   boolean NOT NULL,
	PRIMARY KEY (participant, txn)
);
CREATE TABLE IF NOT EXISTS commitd_prevented (
	participant text        NOT NULL,
	txn         uuid        NOT NULL,
	at          timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (participant, txn)
);`

func (r *Resource) setup(ctx context.Context) error {
	var maxPrepared int
	if err := r.pool.QueryRow(ctx, "SELECT current_setting('max_prepared_transactions')::int").Scan(&maxPrepared); err != nil {
		return fmt.Errorf("postgres: connecting: %w", err)
	}
	if maxPrepared == 0 {
		return fmt.Errorf("%w: set max_prepared_transactions in postgresql.conf (or with -c) to at least the number of transactions in flight at once, e.g. 200, and restart the server", ErrNoPreparedTransactions)
	}
	if _, err := r.pool.Exec(ctx, schema); err != nil {
		return fmt.Errorf("postgres: creating tables: %w", err)
	}
	// No table lock: prepared transactions left by a crash hold row locks
	// (and the table lock that goes with them) until they are resolved,
	// which happens only after this start. Two participants seeding one
	// empty table at once insert the same rows; the second insert does
	// nothing.
	var n int
	if err := r.pool.QueryRow(ctx, "SELECT count(*) FROM commitd_accounts").Scan(&n); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	if n == 0 && r.cfg.Accounts > 0 {
		if r.cfg.Balance < 0 {
			return fmt.Errorf("postgres: starting balance %d is negative", r.cfg.Balance)
		}
		if _, err := r.pool.Exec(ctx, "INSERT INTO commitd_accounts SELECT g, $2 FROM generate_series(0, $1 - 1) g ON CONFLICT DO NOTHING",
			r.cfg.Accounts, r.cfg.Balance); err != nil {
			return fmt.Errorf("postgres: seeding accounts: %w", err)
		}
		n = r.cfg.Accounts
	}
	r.accounts = n
	return r.checkStatements(ctx)
}

// checkStatements prepares every statement of the file on the server:
// SQL the server cannot parse, a table that does not exist or a
// parameter count other than the file's refuses the start, naming the
// statement and its line.
func (r *Resource) checkStatements(ctx context.Context) error {
	if r.cfg.Statements == nil {
		return nil
	}
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer conn.Release()
	for _, st := range r.cfg.Statements.All() {
		sd, err := conn.Conn().Prepare(ctx, "", st.SQL)
		if err == nil && len(sd.ParamOIDs) != len(st.Params) {
			err = fmt.Errorf("the server counts %d parameters, the file declares %d", len(sd.ParamOIDs), len(st.Params))
		}
		if err != nil {
			return fmt.Errorf("postgres: statement %q (line %d): %w", st.Name, st.Line, err)
		}
	}
	return nil
}

// Attach sets where results go: MsgResPrepared, MsgResFinished,
// MsgResFailed (To left empty, for the caller to fill in). Call it once,
// before anything is prepared; report is called from the resource's
// goroutines and must not block for long.
func (r *Resource) Attach(report func(engine.Message)) { r.report = report }

func (r *Resource) gid(txn protocol.TxnID) string { return r.prefix + txn.String() }

// Prepare votes no on malformed work or an unknown account and read-only
// on a zero amount, at once; otherwise it starts the prepare and returns
// protocol.VotePending.
func (r *Resource) Prepare(txn protocol.TxnID, work []byte) protocol.Vote {
	if r.cfg.Statements != nil {
		st, args, err := r.cfg.Statements.Bind(work)
		if err != nil {
			r.refused.Add(1)
			r.warnNo("postgres: voting no", "txn", txn, "reason", err)
			return protocol.VoteNo
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			v := r.prepareStatement(txn, st, args)
			r.report(engine.Message{Type: engine.MsgResPrepared, Txn: txn, Vote: v})
		}()
		return protocol.VotePending
	}
	acct, amount, ok := bank.DecodeWork(work)
	switch {
	case !ok || int64(acct) >= int64(r.accounts):
		return protocol.VoteNo
	case amount == 0:
		return protocol.VoteReadOnly
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		v := r.prepare(txn, acct, amount)
		r.report(engine.Message{Type: engine.MsgResPrepared, Txn: txn, Vote: v})
	}()
	return protocol.VotePending
}

// prepare runs the branch in one round trip: the UPDATE (which the CHECK
// constraint refuses to take below zero), the commit marker and PREPARE
// TRANSACTION, as one multi-statement query. Every literal is a number, a
// UUID or a checked name, so nothing needs quoting. The UPDATE runs in a
// query that divides by its row count, so that a missing account fails
// the transaction before PREPARE: nothing is ever prepared with the
// wrong effect, which a crash before its rollback would leave for the
// scan to find prepared — and a staged resolution would then commit.
func (r *Resource) prepare(txn protocol.TxnID, acct uint32, amount int64) protocol.Vote {
	gid := r.gid(txn)
	sql := fmt.Sprintf("BEGIN; WITH u AS (UPDATE commitd_accounts SET balance = balance + %d WHERE id = %d RETURNING 1) "+
		"SELECT 1 / count(*) FROM u; "+
		"INSERT INTO commitd_decisions VALUES ('%s', '%s', true); PREPARE TRANSACTION '%s'",
		amount, acct, r.cfg.Name, txn, gid)
	conn, err := r.pool.Acquire(r.ctx)
	if err != nil {
		r.cfg.Logger.Warn("postgres: prepare: no connection", "txn", txn, "err", err)
		return protocol.VoteNo
	}
	defer conn.Release()
	pc := conn.Conn().PgConn()
	res, err := pc.Exec(r.ctx, sql).ReadAll()
	if err != nil {
		if pc.TxStatus() == 'E' || pc.TxStatus() == 'T' {
			// Keep the connection: end the failed transaction block.
			_, _ = pc.Exec(r.ctx, "ROLLBACK").ReadAll()
		}
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			switch pe.Code {
			case codeCheckViolation, codeLockNotAvailable, codeDeadlockDetected, codeSerialization:
				// The expected no: an overdraft or a busy account.
			case codeDivisionByZero:
				// The account vanished since Open.
				r.cfg.Logger.Warn("postgres: prepare: account missing", "txn", txn, "account", acct)
			case codeUniqueViolation:
				// The marker row is there: prevented (or decided) before.
				r.refusedPrev.Add(1)
			case codeTooManyPreparedTx:
				r.cfg.Logger.Warn("postgres: max_prepared_transactions reached: raise it", "err", err)
			default:
				r.cfg.Logger.Warn("postgres: prepare failed", "txn", txn, "err", err)
			}
			return protocol.VoteNo
		}
		// A connection error: PostgreSQL may have prepared it all the
		// same. Voting no is safe; the scan finds the orphan and rolls it
		// back.
		r.cfg.Logger.Warn("postgres: prepare: connection failed", "txn", txn, "err", err)
		return protocol.VoteNo
	}
	if len(res) != 4 {
		// Cannot be (the server answered every statement): undo it.
		r.cfg.Logger.Error("postgres: prepare: unexpected answer", "txn", txn, "results", len(res))
		_, _ = pc.Exec(r.ctx, "ROLLBACK PREPARED '"+gid+"'").ReadAll()
		return protocol.VoteNo
	}
	return protocol.VoteYes
}

// prepareStatement runs an operator's statement as a branch in two round
// trips: BEGIN, the statement with its arguments as bind parameters (pgx's
// extended protocol: never spliced into the SQL) and the commit marker,
// pipelined as one batch; then, once the statement's row count is
// checked, PREPARE TRANSACTION — or ROLLBACK and a no vote for a wrong
// count. Checking before the PREPARE means nothing is prepared with the
// wrong effect: a crash before its rollback would leave it for the scan
// to find prepared, and a staged resolution would then commit it.
func (r *Resource) prepareStatement(txn protocol.TxnID, st *statements.Statement, args []any) protocol.Vote {
	conn, err := r.pool.Acquire(r.ctx)
	if err != nil {
		r.cfg.Logger.Warn("postgres: prepare: no connection", "txn", txn, "err", err)
		return protocol.VoteNo
	}
	defer conn.Release()
	c := conn.Conn()
	gid := r.gid(txn)
	var b pgx.Batch
	b.Queue("BEGIN")
	b.Queue(st.SQL, args...)
	b.Queue("INSERT INTO commitd_decisions VALUES ($1, $2, true)", r.cfg.Name, txn.String())
	var rows int64
	err = func() error {
		res := c.SendBatch(r.ctx, &b)
		defer res.Close()
		if _, err := res.Exec(); err != nil {
			return err
		}
		tag, err := res.Exec()
		if err != nil {
			return fmt.Errorf("statement %q: %w", st.Name, err)
		}
		rows = tag.RowsAffected()
		if _, err := res.Exec(); err != nil {
			return err
		}
		return res.Close()
	}()
	if err == nil {
		if err = st.CheckRows(rows); err == nil {
			if _, err = c.Exec(r.ctx, "PREPARE TRANSACTION '"+gid+"'"); err == nil {
				return protocol.VoteYes
			}
		}
	}
	if s := c.PgConn().TxStatus(); s == 'E' || s == 'T' {
		_, _ = c.Exec(r.ctx, "ROLLBACK")
	}
	if pe := (*pgconn.PgError)(nil); errors.As(err, &pe) && pe.Code == codeUniqueViolation {
		r.refusedPrev.Add(1)
	}
	// A connection error may have left it prepared: the scan finds the
	// orphan and rolls it back, as for the bank's work.
	r.warnNo("postgres: voting no", "txn", txn, "reason", err)
	return protocol.VoteNo
}

// warnNo logs a statement's NO vote and its reason at WARN at most once a
// second, at DEBUG otherwise: a client sending bad work (or a statement
// that fails for every branch) must not flood the log.
func (r *Resource) warnNo(msg string, args ...any) {
	now := time.Now().UnixNano()
	last := r.lastWarnNs.Load()
	level := slog.LevelDebug
	if now-last >= int64(time.Second) && r.lastWarnNs.CompareAndSwap(last, now) {
		level = slog.LevelWarn
	}
	r.cfg.Logger.Log(context.Background(), level, msg, args...)
}

// Commit starts COMMIT PREPARED; MsgResFinished or MsgResFailed follows.
func (r *Resource) Commit(txn protocol.TxnID) { r.start(txn, protocol.DecisionCommit) }

// Abort starts ROLLBACK PREPARED; MsgResFinished or MsgResFailed follows.
func (r *Resource) Abort(txn protocol.TxnID) { r.start(txn, protocol.DecisionAbort) }

func (r *Resource) start(txn protocol.TxnID, d protocol.Decision) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		err := r.finish(txn, d)
		switch {
		case err == nil:
			r.report(engine.Message{Type: engine.MsgResFinished, Txn: txn, Decision: d})
		case r.ctx.Err() != nil:
			// Closing: the transaction stays prepared in PostgreSQL and is
			// found again at the next start.
		default:
			r.failures.Add(1)
			r.cfg.Logger.Error("postgres: cannot finish a decision", "txn", txn, "decision", d, "err", err)
			r.report(engine.Message{Type: engine.MsgResFailed, Txn: txn, Decision: d})
		}
	}()
}

// finish commits or rolls back txn's prepared transaction, retrying
// connection errors with backoff until it succeeds or Close is called.
// Both are idempotent: a transaction already committed (its marker row
// is visible) commits successfully; one already rolled back, or never
// prepared, rolls back successfully. A commit of a transaction
// PostgreSQL has no trace of is an error, never assumed done.
func (r *Resource) finish(txn protocol.TxnID, d protocol.Decision) error {
	stmt := "COMMIT PREPARED '" + r.gid(txn) + "'"
	if d == protocol.DecisionAbort {
		stmt = "ROLLBACK PREPARED '" + r.gid(txn) + "'"
	}
	backoff := 10 * time.Millisecond
	finished := false // the COMMIT/ROLLBACK PREPARED step is done
	for {
		err := r.ctx.Err()
		if err == nil && !finished {
			_, err = r.pool.Exec(r.ctx, stmt)
			var pe *pgconn.PgError
			if errors.As(err, &pe) && pe.Code == codeUndefinedObject {
				// Finished before (the answer was lost), or never prepared.
				var committed *bool
				committed, err = r.marker(txn)
				switch {
				case err != nil:
				case d == protocol.DecisionCommit && (committed == nil || !*committed):
					return fmt.Errorf("%s: PostgreSQL has no such prepared transaction and no commit of it (rolled back by hand?)", stmt)
				case d == protocol.DecisionAbort && committed != nil && *committed:
					return fmt.Errorf("%s: the transaction was committed", stmt)
				}
			} else if pe != nil && !transient(pe) {
				return fmt.Errorf("%s: %w", stmt, err)
			}
			finished = err == nil
		}
		if err == nil && finished && d == protocol.DecisionAbort {
			// The abort's marker, for the ledger after a crash.
			_, err = r.pool.Exec(r.ctx, "INSERT INTO commitd_decisions VALUES ($1, $2, false) ON CONFLICT DO NOTHING",
				r.cfg.Name, txn.String())
		}
		if err == nil && finished {
			return nil
		}
		if r.ctx.Err() != nil {
			return r.ctx.Err()
		}
		// A connection error (the server restarting, say): try again.
		r.retries.Add(1)
		if err := r.pause(&backoff); err != nil {
			return err
		}
	}
}

// transient reports whether an error from the server is worth retrying:
// the server is shutting down, restarting or out of connections
// (SQLSTATE classes 08, 57 and 53).
func transient(pe *pgconn.PgError) bool {
	c := pe.Code
	return strings.HasPrefix(c, "08") || strings.HasPrefix(c, "57") || strings.HasPrefix(c, "53")
}

// marker reads txn's marker row: nil if there is none.
func (r *Resource) marker(txn protocol.TxnID) (*bool, error) {
	var committed bool
	err := r.pool.QueryRow(r.ctx, "SELECT committed FROM commitd_decisions WHERE participant = $1 AND txn = $2",
		r.cfg.Name, txn.String()).Scan(&committed)
	if err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, nil
		}
		return nil, err
	}
	return &committed, nil
}

// Restore does nothing: PostgreSQL holds the prepared transaction.
func (r *Resource) Restore(protocol.TxnID, []byte) {}

// Snapshot is never called (a durable resource is not checkpointed): the
// committed state is the database's.
func (r *Resource) Snapshot(dst []byte) []byte { return dst }

// Load refuses: the state is the database's, never a snapshot's.
func (r *Resource) Load([]byte) error {
	return errors.New("postgres: a PostgreSQL resource has no snapshot to load")
}

// InDoubt lists the transactions this participant has prepared in the
// database and not yet committed or rolled back (pg_prepared_xacts with
// its prefix).
func (r *Resource) InDoubt(ctx context.Context) ([]protocol.TxnID, error) {
	rows, err := r.pool.Query(ctx, "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND starts_with(gid, $1)", r.prefix)
	if err != nil {
		return nil, fmt.Errorf("postgres: listing prepared transactions: %w", err)
	}
	defer rows.Close()
	var ids []protocol.TxnID
	for rows.Next() {
		var gid string
		if err := rows.Scan(&gid); err != nil {
			return nil, fmt.Errorf("postgres: listing prepared transactions: %w", err)
		}
		id, err := uuid.Parse(strings.TrimPrefix(gid, r.prefix))
		if err != nil {
			r.cfg.Logger.Warn("postgres: a prepared transaction with commitd's prefix and a bad id; leaving it alone", "gid", gid)
			continue
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: listing prepared transactions: %w", err)
	}
	return ids, nil
}

// Decided lists the decisions whose marker rows are still in the
// database (not yet forgotten). A prevention's marker is no decision
// applied here (nothing was prepared): it is left out.
func (r *Resource) Decided(ctx context.Context) ([]engine.Applied, error) {
	rows, err := r.pool.Query(ctx, `SELECT d.txn::text, d.committed FROM commitd_decisions d
		WHERE d.participant = $1 AND NOT EXISTS
			(SELECT 1 FROM commitd_prevented p WHERE p.participant = d.participant AND p.txn = d.txn)`, r.cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("postgres: reading decisions: %w", err)
	}
	defer rows.Close()
	var out []engine.Applied
	for rows.Next() {
		var s string
		var committed bool
		if err := rows.Scan(&s, &committed); err != nil {
			return nil, fmt.Errorf("postgres: reading decisions: %w", err)
		}
		id, err := uuid.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("postgres: reading decisions: %w", err)
		}
		d := protocol.DecisionCommit
		if !committed {
			d = protocol.DecisionAbort
		}
		out = append(out, engine.Applied{Txn: id, Decision: d})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: reading decisions: %w", err)
	}
	return out, nil
}

// Forget deletes the marker rows of decisions the participant's ledger
// has made durable, except a prevention's, which is what refuses a late
// prepare; at most once a minute it also drops the preventions older
// than PreventRetention, with their markers.
func (r *Resource) Forget(ctx context.Context, ids []protocol.TxnID) error {
	if len(ids) > 0 {
		strs := make([]string, len(ids))
		for i, id := range ids {
			strs[i] = id.String()
		}
		if _, err := r.pool.Exec(ctx, `DELETE FROM commitd_decisions d WHERE d.participant = $1 AND d.txn = ANY($2::uuid[])
			AND NOT EXISTS (SELECT 1 FROM commitd_prevented p WHERE p.participant = d.participant AND p.txn = d.txn)`,
			r.cfg.Name, strs); err != nil {
			return fmt.Errorf("postgres: forgetting decisions: %w", err)
		}
	}
	now := time.Now().UnixNano()
	last := r.lastExpireNs.Load()
	if now-last < int64(time.Minute) || !r.lastExpireNs.CompareAndSwap(last, now) {
		return nil
	}
	return r.expirePrevented(ctx, r.cfg.PreventRetention)
}

// expirePrevented drops the preventions older than age, and their
// markers, in one transaction: a marker never outlives its prevention
// row by a commit (Forget would never drop it), nor the other way round
// (a late prepare would pass).
func (r *Resource) expirePrevented(ctx context.Context, age time.Duration) error {
	_, err := r.pool.Exec(ctx, `WITH gone AS (
			DELETE FROM commitd_prevented WHERE participant = $1 AND at < now() - make_interval(secs => $2)
			RETURNING txn)
		DELETE FROM commitd_decisions d USING gone WHERE d.participant = $1 AND d.txn = gone.txn`,
		r.cfg.Name, age.Seconds())
	if err != nil {
		return fmt.Errorf("postgres: dropping expired preventions: %w", err)
	}
	return nil
}

// Summary counts the accounts and sums their committed balances.
func (r *Resource) Summary(ctx context.Context) (accounts int, total int64, err error) {
	err = r.pool.QueryRow(ctx, "SELECT count(*), coalesce(sum(balance), 0)::bigint FROM commitd_accounts").Scan(&accounts, &total)
	if err != nil {
		return 0, 0, fmt.Errorf("postgres: summing accounts: %w", err)
	}
	return accounts, total, nil
}

// Accounts is the number of accounts (0 if the database cannot be read).
func (r *Resource) Accounts() int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, _, _ := r.Summary(ctx)
	return n
}

// Total is the sum of the committed balances (-1 if the database cannot
// be read).
func (r *Resource) Total() int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, t, err := r.Summary(ctx)
	if err != nil {
		return -1
	}
	return t
}

// Stats are the resource's counters.
type Stats struct {
	Retries  uint64 // commit/abort attempts repeated after a connection error
	Failures uint64 // commits/aborts reported failed
	Refused  uint64 // statement works voted no before reaching the server
	// Prevented counts preventions made durable; FoundPrepared those the
	// compare-and-swap answered "prepared"; RefusedPrevented the prepares
	// voted no because the transaction's marker was there (prevented or
	// decided before).
	Prevented        uint64
	FoundPrepared    uint64
	RefusedPrevented uint64
}

// Stats returns the resource's counters.
func (r *Resource) Stats() Stats {
	return Stats{Retries: r.retries.Load(), Failures: r.failures.Load(), Refused: r.refused.Load(),
		Prevented: r.prevented.Load(), FoundPrepared: r.foundPrepared.Load(), RefusedPrevented: r.refusedPrev.Load()}
}

// Close stops the round trips in flight (their transactions stay prepared
// in PostgreSQL, to be found at the next start), waits for their
// goroutines and closes the pool. No result is reported after Close
// returns.
func (r *Resource) Close() error {
	r.cancel()
	r.wg.Wait()
	r.pool.Close()
	return nil
}

package mysql

import (
	"context"
	crand "crypto/rand"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/participant/statements"
	"github.com/commitd/commitd/protocol"
	gomysql "github.com/go-sql-driver/mysql"
	"github.com/google/uuid"
)

// FormatID is the formatID of every XID commitd uses ("cmtd").
const FormatID = 0x636d7464

// ErrUnsupportedServer is returned by Open for a server that cannot keep
// the promises two-phase commit needs (docs/mysql.md, "Server settings").
var ErrUnsupportedServer = errors.New("mysql: unsupported server")

// Server error numbers the resource branches on.
const (
	erTooManyConns     = 1040
	erServerShutdown   = 1053
	erUnknownThread    = 1094
	erLockWaitTimeout  = 1205
	erDupEntry         = 1062 // the marker row exists: prevented (or decided) before this prepare
	erDeadlock         = 1213
	erQueryInterrupted = 1317
	erXANotA           = 1397 // XAER_NOTA: unknown XID — or one another live session holds
	erXARBTimeout      = 1613
	erXARBDeadlock     = 1614
	erConnKilled       = 1927 // MariaDB: connection was killed
	erCheckMariaDB     = 4025
	erCheckMySQL       = 3819
)

// Config describes a MySQL/MariaDB resource. Zero values take the
// defaults noted.
type Config struct {
	// DSN is go-sql-driver/mysql's: user:password@tcp(host:port)/dbname.
	// A database name is required. The resource sets clientFoundRows,
	// multiStatements and innodb_lock_wait_timeout itself.
	DSN string
	// Name is the participant's name (1..64 bytes of letters, digits and
	// "._-"): every XID's bqual and every marker row carry it. Required.
	Name string
	// Accounts and Balance seed commitd_accounts when it is empty (also
	// with Statements, which may use it: bank.statements does).
	Accounts int
	Balance  int64
	// Statements, if set, are the only work accepted: a branch names one
	// and passes its arguments (participant/statements). The bank's work
	// is then refused.
	Statements *statements.Set
	// MaxConns bounds the branches being prepared and the decisions
	// being finished from the pool at once (default 32): the connections
	// doing work.
	MaxConns int
	// MaxPrepared bounds the transactions this process holds prepared
	// (default 256). Each keeps its session until its decision (the
	// server lets no other session finish it meanwhile), so the server's
	// max_connections must exceed MaxConns + MaxPrepared. Beyond it a
	// prepare votes no, as PostgreSQL's max_prepared_transactions does.
	// The two bounds are separate so that prepares never wait for a
	// connection held by a prepared transaction: two participants whose
	// pools were full of transactions waiting for each other's votes
	// would deadlock until the prepare timeout.
	MaxPrepared int
	// LockWaitSeconds is innodb_lock_wait_timeout for the branches'
	// sessions (default 0: a row another transaction holds is a NO vote
	// at once; MariaDB allows 0, MySQL rounds it up to 1). Short, because
	// the holder may be a prepared transaction waiting for its decision.
	LockWaitSeconds int
	// PrepareTimeout bounds waiting for a connection plus running a
	// branch (default 5s); beyond it the vote is NO.
	PrepareTimeout time.Duration
	// PreventRetention is how long a prevention is kept
	// (commitd_prevented) before Forget may drop it (default 1h): it must
	// outlast every prepare of the transaction that can still arrive (a
	// coordinator refuses ids older than a few seconds).
	PreventRetention time.Duration
	// RetryMax caps the backoff between attempts of a commit or abort
	// (default 1s).
	RetryMax time.Duration
	// Logger receives errors worth a human's attention (default
	// slog.Default()).
	Logger *slog.Logger
}

// Resource is a MySQL/MariaDB database behind the engine's Resource
// interface, through XA transactions. See the package documentation.
type Resource struct {
	// Immutable after Open.
	cfg      Config
	db       *sql.DB
	tag      string // "/*commitd:NAME:NONCE*/ ", first in every XA statement
	accounts int    // rows in commitd_accounts at Open
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup // round trips in flight
	// report is set once by Attach, before the first Prepare, Commit or
	// Abort; read by the worker goroutines after that.
	report func(engine.Message)

	// work holds a token per connection doing work (MaxConns).
	work chan struct{}

	// pinned holds the session of every transaction prepared by this
	// incarnation, until its decision: only that session can finish it
	// while it lives. slots counts pinned sessions plus prepares that
	// may pin one (at most MaxPrepared).
	mu struct {
		sync.Mutex
		pinned map[protocol.TxnID]*sql.Conn
		slots  int
	}

	// lastWarnNs is when a vote's failure was last logged at WARN: a
	// server that is down fails every prepare, and one line a second is
	// enough (the rest go to DEBUG).
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

// Open connects, checks that the server keeps prepared XA transactions
// durably, creates the tables if they are missing, seeds the accounts
// once, checks every statement of cfg.Statements against the server, and
// ends the sessions an earlier incarnation of this participant left
// running.
func Open(ctx context.Context, cfg Config) (*Resource, error) {
	if cfg.DSN == "" {
		return nil, errors.New("mysql: a DSN is required")
	}
	if err := checkName(cfg.Name); err != nil {
		return nil, err
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 32
	}
	if cfg.MaxPrepared <= 0 {
		cfg.MaxPrepared = 256
	}
	if cfg.LockWaitSeconds < 0 {
		return nil, fmt.Errorf("mysql: lock wait timeout %d s is negative", cfg.LockWaitSeconds)
	}
	if cfg.PrepareTimeout <= 0 {
		cfg.PrepareTimeout = 5 * time.Second
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
	dcfg, err := gomysql.ParseDSN(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("mysql: DSN: %w", err)
	}
	if dcfg.DBName == "" {
		return nil, errors.New("mysql: the DSN names no database (user:password@tcp(host:port)/DBNAME)")
	}
	// Rows matched, not rows changed, as PostgreSQL counts them: a
	// statement's expected row count must not depend on whether the new
	// value happens to equal the old.
	dcfg.ClientFoundRows = true
	// The bank's prepare is one round trip of several statements.
	dcfg.MultiStatements = true
	// Arguments travel as bind parameters of a server-side prepared
	// statement, never spliced into SQL text by the driver.
	dcfg.InterpolateParams = false
	if dcfg.Params == nil {
		dcfg.Params = map[string]string{}
	}
	dcfg.Params["innodb_lock_wait_timeout"] = strconv.Itoa(cfg.LockWaitSeconds)
	if dcfg.Timeout == 0 {
		dcfg.Timeout = 5 * time.Second
	}
	// The driver's own log (a lost connection, say) repeats errors the
	// resource returns and logs itself.
	dcfg.Logger = debugLogger{cfg.Logger}
	conn, err := gomysql.NewConnector(dcfg)
	if err != nil {
		return nil, fmt.Errorf("mysql: %w", err)
	}
	db := sql.OpenDB(conn)
	// Unbounded here: work is bounded by r.work, pinned sessions by
	// MaxPrepared.
	db.SetMaxIdleConns(cfg.MaxConns)
	var nonce [6]byte
	if _, err := crand.Read(nonce[:]); err != nil {
		db.Close()
		return nil, fmt.Errorf("mysql: %w", err)
	}
	r := &Resource{cfg: cfg, db: db, tag: tagPrefix(cfg.Name) + hex.EncodeToString(nonce[:]) + "*/ ",
		work: make(chan struct{}, cfg.MaxConns)}
	r.mu.pinned = make(map[protocol.TxnID]*sql.Conn)
	for _, step := range []func(context.Context) error{r.checkServer, r.setup, r.checkStatements, r.endLeftovers} {
		if err := step(ctx); err != nil {
			db.Close()
			return nil, err
		}
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	return r, nil
}

// debugLogger routes go-sql-driver/mysql's log to slog at DEBUG.
type debugLogger struct{ l *slog.Logger }

func (d debugLogger) Print(v ...any) { d.l.Debug("mysql driver: " + fmt.Sprint(v...)) }

// tagPrefix starts the comment that opens every XA statement of the
// participant called name; a per-incarnation nonce and "*/" follow. A
// statement's text, comment included, is what PROCESSLIST shows while it
// runs: the next incarnation finds its predecessor's by it.
func tagPrefix(name string) string { return "/*commitd:" + name + ":" }

func checkName(name string) error {
	if name == "" || len(name) > protocol.MaxNameLen {
		return fmt.Errorf("mysql: participant name %q must be 1 to %d bytes", name, protocol.MaxNameLen)
	}
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("mysql: participant name %q: only letters, digits and ._- go into an XID", name)
		}
	}
	return nil
}

// checkServer refuses servers that lose prepared XA transactions: MariaDB
// before 10.5 and MySQL before 5.7.7 roll them back when their session
// disconnects, and without innodb_flush_log_at_trx_commit = 1 (and, with
// a binary log, sync_binlog = 1) XA PREPARE returns before the prepared
// state is on disk.
func (r *Resource) checkServer(ctx context.Context) error {
	var version string
	var flush, logBin, syncBinlog int64
	err := r.db.QueryRowContext(ctx, "SELECT @@version, @@innodb_flush_log_at_trx_commit, @@log_bin, @@sync_binlog").
		Scan(&version, &flush, &logBin, &syncBinlog)
	if err != nil {
		return fmt.Errorf("mysql: connecting: %w", err)
	}
	if err := checkVersion(version); err != nil {
		return err
	}
	if flush != 1 {
		return fmt.Errorf("%w: innodb_flush_log_at_trx_commit = %d: set it to 1, or a prepared transaction whose YES vote was sent can be lost in a crash", ErrUnsupportedServer, flush)
	}
	var maxConns int
	if err := r.db.QueryRowContext(ctx, "SELECT @@max_connections").Scan(&maxConns); err == nil && maxConns < r.cfg.MaxConns+r.cfg.MaxPrepared {
		r.cfg.Logger.Warn("mysql: the server's max_connections is below MaxConns + MaxPrepared: under load prepares may fail to connect and vote no",
			"max_connections", maxConns, "max_conns", r.cfg.MaxConns, "max_prepared", r.cfg.MaxPrepared)
	}
	if logBin != 0 && syncBinlog != 1 {
		return fmt.Errorf("%w: the binary log is on with sync_binlog = %d: set it to 1, or a prepared transaction whose YES vote was sent can be lost in a crash", ErrUnsupportedServer, syncBinlog)
	}
	return nil
}

// checkVersion refuses a server version that rolls back a prepared XA
// transaction when its session ends.
func checkVersion(version string) error {
	num, _, _ := strings.Cut(version, "-")
	var v [3]int
	for i, f := range strings.SplitN(num, ".", 3) {
		v[i], _ = strconv.Atoi(f)
	}
	atLeast := func(a, b, c int) bool {
		return v[0] > a || v[0] == a && (v[1] > b || v[1] == b && v[2] >= c)
	}
	switch {
	case strings.Contains(version, "MariaDB") && !atLeast(10, 5, 2):
		return fmt.Errorf("%w: MariaDB %s rolls back a prepared XA transaction when its session ends; 10.5.2 or later is needed", ErrUnsupportedServer, version)
	case !strings.Contains(version, "MariaDB") && !atLeast(5, 7, 7):
		return fmt.Errorf("%w: MySQL %s rolls back a prepared XA transaction when its session ends; 5.7.7 or later is needed", ErrUnsupportedServer, version)
	}
	return nil
}

var schema = []string{
	`CREATE TABLE IF NOT EXISTS commitd_accounts (
		id      INT    NOT NULL PRIMARY KEY,
		balance BIGINT NOT NULL CHECK (balance >= 0)
	) ENGINE=InnoDB`,
	`CREATE TABLE IF NOT EXISTS commitd_decisions (
		participant VARCHAR(64) NOT NULL,
		txn         CHAR(36)    NOT NULL,
		committed   BOOLEAN     NOT NULL,
		PRIMARY KEY (participant, txn)
	) ENGINE=InnoDB`,
	`CREATE TABLE IF NOT EXISTS commitd_prevented (
		participant VARCHAR(64) NOT NULL,
		txn         CHAR(36)    NOT NULL,
		at          TIMESTAMP   NOT NULL DEFAULT CURRENT_TIMESTAMP,
		PRIMARY KEY (participant, txn)
	) ENGINE=InnoDB`,
}

func (r *Resource) setup(ctx context.Context) error {
	for _, s := range schema {
		if _, err := r.db.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("mysql: creating tables: %w", err)
		}
	}
	var n int
	if err := r.db.QueryRowContext(ctx, "SELECT count(*) FROM commitd_accounts").Scan(&n); err != nil {
		return fmt.Errorf("mysql: %w", err)
	}
	if n == 0 && r.cfg.Accounts > 0 {
		if r.cfg.Balance < 0 {
			return fmt.Errorf("mysql: starting balance %d is negative", r.cfg.Balance)
		}
		// INSERT IGNORE: two participants seeding one empty table at once
		// insert the same rows; the second insert does nothing.
		const batch = 1000
		for lo := 0; lo < r.cfg.Accounts; lo += batch {
			var b strings.Builder
			b.WriteString("INSERT IGNORE INTO commitd_accounts VALUES ")
			for id := lo; id < min(lo+batch, r.cfg.Accounts); id++ {
				if id > lo {
					b.WriteByte(',')
				}
				fmt.Fprintf(&b, "(%d,%d)", id, r.cfg.Balance)
			}
			if _, err := r.db.ExecContext(ctx, b.String()); err != nil {
				return fmt.Errorf("mysql: seeding accounts: %w", err)
			}
		}
		n = r.cfg.Accounts
	}
	r.accounts = n
	return nil
}

// checkStatements prepares every statement of the file on the server:
// SQL the server cannot parse, a table that does not exist or a
// parameter count other than the file's refuses the start, naming the
// statement and its line.
func (r *Resource) checkStatements(ctx context.Context) error {
	if r.cfg.Statements == nil {
		return nil
	}
	conn, err := r.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("mysql: %w", err)
	}
	defer conn.Close()
	for _, st := range r.cfg.Statements.All() {
		err := conn.Raw(func(dc any) error {
			s, err := dc.(driver.ConnPrepareContext).PrepareContext(ctx, st.SQL)
			if err != nil {
				return err
			}
			defer s.Close()
			if n := s.NumInput(); n != len(st.Params) {
				return fmt.Errorf("the server counts %d parameters, the file declares %d", n, len(st.Params))
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("mysql: statement %q (line %d): %w", st.Name, st.Line, err)
		}
	}
	return nil
}

// endLeftovers ends the sessions of an earlier incarnation of this
// participant that are still running one of its XA statements, and waits
// until they are gone, before anything reads XA RECOVER. A participant
// killed while its XA COMMIT ran in the server leaves that statement
// running: the first scan could list the transaction as prepared a
// moment before it commits — a one-phase commit the coordinator, asked,
// would answer with abort. (An idle session of a dead process ends as
// soon as the server sees its socket close; one the server still
// believes alive keeps its prepared transaction to itself, and XA
// COMMIT/ROLLBACK from here retry until it is gone: see finish.) Ending
// another user's sessions needs the CONNECTION ADMIN (MySQL) or
// CONNECTION ADMIN/SUPER (MariaDB) privilege: without it this is logged
// and the start goes on.
func (r *Resource) endLeftovers(ctx context.Context) error {
	prefix := tagPrefix(r.cfg.Name)
	find := func() ([]int64, error) {
		rows, err := r.db.QueryContext(ctx, "SELECT id, info FROM information_schema.processlist WHERE info LIKE '/*commitd:%'")
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		var ids []int64
		for rows.Next() {
			var id int64
			var info string
			if err := rows.Scan(&id, &info); err != nil {
				return nil, err
			}
			if strings.HasPrefix(info, prefix) && !strings.HasPrefix(info, r.tag) {
				ids = append(ids, id)
			}
		}
		return ids, rows.Err()
	}
	ids, err := find()
	if err != nil {
		return fmt.Errorf("mysql: listing an earlier incarnation's sessions: %w", err)
	}
	if len(ids) == 0 {
		return nil
	}
	failed := 0
	for _, id := range ids {
		_, err := r.db.ExecContext(ctx, "KILL CONNECTION "+strconv.FormatInt(id, 10))
		var me *gomysql.MySQLError
		if err != nil && !(errors.As(err, &me) && me.Number == erUnknownThread) {
			r.cfg.Logger.Warn("mysql: could not end an earlier incarnation's session", "participant", r.cfg.Name, "id", id, "err", err)
			failed++
		}
	}
	r.cfg.Logger.Info("mysql: ended sessions an earlier incarnation left", "participant", r.cfg.Name, "sessions", len(ids)-failed, "failed", failed)
	deadline := time.Now().Add(30 * time.Second)
	for {
		left, err := find()
		if err != nil {
			return fmt.Errorf("mysql: waiting for an earlier incarnation's sessions to end: %w", err)
		}
		if len(left) <= failed {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mysql: %d sessions of an earlier incarnation of %s still running after 30 s", len(left), r.cfg.Name)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Attach sets where results go: MsgResPrepared, MsgResFinished,
// MsgResFailed (To left empty, for the caller to fill in). Call it once,
// before anything is prepared; report is called from the resource's
// goroutines and must not block for long.
func (r *Resource) Attach(report func(engine.Message)) { r.report = report }

// xid is txn's XID as XA statements spell it. Every part is a UUID, a
// checked name or a number: nothing needs quoting.
func (r *Resource) xid(txn protocol.TxnID) string {
	return "'" + txn.String() + "','" + r.cfg.Name + "'," + strconv.Itoa(FormatID)
}

// Prepare votes no on a work it cannot run, and read-only on a bank
// transfer of zero, at once; otherwise it starts the branch and returns
// protocol.VotePending.
func (r *Resource) Prepare(txn protocol.TxnID, work []byte) protocol.Vote {
	var run func(ctx context.Context, conn *sql.Conn, xid string) error
	if r.cfg.Statements != nil {
		st, args, err := r.cfg.Statements.Bind(work)
		if err != nil {
			return r.refuse(txn, err)
		}
		run = func(ctx context.Context, conn *sql.Conn, xid string) error {
			return r.runStatement(ctx, conn, txn, xid, st, args)
		}
	} else {
		acct, amount, ok := bank.DecodeWork(work)
		switch {
		case !ok:
			return r.refuse(txn, errors.New("not a bank work (12 bytes: account, amount)"))
		case int64(acct) >= int64(r.accounts):
			return r.refuse(txn, fmt.Errorf("account %d does not exist (%d accounts)", acct, r.accounts))
		case amount == 0:
			return protocol.VoteReadOnly
		}
		run = func(ctx context.Context, conn *sql.Conn, xid string) error {
			return r.runBank(ctx, conn, txn, xid, acct, amount)
		}
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		v := r.prepare(txn, run)
		r.report(engine.Message{Type: engine.MsgResPrepared, Txn: txn, Vote: v})
	}()
	return protocol.VotePending
}

// warnNo logs a NO vote's reason at WARN at most once a second, at DEBUG
// otherwise.
func (r *Resource) warnNo(msg string, args ...any) {
	now := time.Now().UnixNano()
	last := r.lastWarnNs.Load()
	level := slog.LevelDebug
	if now-last >= int64(time.Second) && r.lastWarnNs.CompareAndSwap(last, now) {
		level = slog.LevelWarn
	}
	r.cfg.Logger.Log(context.Background(), level, msg, args...)
}

// refuse votes no on a work the resource will not run, saying why in the
// log (the protocol carries no reason).
func (r *Resource) refuse(txn protocol.TxnID, why error) protocol.Vote {
	r.refused.Add(1)
	r.warnNo("mysql: voting no", "txn", txn, "reason", why)
	return protocol.VoteNo
}

// errNo is a NO vote's reason that is not a server error.
type errNo struct{ error }

// prepare takes a connection, runs the branch in an XA transaction and
// prepares it. On YES the connection stays pinned to txn until its
// decision; otherwise the XA transaction is ended and rolled back (or
// the connection dropped, which rolls back what is not prepared).
func (r *Resource) prepare(txn protocol.TxnID, run func(context.Context, *sql.Conn, string) error) protocol.Vote {
	r.mu.Lock()
	full := r.mu.slots >= r.cfg.MaxPrepared
	if !full {
		r.mu.slots++
	}
	r.mu.Unlock()
	if full {
		r.warnNo("mysql: voting no: MaxPrepared transactions are prepared already: raise --mysql-max-prepared (and the server's max_connections)", "txn", txn, "max", r.cfg.MaxPrepared)
		return protocol.VoteNo
	}
	pinned := false
	defer func() {
		if !pinned {
			r.mu.Lock()
			r.mu.slots--
			r.mu.Unlock()
		}
	}()
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.PrepareTimeout)
	defer cancel()
	if !r.acquire(ctx) {
		r.warnNo("mysql: voting no: no connection free within the prepare timeout", "txn", txn)
		return protocol.VoteNo
	}
	defer r.release()
	conn, err := r.db.Conn(ctx)
	if err != nil {
		r.warnNo("mysql: voting no: no connection", "txn", txn, "err", err)
		return protocol.VoteNo
	}
	xid := r.xid(txn)
	err = run(ctx, conn, xid)
	if err == nil {
		r.mu.Lock()
		r.mu.pinned[txn] = conn
		r.mu.Unlock()
		pinned = true
		return protocol.VoteYes
	}
	var me *gomysql.MySQLError
	var no errNo
	switch {
	case errors.As(err, &no):
		r.warnNo("mysql: voting no", "txn", txn, "reason", err)
	case errors.As(err, &me):
		switch me.Number {
		case erLockWaitTimeout, erDeadlock, erXARBDeadlock, erXARBTimeout, erCheckMariaDB, erCheckMySQL:
			// The expected no: a busy row, or a constraint refused it.
			r.cfg.Logger.Debug("mysql: voting no", "txn", txn, "reason", err)
		case erDupEntry:
			// The marker is there: prevented (or decided) before.
			r.refusedPrev.Add(1)
			r.cfg.Logger.Debug("mysql: voting no: prevented", "txn", txn)
		default:
			r.warnNo("mysql: voting no", "txn", txn, "reason", err)
		}
	default:
		// A connection error or the prepare timeout: the server may have
		// prepared it all the same. Voting no is safe; the scan finds the
		// orphan and rolls it back.
		r.warnNo("mysql: voting no: connection failed", "txn", txn, "err", err)
	}
	r.undo(conn, xid)
	return protocol.VoteNo
}

// acquire takes a work token, false if ctx ends first.
func (r *Resource) acquire(ctx context.Context) bool {
	select {
	case r.work <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (r *Resource) release() { <-r.work }

// unpin takes txn's pinned session, if it has one, and frees its slot.
func (r *Resource) unpin(txn protocol.TxnID) *sql.Conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	conn, ok := r.mu.pinned[txn]
	if ok {
		delete(r.mu.pinned, txn)
		r.mu.slots--
	}
	return conn
}

// undo ends a branch that will not be prepared (or was prepared and must
// not be) and gives its connection back, or drops the connection when
// its state is unknown: the server rolls back an unprepared XA
// transaction when its session ends, and leaves a prepared one for the
// scan to find.
func (r *Resource) undo(conn *sql.Conn, xid string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ok := false
	if _, err := conn.ExecContext(ctx, r.tag+"XA END "+xid); err == nil || isServerErr(err) {
		_, err := conn.ExecContext(ctx, r.tag+"XA ROLLBACK "+xid)
		var me *gomysql.MySQLError
		ok = err == nil || errors.As(err, &me) && me.Number == erXANotA
	}
	if !ok {
		discard(conn)
		return
	}
	conn.Close()
}

// discard closes conn's session instead of giving it back to the pool.
func discard(conn *sql.Conn) {
	_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	conn.Close()
}

func isServerErr(err error) bool {
	var me *gomysql.MySQLError
	return errors.As(err, &me)
}

// readCommitted starts every XA transaction and every marker write: READ
// COMMITTED takes no gap locks (InnoDB's default, REPEATABLE READ, does),
// so branches, their markers and Forget's deletes lock only the rows
// they touch — what PostgreSQL does by default.
const readCommitted = "SET TRANSACTION ISOLATION LEVEL READ COMMITTED; "

// runBank is the bank's branch in two round trips: the XA transaction
// and the transfer (refused below zero by its WHERE); then, once the
// transfer is known to have happened, the commit marker and the prepare.
// Every literal is a number, a UUID or a checked name. The check comes
// before XA PREPARE so that nothing is ever prepared with the wrong
// effect: a crash between such a prepare and its rollback would leave it
// for the scan to find prepared, and a staged resolution would answer
// "prepared" and commit it.
func (r *Resource) runBank(ctx context.Context, conn *sql.Conn, txn protocol.TxnID, xid string, acct uint32, amount int64) error {
	q := fmt.Sprintf("%s"+readCommitted+"XA START %s; UPDATE commitd_accounts SET balance = balance + %d WHERE id = %d AND balance + %d >= 0",
		r.tag, xid, amount, acct, amount)
	var affected []int64
	err := conn.Raw(func(dc any) error {
		res, err := dc.(driver.ExecerContext).ExecContext(ctx, q, nil)
		if err != nil {
			return err
		}
		affected = res.(gomysql.Result).AllRowsAffected()
		return nil
	})
	if err != nil {
		return err
	}
	if len(affected) != 3 || affected[2] != 1 {
		// An overdraft (or the account vanished since Open): undo ends
		// and rolls back the unprepared XA transaction.
		return errNo{fmt.Errorf("account %d: balance too low for %d (or no such account)", acct, amount)}
	}
	_, err = conn.ExecContext(ctx, fmt.Sprintf("%sINSERT INTO commitd_decisions VALUES ('%s', '%s', TRUE); XA END %s; XA PREPARE %s",
		r.tag, r.cfg.Name, txn, xid, xid))
	return err
}

// runStatement is an operator's statement as a branch: XA START, the
// statement with its arguments as bind parameters, a check of its row
// count, then the marker and the prepare.
func (r *Resource) runStatement(ctx context.Context, conn *sql.Conn, txn protocol.TxnID, xid string, st *statements.Statement, args []any) error {
	if _, err := conn.ExecContext(ctx, r.tag+readCommitted+"XA START "+xid); err != nil {
		return err
	}
	res, err := conn.ExecContext(ctx, st.SQL, args...)
	if err != nil {
		return fmt.Errorf("statement %q: %w", st.Name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("statement %q: %w", st.Name, err)
	}
	if err := st.CheckRows(n); err != nil {
		return errNo{err}
	}
	_, err = conn.ExecContext(ctx, fmt.Sprintf("%sINSERT INTO commitd_decisions VALUES ('%s', '%s', TRUE); XA END %s; XA PREPARE %s",
		r.tag, r.cfg.Name, txn, xid, xid))
	return err
}

// Commit starts XA COMMIT; MsgResFinished or MsgResFailed follows.
func (r *Resource) Commit(txn protocol.TxnID) { r.start(txn, protocol.DecisionCommit) }

// Abort starts XA ROLLBACK; MsgResFinished or MsgResFailed follows.
func (r *Resource) Abort(txn protocol.TxnID) { r.start(txn, protocol.DecisionAbort) }

func (r *Resource) start(txn protocol.TxnID, d protocol.Decision) {
	conn := r.unpin(txn)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		err := r.finish(txn, d, conn)
		switch {
		case err == nil:
			r.report(engine.Message{Type: engine.MsgResFinished, Txn: txn, Decision: d})
		case r.ctx.Err() != nil:
			// Closing: the transaction stays prepared in the server and
			// is found again at the next start.
		default:
			r.failures.Add(1)
			r.cfg.Logger.Error("mysql: cannot finish a decision", "txn", txn, "decision", d, "err", err)
			r.report(engine.Message{Type: engine.MsgResFailed, Txn: txn, Decision: d})
		}
	}()
}

// errHeldElsewhere: the server answered XAER_NOTA, yet XA RECOVER lists
// the transaction — another session (one of a dead incarnation, or this
// one's broken connection the server has not noticed yet) holds it.
var errHeldElsewhere = errors.New("mysql: the prepared transaction is held by another session")

// finish commits or rolls back txn's XA transaction — on its pinned
// session conn if it has one — retrying connection errors and a
// transaction held by another session with backoff until it succeeds or
// Close is called. Both are idempotent: an XID the server does not know
// is committed only if its marker says so, rolled back if no marker says
// committed.
func (r *Resource) finish(txn protocol.TxnID, d protocol.Decision, conn *sql.Conn) error {
	stmt := r.tag + "XA COMMIT " + r.xid(txn)
	if d == protocol.DecisionAbort {
		stmt = r.tag + "XA ROLLBACK " + r.xid(txn)
	}
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	backoff := 10 * time.Millisecond
	finished := false // the XA COMMIT/ROLLBACK step is done
	for {
		err := r.ctx.Err()
		if err == nil && !finished {
			if conn != nil {
				_, err = conn.ExecContext(r.ctx, stmt)
				if err != nil && !isServerErr(err) {
					// The session is gone (or going): finish from another.
					discard(conn)
					conn = nil
				}
			} else if r.acquire(r.ctx) {
				_, err = r.db.ExecContext(r.ctx, stmt)
				r.release()
			} else {
				err = r.ctx.Err()
			}
			var me *gomysql.MySQLError
			if errors.As(err, &me) && me.Number == erXANotA {
				err = r.settleUnknown(txn, d)
			} else if me != nil && !transient(me) {
				if conn != nil {
					// Its session may still hold the transaction: end it
					// rather than hand it to the next prepare.
					discard(conn)
					conn = nil
				}
				return fmt.Errorf("%s: %w", stmt, err)
			}
			finished = err == nil
		}
		if err == nil && finished && d == protocol.DecisionAbort {
			// The abort's marker, for the ledger after a crash — and the
			// rollback's durability: InnoDB does not flush the redo log
			// for XA ROLLBACK, so a server crash right after it brings the
			// transaction back prepared (TestMariaDBCrash found it so).
			// The marker's commit flushes the log past the rollback's
			// records. If it fails (the server crashed, or the resurrected
			// transaction holds the marker's key), the rollback is done
			// again before the abort is reported.
			_, err = r.db.ExecContext(r.ctx, readCommitted+"INSERT IGNORE INTO commitd_decisions VALUES ('"+r.cfg.Name+"', '"+txn.String()+"', FALSE)")
			finished = err == nil
		}
		if err == nil && finished {
			return nil
		}
		var final finalErr
		if errors.As(err, &final) {
			return final.error
		}
		if r.ctx.Err() != nil {
			return r.ctx.Err()
		}
		if r.retries.Add(1); backoff == r.cfg.RetryMax {
			// Once a second, not at every attempt.
			r.cfg.Logger.Warn("mysql: cannot finish a decision yet; retrying", "txn", txn, "decision", d, "pinned", conn != nil, "err", err)
		}
		if err := r.pause(&backoff); err != nil {
			return err
		}
	}
}

// finalErr is an error finish must not retry.
type finalErr struct{ error }

// settleUnknown decides what an XAER_NOTA answer to d means: the
// transaction is held by another session (retry), finished before (its
// answer lost), or was never prepared.
func (r *Resource) settleUnknown(txn protocol.TxnID, d protocol.Decision) error {
	ids, err := r.InDoubt(r.ctx)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if id == txn {
			return errHeldElsewhere
		}
	}
	committed, err := r.marker(txn)
	switch {
	case err != nil:
		return err
	case d == protocol.DecisionCommit && (committed == nil || !*committed):
		return finalErr{fmt.Errorf("XA COMMIT %s: the server has no such prepared transaction and no commit of it (rolled back by hand?)", r.xid(txn))}
	case d == protocol.DecisionAbort && committed != nil && *committed:
		return finalErr{fmt.Errorf("XA ROLLBACK %s: the transaction was committed", r.xid(txn))}
	}
	return nil
}

// transient reports whether a server error is worth retrying: the server
// is shutting down or out of connections, the statement was interrupted,
// or the row locks of the marker were busy.
func transient(me *gomysql.MySQLError) bool {
	switch me.Number {
	case erTooManyConns, erServerShutdown, erQueryInterrupted, erConnKilled, erLockWaitTimeout, erDeadlock:
		return true
	}
	return false
}

// marker reads txn's marker row: nil if there is none.
func (r *Resource) marker(txn protocol.TxnID) (*bool, error) {
	var committed bool
	err := r.db.QueryRowContext(r.ctx, "SELECT committed FROM commitd_decisions WHERE participant = ? AND txn = ?",
		r.cfg.Name, txn.String()).Scan(&committed)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &committed, nil
}

// Restore does nothing: the server holds the prepared transaction.
func (r *Resource) Restore(protocol.TxnID, []byte) {}

// Snapshot is never called (a durable resource is not checkpointed).
func (r *Resource) Snapshot(dst []byte) []byte { return dst }

// Load refuses: the state is the database's, never a snapshot's.
func (r *Resource) Load([]byte) error {
	return errors.New("mysql: a MySQL resource has no snapshot to load")
}

// InDoubt lists the transactions this participant holds prepared in the
// server: XA RECOVER's rows with commitd's formatID and this
// participant's name as bqual.
func (r *Resource) InDoubt(ctx context.Context) ([]protocol.TxnID, error) {
	rows, err := r.db.QueryContext(ctx, "XA RECOVER")
	if err != nil {
		return nil, fmt.Errorf("mysql: XA RECOVER: %w", err)
	}
	defer rows.Close()
	var ids []protocol.TxnID
	for rows.Next() {
		var format, glen, blen int64
		var data []byte
		if err := rows.Scan(&format, &glen, &blen, &data); err != nil {
			return nil, fmt.Errorf("mysql: XA RECOVER: %w", err)
		}
		if format != FormatID || glen < 0 || blen < 0 || int64(len(data)) != glen+blen || string(data[glen:]) != r.cfg.Name {
			continue
		}
		id, err := uuid.ParseBytes(data[:glen])
		if err != nil {
			r.cfg.Logger.Warn("mysql: a prepared XA transaction with commitd's formatID and a bad gtrid; leaving it alone", "data", string(data))
			continue
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("mysql: XA RECOVER: %w", err)
	}
	return ids, nil
}

// Decided lists the decisions whose marker rows are still in the
// database (not yet forgotten). A prevention's marker is no decision
// applied here (nothing was prepared): it is left out.
func (r *Resource) Decided(ctx context.Context) ([]engine.Applied, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT d.txn, d.committed FROM commitd_decisions d
		WHERE d.participant = ? AND NOT EXISTS
			(SELECT 1 FROM commitd_prevented p WHERE p.participant = d.participant AND p.txn = d.txn)`, r.cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("mysql: reading decisions: %w", err)
	}
	defer rows.Close()
	var out []engine.Applied
	for rows.Next() {
		var s string
		var committed bool
		if err := rows.Scan(&s, &committed); err != nil {
			return nil, fmt.Errorf("mysql: reading decisions: %w", err)
		}
		id, err := uuid.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("mysql: reading decisions: %w", err)
		}
		d := protocol.DecisionCommit
		if !committed {
			d = protocol.DecisionAbort
		}
		out = append(out, engine.Applied{Txn: id, Decision: d})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("mysql: reading decisions: %w", err)
	}
	return out, nil
}

// Forget deletes the marker rows of decisions the participant's ledger
// has made durable, except a prevention's, which is what refuses a late
// prepare (the ledger never holds a prevented transaction, so none is
// passed here; the ids come from Decided or the machine's decisions);
// at most once a minute it also drops the preventions older than
// PreventRetention, with their markers.
func (r *Resource) Forget(ctx context.Context, ids []protocol.TxnID) error {
	if err := r.forget(ctx, ids); err != nil {
		return err
	}
	now := time.Now().UnixNano()
	last := r.lastExpireNs.Load()
	if now-last < int64(time.Minute) || !r.lastExpireNs.CompareAndSwap(last, now) {
		return nil
	}
	return r.expirePrevented(ctx, r.cfg.PreventRetention)
}

func (r *Resource) forget(ctx context.Context, ids []protocol.TxnID) error {
	const batch = 500
	for len(ids) > 0 {
		n := min(len(ids), batch)
		// One point delete per id, in one round trip: a single DELETE with
		// an IN list may scan the participant's range and stop at a
		// marker a prepared transaction holds (lock wait 0 fails it).
		var b strings.Builder
		for _, id := range ids[:n] {
			// A UUID and a checked name: nothing to quote.
			// Each DELETE is a transaction of its own (autocommit), each
			// READ COMMITTED: a key already gone takes no gap lock that
			// would fail a branch's marker insert (lock wait 0).
			b.WriteString(readCommitted + "DELETE FROM commitd_decisions WHERE participant = '" + r.cfg.Name + "' AND txn = '" + id.String() +
				"' AND NOT EXISTS (SELECT 1 FROM commitd_prevented WHERE participant = '" + r.cfg.Name + "' AND txn = '" + id.String() + "');")
		}
		if _, err := r.db.ExecContext(ctx, b.String()); err != nil {
			return fmt.Errorf("mysql: forgetting decisions: %w", err)
		}
		ids = ids[n:]
	}
	return nil
}

// Summary counts the accounts and sums their committed balances.
func (r *Resource) Summary(ctx context.Context) (accounts int, total int64, err error) {
	err = r.db.QueryRowContext(ctx, "SELECT count(*), CAST(coalesce(sum(balance), 0) AS SIGNED) FROM commitd_accounts").Scan(&accounts, &total)
	if err != nil {
		return 0, 0, fmt.Errorf("mysql: summing accounts: %w", err)
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
	Retries  uint64 // commit/abort attempts repeated
	Failures uint64 // commits/aborts reported failed
	Refused  uint64 // works voted no before reaching the server
	Prepared int    // transactions holding a pinned session now
	// Prevented counts preventions made durable; FoundPrepared those the
	// compare-and-swap answered "prepared"; RefusedPrevented the prepares
	// voted no because the transaction's marker was there.
	Prevented        uint64
	FoundPrepared    uint64
	RefusedPrevented uint64
}

// Stats returns the resource's counters.
func (r *Resource) Stats() Stats {
	r.mu.Lock()
	prepared := len(r.mu.pinned)
	r.mu.Unlock()
	return Stats{Retries: r.retries.Load(), Failures: r.failures.Load(), Refused: r.refused.Load(), Prepared: prepared,
		Prevented: r.prevented.Load(), FoundPrepared: r.foundPrepared.Load(), RefusedPrevented: r.refusedPrev.Load()}
}

// Close stops the round trips in flight, waits for their goroutines and
// closes the connections. Transactions prepared and not yet decided stay
// prepared in the server (their sessions end), to be found at the next
// start. No result is reported after Close returns.
func (r *Resource) Close() error {
	r.cancel()
	r.wg.Wait()
	r.mu.Lock()
	for id, conn := range r.mu.pinned {
		conn.Close()
		delete(r.mu.pinned, id)
	}
	r.mu.Unlock()
	return r.db.Close()
}

package mysql_test

import (
	"context"
	crand "crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/commitd/commitd/participant"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/participant/mysql"
	"github.com/commitd/commitd/participant/statements"
	"github.com/commitd/commitd/protocol"
	gomysql "github.com/go-sql-driver/mysql"
	"github.com/google/uuid"
)

// The tests find MariaDB (or MySQL) servers through COMMITD_MYSQL_DSN1 and
// COMMITD_MYSQL_DSN2 (go-sql-driver DSNs without a database), which `make
// mysql-up` starts and the Makefile sets. Without them a test skips,
// except in CI (CI=true), where it fails.

func server(t *testing.T, env string) string {
	t.Helper()
	dsn := os.Getenv(env)
	why := ""
	if dsn == "" {
		why = env + " is not set"
	} else {
		db, err := sql.Open("mysql", dsn)
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err = db.PingContext(ctx)
			cancel()
			db.Close()
		}
		if err == nil {
			return dsn
		}
		why = fmt.Sprintf("cannot connect to %s: %v", env, err)
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("MariaDB is required in CI: %s (make mysql-up starts the servers)", why)
	}
	t.Skipf("no MariaDB server: %s; run `make mysql-up` (participant/mysql/testdata/mysql.sh) first", why)
	return ""
}

// freshDB creates a database of the test's own and returns a DSN for it;
// what a failed test left prepared in it is rolled back and the database
// dropped at the end.
func freshDB(t *testing.T, dsn string) string {
	t.Helper()
	var b [6]byte
	crand.Read(b[:])
	name := "commitd_test_" + hex.EncodeToString(b[:])
	admin, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatal(err)
	}
	cfg, err := gomysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DBName = name
	out := cfg.FormatDSN()
	t.Cleanup(func() {
		a, err := sql.Open("mysql", dsn)
		if err != nil {
			return
		}
		defer a.Close()
		// XIDs are server-wide: roll back the ones whose marker table is
		// this database's (the participant names the tests use).
		d := db{t: t, dsn: out, names: []string{""}}
		for _, x := range d.xids() {
			a.Exec("XA ROLLBACK " + x)
		}
		if _, err := a.Exec("DROP DATABASE " + name); err != nil {
			t.Logf("dropping %s: %v", name, err)
		}
	})
	return out
}

// db is a test's view of one database.
type db struct {
	t     *testing.T
	dsn   string
	names []string // participant names whose XIDs live here
}

func (d db) open() *sql.DB {
	d.t.Helper()
	c, err := sql.Open("mysql", d.dsn)
	if err != nil {
		d.t.Fatal(err)
	}
	return c
}

func (d db) sum() int64 {
	d.t.Helper()
	c := d.open()
	defer c.Close()
	var s int64
	if err := c.QueryRow("SELECT CAST(coalesce(sum(balance), 0) AS SIGNED) FROM commitd_accounts").Scan(&s); err != nil {
		d.t.Fatal(err)
	}
	return s
}

// xids lists the prepared XA transactions of commitd on the server whose
// bqual is one of d.names, as XA statements spell them.
func (d db) xids() []string {
	c, err := sql.Open("mysql", d.dsn)
	if err != nil {
		return nil
	}
	defer c.Close()
	rows, err := c.Query("XA RECOVER")
	if err != nil {
		d.t.Logf("XA RECOVER: %v", err)
		return nil
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var f, gl, bl int
		var data []byte
		if rows.Scan(&f, &gl, &bl, &data) != nil || f != mysql.FormatID {
			continue
		}
		for _, n := range d.names {
			if n == "" || string(data[gl:]) == n {
				out = append(out, fmt.Sprintf("'%s','%s',%d", data[:gl], data[gl:], f))
			}
		}
	}
	return out
}

func (d db) prepared() int { return len(d.xids()) }

func waitResolved(t *testing.T, dbs []db, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	quiet := 0
	for {
		left := 0
		for _, d := range dbs {
			left += d.prepared()
		}
		if quiet = quiet + 1; left != 0 {
			quiet = 0
		}
		if quiet == 5 {
			return
		}
		if time.Now().After(deadline) {
			for _, d := range dbs {
				c := d.open()
				rows, _ := c.Query("SELECT id, command, time, state, coalesce(info, '') FROM information_schema.processlist")
				for rows != nil && rows.Next() {
					var id, secs int64
					var cmd, state, info string
					rows.Scan(&id, &cmd, &secs, &state, &info)
					t.Logf("%s session %d: %s %ds %s %q", d.names, id, cmd, secs, state, info)
				}
				t.Logf("%s prepared: %v", d.names, d.xids())
				c.Close()
			}
			t.Fatalf("%d prepared XA transactions still held after %v", left, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func quiet() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel()}))
}

const (
	accounts = 200
	balance  = 1000
)

// resource is one Resource with its results on a channel.
type resource struct {
	t       *testing.T
	r       *mysql.Resource
	results chan engine.Message
}

func open(t *testing.T, cfg mysql.Config) *resource {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler) // the failures below are meant
	}
	r, err := mysql.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	res := &resource{t: t, r: r, results: make(chan engine.Message, 16)}
	r.Attach(func(m engine.Message) { res.results <- m })
	t.Cleanup(func() { r.Close() })
	return res
}

func (x *resource) next() engine.Message {
	x.t.Helper()
	select {
	case m := <-x.results:
		return m
	case <-time.After(20 * time.Second):
		x.t.Fatal("no result from the resource")
	}
	return engine.Message{}
}

func (x *resource) prepareWork(id protocol.TxnID, work []byte) protocol.Vote {
	x.t.Helper()
	v := x.r.Prepare(id, work)
	if v != protocol.VotePending {
		return v
	}
	m := x.next()
	if m.Type != engine.MsgResPrepared || m.Txn != id {
		x.t.Fatalf("want the prepare's result, got %+v", m)
	}
	return m.Vote
}

func (x *resource) prepare(id protocol.TxnID, acct uint32, amount int64) protocol.Vote {
	x.t.Helper()
	return x.prepareWork(id, bank.AppendWork(nil, acct, amount))
}

func (x *resource) finish(id protocol.TxnID, d protocol.Decision) engine.MsgType {
	x.t.Helper()
	if d == protocol.DecisionCommit {
		x.r.Commit(id)
	} else {
		x.r.Abort(id)
	}
	m := x.next()
	if m.Txn != id || m.Decision != d {
		x.t.Fatalf("want %v's result, got %+v", d, m)
	}
	return m.Type
}

func TestCheckVersion(t *testing.T) {
	for v, ok := range map[string]bool{
		"10.11.19-MariaDB-0+deb12u1": true, "10.5.2-MariaDB": true, "10.4.32-MariaDB": false,
		"8.0.36": true, "5.7.7-log": true, "5.7.6": false, "11.4.2-MariaDB": true,
	} {
		if err := mysql.CheckVersion(v); (err == nil) != ok {
			t.Errorf("%s: %v", v, err)
		}
	}
}

// TestOpenRefusesBadConfig: no database in the DSN, a name that cannot go
// into an XID, a statement the server does not accept or whose
// parameters the file miscounts — each refused with the reason.
func TestOpenRefusesBadConfig(t *testing.T) {
	base := server(t, "COMMITD_MYSQL_DSN1")
	dsn := freshDB(t, base)
	ctx := context.Background()
	for _, c := range []struct {
		cfg  mysql.Config
		want string
	}{
		{mysql.Config{DSN: base, Name: "a"}, "names no database"},
		{mysql.Config{DSN: dsn, Name: "a'b"}, "only letters, digits"},
		{mysql.Config{DSN: "nonsense", Name: "a"}, "DSN"},
		{mysql.Config{DSN: dsn, Name: "a", Statements: parse(t, "[s]\nparams = int\nrows = 1\nsql = UPDATE nosuchtable SET x = ?\n")}, `statement "s" (line 1)`},
		{mysql.Config{DSN: dsn, Name: "a", Statements: parse(t, "[s]\nparams = int int\nrows = 1\nsql = UPDATE commitd_accounts SET balance = ? WHERE id = 1\n")},
			"the server counts 1 parameters, the file declares 2"},
	} {
		_, err := mysql.Open(ctx, c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want %q", c.cfg, err, c.want)
		}
	}
}

func parse(t *testing.T, text string) *statements.Set {
	t.Helper()
	s, err := statements.Parse(strings.NewReader(text), "test.statements")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestResource drives the resource alone: votes (an overdraft, an unknown
// account, a row locked by another transaction: no; a zero amount:
// read-only), idempotent commit and abort, a commit the server never saw,
// in-doubt listing, markers.
func TestResource(t *testing.T) {
	dsn := freshDB(t, server(t, "COMMITD_MYSQL_DSN1"))
	ctx := context.Background()
	x := open(t, mysql.Config{DSN: dsn, Name: "a", Accounts: 3, Balance: 100})
	r := x.r
	t1, t2, t3, t4, t5 := uuid.New(), uuid.New(), uuid.New(), uuid.New(), uuid.New()
	if v := x.prepare(t1, 0, -101); v != protocol.VoteNo {
		t.Fatalf("overdraft voted %v", v)
	}
	if v := x.prepare(t1, 7, 5); v != protocol.VoteNo {
		t.Fatalf("unknown account voted %v", v)
	}
	if v := x.prepareWork(t1, []byte("UPDATE commitd_accounts SET balance = 0")); v != protocol.VoteNo {
		t.Fatalf("SQL as work voted %v", v)
	}
	if v := x.prepare(t1, 1, 0); v != protocol.VoteReadOnly {
		t.Fatalf("zero amount voted %v", v)
	}
	if v := x.prepare(t1, 0, -100); v != protocol.VoteYes {
		t.Fatalf("withdrawing everything voted %v", v)
	}
	start := time.Now()
	if v := x.prepare(t2, 0, 5); v != protocol.VoteNo {
		t.Fatalf("an account held by a prepared transaction voted %v", v)
	}
	t.Logf("a locked account voted no after %v", time.Since(start))
	// A row held by an ordinary transaction of another session: no.
	other := db{t: t, dsn: dsn}.open()
	defer other.Close()
	tx, err := other.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec("UPDATE commitd_accounts SET balance = balance WHERE id = 2"); err != nil {
		t.Fatal(err)
	}
	if v := x.prepare(t5, 2, 5); v != protocol.VoteNo {
		t.Fatalf("an account locked by another session voted %v", v)
	}
	tx.Rollback()
	if v := x.prepare(t2, 1, 5); v != protocol.VoteYes {
		t.Fatalf("a deposit voted %v", v)
	}
	ids, err := r.InDoubt(ctx)
	if err != nil || len(ids) != 2 {
		t.Fatalf("InDoubt: %v %v, want t1 and t2", ids, err)
	}
	if got := x.finish(t1, protocol.DecisionCommit); got != engine.MsgResFinished {
		t.Fatalf("commit: %v", got)
	}
	if got := x.finish(t1, protocol.DecisionCommit); got != engine.MsgResFinished {
		t.Fatalf("a second commit (already committed) must succeed: %v", got)
	}
	if got := x.finish(t1, protocol.DecisionAbort); got != engine.MsgResFailed {
		t.Fatalf("an abort of a committed transaction must fail: %v", got)
	}
	if got := x.finish(t2, protocol.DecisionAbort); got != engine.MsgResFinished {
		t.Fatalf("abort: %v", got)
	}
	if got := x.finish(t3, protocol.DecisionAbort); got != engine.MsgResFinished {
		t.Fatalf("an abort of a transaction the server never saw must succeed: %v", got)
	}
	if got := x.finish(t4, protocol.DecisionCommit); got != engine.MsgResFailed {
		t.Fatalf("a commit of a transaction the server never saw must be reported: %v", got)
	}
	if st := r.Stats(); st.Failures != 2 || st.Refused != 2 {
		t.Fatalf("stats %+v, want 2 failures, 2 refused", st)
	}
	if _, total, err := r.Summary(ctx); err != nil || total != 3*100-100 {
		t.Fatalf("total %d (%v), want 200", total, err)
	}
	decided, err := r.Decided(ctx)
	if err != nil || len(decided) != 3 {
		t.Fatalf("Decided: %v %v, want t1 committed, t2 and t3 aborted", decided, err)
	}
	for _, a := range decided {
		if want := a.Txn == t1; (a.Decision == protocol.DecisionCommit) != want {
			t.Fatalf("marker %+v", a)
		}
	}
	if err := r.Forget(ctx, []protocol.TxnID{t1, t2, t3}); err != nil {
		t.Fatal(err)
	}
	if decided, _ := r.Decided(ctx); len(decided) != 0 {
		t.Fatalf("after Forget: %v", decided)
	}
	if ids, _ := r.InDoubt(ctx); len(ids) != 0 {
		t.Fatalf("still in doubt: %v", ids)
	}
}

// TestDecisionFromAnotherSession: a transaction prepared by one
// incarnation is finished by the next — from another session, once the
// first is gone — and is invisible to another participant on the same
// server (its XIDs carry its name).
func TestDecisionFromAnotherSession(t *testing.T) {
	dsn := freshDB(t, server(t, "COMMITD_MYSQL_DSN1"))
	ctx := context.Background()
	x := open(t, mysql.Config{DSN: dsn, Name: "a", Accounts: 3, Balance: 100})
	t1, t2 := uuid.New(), uuid.New()
	if v := x.prepare(t1, 0, -10); v != protocol.VoteYes {
		t.Fatal(v)
	}
	if v := x.prepare(t2, 1, -10); v != protocol.VoteYes {
		t.Fatal(v)
	}
	// While the preparing session lives, another session cannot finish
	// it: the server says it does not know the XID (the quirk).
	other := db{t: t, dsn: dsn}.open()
	defer other.Close()
	if _, err := other.Exec(fmt.Sprintf("XA COMMIT '%s','a',%d", t1, mysql.FormatID)); err == nil || !strings.Contains(err.Error(), "1397") {
		t.Fatalf("XA COMMIT from another session while the preparing one lives: %v, want error 1397", err)
	}
	x.r.Close()
	y := open(t, mysql.Config{DSN: dsn, Name: "a"})
	b := open(t, mysql.Config{DSN: dsn, Name: "b"})
	if ids, err := b.r.InDoubt(ctx); err != nil || len(ids) != 0 {
		t.Fatalf("participant b sees a's transactions: %v %v", ids, err)
	}
	ids, err := y.r.InDoubt(ctx)
	if err != nil || len(ids) != 2 {
		t.Fatalf("InDoubt after the restart: %v %v", ids, err)
	}
	if got := y.finish(t1, protocol.DecisionCommit); got != engine.MsgResFinished {
		t.Fatalf("commit from the next incarnation: %v", got)
	}
	if got := y.finish(t2, protocol.DecisionAbort); got != engine.MsgResFinished {
		t.Fatalf("abort from the next incarnation: %v", got)
	}
	if _, total, _ := y.r.Summary(ctx); total != 290 {
		t.Fatalf("total %d, want 290", total)
	}
}

// TestServerCrashKeepsPrepared: MariaDB is killed (-9) and started again
// while transactions are prepared: they are still prepared afterwards,
// with their row locks, and the resource commits and rolls them back
// once the server is back (its commit retries meanwhile).
func TestServerCrashKeepsPrepared(t *testing.T) {
	dsn := freshDB(t, server(t, "COMMITD_MYSQL_DSN2"))
	port := dsnPort(t, dsn)
	ctx := context.Background()
	x := open(t, mysql.Config{DSN: dsn, Name: "a", Accounts: 3, Balance: 100})
	t1, t2, t3 := uuid.New(), uuid.New(), uuid.New()
	if v := x.prepare(t1, 0, -10); v != protocol.VoteYes {
		t.Fatal(v)
	}
	if v := x.prepare(t2, 1, -10); v != protocol.VoteYes {
		t.Fatal(v)
	}
	crashServer(t, port)
	ids, err := x.r.InDoubt(ctx)
	if err != nil || len(ids) != 2 {
		t.Fatalf("after the crash, prepared: %v %v, want t1 and t2", ids, err)
	}
	if v := x.prepare(t3, 0, 5); v != protocol.VoteNo {
		t.Fatalf("an account of a prepared transaction voted %v after the crash: its lock is lost", v)
	}
	if got := x.finish(t1, protocol.DecisionCommit); got != engine.MsgResFinished {
		t.Fatalf("commit after the crash: %v", got)
	}
	if got := x.finish(t2, protocol.DecisionAbort); got != engine.MsgResFinished {
		t.Fatalf("abort after the crash: %v", got)
	}
	if _, total, _ := x.r.Summary(ctx); total != 290 {
		t.Fatalf("total %d, want 290", total)
	}
}

func dsnPort(t *testing.T, dsn string) string {
	cfg, err := gomysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	_, port, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// crashServer kill -9s the test server on port and starts it again
// (mysql.sh crash).
func crashServer(t *testing.T, port string) {
	t.Helper()
	dir := os.Getenv("COMMITD_MYSQL_DIR")
	if dir == "" {
		dir = "/tmp/commitd-mysql"
	}
	if _, err := os.Stat(filepath.Join(dir, port, "mariadbd.pid")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the server's directory %s (mysql.sh's) is needed to crash it: %v", dir, err)
		}
		t.Skipf("cannot crash the server: %v (this test needs the servers of make mysql-up)", err)
	}
	start := time.Now()
	cmd := exec.Command("bash", "testdata/mysql.sh", "crash", port)
	cmd.Env = append(os.Environ(), "COMMITD_MYSQL_DIR="+dir)
	cmd.WaitDelay = time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("crashing MariaDB: %v\n%s", err, out)
	}
	t.Logf("MariaDB on port %s killed and back in %v", port, time.Since(start))
}

const stock = `# an inventory service's own table
[reserve]
params = int text
rows = 1
sql = UPDATE stock SET qty = qty - ?
	WHERE sku = ? AND qty >= 0

[restock]
params = text int
rows = 1
sql = INSERT INTO stock VALUES (?, ?) ON DUPLICATE KEY UPDATE qty = qty + VALUES(qty)
`

// TestStatements: an operator's statements as branches — a reservation
// commits, one beyond the stock (a CHECK constraint) or of an unknown sku
// (0 rows) votes no, and hostile work (unknown name, wrong count, wrong
// type, injection-looking text) votes no without touching anything.
func TestStatements(t *testing.T) {
	dsn := freshDB(t, server(t, "COMMITD_MYSQL_DSN1"))
	d := db{t: t, dsn: dsn, names: []string{"shop"}}
	c := d.open()
	defer c.Close()
	for _, q := range []string{
		"CREATE TABLE stock (sku VARCHAR(64) PRIMARY KEY, qty INT NOT NULL CHECK (qty >= 0))",
		"INSERT INTO stock VALUES ('apple', 10), ('pear', 3)",
	} {
		if _, err := c.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	x := open(t, mysql.Config{DSN: dsn, Name: "shop", Statements: parse(t, stock)})
	work := func(name string, args ...statements.Arg) []byte {
		w, err := statements.AppendWork(nil, name, args...)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	qty := func(sku string) int {
		var n int
		if err := c.QueryRow("SELECT qty FROM stock WHERE sku = ?", sku).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	ok := uuid.New()
	if v := x.prepareWork(ok, work("reserve", statements.IntArg(4), statements.TextArg("apple"))); v != protocol.VoteYes {
		t.Fatalf("a reservation voted %v", v)
	}
	if got := x.finish(ok, protocol.DecisionCommit); got != engine.MsgResFinished {
		t.Fatal(got)
	}
	if n := qty("apple"); n != 6 {
		t.Fatalf("apple %d, want 6", n)
	}
	add := uuid.New()
	if v := x.prepareWork(add, work("restock", statements.TextArg("plum"), statements.IntArg(5))); v != protocol.VoteYes {
		t.Fatalf("a restock voted %v", v)
	}
	if got := x.finish(add, protocol.DecisionAbort); got != engine.MsgResFinished {
		t.Fatal(got)
	}
	for _, c := range []struct {
		what string
		work []byte
	}{
		{"more than the stock (the CHECK fails)", work("reserve", statements.IntArg(4), statements.TextArg("pear"))},
		{"an unknown sku (0 rows)", work("reserve", statements.IntArg(1), statements.TextArg("kiwi"))},
		{"an injection-looking sku (a parameter: 0 rows)", work("reserve", statements.IntArg(1), statements.TextArg("x' OR '1'='1"))},
		{"an injection-looking sku with a second statement", work("reserve", statements.IntArg(1), statements.TextArg("apple'; DROP TABLE stock; --"))},
		{"an unknown statement", work("drop_stock")},
		{"too few arguments", work("reserve", statements.IntArg(1))},
		{"too many arguments", work("reserve", statements.IntArg(1), statements.TextArg("apple"), statements.TextArg("x"))},
		{"a text for an int", work("reserve", statements.TextArg("1; DROP TABLE stock"), statements.TextArg("apple"))},
		{"SQL as work", []byte("UPDATE stock SET qty = 0")},
		{"the bank's work", bank.AppendWork(nil, 0, 5)},
	} {
		if v := x.prepareWork(uuid.New(), c.work); v != protocol.VoteNo {
			t.Errorf("%s voted %v", c.what, v)
		}
	}
	if a, p := qty("apple"), qty("pear"); a != 6 || p != 3 {
		t.Fatalf("stock changed by refused work: apple %d pear %d", a, p)
	}
	var plums int
	c.QueryRow("SELECT count(*) FROM stock WHERE sku = 'plum'").Scan(&plums)
	if plums != 0 {
		t.Fatal("an aborted restock left its row")
	}
	if st := x.r.Stats(); st.Refused != 6 {
		t.Fatalf("stats %+v, want 6 refused before reaching the server", st)
	}
	if n := d.prepared(); n != 0 {
		t.Fatalf("%d XA transactions left prepared", n)
	}
}

// rig is a coordinator (in this process) and two MariaDB participants, in
// this process or as commitd processes.
type rig struct {
	t       *testing.T
	dir     string
	dbs     []db
	names   []string
	addrs   []string
	coord   *coordinator.Server
	coordLn string
	parts   []*participant.Server
	procs   []*exec.Cmd
	bin     string
}

func newRig(t *testing.T, processes bool) *rig {
	r := &rig{t: t, dir: t.TempDir(), names: []string{"mya", "myb"}}
	for i, env := range []string{"COMMITD_MYSQL_DSN1", "COMMITD_MYSQL_DSN2"} {
		r.dbs = append(r.dbs, db{t: t, dsn: freshDB(t, server(t, env)), names: r.names[i : i+1]})
	}
	r.coordLn = nodetest.FreeAddr(t)
	for range r.names {
		r.addrs = append(r.addrs, nodetest.FreeAddr(t))
	}
	if processes {
		r.bin = filepath.Join(r.dir, "commitd")
		out, err := exec.Command("go", "build", "-o", r.bin, "github.com/commitd/commitd/cmd/commitd").CombinedOutput()
		if err != nil {
			t.Fatalf("building commitd: %v\n%s", err, out)
		}
		r.procs = make([]*exec.Cmd, len(r.names))
	} else {
		r.parts = make([]*participant.Server, len(r.names))
	}
	for i := range r.names {
		r.startParticipant(i)
	}
	ln, err := net.Listen("tcp", r.coordLn)
	if err != nil {
		t.Fatal(err)
	}
	r.coord, err = coordinator.Start(coordinator.Config{
		Listener:       ln,
		DataDir:        filepath.Join(r.dir, "coordinator"),
		Participants:   map[string]string{r.names[0]: r.addrs[0], r.names[1]: r.addrs[1]},
		PrepareTimeout: 2 * time.Second,
		RedeliverMin:   50 * time.Millisecond,
		RedeliverMax:   500 * time.Millisecond,
		SegmentBytes:   4 << 20,
		Logger:         quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.close)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r.coord.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rig) startParticipant(i int) {
	t := r.t
	data := filepath.Join(r.dir, r.names[i])
	if r.procs != nil {
		cmd := exec.Command(r.bin, "participant", "--backend", "mysql", "--dsn", r.dbs[i].dsn,
			"--name", r.names[i], "--listen", r.addrs[i], "--coordinator", r.coordLn, "--data", data,
			"--accounts", fmt.Sprint(accounts), "--balance", fmt.Sprint(balance),
			"--inquire-after", "200ms", "--inquire-max", "1s", "--scan-every", "300ms", "--log-level", "error")
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		r.procs[i] = cmd
		deadline := time.Now().Add(30 * time.Second)
		for {
			var a participant.Accounts
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := client.Admin(ctx, r.addrs[i], "accounts", nil, &a)
			cancel()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("participant %s did not start: %v", r.names[i], err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	res, err := mysql.Open(context.Background(), mysql.Config{DSN: r.dbs[i].dsn, Name: r.names[i],
		Accounts: accounts, Balance: balance, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", r.addrs[i])
	if err != nil {
		t.Fatal(err)
	}
	p, err := participant.Start(participant.Config{
		Name: r.names[i], Listener: ln, DataDir: data, Coordinator: r.coordLn, Resource: res,
		InquireAfter: 200 * time.Millisecond, InquireMax: time.Second, ScanEvery: 300 * time.Millisecond,
		SegmentBytes: 4 << 20, Logger: quiet(),
	})
	if err != nil {
		res.Close()
		t.Fatal(err)
	}
	r.parts[i] = p
}

func (r *rig) kill(i int) {
	r.procs[i].Process.Kill()
	r.procs[i].Wait()
	r.procs[i] = nil
}

func (r *rig) close() {
	if r.coord != nil {
		r.coord.Close()
	}
	for _, p := range r.parts {
		if p != nil {
			p.Close()
		}
	}
	for _, c := range r.procs {
		if c != nil {
			c.Process.Signal(os.Interrupt)
			c.Wait()
		}
	}
}

func (r *rig) total() int64 { return r.dbs[0].sum() + r.dbs[1].sum() }

type load struct {
	committed sync.Map
	counts    [5]atomic.Int64
	wg        sync.WaitGroup
	stop      chan struct{}
}

func (r *rig) startLoad(callers int) *load {
	cl, err := client.Dial(r.coordLn, client.Options{Conns: 2})
	if err != nil {
		r.t.Fatal(err)
	}
	l := &load{stop: make(chan struct{})}
	for c := range callers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				amount := 1 + rng.Int64N(10)
				from := rng.IntN(2)
				br := []client.Branch{
					{Participant: r.names[from], Work: bank.AppendWork(nil, uint32(rng.IntN(accounts)), -amount)},
					{Participant: r.names[1-from], Work: bank.AppendWork(nil, uint32(rng.IntN(accounts)), amount)},
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				id := uuid.Must(uuid.NewV7())
				res, _ := cl.Run(ctx, id, br)
				cancel()
				l.counts[res.Outcome].Add(1)
				if res.Outcome == client.Committed {
					l.committed.Store(id, struct{}{})
				}
			}
		}()
	}
	r.t.Cleanup(func() { cl.Close() })
	return l
}

func (l *load) finish() (committed, aborted, unknown int64) {
	close(l.stop)
	l.wg.Wait()
	return l.counts[client.Committed].Load(), l.counts[client.Aborted].Load(), l.counts[client.Unknown].Load()
}

// checkOutcomes: every transaction a client was told committed is
// committed in both participants' ledgers, and no transaction is
// committed at one and aborted at the other.
func (r *rig) checkOutcomes(l *load) {
	t := r.t
	ledgers := make([]map[uuid.UUID]string, len(r.addrs))
	for i, a := range r.addrs {
		var outs []participant.Outcome
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := client.Admin(ctx, a, "outcomes", nil, &outs)
		cancel()
		if err != nil {
			t.Fatalf("outcomes of %s: %v", r.names[i], err)
		}
		ledgers[i] = map[uuid.UUID]string{}
		for _, o := range outs {
			ledgers[i][o.Txn] = o.Outcome
		}
	}
	n := 0
	l.committed.Range(func(k, _ any) bool {
		n++
		id := k.(uuid.UUID)
		for i := range ledgers {
			if got := ledgers[i][id]; got != "committed" {
				t.Errorf("%v: the client was told committed, %s's ledger says %q", id, r.names[i], got)
			}
		}
		return true
	})
	for id, o := range ledgers[0] {
		if p := ledgers[1][id]; p != "" && p != o && p != "prepared" && o != "prepared" {
			t.Errorf("%v: %s says %s, %s says %s", id, r.names[0], o, r.names[1], p)
		}
	}
	t.Logf("%d committed transactions found committed in both ledgers", n)
}

// TestTransfers: 100 callers move money between accounts in two MariaDB
// servers; the sum is conserved and nothing is left prepared; an
// overdraft votes no and aborts.
func TestTransfers(t *testing.T) {
	r := newRig(t, false)
	before := r.total()
	if before != 2*accounts*balance {
		t.Fatalf("seeded total %d", before)
	}
	l := r.startLoad(100)
	time.Sleep(3 * time.Second)
	c, a, u := l.finish()
	t.Logf("committed %d, aborted %d, unknown %d", c, a, u)
	if c < 100 || u != 0 {
		t.Fatalf("committed %d, unknown %d", c, u)
	}
	waitResolved(t, r.dbs, 10*time.Second)
	if after := r.total(); after != before {
		t.Fatalf("money not conserved: %d before, %d after", before, after)
	}
	r.checkOutcomes(l)
	// MySQL/MariaDB participants prevent (their Hello says so), so the
	// coordinator stages their transactions.
	if st := r.coord.Status(); st.Staged == 0 {
		t.Fatalf("no transaction ran staged: %+v", st)
	}

	cl, err := client.Dial(r.coordLn, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	res, err := cl.Run(context.Background(), uuid.Must(uuid.NewV7()), []client.Branch{
		{Participant: "mya", Work: bank.AppendWork(nil, 0, -1_000_000)},
		{Participant: "myb", Work: bank.AppendWork(nil, 0, 1_000_000)},
	})
	if err != nil || res.Outcome != client.Aborted || res.Cause != protocol.CauseVotedNo || res.Participant != "mya" {
		t.Fatalf("overdraft: %v %v, want aborted, mya voted no", res, err)
	}
	waitResolved(t, r.dbs, 10*time.Second)
	if after := r.total(); after != before {
		t.Fatalf("money not conserved after the overdraft: %d", after)
	}
	// One-branch transactions (the coordinator's one-phase commit: the
	// YES is the commit): a deposit, then its withdrawal.
	mybBefore := r.dbs[1].sum()
	for _, amount := range []int64{5, -5} {
		res, err := cl.Run(context.Background(), uuid.Must(uuid.NewV7()), []client.Branch{
			{Participant: "myb", Work: bank.AppendWork(nil, 7, amount)},
		})
		if err != nil || res.Outcome != client.Committed {
			t.Fatalf("one-branch %+d: %v %v, want committed", amount, res, err)
		}
		if got := r.dbs[1].sum(); got != mybBefore+max(amount, 0) {
			t.Fatalf("after the one-branch %+d, myb holds %d", amount, got)
		}
	}
	waitResolved(t, r.dbs, 10*time.Second)
}

// TestKillParticipant: kill -9 a participant process while transactions
// are prepared in its database (between XA PREPARE and the decision),
// restart it: XA RECOVER finds them, each is settled with the
// coordinator, the sum is conserved and the ledgers agree with what
// clients were told.
func TestKillParticipant(t *testing.T) {
	r := newRig(t, true)
	before := r.total()
	l := r.startLoad(100)
	time.Sleep(time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for r.dbs[0].prepared() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	r.kill(0)
	left := r.dbs[0].prepared()
	t.Logf("killed %s with %d XA transactions prepared in its database", r.names[0], left)
	if left == 0 {
		t.Fatalf("no transaction was prepared when %s was killed", r.names[0])
	}
	time.Sleep(500 * time.Millisecond)
	r.startParticipant(0)
	time.Sleep(1500 * time.Millisecond)
	c, a, u := l.finish()
	t.Logf("committed %d, aborted %d, unknown %d", c, a, u)
	waitResolved(t, r.dbs, 20*time.Second)
	if after := r.total(); after != before {
		t.Fatalf("money not conserved: %d before, %d after", before, after)
	}
	r.checkOutcomes(l)
}

// TestMariaDBCrash: one MariaDB server is killed (-9) and restarted under
// load. Prepares on it fail (vote no), commits retry until it is back;
// nothing is left prepared and the sum is conserved.
func TestMariaDBCrash(t *testing.T) {
	r := newRig(t, false)
	port := dsnPort(t, r.dbs[1].dsn)
	before := r.total()
	l := r.startLoad(100)
	time.Sleep(time.Second)
	crashServer(t, port)
	time.Sleep(2 * time.Second)
	c, a, u := l.finish()
	t.Logf("committed %d, aborted %d, unknown %d", c, a, u)
	waitResolved(t, r.dbs, 30*time.Second)
	if after := r.total(); after != before {
		t.Fatalf("money not conserved: %d before, %d after", before, after)
	}
	r.checkOutcomes(l)
}

// logLevel is COMMITD_TEST_LOG_LEVEL's (default error): warn or debug
// shows every vote's reason.
func logLevel() slog.Level {
	var l slog.Level = slog.LevelError
	if v := os.Getenv("COMMITD_TEST_LOG_LEVEL"); v != "" {
		l.UnmarshalText([]byte(v))
	}
	return l
}

// TestOpenEndsAnEarlierIncarnationsSessions: Open ends the sessions an
// earlier incarnation of the same participant left running one of its
// statements (a killed process's XA COMMIT may still run in the server)
// before anything reads XA RECOVER — and only those: another
// participant's, even one whose name starts the same, are left alone.
func TestOpenEndsAnEarlierIncarnationsSessions(t *testing.T) {
	dsn := freshDB(t, server(t, "COMMITD_MYSQL_DSN1"))
	d := db{t: t, dsn: dsn}
	run := func(tag string) chan error {
		done := make(chan error, 1)
		c := d.open()
		t.Cleanup(func() { c.Close() })
		go func() {
			_, err := c.Exec(tag + " SELECT SLEEP(20)")
			done <- err
		}()
		return done
	}
	earlier := run("/*commitd:a:0123456789ab*/")
	other := run("/*commitd:ab:0123456789ab*/")
	// Both are running when Open looks.
	c := d.open()
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); ; {
		var n int
		c.QueryRow("SELECT count(*) FROM information_schema.processlist WHERE info LIKE '/*commitd:%SLEEP%'").Scan(&n)
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions running, want 2", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	x := open(t, mysql.Config{DSN: dsn, Name: "a", Accounts: 1, Balance: 1})
	// Open has killed it; its client hears so a moment later (the
	// driver's read of the closed connection), well within the 20 s of
	// the SLEEP it would otherwise wait.
	select {
	case err := <-earlier:
		if err == nil {
			t.Fatal("the earlier incarnation's statement finished normally")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the earlier incarnation's session is still running 5 s after Open")
	}
	select {
	case err := <-other:
		t.Fatalf("participant ab's session was ended by participant a's start: %v", err)
	default:
	}
	if _, err := x.r.InDoubt(context.Background()); err != nil {
		t.Fatal(err)
	}
	var id int64
	if c.QueryRow("SELECT id FROM information_schema.processlist WHERE info LIKE '/*commitd:ab:%'").Scan(&id) == nil {
		c.Exec(fmt.Sprintf("KILL QUERY %d", id))
	}
}

// TestOpenRefusesUnsafeServer: a server whose XA PREPARE returns before
// the prepared state is on disk (innodb_flush_log_at_trx_commit other
// than 1) is refused, saying what to set.
func TestOpenRefusesUnsafeServer(t *testing.T) {
	dsn := freshDB(t, server(t, "COMMITD_MYSQL_DSN1"))
	c := db{t: t, dsn: dsn}.open()
	defer c.Close()
	if _, err := c.Exec("SET GLOBAL innodb_flush_log_at_trx_commit = 2"); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if _, err := c.Exec("SET GLOBAL innodb_flush_log_at_trx_commit = 1"); err != nil {
			t.Errorf("restoring innodb_flush_log_at_trx_commit: %v", err)
		}
	}()
	_, err := mysql.Open(context.Background(), mysql.Config{DSN: dsn, Name: "a", Logger: slog.New(slog.DiscardHandler)})
	if !errors.Is(err, mysql.ErrUnsupportedServer) || !strings.Contains(err.Error(), "innodb_flush_log_at_trx_commit = 2: set it to 1") {
		t.Fatalf("Open on an unsafe server: %v", err)
	}
}

package postgres_test

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"github.com/commitd/commitd/internal/node/nodetest"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
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
	"github.com/commitd/commitd/participant"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/participant/postgres"
	"github.com/commitd/commitd/participant/statements"
	"github.com/commitd/commitd/protocol"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// The tests find PostgreSQL servers through COMMITD_PG_DSN1 and
// COMMITD_PG_DSN2 (and COMMITD_PG_DSN0, one with max_prepared_transactions
// = 0), which `make pg-up` starts and the Makefile sets. Without them a
// test skips, except in CI (CI=true), where it fails.

// server returns the DSN in env after checking that the server answers.
func server(t *testing.T, env string) string {
	t.Helper()
	dsn := os.Getenv(env)
	why := ""
	if dsn == "" {
		why = env + " is not set"
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, dsn)
		if err == nil {
			c.Close(ctx)
			return dsn
		}
		why = fmt.Sprintf("cannot connect to %s: %v", env, err)
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("PostgreSQL is required in CI: %s (make pg-up starts the servers)", why)
	}
	t.Skipf("no PostgreSQL server: %s; run `make pg-up` (participant/postgres/testdata/pg.sh) first", why)
	return ""
}

// freshDB creates a database of the test's own on the server of dsn and
// returns a DSN for it; the database is dropped at the end of the test.
func freshDB(t *testing.T, dsn string) string {
	t.Helper()
	ctx := context.Background()
	var b [6]byte
	crand.Read(b[:])
	name := "commitd_test_" + hex.EncodeToString(b[:])
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("COMMITD_PG_DSN must be a URL: %v", err)
	}
	u.Path = "/" + name
	t.Cleanup(func() {
		// Roll back whatever a failed test left prepared, then drop.
		if c, err := pgx.Connect(ctx, u.String()); err == nil {
			for _, gid := range preparedIn(t, c) {
				c.Exec(ctx, "ROLLBACK PREPARED '"+gid+"'")
			}
			c.Close(ctx)
		}
		if a, err := pgx.Connect(ctx, dsn); err == nil {
			if _, err := a.Exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
				t.Logf("dropping %s: %v", name, err)
			}
			a.Close(ctx)
		}
	})
	return u.String()
}

func preparedIn(t *testing.T, c *pgx.Conn) []string {
	rows, err := c.Query(context.Background(), "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()")
	if err != nil {
		t.Logf("listing prepared transactions: %v", err)
		return nil
	}
	gids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Logf("listing prepared transactions: %v", err)
	}
	return gids
}

// db is a test's view of one database: sums and prepared transactions.
type db struct {
	t   *testing.T
	dsn string
}

func (d db) query(q string, dst any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, d.dsn)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	return c.QueryRow(ctx, q).Scan(dst)
}

func (d db) sum() int64 {
	d.t.Helper()
	var s int64
	if err := d.query("SELECT coalesce(sum(balance), 0)::bigint FROM commitd_accounts", &s); err != nil {
		d.t.Fatal(err)
	}
	return s
}

func (d db) prepared() int {
	d.t.Helper()
	var n int
	if err := d.query("SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()", &n); err != nil {
		d.t.Fatal(err)
	}
	return n
}

// waitResolved waits until no database holds a prepared transaction, for
// half a second: a prepare still running when its client was answered
// (another branch voted no) may prepare, and be rolled back, after the
// load stopped.
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
			t.Fatalf("%d prepared transactions still held after %v", left, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func quiet() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

const (
	accounts = 200
	balance  = 1000
)

func TestOpenRefusesZeroMaxPreparedTransactions(t *testing.T) {
	dsn := server(t, "COMMITD_PG_DSN0")
	_, err := postgres.Open(context.Background(), postgres.Config{DSN: dsn, Name: "a", Accounts: 1, Balance: 1})
	if err == nil || !strings.Contains(err.Error(), "set max_prepared_transactions") {
		t.Fatalf("Open on a server without prepared transactions: %v", err)
	}
}

// TestResource drives the resource alone: votes, idempotent commit and
// abort, a commit PostgreSQL never saw, in-doubt listing, markers.
func TestResource(t *testing.T) {
	dsn := freshDB(t, server(t, "COMMITD_PG_DSN1"))
	ctx := context.Background()
	// The failures below are meant: do not log them.
	r, err := postgres.Open(ctx, postgres.Config{DSN: dsn, Name: "a", Accounts: 3, Balance: 100,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	results := make(chan engine.Message, 16)
	r.Attach(func(m engine.Message) { results <- m })
	next := func() engine.Message {
		t.Helper()
		select {
		case m := <-results:
			return m
		case <-time.After(10 * time.Second):
			t.Fatal("no result from the resource")
		}
		return engine.Message{}
	}
	prepare := func(id protocol.TxnID, acct uint32, amount int64) protocol.Vote {
		t.Helper()
		v := r.Prepare(id, bank.AppendWork(nil, acct, amount))
		if v != protocol.VotePending {
			return v
		}
		m := next()
		if m.Type != engine.MsgResPrepared || m.Txn != id {
			t.Fatalf("want the prepare's result, got %+v", m)
		}
		return m.Vote
	}
	finish := func(id protocol.TxnID, d protocol.Decision) engine.MsgType {
		t.Helper()
		if d == protocol.DecisionCommit {
			r.Commit(id)
		} else {
			r.Abort(id)
		}
		m := next()
		if m.Txn != id || m.Decision != d {
			t.Fatalf("want %v's result, got %+v", d, m)
		}
		return m.Type
	}
	t1, t2, t3, t4 := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	if v := prepare(t1, 0, -101); v != protocol.VoteNo {
		t.Fatalf("overdraft voted %v", v)
	}
	if v := prepare(t1, 7, 5); v != protocol.VoteNo {
		t.Fatalf("unknown account voted %v", v)
	}
	if v := prepare(t1, 1, 0); v != protocol.VoteReadOnly {
		t.Fatalf("zero amount voted %v", v)
	}
	if v := prepare(t1, 0, -100); v != protocol.VoteYes {
		t.Fatalf("withdrawing everything voted %v", v)
	}
	if v := prepare(t2, 0, 5); v != protocol.VoteNo {
		t.Fatalf("an account held by a prepared transaction voted %v", v)
	}
	if v := prepare(t2, 1, 5); v != protocol.VoteYes {
		t.Fatalf("a deposit voted %v", v)
	}
	ids, err := r.InDoubt(ctx)
	if err != nil || len(ids) != 2 {
		t.Fatalf("InDoubt: %v %v, want t1 and t2", ids, err)
	}
	if got := finish(t1, protocol.DecisionCommit); got != engine.MsgResFinished {
		t.Fatalf("commit: %v", got)
	}
	if got := finish(t1, protocol.DecisionCommit); got != engine.MsgResFinished {
		t.Fatalf("a second commit (already committed) must succeed: %v", got)
	}
	if got := finish(t1, protocol.DecisionAbort); got != engine.MsgResFailed {
		t.Fatalf("an abort of a committed transaction must fail: %v", got)
	}
	if got := finish(t2, protocol.DecisionAbort); got != engine.MsgResFinished {
		t.Fatalf("abort: %v", got)
	}
	if got := finish(t3, protocol.DecisionAbort); got != engine.MsgResFinished {
		t.Fatalf("an abort of a transaction PostgreSQL never saw must succeed: %v", got)
	}
	if got := finish(t4, protocol.DecisionCommit); got != engine.MsgResFailed {
		t.Fatalf("a commit of a transaction PostgreSQL never saw must be reported: %v", got)
	}
	if st := r.Stats(); st.Failures != 2 {
		t.Fatalf("stats %+v, want 2 failures", st)
	}
	if _, total, err := r.Summary(ctx); err != nil || total != 3*100-100+0 {
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

// rig is a coordinator (in this process) and two PostgreSQL participants,
// in this process or as commitd processes.
type rig struct {
	t       *testing.T
	dir     string
	dbs     []db
	names   []string
	addrs   []string
	coord   *coordinator.Server
	coordLn string
	parts   []*participant.Server // in-process participants
	procs   []*exec.Cmd           // participant processes
	bin     string
}

func freePort(t *testing.T) string { return nodetest.FreeAddr(t) }

func newRig(t *testing.T, processes bool) *rig {
	r := &rig{t: t, dir: t.TempDir(), names: []string{"pga", "pgb"}}
	for _, env := range []string{"COMMITD_PG_DSN1", "COMMITD_PG_DSN2"} {
		r.dbs = append(r.dbs, db{t: t, dsn: freshDB(t, server(t, env))})
	}
	r.coordLn = freePort(t)
	for range r.names {
		r.addrs = append(r.addrs, freePort(t))
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
		PrepareTimeout: time.Second,
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
		cmd := exec.Command(r.bin, "participant", "--backend", "postgres", "--dsn", r.dbs[i].dsn,
			"--name", r.names[i], "--listen", r.addrs[i], "--coordinator", r.coordLn, "--data", data,
			"--accounts", fmt.Sprint(accounts), "--balance", fmt.Sprint(balance),
			"--inquire-after", "200ms", "--inquire-max", "1s", "--scan-every", "300ms", "--log-level", "error")
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		r.procs[i] = cmd
		// Ready when it answers an admin query.
		deadline := time.Now().Add(20 * time.Second)
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
	res, err := postgres.Open(context.Background(), postgres.Config{DSN: r.dbs[i].dsn, Name: r.names[i],
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

// kill ends participant process i with SIGKILL: no clean shutdown.
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

// load is 100 callers moving money between the two databases until stop.
type load struct {
	committed sync.Map // uuid.UUID → struct{}
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
			t.Errorf("%v: %s says %s, %s says %s (prepared now: %d, %d)", id, r.names[0], o, r.names[1], p,
				r.dbs[0].prepared(), r.dbs[1].prepared())
		}
	}
	t.Logf("%d committed transactions found committed in both ledgers", n)
}

// TestTransfers: 100 callers move money between accounts in two
// PostgreSQL servers; the sum over both is conserved and nothing is left
// prepared. An overdraft votes no and aborts.
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
	// PostgreSQL participants prevent (their Hello says so), so the
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
		{Participant: "pga", Work: bank.AppendWork(nil, 0, -1_000_000)},
		{Participant: "pgb", Work: bank.AppendWork(nil, 0, 1_000_000)},
	})
	if err != nil || res.Outcome != client.Aborted || res.Cause != protocol.CauseVotedNo || res.Participant != "pga" {
		t.Fatalf("overdraft: %v %v, want aborted, pga voted no", res, err)
	}
	waitResolved(t, r.dbs, 10*time.Second)
	if after := r.total(); after != before {
		t.Fatalf("money not conserved after the overdraft: %d", after)
	}
}

// TestKillParticipant: kill -9 a participant process while transactions
// are prepared in its database, restart it: every prepared transaction is
// resolved, the sum is conserved, and the ledgers agree with what clients
// were told.
func TestKillParticipant(t *testing.T) {
	r := newRig(t, true)
	before := r.total()
	l := r.startLoad(100)
	time.Sleep(time.Second)
	// Kill when the victim's database holds prepared transactions.
	deadline := time.Now().Add(5 * time.Second)
	for r.dbs[0].prepared() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	r.kill(0)
	left := r.dbs[0].prepared()
	t.Logf("killed %s with %d transactions prepared in its database", r.names[0], left)
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

// TestPostgresRestart: one PostgreSQL server restarts under load. Prepares
// on it fail (vote no), commits retry until it is back; nothing is left
// prepared and the sum is conserved.
func TestPostgresRestart(t *testing.T) {
	r := newRig(t, false)
	u, _ := url.Parse(r.dbs[1].dsn)
	pgdir := os.Getenv("COMMITD_PG_DIR")
	if pgdir == "" {
		pgdir = "/tmp/commitd-pg"
	}
	data := filepath.Join(pgdir, u.Port())
	pgCtl, err := exec.LookPath("pg_ctl")
	if err != nil {
		matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
		if len(matches) == 0 {
			t.Fatal("pg_ctl not found")
		}
		pgCtl = matches[len(matches)-1]
	}
	if _, err := os.Stat(filepath.Join(data, "PG_VERSION")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the server's data directory %s (pg.sh's) is needed to restart it: %v", data, err)
		}
		t.Skipf("cannot restart the server: %v (this test needs the servers of make pg-up)", err)
	}
	before := r.total()
	l := r.startLoad(100)
	time.Sleep(time.Second)
	// -l: the new server must not inherit our output pipe, or the
	// command would never end.
	args := []string{pgCtl, "-D", data, "-l", filepath.Join(data, "server.log"), "-m", "fast", "-w", "-t", "60", "restart"}
	if os.Getuid() == 0 {
		args = append([]string{"runuser", "-u", "postgres", "--"}, args...)
	}
	start := time.Now()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.WaitDelay = time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("restarting PostgreSQL: %v\n%s", err, out)
	}
	t.Logf("PostgreSQL on port %s restarted in %v", u.Port(), time.Since(start))
	time.Sleep(2 * time.Second)
	c, a, unk := l.finish()
	t.Logf("committed %d, aborted %d, unknown %d", c, a, unk)
	waitResolved(t, r.dbs, 20*time.Second)
	if after := r.total(); after != before {
		t.Fatalf("money not conserved: %d before, %d after", before, after)
	}
	r.checkOutcomes(l)
}

// Open ends the sessions an earlier incarnation of the same participant
// left in the database (a killed process's COMMIT PREPARED may still be
// running there) before anything scans pg_prepared_xacts — and only those:
// another participant's sessions, even one whose name starts the same,
// are left alone.
func TestOpenEndsAnEarlierIncarnationsSessions(t *testing.T) {
	dsn := freshDB(t, server(t, "COMMITD_PG_DSN1"))
	ctx := context.Background()
	connect := func(appName string) *pgx.Conn {
		t.Helper()
		cfg, err := pgx.ParseConfig(dsn)
		if err != nil {
			t.Fatal(err)
		}
		cfg.RuntimeParams["application_name"] = appName
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		return c
	}
	earlier := connect("commitd participant a 0123456789ab")
	legacy := connect("commitd participant a") // before incarnations were named
	other := connect("commitd participant ab 0123456789ab")
	r, err := postgres.Open(ctx, postgres.Config{DSN: dsn, Name: "a", Accounts: 1, Balance: 1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := earlier.Ping(ctx); err == nil {
		t.Fatal("the earlier incarnation's session is still alive after Open")
	}
	if err := legacy.Ping(ctx); err == nil {
		t.Fatal("the earlier (unnamed) incarnation's session is still alive after Open")
	}
	if err := other.Ping(ctx); err != nil {
		t.Fatalf("participant ab's session was ended by participant a's start: %v", err)
	}
	// The new incarnation's own sessions work.
	if _, err := r.InDoubt(ctx); err != nil {
		t.Fatal(err)
	}
}

const stock = `# an inventory service's own table
[reserve]
params = int text
rows = 1
sql = UPDATE stock SET qty = qty - $1
	WHERE sku = $2

[restock]
params = text int
rows = 1
sql = INSERT INTO stock VALUES ($1, $2) ON CONFLICT (sku) DO UPDATE SET qty = stock.qty + EXCLUDED.qty
`

func parseStatements(t *testing.T, text string) *statements.Set {
	t.Helper()
	s, err := statements.Parse(strings.NewReader(text), "test.statements")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestStatements: an operator's statements as branches — a reservation
// commits, one beyond the stock (a CHECK constraint) or of an unknown sku
// (0 rows) votes no, and hostile work (unknown name, wrong count, wrong
// type, injection-looking text) votes no without touching anything. A
// file whose statement the server refuses, or whose parameter count is
// wrong, refuses the start.
func TestStatements(t *testing.T) {
	dsn := freshDB(t, server(t, "COMMITD_PG_DSN1"))
	ctx := context.Background()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE TABLE stock (sku text PRIMARY KEY, qty integer NOT NULL CHECK (qty >= 0)); INSERT INTO stock VALUES ('apple', 10), ('pear', 3)"); err != nil {
		t.Fatal(err)
	}
	for text, want := range map[string]string{
		"[s]\nparams = int\nrows = 1\nsql = UPDATE nosuchtable SET x = $1\n":                 `statement "s" (line 1)`,
		"[s]\nparams = int int\nrows = 1\nsql = UPDATE stock SET qty = $1 WHERE sku = 'a'\n": "the server counts 1 parameters, the file declares 2",
	} {
		_, err := postgres.Open(ctx, postgres.Config{DSN: dsn, Name: "shop", Statements: parseStatements(t, text), Logger: slog.New(slog.DiscardHandler)})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Open with %q: %v, want %q", text, err, want)
		}
	}
	r, err := postgres.Open(ctx, postgres.Config{DSN: dsn, Name: "shop", Statements: parseStatements(t, stock), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	results := make(chan engine.Message, 16)
	r.Attach(func(m engine.Message) { results <- m })
	next := func() engine.Message {
		t.Helper()
		select {
		case m := <-results:
			return m
		case <-time.After(10 * time.Second):
			t.Fatal("no result from the resource")
		}
		return engine.Message{}
	}
	prepare := func(id protocol.TxnID, work []byte) protocol.Vote {
		t.Helper()
		if v := r.Prepare(id, work); v != protocol.VotePending {
			return v
		}
		return next().Vote
	}
	work := func(name string, args ...statements.Arg) []byte {
		w, err := statements.AppendWork(nil, name, args...)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	qty := func(sku string) int {
		var n int
		if err := c.QueryRow(ctx, "SELECT qty FROM stock WHERE sku = $1", sku).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	ok := uuid.New()
	if v := prepare(ok, work("reserve", statements.IntArg(4), statements.TextArg("apple"))); v != protocol.VoteYes {
		t.Fatalf("a reservation voted %v", v)
	}
	r.Commit(ok)
	if m := next(); m.Type != engine.MsgResFinished {
		t.Fatalf("commit: %+v", m)
	}
	if n := qty("apple"); n != 6 {
		t.Fatalf("apple %d, want 6", n)
	}
	add := uuid.New()
	if v := prepare(add, work("restock", statements.TextArg("plum"), statements.IntArg(5))); v != protocol.VoteYes {
		t.Fatalf("a restock voted %v", v)
	}
	r.Abort(add)
	if m := next(); m.Type != engine.MsgResFinished {
		t.Fatalf("abort: %+v", m)
	}
	for _, w := range []struct {
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
		if v := prepare(uuid.New(), w.work); v != protocol.VoteNo {
			t.Errorf("%s voted %v", w.what, v)
		}
	}
	if a, p := qty("apple"), qty("pear"); a != 6 || p != 3 {
		t.Fatalf("stock changed by refused work: apple %d pear %d", a, p)
	}
	var plums int
	c.QueryRow(ctx, "SELECT count(*) FROM stock WHERE sku = 'plum'").Scan(&plums)
	if plums != 0 {
		t.Fatal("an aborted restock left its row")
	}
	if st := r.Stats(); st.Refused != 6 {
		t.Fatalf("stats %+v, want 6 refused before reaching the server", st)
	}
	if n := (db{t: t, dsn: dsn}).prepared(); n != 0 {
		t.Fatalf("%d transactions left prepared", n)
	}
}

package main

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/protocol"
)

// TestStagedCoordinatorKilledBeforeDecision kills -9 the coordinator while
// staged transactions have their RecStaged durable and no decision: p2 is
// stopped (SIGSTOP) so that none of them can collect its vote, and the
// coordinator's prepare timeout is long. The restarted coordinator finds
// RecStaged without a decision and resolves each transaction (p2, let go,
// reports it prepared or prevents it). Then every transaction is
// all-or-nothing at the two banks, every commit a client was told about
// is applied at both, money is conserved, and nothing is left in doubt.
func TestStagedCoordinatorKilledBeforeDecision(t *testing.T) {
	stagedCoordinatorKilled(t, nil)
}

// TestStagedCoordinatorKilledPostgres is the same with p2 a PostgreSQL
// participant (its prevention is the database's compare-and-swap,
// participant/postgres): p1 a bank, p2 PostgreSQL, staged, the
// coordinator killed with transactions undecided; the restarted one
// resolves them through PostgreSQL.
func TestStagedCoordinatorKilledPostgres(t *testing.T) {
	dsn := pgDatabase(t)
	stagedCoordinatorKilled(t, []string{"--backend", "postgres", "--dsn", dsn})
}

// TestStagedCoordinatorKilledMySQL is the same with p2 a MySQL/MariaDB
// participant (its prevention is the server's compare-and-swap,
// participant/mysql).
func TestStagedCoordinatorKilledMySQL(t *testing.T) {
	dsn := mysqlDatabase(t)
	stagedCoordinatorKilled(t, []string{"--backend", "mysql", "--dsn", dsn})
}

// stagedCoordinatorKilled runs the test above with p2Backend added to
// p2's arguments (nil: a bank).
func stagedCoordinatorKilled(t *testing.T, p2Backend []string) {
	dir := t.TempDir()
	coord, p1, p2 := freeAddr(t), freeAddr(t), freeAddr(t)
	var procs []*exec.Cmd
	start := func(args ...string) *exec.Cmd {
		cmd := exec.Command(binary, append(args, "--log-level", "error")...)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, cmd)
		return cmd
	}
	t.Cleanup(func() {
		for _, cmd := range procs {
			cmd.Process.Signal(syscall.SIGCONT)
			cmd.Process.Signal(os.Interrupt)
			cmd.Wait()
		}
	})
	const accounts = 10
	start("participant", "--name", "p1", "--listen", p1, "--data", filepath.Join(dir, "p1"), "--coordinator", coord, "--accounts", "10")
	part2 := start(append([]string{"participant", "--name", "p2", "--listen", p2, "--data", filepath.Join(dir, "p2"), "--coordinator", coord, "--accounts", "10"}, p2Backend...)...)
	coordArgs := []string{"coordinator", "--listen", coord, "--data", filepath.Join(dir, "c"),
		"--participant", "p1=" + p1 + ",p2=" + p2, "--prepare-timeout", "30s"}
	c1 := start(coordArgs...)
	for _, addr := range []string{p1, p2, coord} {
		waitListening(t, addr)
	}
	waitCommitting(t, coord, "p1", "p2")

	cl, err := client.Dial(coord, client.Options{DialTimeout: 15 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	transfer := func(i int) []client.Branch {
		a := uint32(i % accounts)
		return []client.Branch{
			{Participant: "p1", Work: bank.AppendWork(nil, a, -int64(1+i%7))},
			{Participant: "p2", Work: bank.AppendWork(nil, a, int64(1+i%7))},
		}
	}
	// Some commits the clients are told about, before the crash.
	var told []protocol.TxnID
	for i := range 20 {
		// A staged commit is told before its participants hear the
		// decision, so transfer i+10 (the same account) can find
		// transfer i's lock still held at p2 and be voted no (PostgreSQL
		// waits lock_timeout, 10 ms): retry such an abort with a new id.
		for try := 0; ; try++ {
			id := uuid.Must(uuid.NewV7())
			res, err := cl.Run(context.Background(), id, transfer(i))
			if err == nil && res.Outcome == client.Committed {
				told = append(told, id)
				break
			}
			if err != nil || res.Outcome != client.Aborted || try == 10 {
				t.Fatalf("transfer %d: %v %v", i, res, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if st := coordStatus(t, coord); st.Staged == 0 {
		t.Fatalf("no transaction ran staged: %+v", st)
	}

	// p2 stops; transactions begin and wait for its vote, staged.
	if err := part2.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitProcessStopped(t, part2.Process.Pid)
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			res, _ := cl.Run(ctx, uuid.Must(uuid.NewV7()), transfer(100+i))
			if res.Outcome == client.Committed {
				t.Errorf("a transaction committed while p2 was stopped")
			}
		})
	}
	// Wait for them to stage. Undecided also counts any of the 20 above
	// whose RecCommit was still lazy when p2 stopped, and under load a
	// begin of the ten can be slow to arrive (runs have seen 9 of 10
	// staged after 15 s), so wait for most of them and a count that has
	// stopped moving, and resolve exactly what was staged at the kill.
	deadline := time.Now().Add(15 * time.Second)
	for last, since := 0, time.Now(); ; time.Sleep(20 * time.Millisecond) {
		st := coordStatus(t, coord)
		if st.Undecided != last {
			last, since = st.Undecided, time.Now()
		}
		if st.Undecided >= 10 || st.Undecided >= 8 && time.Since(since) > time.Second {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the transactions did not stage: %+v", st)
		}
	}
	// Their RecStaged must be durable before the kill: the coordinator
	// syncs a staged record at once, and nothing else is appended now (p2
	// is stopped, no other load), so once the durable position stops
	// moving, every record is durable.
	for prev := uint64(0); ; time.Sleep(100 * time.Millisecond) {
		lsn := coordStatus(t, coord).DurableLSN
		if lsn == prev && lsn > 0 {
			break
		}
		prev = lsn
	}
	staged := coordStatus(t, coord).Undecided
	if err := c1.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	c1.Wait()
	wg.Wait() // every client sees the coordinator go: unknown
	if err := part2.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	start(coordArgs...)
	waitListening(t, coord)
	deadline = time.Now().Add(30 * time.Second)
	for {
		st := coordStatus(t, coord)
		if st.Resolutions >= uint64(staged) && st.Undecided == 0 && st.InDoubt == 0 && st.InFlight == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restarted coordinator did not resolve the staged transactions: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Atomicity and durability, per transaction, from the participants'
	// ledgers; conservation from their totals.
	o1, o2 := ledger(t, p1), ledger(t, p2)
	for id, out := range o1 {
		if o2[id] != out && !(out == "aborted" && o2[id] == "") && !(out == "" && o2[id] == "aborted") {
			t.Errorf("atomicity: %v is %s at p1, %q at p2", id, out, o2[id])
		}
	}
	for id, out := range o2 {
		if out == "committed" && o1[id] != "committed" {
			t.Errorf("atomicity: %v committed at p2, %q at p1", id, o1[id])
		}
		if out == "prepared" {
			t.Errorf("%v still prepared at p2", id)
		}
	}
	for _, id := range told {
		if o1[id] != "committed" || o2[id] != "committed" {
			t.Errorf("durability: %v told committed, p1 %q, p2 %q", id, o1[id], o2[id])
		}
	}
	// The coordinator's outcome index knows each commit a client was told
	// about, and each resolved one, as the participants do.
	for id, out := range o1 {
		if out != "committed" {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := cl.Outcome(ctx, id)
		cancel()
		if err != nil || st.State != protocol.TxnCommitted {
			t.Errorf("outcome of %v, committed at both banks: %+v, %v", id, st, err)
		}
	}
	tally := map[string]int{}
	for _, out := range o1 {
		tally[out]++
	}
	t.Logf("after the restart: %+v; p1's ledger: %v", coordStatus(t, coord), tally)
	var sum int64
	for _, p := range []string{p1, p2} {
		acc := commitd(t, 20*time.Second, "admin", "accounts", "--participant", p)
		var a struct {
			Total int64 `json:"total"`
		}
		if acc.code != 0 || json.Unmarshal([]byte(acc.stdout), &a) != nil {
			t.Fatalf("admin accounts: %d %q %q", acc.code, acc.stdout, acc.stderr)
		}
		sum += a.Total
	}
	if sum != 2*accounts*1000 {
		t.Fatalf("conservation: the banks hold %d, want %d", sum, 2*accounts*1000)
	}
}

type stagedStatus struct {
	Staged      uint64 `json:"staged"`
	Resolutions uint64 `json:"resolutions"`
	Undecided   int    `json:"undecided"`
	InFlight    int    `json:"in_flight"`
	InDoubt     int    `json:"in_doubt"`
	DurableLSN  uint64 `json:"durable_lsn"`
}

func coordStatus(t *testing.T, coord string) stagedStatus {
	t.Helper()
	r := commitd(t, 20*time.Second, "admin", "status", "--coordinator", coord)
	var st stagedStatus
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil {
		return stagedStatus{Undecided: -1, InFlight: -1}
	}
	return st
}

// ledger is a participant's last word on each transaction (admin outcomes:
// one JSON object a line).
func ledger(t *testing.T, addr string) map[protocol.TxnID]string {
	t.Helper()
	r := commitd(t, 20*time.Second, "admin", "outcomes", "--participant", addr)
	if r.code != 0 {
		t.Fatalf("admin outcomes: %d %q", r.code, r.stderr)
	}
	out := map[protocol.TxnID]string{}
	for _, line := range strings.Split(r.stdout, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		id, err := uuid.Parse(f[0])
		if err != nil {
			t.Fatalf("admin outcomes line %q: %v", line, err)
		}
		out[id] = f[len(f)-1]
	}
	return out
}

// pgDatabase returns the DSN of a fresh database on the PostgreSQL
// server of COMMITD_PG_DSN1 (make pg-up), dropped at the end of the
// test. Without a server the test skips, except in CI, where it fails.
func pgDatabase(t *testing.T) string {
	t.Helper()
	dsn := os.Getenv("COMMITD_PG_DSN1")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var admin *pgx.Conn
	err := errors.New("COMMITD_PG_DSN1 is not set")
	if dsn != "" {
		admin, err = pgx.Connect(ctx, dsn)
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL is required in CI: %v (make pg-up starts the servers)", err)
		}
		t.Skipf("no PostgreSQL server: %v; run `make pg-up` first", err)
	}
	defer admin.Close(ctx)
	var b [6]byte
	crand.Read(b[:])
	name := "commitd_test_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("COMMITD_PG_DSN1 must be a URL: %v", err)
	}
	u.Path = "/" + name
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, u.String())
		if err == nil {
			rows, _ := c.Query(ctx, "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()")
			gids, _ := pgx.CollectRows(rows, pgx.RowTo[string])
			for _, gid := range gids {
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

// mysqlDatabase returns the DSN of a fresh database on the MariaDB/MySQL
// server of COMMITD_MYSQL_DSN1 (make mysql-up), dropped at the end of the
// test. Without a server the test skips, except in CI, where it fails.
func mysqlDatabase(t *testing.T) string {
	t.Helper()
	dsn := os.Getenv("COMMITD_MYSQL_DSN1")
	err := errors.New("COMMITD_MYSQL_DSN1 is not set")
	var admin *sql.DB
	if dsn != "" {
		if admin, err = sql.Open("mysql", dsn); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err = admin.PingContext(ctx)
			cancel()
		}
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("MySQL/MariaDB is required in CI: %v (make mysql-up starts the servers)", err)
		}
		t.Skipf("no MySQL/MariaDB server: %v; run `make mysql-up` first", err)
	}
	defer admin.Close()
	var b [6]byte
	crand.Read(b[:])
	name := "commitd_test_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatal(err)
	}
	cfg, err := gomysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DBName = name
	t.Cleanup(func() {
		a, err := sql.Open("mysql", dsn)
		if err != nil {
			return
		}
		defer a.Close()
		// The participant has stopped (cleanups run last-in first-out):
		// roll back what it left prepared (its names are p1 and p2), then
		// drop the database.
		rows, err := a.Query("XA RECOVER")
		if err == nil {
			var xids []string
			for rows.Next() {
				var f, gl, bl int
				var data []byte
				if rows.Scan(&f, &gl, &bl, &data) == nil && string(data[gl:]) == "p2" {
					xids = append(xids, fmt.Sprintf("'%s','%s',%d", data[:gl], data[gl:], f))
				}
			}
			rows.Close()
			for _, x := range xids {
				a.Exec("XA ROLLBACK " + x)
			}
		}
		if _, err := a.Exec("DROP DATABASE " + name); err != nil {
			t.Logf("dropping %s: %v", name, err)
		}
	})
	return cfg.FormatDSN()
}

// waitProcessStopped waits until the process pid is in the stopped state
// (T in /proc/PID/stat), and fails the test if it is not alive: a process
// that exited (a server that could not bind its port, say) would be
// "stopped" by a SIGSTOP without complaint while something else answers at
// its address.
func waitProcessStopped(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		// The state is the field after the command's closing parenthesis.
		i := bytes.LastIndexByte(b, ')')
		if err != nil || i < 0 || i+2 >= len(b) {
			t.Fatalf("process %d: cannot read its state: %v", pid, err)
		}
		switch st := b[i+2]; st {
		case 'T':
			return
		case 'Z', 'X':
			t.Fatalf("process %d exited (state %c) before it was stopped", pid, st)
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d not stopped after 5 s: %s", pid, b[i+2:])
		}
		time.Sleep(time.Millisecond)
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/wal"
	"github.com/google/uuid"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

var binary string

// TestMain builds the real binary once: these tests run it as an operator
// would and read its exit status and standard error.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "commitd-cli-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "commitd")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building commitd: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	code           int
	stdout, stderr string
}

func commitd(t *testing.T, timeout time.Duration, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("commitd %v: %v", args, err)
	}
	return r
}

// oneLineError checks the operator contract: a non-zero exit, and one
// line on standard error saying what is wrong — never a stack trace.
func oneLineError(t *testing.T, r result, want string) {
	t.Helper()
	if r.code == 0 {
		t.Fatalf("exit status 0; stderr %q", r.stderr)
	}
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	last := lines[len(lines)-1]
	if strings.Contains(r.stderr, "goroutine ") || strings.Contains(r.stderr, "panic") {
		t.Fatalf("stack trace on stderr:\n%s", r.stderr)
	}
	if !strings.Contains(last, want) {
		t.Fatalf("last stderr line %q does not mention %q (all: %q)", last, want, r.stderr)
	}
}

func TestBadInvocations(t *testing.T) {
	// code is the exit status wanted when it must be 2 (a usage error);
	// 0 accepts any failure.
	for _, tc := range []struct {
		args []string
		want string
		code int
	}{
		{[]string{"frobnicate"}, "unknown command", 2},
		{[]string{"nonsense"}, "want coordinator, participant, demo, bench, admin or version", 2},
		{nil, "no command given", 2},
		{[]string{"coordinator", "--bogus"}, "flag provided but not defined: -bogus", 2},
		{[]string{"bench", "--bogus"}, "flag provided but not defined: -bogus", 2},
		{[]string{"admin"}, "name a request: status, accounts, outcomes, txn, in-doubt, retry, resolve, replicas, participants or cluster", 2},
		{[]string{"admin", "status", "--bogus"}, "flag provided but not defined: -bogus", 2},
		{[]string{"coordinator", "--shards", "many"}, "invalid value", 2},
		{[]string{"coordinator", "--data", t.TempDir()}, "at least one participant", 2},
		{[]string{"coordinator", "--data", t.TempDir(), "--participant", "p1"}, "NAME=ADDR", 2},
		{[]string{"participant", "--coordinator", "127.0.0.1:1"}, "--data is required", 2},
		{[]string{"participant", "--data", t.TempDir(), "--coordinator", "127.0.0.1:1", "--accounts", "0"}, "--accounts", 2},
		{[]string{"admin", "status", "--coordinator", "127.0.0.1:1"}, "cannot reach", 0},
		{[]string{"admin", "payroll"}, "unknown request \"payroll\" (want status, accounts, outcomes, txn, in-doubt, retry, resolve, replicas, participants or cluster)", 0},
		{[]string{"admin", "cluster"}, "admin cluster: say reload", 2},
		{[]string{"admin", "cluster", "reload"}, "give --coordinator ADDR or --participant ADDR", 2},
		{[]string{"bench", "--coordinator", "127.0.0.1:1"}, "required", 2},
		{[]string{"participant", "--data", t.TempDir(), "--coordinator", "127.0.0.1:1", "--backend", "oracle"}, "--backend", 2},
		{[]string{"participant", "--data", t.TempDir(), "--coordinator", "127.0.0.1:1", "--backend", "mysql"}, "--backend mysql needs --dsn", 2},
		{[]string{"participant", "--data", t.TempDir(), "--coordinator", "127.0.0.1:1", "--statements", "x.statements"}, "--statements needs --backend postgres or mysql", 2},
		{[]string{"participant", "--data", t.TempDir(), "--coordinator", "127.0.0.1:1", "--backend", "mysql", "--dsn", "root@tcp(127.0.0.1:1)/", "--statements", badStatements(t)}, "bad.statements:3: parameter type \"float\": want int or text", 0},
		{[]string{"participant", "--data", t.TempDir(), "--coordinator", "127.0.0.1:1", "--backend", "mysql", "--dsn", "root@tcp(127.0.0.1:1)/"}, "mysql: the DSN names no database", 0},
		{[]string{"bench", "--coordinator", "127.0.0.1:1", "--participants", "p1=127.0.0.1:2", "--per-txn", "1", "--statement", "drop table"}, "--statement \"drop table\"", 2},
		{[]string{"coordinator", "--data", t.TempDir(), "--participant", "p1=127.0.0.1:1", "--tls-cert", "x.pem"}, "needs all of", 0},
		{[]string{"coordinator", "--data", t.TempDir(), "--participant", "p1=127.0.0.1:1", "--segment-size", "1KiB"}, "--segment-size 1024: a segment must hold the largest record", 2},
		{[]string{"coordinator", "--data", t.TempDir(), "--participant", "p1=127.0.0.1:1", "--segment-size", "8Q"}, "want a byte count", 2},
		{[]string{"participant", "--data", t.TempDir(), "--coordinator", "127.0.0.1:1", "--accounts", "100000", "--segment-size", "512KiB"}, "--segment-size 524288: a segment must hold the largest record, 800033 bytes", 2},
		{[]string{"coordinator", "--data", t.TempDir(), "--participant", "p1=127.0.0.1:1", "--participant-identity", "p1"}, "NAME=ID", 2},
		{[]string{"coordinator", "--data", t.TempDir(), "--participant", "p1=127.0.0.1:1", "--participant-identity", "p9=p9.test"}, "no --participant names", 2},
		{[]string{"coordinator", "--data", t.TempDir(), "--participant", "p1=127.0.0.1:1", "--replica-identity", "replica.test"}, "--replica-identity replica.test without --peers", 2},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := commitd(t, 20*time.Second, tc.args...)
			oneLineError(t, r, tc.want)
			if tc.code != 0 && r.code != tc.code {
				t.Fatalf("exit status %d, want %d", r.code, tc.code)
			}
		})
	}
}

// badStatements writes a statement file with a bad parameter type on
// line 3.
func badStatements(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "bad.statements")
	if err := os.WriteFile(p, []byte("[reserve]\nrows = 1\nparams = int float\nsql = SELECT ?\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func freeAddr(t *testing.T) string { return nodetest.FreeAddr(t) }

// TestLockedDataDirectory starts a participant and then a second one on the
// same data directory: the second must refuse, in one line.
func TestLockedDataDirectory(t *testing.T) {
	dir := t.TempDir()
	first := exec.Command(binary, "participant", "--name", "p1", "--listen", freeAddr(t), "--data", dir,
		"--coordinator", "127.0.0.1:1", "--log-level", "error")
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		first.Process.Kill()
		first.Wait()
	}()
	// Wait until the first holds the lock (its log directory appears).
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "ledger")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first participant did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	r := commitd(t, 20*time.Second, "participant", "--name", "p1", "--listen", freeAddr(t), "--data", dir, "--coordinator", "127.0.0.1:1")
	oneLineError(t, r, "in use by another process")
}

// TestCorruptDataDirectory damages a record in the middle of a
// participant's log: the next start must refuse, in one line naming the
// corruption, rather than start from a wrong state.
func TestCorruptDataDirectory(t *testing.T) {
	dir := t.TempDir()
	walDir := filepath.Join(dir, "wal")
	log, err := wal.Open(walDir, wal.Options{SegmentBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	var rec []byte
	for i := range 10 {
		r := engine.Record{Type: engine.RecAborted, Txn: uuid.New()}
		if rec, err = r.AppendBinary(rec[:0]); err != nil {
			t.Fatal(err)
		}
		if _, err := log.AppendSync(rec); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	if err := log.Close(); err != nil {
		t.Fatal(err)
	}
	// Flip a byte of the third record's data. The layout (docs/wal-format.md):
	// a 32-byte segment header, then frames of a 16-byte header and the data
	// padded to 8 bytes; every record here has the same length.
	frame := (16 + len(rec) + 7) &^ 7
	pos := 32 + 2*frame + 16
	segs, _ := filepath.Glob(filepath.Join(walDir, "*"))
	damaged := false
	for _, seg := range segs {
		b, err := os.ReadFile(seg)
		if err != nil || len(b) < pos+1 || string(b[:8]) != "commitdW" {
			continue // a segment prepared ahead, not yet used
		}
		b[pos] ^= 0xFF
		if err := os.WriteFile(seg, b, 0o644); err != nil {
			t.Fatal(err)
		}
		damaged = true
		break
	}
	if !damaged {
		t.Fatalf("found no used segment among %v", segs)
	}
	r := commitd(t, 20*time.Second, "participant", "--name", "p1", "--listen", freeAddr(t), "--data", dir, "--coordinator", "127.0.0.1:1")
	oneLineError(t, r, "corrupt")
}

// TestDamagedSegmentHeader flips one byte of the first-LSN field in the
// header of a participant's only used segment: the next start must refuse,
// in one line naming the file and offset — not start on an empty log (as it
// did when such a file was taken for a spare and recycled).
func TestDamagedSegmentHeader(t *testing.T) {
	dir := t.TempDir()
	walDir := filepath.Join(dir, "wal")
	log, err := wal.Open(walDir, wal.Options{SegmentBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	var rec []byte
	for i := range 10 {
		r := engine.Record{Type: engine.RecAborted, Txn: uuid.New()}
		if rec, err = r.AppendBinary(rec[:0]); err != nil {
			t.Fatal(err)
		}
		if _, err := log.AppendSync(rec); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	if err := log.Close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(walDir, "*.wal"))
	damaged := ""
	for _, seg := range segs {
		b, err := os.ReadFile(seg)
		if err != nil || string(b[:8]) != "commitdW" {
			continue // a segment prepared ahead, not yet used
		}
		b[16] ^= 0x01 // the header's first LSN: 1 becomes 0
		if err := os.WriteFile(seg, b, 0o644); err != nil {
			t.Fatal(err)
		}
		damaged = seg
		break
	}
	if damaged == "" {
		t.Fatalf("found no used segment among %v", segs)
	}
	r := commitd(t, 20*time.Second, "participant", "--name", "p1", "--listen", freeAddr(t), "--data", dir, "--coordinator", "127.0.0.1:1")
	oneLineError(t, r, damaged+" offset 0: segment header")
}

// TestClusterOfProcesses runs a coordinator and two participants as
// separate processes with --http, moves money with commitd bench, and
// checks the operator's view: admin reports, /metrics, /healthz, pprof.
func TestClusterOfProcesses(t *testing.T) {
	dir := t.TempDir()
	coord, p1, p2 := freeAddr(t), freeAddr(t), freeAddr(t)
	chttp, phttp := freeAddr(t), freeAddr(t)
	start := func(args ...string) {
		cmd := exec.Command(binary, append(args, "--log-level", "error")...)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Signal(os.Interrupt)
			cmd.Wait()
		})
	}
	start("participant", "--name", "p1", "--listen", p1, "--data", filepath.Join(dir, "p1"), "--coordinator", coord, "--accounts", "100", "--http", phttp)
	start("participant", "--name", "p2", "--listen", p2, "--data", filepath.Join(dir, "p2"), "--coordinator", coord, "--accounts", "100")
	start("coordinator", "--listen", coord, "--data", filepath.Join(dir, "c"), "--participant", "p1="+p1+",p2="+p2, "--http", chttp)
	for _, addr := range []string{p1, p2, coord, chttp, phttp} {
		waitListening(t, addr)
	}
	// The servers find each other in the background, the coordinator
	// retrying with backoff: wait until a transaction commits rather than
	// for a guessed while.
	waitCommitting(t, coord, "p1", "p2")
	report := filepath.Join(dir, "bench.json")
	r := commitd(t, 60*time.Second, "bench", "--coordinator", coord, "--participants", "p1="+p1+",p2="+p2,
		"--accounts", "100", "--concurrency", "4", "--txns", "300", "--json", report)
	if r.code != 0 {
		t.Fatalf("bench failed (%d): %s\n%s", r.code, r.stderr, r.stdout)
	}
	var rep struct {
		Committed int64 `json:"committed"`
		Conserved bool  `json:"conserved"`
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Committed == 0 || !rep.Conserved {
		t.Fatalf("bench report: %s", b)
	}
	st := commitd(t, 20*time.Second, "admin", "status", "--coordinator", coord)
	if st.code != 0 || !strings.Contains(st.stdout, `"committed":`) {
		t.Fatalf("admin status: %d %q %q", st.code, st.stdout, st.stderr)
	}
	var sum int64
	for _, p := range []string{p1, p2} {
		acc := commitd(t, 20*time.Second, "admin", "accounts", "--participant", p)
		var a struct {
			Accounts int   `json:"accounts"`
			Total    int64 `json:"total"`
		}
		if acc.code != 0 || json.Unmarshal([]byte(acc.stdout), &a) != nil || a.Accounts != 100 {
			t.Fatalf("admin accounts: %d %q %q", acc.code, acc.stdout, acc.stderr)
		}
		sum += a.Total
	}
	if sum != 2*100*1000 {
		t.Fatalf("the participants' totals add up to %d, want %d", sum, 2*100*1000)
	}
	outs := commitd(t, 20*time.Second, "admin", "outcomes", "--participant", p1)
	if outs.code != 0 || !strings.Contains(outs.stdout, " committed\n") {
		t.Fatalf("admin outcomes: %d %q", outs.code, outs.stderr)
	}
	get := func(url string) string {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %s", url, resp.Status)
		}
		return string(body)
	}
	cm := get("http://" + chttp + "/metrics")
	for _, series := range []string{
		`commitd_coordinator_transactions_total{outcome="committed"}`,
		`commitd_coordinator_transaction_seconds_count{outcome="committed"}`,
		`commitd_wal_fsync_seconds_count{log="wal"}`, `commitd_wal_batch_records_count{log="wal"}`,
		"commitd_conn_frames_written_total", "commitd_conn_writes_total", "go_goroutines",
	} {
		if !hasNonZero(cm, series) {
			t.Errorf("coordinator /metrics: %s missing or zero", series)
		}
	}
	// Gauges that are rightly zero once the load is over: present.
	for _, series := range []string{"commitd_coordinator_in_flight ", "commitd_coordinator_in_doubt ", "commitd_coordinator_oldest_in_doubt_seconds "} {
		if !strings.Contains(cm, "\n"+series) {
			t.Errorf("coordinator /metrics: %s missing", series)
		}
	}
	pm := get("http://" + phttp + "/metrics")
	if !strings.Contains(pm, "\ncommitd_participant_oldest_prepared_seconds ") {
		t.Error("participant /metrics: commitd_participant_oldest_prepared_seconds missing")
	}
	for _, series := range []string{"commitd_participant_prepare_seconds_count", "commitd_participant_committed_total",
		`commitd_wal_fsync_seconds_count{log="wal"}`, "commitd_conn_frames_written_total"} {
		if !hasNonZero(pm, series) {
			t.Errorf("participant /metrics: %s missing or zero", series)
		}
	}
	if !strings.Contains(get("http://"+chttp+"/healthz"), "ok") {
		t.Error("/healthz is not ok")
	}
	if !strings.Contains(get("http://"+chttp+"/debug/pprof/"), "goroutine") {
		t.Error("/debug/pprof/ does not list profiles")
	}
}

// hasNonZero reports whether the exposition text has the series (name and
// labels as written, or the name of an unlabelled series) with a value
// other than 0.
func hasNonZero(text, series string) bool {
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if name == series || (!strings.Contains(series, "{") && strings.HasPrefix(name, series+"{")) {
			if value != "0" {
				return true
			}
		}
	}
	return false
}

// waitListening waits until something accepts connections at addr.
func waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens at %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHelp: every way of asking for help prints usage on standard error
// and exits 0 — "commitd admin --help" used to answer `unknown report
// "--help"` with exit status 2.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{
		{"help"}, {"-h"}, {"--help"},
		{"admin", "--help"}, {"admin", "-h"}, {"admin", "help"},
		{"admin", "status", "--help"}, {"admin", "accounts", "-h"}, {"admin", "outcomes", "--help"},
		{"admin", "in-doubt", "--help"}, {"admin", "txn", "-h"}, {"admin", "retry", "--help"}, {"admin", "resolve", "-h"},
		{"coordinator", "-h"}, {"participant", "--help"}, {"demo", "-h"}, {"bench", "--help"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			r := commitd(t, 20*time.Second, args...)
			if r.code != 0 || !strings.Contains(r.stderr, "usage") && !strings.Contains(r.stderr, "commitd coordinator --listen") {
				t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
			}
		})
	}
	// Admin's usage names every report.
	r := commitd(t, 20*time.Second, "admin", "--help")
	for _, kind := range []string{"status", "accounts", "outcomes", "txn", "in-doubt", "retry", "resolve"} {
		if !strings.Contains(r.stderr, "commitd admin "+kind) {
			t.Errorf("admin --help does not mention %s: %q", kind, r.stderr)
		}
	}
}

// TestVersion: "commitd version" and "commitd --version" print one line
// naming the Go release, exit 0.
func TestVersion(t *testing.T) {
	for _, arg := range []string{"version", "--version", "-version"} {
		r := commitd(t, 20*time.Second, arg)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "commitd ") || !strings.Contains(r.stdout, runtime.Version()) ||
			strings.Count(r.stdout, "\n") != 1 {
			t.Fatalf("commitd %s: exit %d, stdout %q, stderr %q", arg, r.code, r.stdout, r.stderr)
		}
	}
}

// TestFormatVersion: the module version, the commit with its time and
// whether the tree was modified, when the build recorded them.
func TestFormatVersion(t *testing.T) {
	bi := &debug.BuildInfo{Main: debug.Module{Path: "github.com/commitd/commitd", Version: "v1.2.3"}, Settings: []debug.BuildSetting{
		{Key: "vcs", Value: "git"},
		{Key: "vcs.revision", Value: "0123abcd"},
		{Key: "vcs.time", Value: "2026-12-06T03:00:00Z"},
		{Key: "vcs.modified", Value: "true"},
	}}
	want := "commitd v1.2.3 commit 0123abcd+dirty of 2026-12-06T03:00:00Z, go1.99 " + runtime.GOOS + "/" + runtime.GOARCH
	if got := formatVersion(bi, "go1.99"); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	bi.Settings = nil
	bi.Main.Version = "(devel)"
	if got, want := formatVersion(bi, "go1.99"), "commitd (devel), go1.99 "+runtime.GOOS+"/"+runtime.GOARCH; got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if got := formatVersion(nil, "go1.99"); !strings.HasPrefix(got, "commitd unknown, go1.99") {
		t.Errorf("without build information: %q", got)
	}
}

// waitCommitting runs a transaction that only reads (account 0 at each
// named participant) until one commits: then the coordinator is connected
// to every one of them. It moves no money.
func waitCommitting(t *testing.T, coord string, names ...string) {
	t.Helper()
	cl, err := client.Dial(coord, client.Options{DialTimeout: 15 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var branches []client.Branch
	for _, n := range names {
		branches = append(branches, client.Branch{Participant: n, Work: bank.AppendWork(nil, 0, 0)})
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, err := cl.Run(ctx, uuid.Must(uuid.NewV7()), branches)
		cancel()
		if err == nil && res.Outcome == client.Committed {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no transaction committed within 15 s: %v %v", res, err)
		}
		time.Sleep(10 * time.Millisecond) // a polling interval, not a guess at readiness
	}
}

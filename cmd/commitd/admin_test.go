package main

import (
	"context"
	be "encoding/binary"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/protocol"
	"github.com/google/uuid"
)

// TestOutcomesAfterKill9 is the outcome index's crash test with real
// processes: transactions acknowledged committed are reported committed
// by `commitd admin txn` after the coordinator is killed with SIGKILL the
// moment the last was acknowledged (its index entries then only in the
// dead process's memory: recovery must find them in the log) and
// restarted — long after its shards would have forgotten them. An abort
// the index had synced before the kill keeps its cause. And the admin
// requests' bad input, each with its exit status.
func TestOutcomesAfterKill9(t *testing.T) {
	dir := t.TempDir()
	coord, p1, p2 := freeAddr(t), freeAddr(t), freeAddr(t)
	start := func(args ...string) *exec.Cmd {
		cmd := exec.Command(binary, append(args, "--log-level", "error")...)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			_ = cmd.Wait()
		})
		return cmd
	}
	start("participant", "--name", "p1", "--listen", p1, "--data", filepath.Join(dir, "p1"), "--coordinator", coord, "--accounts", "100")
	start("participant", "--name", "p2", "--listen", p2, "--data", filepath.Join(dir, "p2"), "--coordinator", coord, "--accounts", "100")
	coordArgs := []string{"coordinator", "--listen", coord, "--data", filepath.Join(dir, "c"), "--participant", "p1=" + p1 + ",p2=" + p2,
		"--remember", "1s", "--max-id-ahead", "200ms"}
	c := start(coordArgs...)
	for _, addr := range []string{p1, p2, coord} {
		waitListening(t, addr)
	}
	waitCommitting(t, coord, "p1", "p2")
	cl, err := client.Dial(coord, client.Options{DialTimeout: 15 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	run := func(work ...[]byte) (uuid.UUID, client.Result) {
		t.Helper()
		id := uuid.Must(uuid.NewV7())
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := cl.Run(ctx, id, []client.Branch{{Participant: "p1", Work: work[0]}, {Participant: "p2", Work: work[1]}})
		if err != nil {
			t.Fatal(err)
		}
		return id, res
	}
	// More than account 7 holds: p1 votes no.
	aborted, res := run(bank.AppendWork(nil, 7, -1_000_000), bank.AppendWork(nil, 7, 1_000_000))
	if res.Outcome != client.Aborted {
		t.Fatalf("overdraft: %v", res)
	}
	// The index syncs once a second: wait until the abort is on disk, as
	// the coordinator itself reports it (a lookup syncs first).
	time.Sleep(1500 * time.Millisecond)
	var committed []uuid.UUID
	for i := range 40 {
		id, res := run(bank.AppendWork(nil, uint32(i%100), -1), bank.AppendWork(nil, uint32(i%100), 1))
		if res.Outcome == client.Committed {
			committed = append(committed, id)
		}
	}
	if len(committed) == 0 {
		t.Fatal("nothing committed")
	}
	if err := c.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = c.Wait()
	start(coordArgs...)
	waitListening(t, coord)

	txn := func(id string) (result, protocol.TxnStatus) {
		t.Helper()
		r := commitd(t, 20*time.Second, "admin", "txn", id, "--coordinator", coord)
		var st protocol.TxnStatus
		if r.code == 0 || r.code == 3 {
			if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
				t.Fatalf("admin txn %s: %v in %q", id, err, r.stdout)
			}
		}
		return r, st
	}
	// Every acknowledged commit, through the client; a few through the
	// command line.
	for i, id := range committed {
		// A staged commit (the default) is told to its client once its
		// staged record and every prepared record are durable; if the
		// kill took its commit record, the restarted coordinator
		// resolves it first, and says in-flight meanwhile.
		var st protocol.TxnStatus
		var err error
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			st, err = cl.Outcome(ctx, id)
			cancel()
			if err != nil || st.State != protocol.TxnInFlight || time.Now().After(deadline) {
				break
			}
		}
		if err != nil || st.State != protocol.TxnCommitted {
			t.Fatalf("acknowledged commit %d of %d, after kill -9 and restart: %+v, %v", i, len(committed), st, err)
		}
	}
	for _, id := range []uuid.UUID{committed[0], committed[len(committed)-1]} {
		if r, st := txn(id.String()); r.code != 0 || st.State != protocol.TxnCommitted || len(st.Participants) != 2 {
			t.Fatalf("admin txn %v: exit %d, %+v, stderr %q", id, r.code, st, r.stderr)
		}
	}
	if r, st := txn(aborted.String()); r.code != 0 || st.State != protocol.TxnAborted || st.Cause != "voted-no" || st.Participant != "p1" {
		t.Fatalf("admin txn of the abort: exit %d, %+v, %q", r.code, st, r.stderr)
	}

	// No record: exit 3, with the answer.
	if r, st := txn(uuid.Must(uuid.NewV7()).String()); r.code != 3 || st.State != protocol.TxnNotFound {
		t.Fatalf("admin txn of a fresh id: exit %d, %+v", r.code, st)
	}
	old := uuid.Must(uuid.NewV7())
	be.BigEndian.PutUint64(old[:8], uint64(time.Now().Add(-48*time.Hour).UnixMilli())<<16|0x7000)
	if r, st := txn(old.String()); r.code != 3 || st.State != protocol.TxnExpired {
		t.Fatalf("admin txn of an id two days old: exit %d, %+v", r.code, st)
	}
	// Bad command lines: exit 2, one line.
	for _, tc := range []struct {
		args []string
		want string
		code int
	}{
		{[]string{"admin", "txn", "--coordinator", coord}, "give a transaction id", 2},
		{[]string{"admin", "txn", "12345", "--coordinator", coord}, "malformed transaction id \"12345\"", 2},
		{[]string{"admin", "txn", uuid.NewString(), "--coordinator", coord}, "version 4 UUID", 2},
		{[]string{"admin", "txn", "a", "b", "--coordinator", coord}, "unexpected argument \"b\"", 2},
		{[]string{"admin", "retry", "--coordinator", coord}, "give a transaction id (or, for retry, a participant's name)", 2},
		{[]string{"admin", "txn", committed[0].String()}, "name a server", 1},
		// Refused by the coordinator: exit 1, its reason.
		{[]string{"admin", "retry", "p9", "--coordinator", coord}, "\"p9\" is not one of this coordinator's participants", 1},
		{[]string{"admin", "retry", committed[0].String(), "--coordinator", coord}, "no commit waiting to be delivered", 1},
		{[]string{"admin", "in-doubt", "--coordinator", coord, "--accounts"}, "flag provided but not defined: -accounts", 2},
		{[]string{"admin", "retry", "p9", "--participant", p1}, "neither a transaction id nor this participant's name (p1)", 1},
		{[]string{"admin", "participants", "--coordinator", coord}, "say add NAME=ADDR or remove NAME", 2},
		{[]string{"admin", "participants", "add", "--coordinator", coord}, "name the participant: NAME=ADDR", 2},
		{[]string{"admin", "participants", "add", "p3", "--coordinator", coord}, "malformed participant \"p3\": want NAME=ADDR", 2},
		{[]string{"admin", "participants", "add", "p3=127.0.0.1:9"}, "name the coordinator with --coordinator", 2},
		{[]string{"admin", "participants", "add", "p1=127.0.0.1:9", "--coordinator", coord}, "participant \"p1\" is already known", 1},
		{[]string{"admin", "participants", "add", "p3=" + p2, "--coordinator", coord}, "already participant \"p2\"'s", 1},
		{[]string{"admin", "participants", "remove", "p9", "--coordinator", coord}, "\"p9\" is not one of this coordinator's participants", 1},
	} {
		r := commitd(t, 20*time.Second, tc.args...)
		oneLineError(t, r, tc.want)
		if r.code != tc.code {
			t.Errorf("commitd %s: exit %d, want %d", strings.Join(tc.args, " "), r.code, tc.code)
		}
	}
	// resolve: a bad command line is exit 2; a decided transaction is
	// refused (exit 1) and the refusal is in the participant's audit log,
	// which admin txn at the participant reports.
	for _, tc := range []struct {
		args []string
		want string
		code int
	}{
		{[]string{"admin", "resolve", committed[0].String(), "--participant", p1, "--reason", "x"}, "give exactly one of --commit and --abort", 2},
		{[]string{"admin", "resolve", committed[0].String(), "--participant", p1, "--commit", "--abort", "--reason", "x"}, "give exactly one of --commit and --abort", 2},
		{[]string{"admin", "resolve", committed[0].String(), "--participant", p1, "--commit"}, "--reason is required", 2},
		{[]string{"admin", "resolve", committed[0].String(), "--commit", "--reason", "x"}, "--participant ADDR is required", 2},
		{[]string{"admin", "resolve", "nope", "--commit", "--reason", "x", "--participant", p1}, "malformed transaction id", 2},
		{[]string{"admin", "resolve", committed[0].String(), "--abort", "--reason", "testing the guard", "--participant", p1, "--coordinator", coord},
			"a decision exists: the coordinator at " + coord + " answers committed", 1},
		{[]string{"admin", "resolve", committed[1].String(), "--abort", "--reason", "testing the guard", "--participant", p1, "--check", p2},
			"a decision exists: participant at " + p2 + " has committed it", 1},
	} {
		r := commitd(t, 20*time.Second, tc.args...)
		oneLineError(t, r, tc.want)
		if r.code != tc.code {
			t.Errorf("commitd %s: exit %d, want %d", strings.Join(tc.args, " "), r.code, tc.code)
		}
	}
	// A participant added and removed again (nothing names it between).
	p3 := freeAddr(t)
	if r := commitd(t, 20*time.Second, "admin", "participants", "add", "p3="+p3, "--coordinator", coord); r.code != 0 || !strings.Contains(r.stdout, `"p3":"`+p3+`"`) {
		t.Fatalf("admin participants add: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	if r := commitd(t, 20*time.Second, "admin", "participants", "remove", "p3", "--coordinator", coord); r.code != 0 || strings.Contains(r.stdout, `"p3"`) {
		t.Fatalf("admin participants remove: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	r := commitd(t, 20*time.Second, "admin", "txn", committed[0].String(), "--participant", p1)
	var pt protocol.TxnStatus
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &pt) != nil || pt.State != protocol.TxnCommitted ||
		len(pt.Resolves) != 1 || !strings.HasPrefix(pt.Resolves[0].Result, "refused: a decision exists") || pt.Resolves[0].Reason != "testing the guard" {
		t.Fatalf("admin txn at p1: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	// The coordinator's answer with the participants' resolves.
	r = commitd(t, 20*time.Second, "admin", "txn", committed[0].String(), "--coordinator", coord, "--participant", p1+","+p2)
	pt = protocol.TxnStatus{}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &pt) != nil || pt.State != protocol.TxnCommitted || len(pt.Resolves) != 1 || pt.Resolves[0].Where != "p1" {
		t.Fatalf("admin txn at the coordinator with the participants' resolves: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	r = commitd(t, 20*time.Second, "admin", "in-doubt", "--coordinator", coord)
	var rep struct {
		Total *int `json:"total"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &rep) != nil || rep.Total == nil {
		t.Fatalf("admin in-doubt: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	if r := commitd(t, 20*time.Second, "admin", "retry", "p1", "--coordinator", coord); r.code != 0 || !strings.Contains(r.stdout, `"redelivered":`) {
		t.Fatalf("admin retry p1: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	if r := commitd(t, 20*time.Second, "admin", "in-doubt", "--participant", p2); r.code != 0 || !strings.Contains(r.stdout, `"name":"p2"`) {
		t.Fatalf("admin in-doubt at p2: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	if r := commitd(t, 20*time.Second, "admin", "retry", "p2", "--participant", p2); r.code != 0 || !strings.Contains(r.stdout, `"inquired":`) {
		t.Fatalf("admin retry at p2: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
}

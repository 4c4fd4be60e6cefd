package postgres_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/protocol"
	"github.com/google/uuid"
)

// votes is a fake coordinator's record of the votes a participant sent.
type votes struct {
	mu sync.Mutex
	m  map[protocol.TxnID]protocol.Vote
}

func (v *votes) handle(_ *mux.Conn, fr wire.Frame) error {
	if fr.Type != wire.TypeVote {
		return nil
	}
	var m wire.Vote
	if err := m.Decode(fr); err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.m[m.Txn] = m.Vote
	return nil
}

func (v *votes) get(id protocol.TxnID) (protocol.Vote, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	got, ok := v.m[id]
	return got, ok
}

// TestPreventSurvivesKill: a PostgreSQL participant process prevents a
// transaction (a coordinator's MsgResolve for one it never saw), is
// killed with SIGKILL and restarted; a late staged prepare of that
// transaction is then refused — the restarted process has no memory of
// the prevention, the database's marker refuses it — while a new
// transaction still prepares.
func TestPreventSurvivesKill(t *testing.T) {
	dsn := freshDB(t, server(t, "COMMITD_PG_DSN1"))
	dir := t.TempDir()
	bin := filepath.Join(dir, "commitd")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/commitd/commitd/cmd/commitd").CombinedOutput(); err != nil {
		t.Fatalf("building commitd: %v\n%s", err, out)
	}
	v := &votes{m: map[protocol.TxnID]protocol.Vote{}}
	coord := nodetest.Listen(t, wire.Hello{Role: wire.RoleCoordinator, Name: []byte("pga")}, v.handle)
	addr := freePort(t)
	var proc *exec.Cmd
	start := func() {
		proc = exec.Command(bin, "participant", "--backend", "postgres", "--dsn", dsn,
			"--name", "pga", "--listen", addr, "--coordinator", coord.Addr(), "--data", filepath.Join(dir, "pga"),
			"--accounts", fmt.Sprint(accounts), "--balance", fmt.Sprint(balance), "--log-level", "error")
		proc.Stderr = os.Stderr
		if err := proc.Start(); err != nil {
			t.Fatal(err)
		}
		coord.Connect(t, addr)
	}
	t.Cleanup(func() {
		if proc != nil {
			proc.Process.Signal(os.Interrupt)
			proc.Wait()
		}
	})
	voteOf := func(id protocol.TxnID, what string) protocol.Vote {
		t.Helper()
		var got protocol.Vote
		nodetest.Eventually(t, what, func() bool {
			var ok bool
			got, ok = v.get(id)
			return ok
		})
		return got
	}
	start()
	prevented := uuid.Must(uuid.NewV7())
	if err := coord.Send(&wire.Resolve{Txn: prevented}); err != nil {
		t.Fatal(err)
	}
	if got := voteOf(prevented, "the answer to the resolve"); got != protocol.VoteNo {
		t.Fatalf("resolve of an unknown transaction: %v, want no (prevented)", got)
	}

	if err := proc.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	proc.Wait()
	v.mu.Lock()
	clear(v.m)
	v.mu.Unlock()
	start()
	work := bank.AppendWork(nil, 1, 5)
	if err := coord.Send(&wire.Prepare{Txn: prevented, Staged: true, Work: work}); err != nil {
		t.Fatal(err)
	}
	if got := voteOf(prevented, "the vote on the late prepare"); got != protocol.VoteNo {
		t.Fatalf("late prepare of a prevented transaction after kill -9: %v, want no", got)
	}
	fresh := uuid.Must(uuid.NewV7())
	if err := coord.Send(&wire.Prepare{Txn: fresh, Staged: true, Work: work}); err != nil {
		t.Fatal(err)
	}
	if got := voteOf(fresh, "the vote on a new prepare"); got != protocol.VoteYes {
		t.Fatalf("prepare of a new transaction: %v, want yes", got)
	}
	if err := coord.Send(&wire.Decision{Txn: fresh, Decision: protocol.DecisionAbort}); err != nil {
		t.Fatal(err)
	}
	d := db{t: t, dsn: dsn}
	deadline := time.Now().Add(10 * time.Second)
	for d.prepared() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the new transaction was not rolled back")
		}
		time.Sleep(10 * time.Millisecond)
	}
	var n int
	if err := d.query(fmt.Sprintf("SELECT count(*) FROM commitd_prevented WHERE txn = '%s'", prevented), &n); err != nil || n != 1 {
		t.Fatalf("commitd_prevented rows for the prevented transaction: %d (%v), want 1", n, err)
	}
	if sum := d.sum(); sum != accounts*balance {
		t.Fatalf("sum %d, want %d", sum, accounts*balance)
	}
}

package cluster_test

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/harness/cluster"
	"github.com/commitd/commitd/protocol"
	"github.com/google/uuid"
)

// TestRestartsUnderLoad restarts the coordinator and each participant (each
// from its own data directory, on the same address) while 50 callers keep
// running transfers. Afterwards: nothing is left prepared, money is
// conserved, every participant's ledger agrees with the others and with
// what each client was told, and the checkpoints let the logs retire.
func TestRestartsUnderLoad(t *testing.T) {
	c, err := cluster.Start(cluster.Options{
		Dir: t.TempDir(), Participants: 3, Accounts: 500, Balance: 100,
		PrepareTimeout: 300 * time.Millisecond, InquireAfter: 100 * time.Millisecond,
		CheckpointEvery: 200, Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := client.Dial(c.CoordinatorAddr, client.Options{Conns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	type told struct {
		outcome  protocol.Outcome
		branches []client.Branch
	}
	var mu sync.Mutex
	results := map[uuid.UUID]told{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var committedDuring atomic.Int64
	for w := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 99))
			for ctx.Err() == nil {
				b := transfer(rng, c.Names, 500)
				id := uuid.Must(uuid.NewV7())
				callCtx, cancelCall := context.WithTimeout(ctx, 5*time.Second)
				res, _ := cl.Run(callCtx, id, b)
				cancelCall()
				if res.Outcome == protocol.OutcomeCommitted {
					committedDuring.Add(1)
				}
				mu.Lock()
				results[id] = told{res.Outcome, b}
				mu.Unlock()
				if res.Outcome == protocol.OutcomeUnknown || res.Outcome == protocol.OutcomeAborted {
					time.Sleep(5 * time.Millisecond) // don't spin while a server is down
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	steps := []func() error{
		c.RestartCoordinator,
		func() error { return c.RestartParticipant(0) },
		func() error { return c.RestartParticipant(1) },
		c.RestartCoordinator,
		func() error { return c.RestartParticipant(2) },
	}
	for i, restart := range steps {
		before := committedDuring.Load()
		if err := restart(); err != nil {
			cancel()
			wg.Wait()
			t.Fatalf("restart %d: %v", i, err)
		}
		// The cluster commits again after each restart.
		deadline := time.Now().Add(10 * time.Second)
		for committedDuring.Load() < before+20 {
			if time.Now().After(deadline) {
				cancel()
				wg.Wait()
				t.Fatalf("no commits within 10s after restart %d", i)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	cancel()
	wg.Wait()

	if err := c.WaitSettled(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if got, want := c.Total(), c.InitialTotal(); got != want {
		t.Fatalf("money not conserved: total %d, want %d", got, want)
	}
	ledgers := make(map[string]map[uuid.UUID]string)
	for i, p := range c.Participants {
		m := map[uuid.UUID]string{}
		for _, o := range p.Outcomes() {
			m[o.Txn] = o.Outcome
		}
		ledgers[c.Names[i]] = m
	}
	counts := map[protocol.Outcome]int{}
	for id, r := range results {
		counts[r.outcome]++
		var seen []string
		for _, b := range r.branches {
			if o, ok := ledgers[b.Participant][id]; ok {
				seen = append(seen, o)
			}
		}
		for _, o := range seen {
			if o != seen[0] {
				t.Fatalf("%v: participants disagree: %v", id, seen)
			}
		}
		if r.outcome == protocol.OutcomeCommitted {
			for _, b := range r.branches {
				if o := ledgers[b.Participant][id]; o != "committed" && !readOnly(b) {
					t.Fatalf("%v: told committed, %s's ledger says %q", id, b.Participant, o)
				}
			}
		}
		if r.outcome == protocol.OutcomeAborted {
			for _, o := range seen {
				if o == "committed" {
					t.Fatalf("%v: told aborted, ledger says %v", id, seen)
				}
			}
		}
	}
	t.Logf("outcomes across 5 restarts: %v", counts)
}

// readOnly reports whether a branch moves no money: such a branch votes
// read-only and never reaches the participant's ledger.
func readOnly(b client.Branch) bool {
	for _, x := range b.Work[4:] {
		if x != 0 {
			return false
		}
	}
	return true
}

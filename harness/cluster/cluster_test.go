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
	"github.com/commitd/commitd/participant"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/protocol"
	"github.com/google/uuid"
)

// transfer builds a random bank transfer over 1 to 3 of the participants:
// one debit and credits that sum to it.
func transfer(rng *rand.Rand, names []string, accounts int) []client.Branch {
	k := 1 + rng.IntN(len(names))
	perm := rng.Perm(len(names))[:k]
	amount := int64(1 + rng.IntN(50))
	branches := make([]client.Branch, k)
	left := amount
	for i, p := range perm {
		var amt int64
		switch {
		case i == 0:
			amt = -amount
		case i == k-1:
			amt = left
		default:
			amt = 1 + rng.Int64N(left)
			if amt >= left {
				amt = left - 1
			}
		}
		if i > 0 {
			left -= amt
		}
		branches[i] = client.Branch{Participant: names[p], Work: bank.AppendWork(nil, uint32(rng.IntN(accounts)), amt)}
	}
	if k == 1 {
		branches[0].Work = bank.AppendWork(nil, uint32(rng.IntN(accounts)), 0) // a read: nothing moves
	}
	return branches
}

// TestEndToEnd runs 20,000 transfers at 100 concurrent callers across 3
// participants over real TCP and real logs, then checks conservation and
// that every participant's ledger agrees with every other and with what
// the clients were told.
func TestEndToEnd(t *testing.T) {
	total := 20000
	if testing.Short() {
		total = 2000
	}
	c, err := cluster.Start(cluster.Options{Dir: t.TempDir(), Participants: 3, Accounts: 200, Balance: 100})
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
	results := make(map[uuid.UUID]told, total)
	causes := map[string]int{}
	var next atomic.Int64
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for w := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for next.Add(1) <= int64(total) {
				b := transfer(rng, c.Names, 200)
				id := uuid.Must(uuid.NewV7())
				res, err := cl.Run(ctx, id, b)
				if err != nil {
					t.Errorf("run %v: %v", id, err)
					return
				}
				mu.Lock()
				results[id] = told{res.Outcome, b}
				causes[res.Cause.String()]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	counts := map[protocol.Outcome]int{}
	for _, r := range results {
		counts[r.outcome]++
	}
	t.Logf("outcomes: %v, abort causes: %v", counts, causes)
	if counts[protocol.OutcomeCommitted] < total/2 {
		t.Errorf("only %d of %d committed", counts[protocol.OutcomeCommitted], total)
	}
	if counts[protocol.OutcomeUnknown] != 0 || counts[protocol.OutcomeRejected] != 0 {
		t.Errorf("unexpected outcomes without faults: %v", counts)
	}

	// Wait until no participant holds anything prepared.
	if err := c.WaitSettled(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if got, want := c.Total(), c.InitialTotal(); got != want {
		t.Errorf("money not conserved: total %d, want %d", got, want)
	}
	// Read the ledgers over the admin interface, as an operator would.
	ledgers := make([]map[uuid.UUID]string, len(c.Participants))
	for i, addr := range c.Addrs {
		var outs []participant.Outcome
		if err := client.Admin(ctx, addr, "outcomes", nil, &outs); err != nil {
			t.Fatal(err)
		}
		ledgers[i] = make(map[uuid.UUID]string, len(outs))
		for _, o := range outs {
			ledgers[i][o.Txn] = o.Outcome
		}
	}
	index := map[string]int{}
	for i, n := range c.Names {
		index[n] = i
	}
	for id, r := range results {
		var seen []string
		for _, b := range r.branches {
			if o, ok := ledgers[index[b.Participant]][id]; ok {
				seen = append(seen, o)
			}
		}
		for _, o := range seen {
			if o != seen[0] {
				t.Fatalf("%v: participants disagree: %v", id, seen)
			}
			if o == "prepared" {
				t.Fatalf("%v: still prepared", id)
			}
		}
		switch r.outcome {
		case protocol.OutcomeCommitted:
			for _, o := range seen {
				if o != "committed" {
					t.Fatalf("%v: told committed, ledger says %v", id, seen)
				}
			}
		case protocol.OutcomeAborted:
			for _, o := range seen {
				if o == "committed" {
					t.Fatalf("%v: told aborted, ledger says %v", id, seen)
				}
			}
		}
	}
}

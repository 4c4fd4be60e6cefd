package bench

import (
	"math/rand/v2"
	"testing"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/participant/statements"
)

// Every transfer must conserve money and name distinct participants, or
// the benchmark's conservation check would blame the system for the
// workload's mistake.
func TestWorkloadTransfersConserveMoney(t *testing.T) {
	names := []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"}
	for _, w := range []Workload{
		{Names: names[:2], Accounts: 10, PerTxn: 2},
		{Names: names, Accounts: 1000, PerTxn: 10, ReadOnly: 0.5},
		{Names: names[:3], Accounts: 5, PerTxn: 3, HotAccounts: 0.2, MaxAmount: 1000},
		{Names: names[:4], Accounts: 100, PerTxn: 1},
	} {
		rng := rand.New(rand.NewPCG(1, 2))
		var branches = w.Next(rng, nil)
		var reads, mayRead int // zero branches, and branches that may be zero
		for range 5000 {
			branches = w.Next(rng, branches)
			want := min(max(w.PerTxn, 1), len(w.Names))
			if len(branches) != want {
				t.Fatalf("%+v: %d branches, want %d", w, len(branches), want)
			}
			seen := map[string]bool{}
			var sum int64
			for _, b := range branches {
				if seen[b.Participant] {
					t.Fatalf("%+v: participant %s twice", w, b.Participant)
				}
				seen[b.Participant] = true
				acct, amt, ok := bank.DecodeWork(b.Work)
				if !ok || int(acct) >= w.Accounts {
					t.Fatalf("%+v: bad work %x", w, b.Work)
				}
				if w.HotAccounts > 0 && int(acct) >= max(1, int(float64(w.Accounts)*w.HotAccounts)) {
					t.Fatalf("%+v: account %d outside the hot set", w, acct)
				}
				sum += amt
			}
			if sum != 0 {
				t.Fatalf("%+v: transfer sums to %d: %v", w, sum, branches)
			}
			if len(branches) < 2 {
				continue
			}
			// Only the branches between the debit and the last credit may
			// read; with ReadOnly 0 every branch writes, so that "k
			// participants per transaction" means k forced prepares.
			for i, b := range branches {
				_, amt, _ := bank.DecodeWork(b.Work)
				inner := i > 0 && i < len(branches)-1
				if amt == 0 && (!inner || w.ReadOnly == 0) {
					t.Fatalf("%+v: branch %d of %v moves nothing", w, i, branches)
				}
				if inner {
					mayRead++
					if amt == 0 {
						reads++
					}
				}
			}
		}
		if w.ReadOnly > 0 {
			if got := float64(reads) / float64(mayRead); got < w.ReadOnly-0.05 || got > w.ReadOnly+0.05 {
				t.Errorf("%+v: %.3f of the inner branches read only, want about %.2f", w, got, w.ReadOnly)
			}
		}
	}
}

// BenchmarkWorkloadNext is the cost of making one two-branch transfer.
func BenchmarkWorkloadNext(b *testing.B) {
	w := Workload{Names: []string{"p1", "p2"}, Accounts: 100_000, PerTxn: 2}
	rng := rand.New(rand.NewPCG(1, 2))
	branches := w.Next(rng, nil)
	for b.Loop() {
		branches = w.Next(rng, branches)
	}
}

// TestWorkloadStatement: with Statement set, every branch is a statement
// work naming it with (amount, account), and the amounts still sum to
// zero.
func TestWorkloadStatement(t *testing.T) {
	w := Workload{Names: []string{"a", "b", "c"}, Accounts: 50, PerTxn: 3, Statement: "transfer"}
	if err := w.CheckStatement(); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var br []client.Branch
	for range 1000 {
		br = w.Next(rng, br)
		sum := int64(0)
		for _, b := range br {
			name, args, err := statements.DecodeWork(b.Work)
			if err != nil || name != "transfer" || len(args) != 2 || args[1].Int < 0 || args[1].Int >= 50 {
				t.Fatalf("bad work %x: %q %+v %v", b.Work, name, args, err)
			}
			sum += args[0].Int
		}
		if sum != 0 {
			t.Fatalf("amounts sum to %d", sum)
		}
	}
	if err := (&Workload{Statement: "no spaces"}).CheckStatement(); err == nil {
		t.Fatal("a bad statement name was accepted")
	}
}

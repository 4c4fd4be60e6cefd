package bench

import (
	"math/rand/v2"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/participant/bank"
)

// Workload makes bank transfers: each one debits one account at one
// participant and credits accounts at the others with amounts that sum to
// the debit, so the total across all participants never changes.
type Workload struct {
	Names    []string // participant names
	Accounts int      // accounts per participant
	// PerTxn is the number of participants per transaction (1 to 10,
	// default 2; capped at len(Names)).
	PerTxn int
	// HotAccounts, in (0, 1], confines that fraction of each participant's
	// accounts to carry all traffic (contention); 0 spreads it over all.
	HotAccounts float64
	// ReadOnly is the fraction of branches that only read (amount 0) — a
	// read-only vote that skips phase two. The debit is never read-only.
	ReadOnly float64
	// MaxAmount bounds a debit (default 10).
	MaxAmount int64
}

// perTxn is the number of branches each transaction has.
func (w *Workload) perTxn() int {
	if w.PerTxn == 0 {
		return min(2, len(w.Names))
	}
	return min(max(w.PerTxn, 1), len(w.Names), 10)
}

// Next fills dst (reusing its memory) with the branches of one transfer.
func (w *Workload) Next(rng *rand.Rand, dst []client.Branch) []client.Branch {
	k := w.perTxn()
	maxAmt := w.MaxAmount
	if maxAmt <= 0 {
		maxAmt = 10
	}
	hot := w.Accounts
	if w.HotAccounts > 0 && w.HotAccounts < 1 {
		hot = max(1, int(float64(w.Accounts)*w.HotAccounts))
	}
	dst = dst[:0]
	// Choose k distinct participants: a partial Fisher-Yates over indexes.
	var idx [64]int
	n := len(w.Names)
	var order []int
	if n <= len(idx) {
		order = idx[:n]
	} else {
		order = make([]int, n)
	}
	for i := range order {
		order[i] = i
	}
	for i := 0; i < k; i++ {
		j := i + rng.IntN(n-i)
		order[i], order[j] = order[j], order[i]
	}
	amount := 1 + rng.Int64N(maxAmt)
	if k == 1 {
		// One participant: a transfer between two accounts is not expressible
		// in one branch of the bank's work, so a single-branch transaction
		// moves nothing (a read, or a deposit and withdrawal of zero).
		amount = 0
	}
	left := amount
	// Credits go to the branches that are not read-only; at least the last
	// non-debit branch is a credit.
	for i := 0; i < k; i++ {
		var amt int64
		switch {
		case i == 0:
			amt = -amount
		case i == k-1:
			amt = left
		case w.ReadOnly > 0 && rng.Float64() < w.ReadOnly:
			amt = 0
		default:
			amt = rng.Int64N(left + 1)
		}
		if i > 0 {
			left -= amt
		}
		slot := len(dst)
		if slot < cap(dst) {
			dst = dst[:slot+1]
		} else {
			dst = append(dst, client.Branch{})
		}
		b := &dst[slot]
		b.Participant = w.Names[order[i]]
		b.Work = bank.AppendWork(b.Work[:0], uint32(rng.IntN(hot)), amt)
	}
	return dst
}

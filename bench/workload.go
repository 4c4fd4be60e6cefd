package bench

import (
	"math/rand/v2"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/participant/statements"
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
	// ReadOnly is the fraction of the credit branches that only read
	// (amount 0) — a read-only vote that skips phase two. The debit and the
	// last credit always write; with ReadOnly 0 every branch does.
	ReadOnly float64
	// MaxAmount bounds a debit (default 10).
	MaxAmount int64
	// Statement, if set, names an operator's statement (participant
	// /statements) that each branch runs instead of the bank's work, with
	// two int arguments: the amount, then the account. The participants
	// must be database backends started with a --statements file that
	// defines it (participant/mysql/testdata/bank.statements).
	Statement string
}

// CheckStatement reports whether Statement, if set, can name a statement.
func (w *Workload) CheckStatement() error {
	if w.Statement == "" {
		return nil
	}
	_, err := statements.AppendWork(nil, w.Statement, statements.IntArg(0), statements.IntArg(0))
	return err
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
	// Which branches only read: the debit never, the last branch never
	// (something must receive the money), each other one with probability
	// ReadOnly. Every other branch is a credit of at least 1, so with
	// ReadOnly 0 all k participants write — a zero credit would be a
	// read-only vote, which skips the forced prepare and phase two and
	// would make a "k participants" run cheaper than it says.
	var readOnly [10]bool
	credits := int64(0)
	for i := 1; i < k; i++ {
		readOnly[i] = i < k-1 && w.ReadOnly > 0 && rng.Float64() < w.ReadOnly
		if !readOnly[i] {
			credits++
		}
	}
	// The debit is 1..maxAmt, raised to one unit per credit; the credits
	// share it: one unit each, the rest spread at random.
	amount := max(1+rng.Int64N(maxAmt), credits)
	if k == 1 {
		// One participant: a transfer between two accounts is not expressible
		// in one branch of the bank's work, so a single-branch transaction
		// moves nothing (a read, or a deposit and withdrawal of zero).
		amount = 0
	}
	spare := amount - credits // shared out beyond the one unit per credit
	for i := 0; i < k; i++ {
		var amt int64
		switch {
		case i == 0:
			amt = -amount
		case readOnly[i]:
			amt = 0
		case i == k-1:
			amt = 1 + spare
		default:
			extra := rng.Int64N(spare + 1)
			spare -= extra
			amt = 1 + extra
		}
		slot := len(dst)
		if slot < cap(dst) {
			dst = dst[:slot+1]
		} else {
			dst = append(dst, client.Branch{})
		}
		b := &dst[slot]
		b.Participant = w.Names[order[i]]
		acct := uint32(rng.IntN(hot))
		if w.Statement != "" {
			// The name is checked when the workload is built (CheckStatement).
			b.Work, _ = statements.AppendWork(b.Work[:0], w.Statement, statements.IntArg(amt), statements.IntArg(int64(acct)))
			continue
		}
		b.Work = bank.AppendWork(b.Work[:0], acct, amt)
	}
	return dst
}

package participant

import (
	"slices"
	"testing"

	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/protocol"
)

// hiddenLister is a bank that does not show AppendPrepared, so guarded
// keeps its own set of prepared transactions.
type hiddenLister struct{ *bank.Bank }

func (h hiddenLister) AppendPrepared() {} // another signature: not a preparedLister

// A bank lists its prepared transactions itself, and guarded's listing
// from it is the one its own set gives: after yes, no and read-only
// votes, a restore, a commit, an abort and a load.
func TestGuardedPreparedFromLister(t *testing.T) {
	b1, b2 := bank.New(8, 100), bank.New(8, 100)
	withList, withSet := newGuarded(b1), newGuarded(hiddenLister{b2})
	if withList.lister == nil || withSet.lister != nil {
		t.Fatalf("lister: bank %v, hidden %v", withList.lister != nil, withSet.lister != nil)
	}
	id := func(n byte) protocol.TxnID { return protocol.TxnID{15: n} }
	check := func(when string, want ...protocol.TxnID) {
		t.Helper()
		for _, g := range []*guarded{withList, withSet} {
			_, _, got := g.summary()
			slices.SortFunc(got, func(a, b protocol.TxnID) int { return slices.Compare(a[:], b[:]) })
			if !slices.Equal(got, want) {
				t.Fatalf("%s (lister %v): prepared %v, want %v", when, g.lister != nil, got, want)
			}
		}
	}
	both := func(f func(g *guarded)) { f(withList); f(withSet) }
	both(func(g *guarded) {
		if v := g.Prepare(id(1), bank.AppendWork(nil, 0, -10)); v != protocol.VoteYes {
			t.Fatalf("prepare 1: %v", v)
		}
		if v := g.Prepare(id(2), bank.AppendWork(nil, 0, 5)); v != protocol.VoteNo { // account 0 is locked
			t.Fatalf("prepare 2: %v", v)
		}
		if v := g.Prepare(id(3), bank.AppendWork(nil, 1, 0)); v != protocol.VoteReadOnly {
			t.Fatalf("prepare 3: %v", v)
		}
		g.Prepare(id(4), bank.AppendWork(nil, 2, 7))
		g.Restore(id(5), bank.AppendWork(nil, 3, 1))
	})
	check("after the votes and a restore", id(1), id(4), id(5))
	both(func(g *guarded) { g.Commit(id(1)); g.Abort(id(5)); g.Abort(id(9)) })
	check("after a commit and aborts", id(4))
	snap := b1.Snapshot(nil)
	both(func(g *guarded) {
		if err := g.Load(snap); err != nil {
			t.Fatal(err)
		}
	})
	check("after a load")
}

package bank

import (
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/commitd/commitd/protocol"
)

func tx(n byte) protocol.TxnID { return protocol.TxnID{15: n} }

func TestWorkCodec(t *testing.T) {
	w := AppendWork([]byte("x"), 7, -42)
	if len(w) != 1+WorkLen {
		t.Fatalf("len %d", len(w))
	}
	a, amt, ok := DecodeWork(w[1:])
	if !ok || a != 7 || amt != -42 {
		t.Fatalf("decoded %d %d %v", a, amt, ok)
	}
	for _, bad := range [][]byte{nil, w[1:12], append(w[1:], 0)} {
		if _, _, ok := DecodeWork(bad); ok {
			t.Fatalf("decoded %d bytes", len(bad))
		}
	}
}

// TestPrepare is a table of prepares against one bank, in order: each
// step's vote and the state it leaves.
func TestPrepare(t *testing.T) {
	b := New(3, 100)
	steps := []struct {
		name    string
		txn     byte
		work    []byte
		want    protocol.Vote
		locked  int
		balance int64 // of account 0 after the step
	}{
		{"malformed work", 1, []byte{1, 2, 3}, protocol.VoteNo, 0, 100},
		{"unknown account", 1, AppendWork(nil, 3, 5), protocol.VoteNo, 0, 100},
		{"read", 1, AppendWork(nil, 0, 0), protocol.VoteReadOnly, 0, 100},
		{"overdraft", 1, AppendWork(nil, 0, -101), protocol.VoteNo, 0, 100},
		{"overflow", 1, AppendWork(nil, 0, 1<<63-50), protocol.VoteNo, 0, 100},
		{"debit to zero", 1, AppendWork(nil, 0, -100), protocol.VoteYes, 1, 100},
		{"lock conflict", 2, AppendWork(nil, 0, 10), protocol.VoteNo, 1, 100},
		{"read of locked account", 2, AppendWork(nil, 0, 0), protocol.VoteReadOnly, 1, 100},
		{"same txn twice", 1, AppendWork(nil, 1, 10), protocol.VoteNo, 1, 100},
		{"other account", 3, AppendWork(nil, 1, 10), protocol.VoteYes, 2, 100},
	}
	for _, s := range steps {
		if got := b.Prepare(tx(s.txn), s.work); got != s.want {
			t.Fatalf("%s: vote %v, want %v", s.name, got, s.want)
		}
		if b.Locked() != s.locked || b.Balance(0) != s.balance {
			t.Fatalf("%s: locked %d balance %d", s.name, b.Locked(), b.Balance(0))
		}
	}
	b.Commit(tx(1))
	b.Abort(tx(3))
	b.Abort(tx(9)) // holds nothing: no-op
	if b.Balance(0) != 0 || b.Balance(1) != 100 || b.Locked() != 0 || b.Total() != 200 {
		t.Fatalf("after decisions: %d %d locked %d total %d", b.Balance(0), b.Balance(1), b.Locked(), b.Total())
	}
	// The lock is free again.
	if v := b.Prepare(tx(2), AppendWork(nil, 0, 10)); v != protocol.VoteYes {
		t.Fatalf("after unlock: %v", v)
	}
}

func TestCommitUnknownPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	New(1, 1).Commit(tx(1))
}

func TestSnapshotRestore(t *testing.T) {
	b := New(4, 50)
	if b.Prepare(tx(1), AppendWork(nil, 2, -20)) != protocol.VoteYes {
		t.Fatal("prepare")
	}
	b.Commit(tx(1))
	if b.Prepare(tx(2), AppendWork(nil, 3, 5)) != protocol.VoteYes {
		t.Fatal("prepare")
	}
	snap := b.Snapshot([]byte("hdr"))[3:]

	c := New(1, 999)
	if err := c.Load(snap); err != nil {
		t.Fatal(err)
	}
	// Holds are not in a snapshot.
	if c.Accounts() != 4 || c.Balance(2) != 30 || c.Balance(3) != 50 || c.Locked() != 0 || c.Total() != 180 {
		t.Fatalf("loaded: %d accounts, %d %d locked %d total %d", c.Accounts(), c.Balance(2), c.Balance(3), c.Locked(), c.Total())
	}
	// Restore re-establishes a hold without checks and it commits as usual.
	c.Restore(tx(2), AppendWork(nil, 3, 5))
	if c.Locked() != 1 || c.Prepare(tx(5), AppendWork(nil, 3, 1)) != protocol.VoteNo {
		t.Fatal("restored hold does not lock")
	}
	c.Commit(tx(2))
	if c.Balance(3) != 55 || c.Total() != 185 {
		t.Fatalf("after commit %d", c.Balance(3))
	}

	for name, bad := range map[string][]byte{
		"short":    {1, 0},
		"count":    {2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0},
		"negative": {1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
	} {
		if err := New(1, 1).Load(bad); !errors.Is(err, ErrBadSnapshot) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestRestoreConflictPanics(t *testing.T) {
	b := New(1, 10)
	b.Restore(tx(1), AppendWork(nil, 0, 1))
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	b.Restore(tx(2), AppendWork(nil, 0, 1))
}

// BenchmarkPrepareCommit is one branch's work at a bank of 100,000
// accounts: prepare (lock) and commit (apply, unlock) of a random account,
// with 1,000 other transactions holding locks, as under load.
func BenchmarkPrepareCommit(b *testing.B) {
	const accounts, held = 100_000, 1_000
	bk := New(accounts, 1_000_000)
	rng := rand.New(rand.NewPCG(1, 2))
	var work []byte
	for i := range held {
		work = AppendWork(work[:0], uint32(rng.IntN(accounts)), 1)
		bk.Prepare(protocol.TxnID{byte(i), byte(i >> 8), 1}, work)
	}
	works := make([][]byte, 1<<16)
	for i := range works {
		works[i] = AppendWork(nil, uint32(rng.IntN(accounts)), int64(rng.IntN(21)-10)|1)
	}
	var id protocol.TxnID
	i := 0
	for b.Loop() {
		id[15]++
		if id[15] == 0 {
			id[14]++
		}
		if bk.Prepare(id, works[i&(len(works)-1)]) == protocol.VoteYes {
			bk.Commit(id)
		}
		i++
	}
}

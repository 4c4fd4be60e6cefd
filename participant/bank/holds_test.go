package bank

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/commitd/commitd/protocol"
)

// mapBank is the bank as it was before holdTable (main at 43fbf42): the
// holds in a Go map, probed twice at prepare and twice at commit. It is
// the reference the equivalence test compares Bank with, and the "before"
// of BenchmarkHolds.
type mapBank struct {
	balances []int64
	locked   []uint64
	holds    map[protocol.TxnID]hold
	total    int64
}

func newMapBank(accounts int, balance int64) *mapBank {
	b := &mapBank{holds: make(map[protocol.TxnID]hold)}
	b.reset(accounts)
	for i := range b.balances {
		b.balances[i] = balance
	}
	b.total = int64(accounts) * balance
	return b
}

func (b *mapBank) reset(accounts int) {
	b.balances = make([]int64, accounts)
	b.locked = make([]uint64, (accounts+63)/64)
	clear(b.holds)
	b.total = 0
}

func (b *mapBank) Prepare(txn protocol.TxnID, work []byte) protocol.Vote {
	acct, amount, ok := DecodeWork(work)
	if !ok || int64(acct) >= int64(len(b.balances)) {
		return protocol.VoteNo
	}
	if amount == 0 {
		return protocol.VoteReadOnly
	}
	if _, dup := b.holds[txn]; dup {
		return protocol.VoteNo
	}
	if b.isLocked(acct) {
		return protocol.VoteNo
	}
	if nb := b.balances[acct] + amount; nb < 0 || (amount > 0) != (nb > b.balances[acct]) {
		return protocol.VoteNo
	}
	b.lock(txn, acct, amount)
	return protocol.VoteYes
}

func (b *mapBank) lock(txn protocol.TxnID, acct uint32, amount int64) {
	b.locked[acct/64] |= 1 << (acct % 64)
	b.holds[txn] = hold{account: acct, amount: amount}
}

func (b *mapBank) Commit(txn protocol.TxnID) {
	h, ok := b.holds[txn]
	if !ok {
		panic(fmt.Sprintf("bank: commit of %v, which holds nothing", txn))
	}
	b.balances[h.account] += h.amount
	b.total += h.amount
	b.unlock(txn, h)
}

func (b *mapBank) Abort(txn protocol.TxnID) {
	if h, ok := b.holds[txn]; ok {
		b.unlock(txn, h)
	}
}

func (b *mapBank) isLocked(acct uint32) bool { return b.locked[acct/64]&(1<<(acct%64)) != 0 }

func (b *mapBank) unlock(txn protocol.TxnID, h hold) {
	b.locked[h.account/64] &^= 1 << (h.account % 64)
	delete(b.holds, txn)
}

func (b *mapBank) Restore(txn protocol.TxnID, work []byte) {
	acct, amount, ok := DecodeWork(work)
	if !ok || int64(acct) >= int64(len(b.balances)) || amount == 0 {
		panic(fmt.Sprintf("bank: restore of %v with work %x", txn, work))
	}
	if _, dup := b.holds[txn]; dup || b.isLocked(acct) {
		panic(fmt.Sprintf("bank: restore of %v: account %d already locked", txn, acct))
	}
	b.lock(txn, acct, amount)
}

func (b *mapBank) AppendPrepared(dst []protocol.TxnID) []protocol.TxnID {
	for id := range b.holds {
		dst = append(dst, id)
	}
	return dst
}

// panicOf runs f and returns what it panicked with, or nil.
func panicOf(f func()) (p any) {
	defer func() { p = recover() }()
	f()
	return nil
}

// TestBankMatchesMapBank drives Bank and mapBank with the same random
// prepares, commits, aborts, restores, snapshots and loads — few accounts
// and few ids, so that duplicates, locked accounts, overdrafts, commits of
// nothing and restore conflicts are frequent, and enough live holds that
// the table grows, wraps around and shifts entries back on delete — and
// checks after every step that both answer, panic and hold the same.
func TestBankMatchesMapBank(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 99))
		accounts := 1 + rng.IntN(300)
		ids := 1 + rng.IntN(600)
		b, m := New(accounts, 50), newMapBank(accounts, 50)
		id := func() protocol.TxnID {
			var x protocol.TxnID
			n := uint64(rng.IntN(ids))
			if seed%2 == 0 {
				x[15] = byte(n) // ids differing in few bytes, as the tests' ids
				x[14] = byte(n >> 8)
			} else {
				binary.LittleEndian.PutUint64(x[8:], n*0x9E3779B97F4A7C15)
			}
			return x
		}
		work := func() []byte {
			switch rng.IntN(20) {
			case 0:
				return []byte{1, 2, 3} // malformed
			case 1:
				return AppendWork(nil, uint32(accounts+rng.IntN(3)), 1) // no such account
			case 2:
				return AppendWork(nil, uint32(rng.IntN(accounts)), 0) // read-only
			}
			return AppendWork(nil, uint32(rng.IntN(accounts)), int64(rng.IntN(81)-40))
		}
		for step := range 20_000 {
			where := func() string { return fmt.Sprintf("seed %d step %d", seed, step) }
			switch op := rng.IntN(100); {
			case op < 45:
				x, w := id(), work()
				if vb, vm := b.Prepare(x, w), m.Prepare(x, w); vb != vm {
					t.Fatalf("%s: prepare %x: %v, map bank %v", where(), w, vb, vm)
				}
			case op < 75:
				x := id()
				pb, pm := panicOf(func() { b.Commit(x) }), panicOf(func() { m.Commit(x) })
				if fmt.Sprint(pb) != fmt.Sprint(pm) {
					t.Fatalf("%s: commit panics %v, map bank %v", where(), pb, pm)
				}
			case op < 95:
				x := id()
				b.Abort(x)
				m.Abort(x)
			case op < 99:
				x, w := id(), work()
				pb, pm := panicOf(func() { b.Restore(x, w) }), panicOf(func() { m.Restore(x, w) })
				if fmt.Sprint(pb) != fmt.Sprint(pm) {
					t.Fatalf("%s: restore panics %v, map bank %v", where(), pb, pm)
				}
			default:
				if slices.ContainsFunc(b.balances, func(v int64) bool { return v < 0 }) {
					break // a restore (unchecked) overdrew: Load refuses such a snapshot
				}
				snap := b.Snapshot(nil)
				if err := b.Load(snap); err != nil {
					t.Fatal(err)
				}
				m.reset(accounts)
				for i := range m.balances {
					m.balances[i] = b.balances[i]
					m.total += b.balances[i]
				}
			}
			if b.Locked() != len(m.holds) || b.Total() != m.total || !slices.Equal(b.balances, m.balances) ||
				!slices.Equal(b.locked, m.locked) {
				t.Fatalf("%s: locked %d total %d, map bank %d %d (or balances, lock bits differ)",
					where(), b.Locked(), b.Total(), len(m.holds), m.total)
			}
			if step%97 == 0 {
				checkHolds(t, &b.holds)
				got, want := b.AppendPrepared(nil), m.AppendPrepared(nil)
				cmp := func(a, b protocol.TxnID) int { return slices.Compare(a[:], b[:]) }
				slices.SortFunc(got, cmp)
				slices.SortFunc(want, cmp)
				if !slices.Equal(got, want) {
					t.Fatalf("%s: prepared %d ids, map bank %d", where(), len(got), len(want))
				}
				for _, x := range got {
					mh := m.holds[x]
					mh.after = m.balances[mh.account] + mh.amount // the map bank has no after
					if b.holdOf(x) != mh {
						t.Fatalf("%s: %x holds %+v, map bank %+v", where(), x, b.holdOf(x), mh)
					}
				}
			}
		}
	}
}

// holdOf looks txn's hold up without changing the table.
func (b *Bank) holdOf(txn protocol.TxnID) hold {
	t := &b.holds
	if len(t.slots) == 0 {
		return hold{}
	}
	mask := len(t.slots) - 1
	for i := int(t.hash(&txn)) & mask; t.slots[i].amount != 0; i = (i + 1) & mask {
		if t.slots[i].id == txn {
			return hold{account: t.slots[i].account, amount: t.slots[i].amount, after: t.slots[i].after}
		}
	}
	return hold{}
}

// checkHolds checks the table's invariants: n counts the used slots, the
// table is at most half full, every entry's home is its hash, and every
// entry is reachable from its home without crossing a free slot.
func checkHolds(t *testing.T, h *holdTable) {
	t.Helper()
	used := 0
	mask := len(h.slots) - 1
	for i := range h.slots {
		s := &h.slots[i]
		if s.amount == 0 {
			if *s != (holdSlot{}) {
				t.Fatalf("free slot %d not zeroed: %+v", i, *s)
			}
			continue
		}
		used++
		if s.home != h.hash(&s.id) {
			t.Fatalf("slot %d: home %#x, hash %#x", i, s.home, h.hash(&s.id))
		}
		for j := int(s.home) & mask; j != i; j = (j + 1) & mask {
			if h.slots[j].amount == 0 {
				t.Fatalf("slot %d (home %d) is behind free slot %d", i, int(s.home)&mask, j)
			}
		}
	}
	if used != h.n || 2*used > len(h.slots) {
		t.Fatalf("%d used, n %d, %d slots", used, h.n, len(h.slots))
	}
}

// TestHoldTableMatchesMap drives the table alone against a map with many
// more live ids (several growths) and removals in random order.
func TestHoldTableMatchesMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	h := newHoldTable()
	m := make(map[protocol.TxnID]hold)
	var live []protocol.TxnID
	for step := range 200_000 {
		if len(live) == 0 || rng.IntN(100) < 52 && len(live) < 5_000 {
			var x protocol.TxnID
			binary.LittleEndian.PutUint64(x[:], rng.Uint64())
			binary.LittleEndian.PutUint64(x[8:], rng.Uint64()&0xff) // few random bits
			slot, hh, found := h.find(&x)
			if _, ok := m[x]; ok != found {
				t.Fatalf("step %d: find %v, map %v", step, found, ok)
			}
			if !found {
				v := hold{account: uint32(step), amount: int64(step%7) + 1, after: int64(step)}
				h.put(slot, hh, &x, v)
				m[x] = v
				live = append(live, x)
			}
		} else {
			k := rng.IntN(len(live))
			x := live[k]
			live[k] = live[len(live)-1]
			live = live[:len(live)-1]
			got, ok := h.take(&x)
			if want := m[x]; !ok || got != want {
				t.Fatalf("step %d: take %+v %v, map %+v", step, got, ok, want)
			}
			delete(m, x)
			if _, ok := h.take(&x); ok {
				t.Fatalf("step %d: taken twice", step)
			}
		}
		if step%1009 == 0 {
			checkHolds(t, &h)
		}
	}
	checkHolds(t, &h)
	if h.n != len(m) {
		t.Fatalf("n %d, map %d", h.n, len(m))
	}
}

func TestHoldsAllocationFree(t *testing.T) {
	b := New(1000, 100)
	work := AppendWork(nil, 3, 1)
	b.Prepare(protocol.TxnID{1}, work) // the first table
	b.Commit(protocol.TxnID{1})
	var id protocol.TxnID
	allocs := testing.AllocsPerRun(1000, func() {
		id[0]++
		if b.Prepare(id, work) != protocol.VoteYes {
			t.Fatal("not yes")
		}
		b.Commit(id)
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per prepare and commit", allocs)
	}
}

// pollute is memory BenchmarkHolds reads to evict the bank's lines.
var pollute []uint64

// holdsBank is what BenchmarkHolds drives.
type holdsBank interface {
	Prepare(protocol.TxnID, []byte) protocol.Vote
	Commit(protocol.TxnID)
}

// BenchmarkHolds is one branch's prepare and, inFlight transactions later,
// its commit, at a bank of 100,000 accounts with UUIDv7-like random ids:
// the pattern of a participant at 1,000 callers (about 1,000 holds live,
// one per caller), with three random reads of 16 MiB per call standing for
// the rest of the participant, which evicts the bank's lines (without
// them the bank's memory stays in cache and the benchmark measures what
// the participant never sees). "map" is the bank before holdTable
// (mapBank), "table" the bank. Both pay the same three reads.
func BenchmarkHolds(b *testing.B) {
	const accounts, inFlight = 100_000, 1024
	if pollute == nil {
		pollute = make([]uint64, 2<<20)
		for i := range pollute {
			pollute[i] = uint64(i)
		}
	}
	for _, impl := range []string{"map", "table"} {
		b.Run(impl, func(b *testing.B) {
			var bk holdsBank = New(accounts, 1<<40)
			if impl == "map" {
				bk = newMapBank(accounts, 1<<40)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			works := make([][]byte, 1<<16)
			for i := range works {
				works[i] = AppendWork(nil, uint32(rng.IntN(accounts)), int64(rng.IntN(21)-10)|1)
			}
			ids := make([]protocol.TxnID, 1<<16)
			for i := range ids {
				binary.BigEndian.PutUint64(ids[i][:], uint64(i)<<16|0x7000) // time, version
				binary.LittleEndian.PutUint64(ids[i][8:], rng.Uint64())
			}
			var ring [inFlight]protocol.TxnID
			var yes [inFlight]bool
			i := 0
			var sink uint64
			for b.Loop() {
				// The rest of a participant (its maps of 100,000s of
				// remembered ids) evicts the bank's lines between two
				// calls: touch 3 random lines of 16 MiB.
				for range 3 {
					sink += pollute[rng.Uint64()&(uint64(len(pollute))-1)&^7]
				}
				k := i % inFlight
				if yes[k] {
					bk.Commit(ring[k])
				}
				ring[k] = ids[i&(len(ids)-1)]
				yes[k] = bk.Prepare(ring[k], works[i&(len(works)-1)]) == protocol.VoteYes
				i++
			}
			if sink == 1 {
				b.Log(sink)
			}
			for k := range ring {
				if yes[k] {
					bk.Commit(ring[k])
					yes[k] = false
				}
			}
		})
	}
}

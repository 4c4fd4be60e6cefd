package engine

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/commitd/commitd/protocol"
)

// mapTable is the transactions in flight as they were before txnTable: a
// Go map. It is the reference the equivalence tests hold txnTable to, and
// the "before" of BenchmarkTxnTable.
type mapTable[T any] struct{ m map[protocol.TxnID]*T }

func newMapTable[T any]() mapTable[T] { return mapTable[T]{m: make(map[protocol.TxnID]*T)} }

func (mt *mapTable[T]) get(id protocol.TxnID) *T        { return mt.m[id] }
func (mt *mapTable[T]) put(id protocol.TxnID, t *T)     { mt.m[id] = t }
func (mt *mapTable[T]) remove(id protocol.TxnID)        { delete(mt.m, id) }
func (mt *mapTable[T]) len() int                        { return len(mt.m) }
func (mt *mapTable[T]) clear()                          { clear(mt.m) }
func (mt *mapTable[T]) contents() map[protocol.TxnID]*T { return mt.m }

// inFlightSet is what the tests and BenchmarkTxnTable drive: txnTable or
// mapTable.
type inFlightSet[T any] interface {
	get(protocol.TxnID) *T
	put(protocol.TxnID, *T)
	remove(protocol.TxnID)
	len() int
}

// contents copies what txnTable.all yields into a map, failing on an id
// yielded twice.
func tableContents[T any](t *testing.T, tb *txnTable[T]) map[protocol.TxnID]*T {
	t.Helper()
	got := make(map[protocol.TxnID]*T)
	for id, v := range tb.all() {
		if _, dup := got[id]; dup {
			t.Fatalf("all yields %v twice", id)
		}
		got[id] = v
	}
	return got
}

// TestTxnTableMatchesMap: random puts (new ids and replacements), gets,
// removals (of ids held and not), iterations and clears give the same
// answers as a Go map, with pools of ids small enough that most
// operations hit and large enough that the index grows, and with ids
// picked so that their tags want a few neighbouring slots — long runs that
// wrap around the end of the index, where removal's backward shift has the
// most to do.
func TestTxnTableMatchesMap(t *testing.T) {
	for _, c := range []struct {
		pool      int
		clustered bool
	}{{4, false}, {40, false}, {3000, false}, {12, true}, {300, true}} {
		for seed := range uint64(8) {
			t.Run(fmt.Sprintf("pool%d/clustered=%v/seed%d", c.pool, c.clustered, seed), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(seed, uint64(c.pool)))
				got := newTxnTable[int]()
				want := newMapTable[int]()
				pool := make([]protocol.TxnID, 0, c.pool)
				for len(pool) < c.pool {
					var id protocol.TxnID
					binary.BigEndian.PutUint64(id[:8], rng.Uint64())
					binary.BigEndian.PutUint64(id[8:], rng.Uint64())
					// The low 10 bits of the tag pick the slot wanted in
					// any index of up to 1024 slots: 1022..1025 (mod the
					// index's length) are its last two and first two.
					if c.clustered && (idTag(got.seed, id)+2)&1023 > 3 {
						continue
					}
					pool = append(pool, id)
				}
				vals := make([]int, 64)
				for step := range 20_000 {
					id := pool[rng.IntN(len(pool))]
					switch op := rng.IntN(100); {
					case op < 40:
						v := &vals[rng.IntN(len(vals))]
						got.put(id, v)
						want.put(id, v)
					case op < 70:
						got.remove(id)
						want.remove(id)
					case op == 70 && rng.IntN(20) == 0:
						got.clear()
						want.clear()
					case op == 71:
						if g, w := tableContents(t, &got), want.contents(); len(g) != len(w) {
							t.Fatalf("step %d: all yields %d ids; the map holds %d", step, len(g), len(w))
						} else {
							for id, v := range w {
								if g[id] != v {
									t.Fatalf("step %d: all yields %v → %p; the map says %p", step, id, g[id], v)
								}
							}
						}
					default:
						if g, w := got.get(id), want.get(id); g != w {
							t.Fatalf("step %d: get(%v) = %p; the map says %p", step, id, g, w)
						}
					}
					if got.len() != want.len() {
						t.Fatalf("step %d: len %d; the map holds %d", step, got.len(), want.len())
					}
					if 2*got.len() > len(got.index) && got.len() > 0 {
						t.Fatalf("step %d: %d ids in %d index slots: more than half full", step, got.len(), len(got.index))
					}
				}
				for _, id := range pool {
					if got.get(id) != want.get(id) {
						t.Fatalf("at the end: get(%v) = %p; the map says %p", id, got.get(id), want.get(id))
					}
				}
			})
		}
	}
}

// A removal in the middle of a run that wraps around the end of the index
// keeps every later member of the run reachable, and leaves no slot used
// but the members' (the backward shift moves, it does not copy).
func TestTagIndexRemoveWrapsAround(t *testing.T) {
	x := make(tagIndex, 8)
	// Tags wanting slots 6, 6, 7, 6, 1: the run is 6 7 0 1, then 2.
	tags := []uint32{6, 6, 7, 6, 1}
	for pos, tag := range tags {
		x.place(indexSlot(tag, uint32(pos)))
	}
	find := func(pos int) bool {
		tag := tags[pos]
		for i := tag & 7; x[i] != 0; i = (i + 1) & 7 {
			if x[i] == indexSlot(tag, uint32(pos)) {
				return true
			}
		}
		return false
	}
	for _, gone := range []int{1, 0, 4, 2, 3} { // from the middle, the front, the tail...
		for i := range x {
			if x[i] == indexSlot(tags[gone], uint32(gone)) {
				x.remove(uint32(i))
			}
		}
		used := 0
		for _, s := range x {
			if s != 0 {
				used++
			}
		}
		tags[gone] = 1 << 31 // removed: never found
		left := 0
		for pos := range tags {
			if tags[pos] != 1<<31 {
				left++
				if !find(pos) {
					t.Fatalf("after removing %d, position %d is not found: %x", gone, pos, x)
				}
			}
		}
		if used != left {
			t.Fatalf("after removing %d: %d slots used for %d entries: %x", gone, used, left, x)
		}
	}
}

// TestTxnTableSteadyStateDoesNotAllocate: once the table has held as many
// transactions as it holds, a transaction's put, lookups and removal
// allocate nothing.
func TestTxnTableSteadyStateDoesNotAllocate(t *testing.T) {
	tb := newTxnTable[partTxn]()
	var w txnWorkload
	w.init(1000)
	for range 3000 {
		w.step(&tb)
	}
	if n := testing.AllocsPerRun(1000, func() { w.step(&tb) }); n != 0 {
		t.Fatalf("%v allocations per transaction", n)
	}
}

// txnWorkload is the life of transactions in a machine's table as the
// hot path sees it: a new id looked up (a prepare or begin asking whether
// it is known), put, looked up again (its vote or decision) and removed,
// with live transactions in flight, finished in the order they began.
type txnWorkload struct {
	ring []protocol.TxnID // the live ids, oldest at next
	next int
	ms   uint64
	n    int
	rng  *rand.Rand
	t    partTxn
}

func (w *txnWorkload) init(live int) {
	w.ring = make([]protocol.TxnID, live)
	w.rng = rand.New(rand.NewPCG(7, 8))
	w.ms = 1_700_000_000_000
}

func (w *txnWorkload) step(tb inFlightSet[partTxn]) {
	w.n++
	if w.n%26 == 0 {
		w.ms++
	}
	id := v7(w.ms, w.rng.Uint64())
	if tb.get(id) != nil {
		panic("a new id is in flight")
	}
	tb.put(id, &w.t)
	old := w.ring[w.next]
	w.ring[w.next] = id
	w.next = (w.next + 1) % len(w.ring)
	if old != (protocol.TxnID{}) {
		if tb.get(old) == nil {
			panic("a live id is not found")
		}
		tb.remove(old)
	}
}

// BenchmarkTxnTable is one transaction's life in a machine's table of
// transactions in flight (txnWorkload: a lookup that misses, a put, a
// lookup that hits, a removal), with 100, 1,000 (a participant at 1,000
// callers) and 10,000 in flight: the Go map before (map) against
// txnTable (table), in one run.
func BenchmarkTxnTable(b *testing.B) {
	for _, live := range []int{100, 1000, 10_000} {
		for _, bc := range []struct {
			name  string
			fresh func() inFlightSet[partTxn]
		}{
			{"map", func() inFlightSet[partTxn] { m := newMapTable[partTxn](); return &m }},
			{"table", func() inFlightSet[partTxn] { tb := newTxnTable[partTxn](); return &tb }},
		} {
			b.Run(fmt.Sprintf("live%d/%s", live, bc.name), func(b *testing.B) {
				tb := bc.fresh()
				var w txnWorkload
				w.init(live)
				for range 20 * live {
					w.step(tb)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					w.step(tb)
				}
			})
		}
	}
}

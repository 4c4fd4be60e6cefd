package engine

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/commitd/commitd/protocol"
)

// A value is remembered for at least period ticks after it was put, and
// forgotten by twice that, whenever in a period it was put.
func TestRecentRemembersAtLeastOnePeriod(t *testing.T) {
	const period = 10
	for putAt := int64(0); putAt < 3*period; putAt++ {
		r := newRecent[uint8](period)
		id := protocol.TxnID{1}
		var now int64
		for ; now < putAt; now++ {
			r.tick(now)
		}
		r.tick(now)
		r.put(id, 7)
		for ; now < putAt+period; now++ {
			r.tick(now)
			if v, ok := r.get(id); !ok || v != 7 {
				t.Fatalf("put at %d: forgotten at tick %d, before %d ticks", putAt, now, period)
			}
		}
		for ; now <= putAt+2*period; now++ {
			r.tick(now)
		}
		if r.has(id) || r.len() != 0 {
			t.Fatalf("put at %d: still remembered at tick %d (len %d)", putAt, now, r.len())
		}
	}
}

func TestRecentPutAndRemove(t *testing.T) {
	r := newRecent[uint8](5)
	a, b := protocol.TxnID{1}, protocol.TxnID{2}
	r.put(a, 1)
	r.tick(5) // a moves to old
	r.remove(a)
	r.put(a, 2) // started again and finished: the machines remove first
	if v, _ := r.get(a); v != 2 || r.len() != 1 {
		t.Fatalf("after remove and a second put: value %d, len %d; want 2, 1", v, r.len())
	}
	r.put(protocol.TxnID{9}, 4)
	r.tick(10) // a and 9 move to old; a shadowed value would show in len
	if v, _ := r.get(a); v != 2 || r.len() != 2 {
		t.Fatalf("after a rotation: value %d, len %d; want 2, 2", v, r.len())
	}
	r.put(b, 3)
	r.remove(a)
	if r.has(a) || !r.has(b) || r.len() != 2 { // b and 9
		t.Fatalf("after remove: has(a) %v has(b) %v len %d", r.has(a), r.has(b), r.len())
	}
	r.reset()
	if r.len() != 0 {
		t.Fatalf("len %d after reset", r.len())
	}
}

// Rotating reuses the dropped generation's map: steady state allocates
// nothing.
func TestRecentSteadyStateDoesNotAllocate(t *testing.T) {
	r := newRecent[uint8](4)
	var now int64
	var n uint64
	step := func() {
		n++
		var id protocol.TxnID
		for i := range 8 {
			id[i] = byte(n >> (8 * i))
		}
		r.put(id, 1)
		now++
		r.tick(now)
	}
	for range 100 {
		step()
	}
	if allocs := testing.AllocsPerRun(1000, step); allocs != 0 {
		t.Fatalf("%.2f allocations per put+tick", allocs)
	}
}

// v7 is an id with the given UUIDv7 millisecond timestamp and random
// bits.
func v7(ms uint64, rnd uint64) protocol.TxnID {
	var id protocol.TxnID
	binary.BigEndian.PutUint64(id[:8], ms<<16|0x7000|rnd>>52)
	binary.BigEndian.PutUint64(id[8:], 0x8000000000000000|rnd&0x3fffffffffffffff)
	return id
}

// The stamp bound skips a generation only for ids newer than anything it
// holds: an id whose stamp equals the bound, ids put out of time order,
// an id moved to the old generation, a removed and re-put id, and ids
// that are not UUIDv7 (stamp 0, or random bytes) are all still found.
func TestRecentStampSkipEdges(t *testing.T) {
	r := newRecent[uint8](5)
	newest := v7(1000, 1)
	sameMs := v7(1000, 0) // same ms, smaller random bits: a smaller stamp
	older := v7(900, 5)
	small := protocol.TxnID{15: 3}                                           // the engine tests' ids: stamp 0
	odd := protocol.TxnID{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1} // the largest stamp
	r.put(newest, 1)
	r.put(older, 2) // out of time order
	r.put(sameMs, 3)
	r.put(small, 4)
	want := map[protocol.TxnID]uint8{newest: 1, older: 2, sameMs: 3, small: 4}
	check := func(when string) {
		t.Helper()
		for id, v := range want {
			if got, ok := r.get(id); !ok || got != v {
				t.Fatalf("%s: get(%v) = %d, %v; want %d, true", when, id, got, ok, v)
			}
		}
		for _, id := range []protocol.TxnID{v7(1001, 0), v7(1000, 2), v7(950, 0), {15: 4}} {
			if _, ok := want[id]; !ok && r.has(id) {
				t.Fatalf("%s: has(%v) for an id never put", when, id)
			}
		}
	}
	check("one generation")
	r.tick(5) // all move to old
	check("after a rotation")
	r.put(v7(800, 9), 5) // older than everything in old, put into cur
	want[v7(800, 9)] = 5
	check("an old id in the new generation")
	r.remove(newest) // the bound stays an upper bound
	delete(want, newest)
	check("after remove")
	r.put(newest, 6) // started again and finished: now in cur
	want[newest] = 6
	check("re-put after remove")
	r.put(odd, 7) // a non-UUIDv7 id with the largest stamp disables the skip
	want[odd] = 7
	check("a non-UUIDv7 id")
	r.tick(10) // cur's bound moves to old with its values; old's are forgotten
	delete(want, older)
	delete(want, sameMs)
	delete(want, small)
	check("after a second rotation")
	r.tick(15) // all forgotten
	if r.len() != 0 || r.has(newest) || r.has(odd) || r.has(small) {
		t.Fatalf("remembered after two rotations: len %d", r.len())
	}
	r.put(small, 8)
	if v, ok := r.get(small); !ok || v != 8 {
		t.Fatalf("stamp-0 id after the bounds were reset: %d, %v", v, ok)
	}
	r.reset()
	if r.has(small) || r.len() != 0 {
		t.Fatalf("after reset: has %v, len %d", r.has(small), r.len())
	}
}

// The skip never changes an answer: random puts, removes, rotations and
// lookups of ids with clustered stamps (many in the same millisecond,
// some out of order, some not UUIDv7) answer as two plain maps do.
func TestRecentStampSkipMatchesPlainMaps(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	r := newRecent[uint16](7)
	var cur, old map[protocol.TxnID]uint16 = map[protocol.TxnID]uint16{}, map[protocol.TxnID]uint16{}
	pool := make([]protocol.TxnID, 0, 512)
	for i := range 512 {
		switch i % 8 {
		case 0:
			pool = append(pool, protocol.TxnID{15: byte(i), 14: byte(i >> 8)}) // stamp 0
		default:
			pool = append(pool, v7(uint64(1000+i/16), rng.Uint64()&0xf0000000000000ff))
		}
	}
	rng.Shuffle(len(pool), func(i, j int) { pool[i], pool[j] = pool[j], pool[i] })
	var now int64
	for step := range 200000 {
		id := pool[rng.IntN(len(pool))]
		_, inCur := cur[id]
		_, inOld := old[id]
		switch op := rng.IntN(10); {
		case op < 4 && !inCur && !inOld: // the machines put only what they do not remember
			v := uint16(step)
			r.put(id, v)
			cur[id] = v
		case op < 5:
			r.remove(id)
			delete(cur, id)
			delete(old, id)
		case op < 6:
			now++
			if now >= r.next {
				old, cur = cur, map[protocol.TxnID]uint16{}
			}
			r.tick(now)
		default:
			want, ok := cur[id]
			if !ok {
				want, ok = old[id]
			}
			if got, gotOK := r.get(id); got != want || gotOK != ok {
				t.Fatalf("step %d: get(%v) = %d, %v; plain maps say %d, %v", step, id, got, gotOK, want, ok)
			}
		}
	}
}

// BenchmarkRecentLookupNew is a participant's or shard's first question
// about a new transaction — is this id remembered? — with ~300k finished
// transactions remembered (two generations, as at 26k/s with the
// defaults), then its put when it finishes. Ids are UUIDv7 in time order.
func BenchmarkRecentLookupNew(b *testing.B) {
	const perGen = 150_000
	r := newRecent[partDone](1)
	rng := rand.New(rand.NewPCG(3, 4))
	ms := uint64(1_700_000_000_000)
	var n int
	next := func() protocol.TxnID {
		n++
		if n%26 == 0 {
			ms++
		}
		return v7(ms, rng.Uint64())
	}
	var now int64
	for range 2 {
		for range perGen {
			r.put(next(), partDone{state: partCommitted})
		}
		now++
		r.tick(now)
	}
	ids := make([]protocol.TxnID, 1<<16)
	for i := range ids {
		ids[i] = next()
	}
	b.Run("get", func(b *testing.B) {
		b.ReportAllocs()
		var found int
		for i := 0; b.Loop(); i++ {
			if r.has(ids[i&(len(ids)-1)]) {
				found++
			}
		}
		if found != 0 {
			b.Fatalf("%d new ids found", found)
		}
	})
}

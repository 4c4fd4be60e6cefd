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

// recent answers as the two Go maps it replaced (mapRecent) do — get,
// has and len — through random puts (only of ids not remembered, as the
// machines put), removes, re-puts, rotations at a rate that rises and
// falls (so an index grows within a generation and is sized at a
// rotation), resets, and lookups of ids put, removed, forgotten and never
// seen, UUIDv7-shaped, of stamp 0, and random.
func TestRecentMatchesMaps(t *testing.T) {
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 0x5ec))
		period := 1 + rng.IntN(20)
		got, want := newRecent[uint32](period), newMapRecent[uint32](period)
		pool := make([]protocol.TxnID, 3000+rng.IntN(3000))
		for i := range pool {
			switch i % 4 {
			case 0:
				binary.BigEndian.PutUint64(pool[i][8:], uint64(i)) // stamp 0
			case 1:
				binary.BigEndian.PutUint64(pool[i][:], rng.Uint64())
				binary.BigEndian.PutUint64(pool[i][8:], rng.Uint64())
			default:
				pool[i] = v7(uint64(1000+i/20), rng.Uint64())
			}
		}
		var now int64
		putsPerTick := 1 + rng.IntN(400)
		for step := range 40000 {
			id := pool[rng.IntN(len(pool))]
			switch op := rng.IntN(1000); {
			case op < 450:
				if !want.has(id) {
					v := uint32(step)
					got.put(id, v)
					want.put(id, v)
				}
			case op < 500:
				got.remove(id)
				want.remove(id)
			case op < 500+1000/putsPerTick:
				now++
				got.tick(now)
				want.tick(now)
				if rng.IntN(10) == 0 {
					putsPerTick = 1 + rng.IntN(400)
				}
			case op == 999 && rng.IntN(20) == 0:
				got.reset()
				want.reset()
			default:
				g, gok := got.get(id)
				w, wok := want.get(id)
				if g != w || gok != wok {
					t.Fatalf("seed %d step %d: get(%v) = %d, %v; the maps say %d, %v", seed, step, id, g, gok, w, wok)
				}
			}
			if got.len() != want.len() {
				t.Fatalf("seed %d step %d: len %d; the maps hold %d", seed, step, got.len(), want.len())
			}
		}
		for _, id := range pool {
			if got.has(id) != want.has(id) {
				t.Fatalf("seed %d at the end: has(%v) = %v; the maps say %v", seed, id, got.has(id), want.has(id))
			}
		}
	}
}

// Ids whose hashes share a tag (and so want the same index slot) are told
// apart by their ids, a removed one is skipped, not ending the probe, and
// the index grows past its first size keeping every id.
func TestGenerationSameTag(t *testing.T) {
	var g generation[int]
	const tag = 77
	ids := make([]protocol.TxnID, 3000)
	for i := range ids {
		binary.BigEndian.PutUint64(ids[i][8:], uint64(i+1))
		tg := uint32(tag)
		if i%2 == 1 {
			tg = uint32(i) // the others spread out
		}
		g.add(ids[i], tg, i)
	}
	tagOf := func(i int) uint32 {
		if i%2 == 1 {
			return uint32(i)
		}
		return tag
	}
	if g.find(ids[0], tag).gone = true; g.find(ids[0], tag) != nil {
		t.Fatal("a removed id is still found")
	}
	g.live--
	for i := 1; i < len(ids); i++ {
		if e := g.find(ids[i], tagOf(i)); e == nil || e.v != i {
			t.Fatalf("id %d of %d sharing tag %d: found %v", i, len(ids), tag, e)
		}
	}
	if g.find(protocol.TxnID{1}, tag) != nil || len(g.index) < 2*g.indexed || g.indexed < len(ids)-indexBatch || g.live != len(ids)-1 {
		t.Fatalf("an id never added is found, or the index (%d slots) or the count (%d) is off", len(g.index), g.live)
	}
}

// BenchmarkRecentPut is the put of a finished transaction into the
// remembered set in a server's steady state: perGen puts a period (as at
// 15k/s per shard with the default 10 s), two generations held, UUIDv7
// ids in time order; a coordinator's values (finishedTxn) and a
// participant's (partDone). ns/op is one put, with the rotations' share.
// The fresh variants start a new set every 2·perGen puts and never
// rotate, as a server does in its first period (and the cluster
// benchmarks' servers, fresh for each cell, throughout): the first
// generation grows from empty.
func BenchmarkRecentPut(b *testing.B) {
	const perGen = 150_000
	for _, mode := range []struct {
		name  string
		fresh bool
	}{{"", false}, {"/fresh", true}} {
		b.Run("coordinator"+mode.name, func(b *testing.B) {
			benchRecentPut(b, perGen, mode.fresh, finishedTxn{state: coordCommitted, n: 2})
		})
		b.Run("participant"+mode.name, func(b *testing.B) {
			benchRecentPut(b, perGen, mode.fresh, partDone{state: partCommitted, work: 1})
		})
	}
}

// recentSet is what BenchmarkRecentPut drives: recent or mapRecent.
type recentSet[V any] interface {
	put(protocol.TxnID, V)
	tick(int64)
	len() int
}

func benchRecentPut[V any](b *testing.B, perGen int, fresh bool, v V) {
	for _, bc := range []struct {
		name  string
		fresh func() recentSet[V]
	}{
		{"maps", func() recentSet[V] { r := newMapRecent[V](1); return &r }},
		{"tables", func() recentSet[V] { r := newRecent[V](1); return &r }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := bc.fresh()
			rng := rand.New(rand.NewPCG(5, 6))
			ms := uint64(1_700_000_000_000)
			var n int
			var now int64
			put := func() {
				n++
				if n%26 == 0 {
					ms++
				}
				r.put(v7(ms, rng.Uint64()), v)
				switch {
				case fresh && n%(2*perGen) == 0:
					r = bc.fresh()
				case !fresh && n%perGen == 0:
					now++
					r.tick(now)
				}
			}
			for range 3 * perGen {
				put()
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				put()
			}
			if !fresh && r.len() < perGen {
				b.Fatalf("%d remembered", r.len())
			}
		})
	}
}

// BenchmarkRecentGet is a lookup that the stamp bound cannot skip, with
// two generations of perGen remembered: of a remembered id (a late vote
// or an inquiry about a finished transaction) and of an id never put
// whose stamp is old (a stranger's inquiry), in random order.
func BenchmarkRecentGet(b *testing.B) {
	const perGen = 150_000
	type getter interface {
		put(protocol.TxnID, partDone)
		tick(int64)
		has(protocol.TxnID) bool
	}
	for _, bc := range []struct {
		name  string
		fresh func() getter
	}{
		{"maps", func() getter { r := newMapRecent[partDone](1); return &r }},
		{"tables", func() getter { r := newRecent[partDone](1); return &r }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			rng := rand.New(rand.NewPCG(7, 8))
			r := bc.fresh()
			ms := uint64(1_700_000_000_000)
			var put, strangers []protocol.TxnID
			for g := range 2 {
				for i := range perGen {
					if i%26 == 0 {
						ms++
					}
					id := v7(ms, rng.Uint64())
					r.put(id, partDone{state: partCommitted})
					put = append(put, id)
					strangers = append(strangers, v7(ms, rng.Uint64()))
				}
				if g == 0 {
					r.tick(1) // the first perGen move to old
				}
			}
			rng.Shuffle(len(put), func(i, j int) { put[i], put[j] = put[j], put[i] })
			for _, c := range []struct {
				name string
				ids  []protocol.TxnID
				want bool
			}{{"remembered", put, true}, {"stranger", strangers, false}} {
				b.Run(c.name, func(b *testing.B) {
					b.ReportAllocs()
					for i := 0; b.Loop(); i++ {
						if r.has(c.ids[i%len(c.ids)]) != c.want {
							b.Fatalf("has(%v) != %v", c.ids[i%len(c.ids)], c.want)
						}
					}
				})
			}
		})
	}
}

// A reset leaves the index empty, whether it clears all of it or (few
// entries in a large index) only the runs its entries occupy — runs that
// collide, and runs that wrap around the index's end.
func TestGenerationResetEmptiesIndex(t *testing.T) {
	var g generation[int]
	var n uint64
	add := func(tag uint32) {
		n++
		var id protocol.TxnID
		binary.BigEndian.PutUint64(id[8:], n)
		g.add(id, tag, int(n))
	}
	rng := rand.New(rand.NewPCG(11, 12))
	for range 5000 {
		add(rng.Uint32())
	}
	big := len(g.index)
	for round := range 50 {
		g.reset(0)
		if len(g.index) != big {
			t.Fatalf("round %d: the index changed size: %d slots, was %d", round, len(g.index), big)
		}
		for i, s := range g.index {
			if s != 0 {
				t.Fatalf("round %d: slot %d of %d not cleared", round, i, len(g.index))
			}
		}
		mask := uint32(big - 1)
		for k := range 1 + rng.IntN(big/16) {
			switch k % 3 {
			case 0:
				add(mask) // the last slot: its run wraps around
			case 1:
				add(rng.Uint32() & 7) // colliding near the start
			default:
				add(rng.Uint32())
			}
		}
		g.placeBatch()
	}
}

package engine

import (
	"encoding/binary"
	"fmt"
	"hash/maphash"

	"github.com/commitd/commitd/protocol"
)

// recent remembers finished transactions for a while, to answer late and
// duplicate messages about them, in two generations rather than a timer
// per transaction: a value put during one period survives the next
// rotation (in old) and is dropped at the one after, so it is remembered
// for at least period ticks and at most twice that. Forgetting costs
// nothing per transaction — a whole generation goes at once — and V holds
// no pointers, so a remembered set of hundreds of thousands of
// transactions costs the garbage collector nothing to scan, and the maps
// of transactions still in flight stay small enough to stay in cache.
//
// Most lookups are of ids it does not hold — every new prepare and begin
// asks first — and in a set of hundreds of thousands each such miss is a
// cache miss, two with two generations. So each generation also keeps the
// largest stamp (the id's first 8 bytes, big-endian) it was given: a
// lookup of an id whose stamp is larger skips that generation without
// probing. Ids are UUIDv7, whose first 48 bits are the client's clock in
// ms, so a new transaction's id is usually newer than anything the older
// generation holds. The skip is exact for any id, UUIDv7 or not: a
// generation holds only ids put into it, and each put raises the bound to
// at least its stamp (remove leaves it an upper bound; an id of stamp 0,
// as in the engine's tests, is never skipped).
//
// A generation is a table of its own (generation), not a Go map, because
// every finished transaction is put once and most are never looked up
// again: a put appends to a log in put order — sequential writes, into
// fixed chunks that are never copied — and fills one 8-byte slot of an
// index, in batches, where a put into a map of hundreds of thousands
// touches a control word and a wide slot, each a cache miss, and a
// growing map rehashes every key.
type recent[V any] struct {
	gens   [2]generation[V] // gens[cur] and the older gens[1-cur]
	cur    int
	seed   maphash.Seed // places ids in the index: chosen ids cannot collide at will
	period int64        // ticks between rotations
	next   int64        // tick of the next rotation
}

// generation is an append-only log of the values put, in put order, in
// chunks of chunkLen entries (kept for reuse when the generation is
// dropped), and an open-addressed index into it with linear probing, at
// most half full.
//
// The index is a tagIndex (index.go): a slot is 0 when free, else the
// id's tag (the slot it wants is tag&mask, and a probe compares tags
// before it reads an entry) over the entry's position + 1. A removed entry stays in
// the log and the index, marked gone, until the generation is dropped:
// the machines remove only to reuse an id, which is rare.
//
// The newest entries, fewer than indexBatch, are not in the index yet
// (find compares them one by one): placing a batch at once lets the
// processor wait for its index slots' cache misses together rather than
// one per put, between which a server does much else.
type generation[V any] struct {
	chunks  []*[chunkLen]entry[V] // the log: entry i is chunks[i/chunkLen][i%chunkLen]
	n       int                   // entries in the log
	indexed int                   // entries [0, indexed) are in the index, the rest not yet
	index   tagIndex              // len 0 or a power of two, ≥ 2·indexed
	live    int                   // entries not gone
	max     uint64                // no id here has a larger stamp
}

type entry[V any] struct {
	id   protocol.TxnID
	v    V
	tag  uint32 // of id's hash
	gone bool
}

const (
	// minIndexSlots is a fresh generation's index; it doubles as it fills.
	minIndexSlots = 16
	// chunkLen is the entries of one chunk of a log: a few pages, so
	// that a fresh log grows without copying and a short one wastes
	// little.
	chunkLen = 256
	// indexBatch is how many entries are placed in the index at once: the
	// most a lookup compares one by one.
	indexBatch = 32
)

// stamp is the part of an id that recent bounds per generation: for a
// UUIDv7, its millisecond timestamp, version and first random bits.
func stamp(id protocol.TxnID) uint64 { return binary.BigEndian.Uint64(id[:8]) }

func newRecent[V any](period int) recent[V] {
	return recent[V]{
		seed:   maphash.MakeSeed(),
		period: int64(period),
		next:   int64(period),
	}
}

// gen returns the current generation and the older one.
func (r *recent[V]) gen() (cur, old *generation[V]) {
	return &r.gens[r.cur], &r.gens[1-r.cur]
}

func (r *recent[V]) tag(id protocol.TxnID) uint32 { return idTag(r.seed, id) }

func (r *recent[V]) get(id protocol.TxnID) (V, bool) {
	cur, old := r.gen()
	st := stamp(id)
	if st <= cur.max || st <= old.max {
		tag := r.tag(id)
		if st <= cur.max {
			if e := cur.find(id, tag); e != nil {
				return e.v, true
			}
		}
		if st <= old.max {
			if e := old.find(id, tag); e != nil {
				return e.v, true
			}
		}
	}
	var zero V
	return zero, false
}

func (r *recent[V]) has(id protocol.TxnID) bool {
	_, ok := r.get(id)
	return ok
}

// put remembers v for id from now on. id must not be remembered already:
// the machines put a transaction when it finishes, and a transaction in
// flight is never also remembered (they look it up before starting one,
// and remove it before starting one again). So put probes neither
// generation for a stale value — with hundreds of thousands of remembered
// transactions every probe is a cache miss, and this one would always
// miss. (Were id remembered all the same, get would still find one of its
// values, and len would count it twice until it is dropped.)
func (r *recent[V]) put(id protocol.TxnID, v V) {
	cur, _ := r.gen()
	cur.max = max(cur.max, stamp(id))
	cur.add(id, r.tag(id), v)
}

func (r *recent[V]) remove(id protocol.TxnID) {
	cur, old := r.gen()
	tag := r.tag(id)
	for _, g := range [2]*generation[V]{cur, old} {
		if e := g.find(id, tag); e != nil {
			e.gone = true
			g.live--
		}
	}
}

func (r *recent[V]) len() int {
	cur, old := r.gen()
	return cur.live + old.live
}

// tick rotates the generations when now reaches the next rotation. The
// dropped generation is emptied and reused, its index sized for as many
// puts as the generation before it took, so steady state allocates
// nothing and a long-running server does not grow an index.
func (r *recent[V]) tick(now int64) {
	if now < r.next {
		return
	}
	cur, old := r.gen()
	cur.placeBatch() // old is all indexed
	old.reset(cur.n)
	r.cur = 1 - r.cur
	r.next = now + r.period
}

func (r *recent[V]) reset() {
	cur, old := r.gen()
	cur.reset(0)
	old.reset(0)
}

// find returns the live entry for id, whose hash's tag is tag, or nil.
func (g *generation[V]) find(id protocol.TxnID, tag uint32) *entry[V] {
	for i := g.indexed; i < g.n; i++ {
		if e := g.entry(uint32(i)); e.tag == tag && e.id == id && !e.gone {
			return e
		}
	}
	if len(g.index) == 0 {
		return nil
	}
	mask := uint32(len(g.index) - 1)
	for i := tag & mask; ; i = (i + 1) & mask {
		s := g.index[i]
		if s == 0 {
			return nil
		}
		if uint32(s>>32) == tag {
			if e := g.entry(uint32(s) - 1); e.id == id && !e.gone {
				return e
			}
		}
	}
}

// entry returns the log's entry at position i.
func (g *generation[V]) entry(i uint32) *entry[V] {
	return &g.chunks[i/chunkLen][i%chunkLen]
}

func (g *generation[V]) add(id protocol.TxnID, tag uint32, v V) {
	if g.n >= 1<<32-1 {
		panic(fmt.Sprintf("engine: %d remembered transactions in one generation", g.n))
	}
	if g.n == len(g.chunks)*chunkLen {
		g.chunks = append(g.chunks, new([chunkLen]entry[V]))
	}
	*g.entry(uint32(g.n)) = entry[V]{id: id, v: v, tag: tag}
	g.n++
	g.live++
	if g.n-g.indexed >= indexBatch {
		g.placeBatch()
	}
}

// placeBatch puts the entries not yet indexed into the index.
func (g *generation[V]) placeBatch() {
	if 2*g.n > len(g.index) {
		n := max(len(g.index), minIndexSlots)
		for n < 2*g.n {
			n *= 2
		}
		g.index.grow(n)
	}
	for i := g.indexed; i < g.n; i++ {
		g.index.place(indexSlot(g.entry(uint32(i)).tag, uint32(i)))
	}
	g.indexed = g.n
}

// reset empties g, keeping its log's chunks and its index for reuse, the
// index at least large enough for puts more entries.
func (g *generation[V]) reset(puts int) {
	want := 0
	if puts > 0 {
		want = minIndexSlots
		for want < 2*puts {
			want *= 2
		}
	}
	switch {
	case len(g.index) < want:
		g.index = make([]uint64, want)
	case 8*g.indexed < len(g.index):
		// Few entries in a large index (rotations more frequent than
		// the index's peak, as with a short RememberTicks): empty only
		// the runs they occupy. Every used slot is in a run of used
		// slots that begins at its entry's wanted slot, and the index
		// loses no slot before this, so clearing forward from each
		// entry's wanted slot to the next free one clears them all.
		mask := uint32(len(g.index) - 1)
		for e := range g.indexed {
			for i := g.entry(uint32(e)).tag & mask; g.index[i] != 0; i = (i + 1) & mask {
				g.index[i] = 0
			}
		}
	default:
		clear(g.index)
	}
	g.n, g.indexed, g.live, g.max = 0, 0, 0, 0
}

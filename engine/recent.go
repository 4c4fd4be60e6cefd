package engine

import (
	"encoding/binary"

	"github.com/commitd/commitd/protocol"
)

// recent remembers finished transactions for a while, to answer late and
// duplicate messages about them, in two generations of maps rather than a
// timer per transaction: a value put during one period survives the next
// rotation (in old) and is dropped at the one after, so it is remembered
// for at least period ticks and at most twice that. Forgetting costs
// nothing per transaction — a whole generation goes at once — and V holds
// no pointers, so a remembered set of hundreds of thousands of
// transactions costs the garbage collector nothing to scan, and the maps
// of transactions still in flight stay small enough to stay in cache.
//
// Most lookups are of ids it does not hold — every new prepare and begin
// asks first — and in a map of hundreds of thousands each such miss is a
// cache miss, two with two generations. So each generation also keeps the
// largest stamp (the id's first 8 bytes, big-endian) it was given: a
// lookup of an id whose stamp is larger skips that map without probing.
// Ids are UUIDv7, whose first 48 bits are the client's clock in ms, so a
// new transaction's id is usually newer than anything the older
// generation holds. The skip is exact for any id, UUIDv7 or not: a map
// holds only ids put into it, and each put raises the bound to at least
// its stamp (remove leaves it an upper bound; an id of stamp 0, as in
// the engine's tests, is never skipped).
type recent[V any] struct {
	cur, old       map[protocol.TxnID]V
	curMax, oldMax uint64 // no id in cur (old) has a larger stamp
	period         int64  // ticks between rotations
	next           int64  // tick of the next rotation
}

// stamp is the part of an id that recent bounds per generation: for a
// UUIDv7, its millisecond timestamp, version and first random bits.
func stamp(id protocol.TxnID) uint64 { return binary.BigEndian.Uint64(id[:8]) }

func newRecent[V any](period int) recent[V] {
	return recent[V]{
		cur:    make(map[protocol.TxnID]V),
		old:    make(map[protocol.TxnID]V),
		period: int64(period),
		next:   int64(period),
	}
}

func (r *recent[V]) get(id protocol.TxnID) (V, bool) {
	st := stamp(id)
	if st <= r.curMax {
		if v, ok := r.cur[id]; ok {
			return v, true
		}
	}
	if st <= r.oldMax {
		v, ok := r.old[id]
		return v, ok
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
// and remove it before starting one again). So put does not probe old to
// delete a stale value — with hundreds of thousands of remembered
// transactions every probe is a cache miss, and this one would always
// miss. (Were id in old all the same, get would still find the new value
// first; only len would count it twice until old is dropped.)
func (r *recent[V]) put(id protocol.TxnID, v V) {
	r.curMax = max(r.curMax, stamp(id))
	r.cur[id] = v
}

func (r *recent[V]) remove(id protocol.TxnID) {
	delete(r.cur, id)
	delete(r.old, id)
}

func (r *recent[V]) len() int { return len(r.cur) + len(r.old) }

// tick rotates the generations when now reaches the next rotation. The
// dropped generation's map is cleared and reused, so steady state
// allocates nothing.
func (r *recent[V]) tick(now int64) {
	if now < r.next {
		return
	}
	clear(r.old)
	r.old, r.cur = r.cur, r.old
	r.oldMax, r.curMax = r.curMax, 0
	r.next = now + r.period
}

func (r *recent[V]) reset() {
	clear(r.cur)
	clear(r.old)
	r.curMax, r.oldMax = 0, 0
}

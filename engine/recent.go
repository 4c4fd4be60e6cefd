package engine

import "github.com/commitd/commitd/protocol"

// recent remembers finished transactions for a while, to answer late and
// duplicate messages about them, in two generations of maps rather than a
// timer per transaction: a value put during one period survives the next
// rotation (in old) and is dropped at the one after, so it is remembered
// for at least period ticks and at most twice that. Forgetting costs
// nothing per transaction — a whole generation goes at once — and V holds
// no pointers, so a remembered set of hundreds of thousands of
// transactions costs the garbage collector nothing to scan, and the maps
// of transactions still in flight stay small enough to stay in cache.
type recent[V any] struct {
	cur, old map[protocol.TxnID]V
	period   int64 // ticks between rotations
	next     int64 // tick of the next rotation
}

func newRecent[V any](period int) recent[V] {
	return recent[V]{
		cur:    make(map[protocol.TxnID]V),
		old:    make(map[protocol.TxnID]V),
		period: int64(period),
		next:   int64(period),
	}
}

func (r *recent[V]) get(id protocol.TxnID) (V, bool) {
	if v, ok := r.cur[id]; ok {
		return v, true
	}
	v, ok := r.old[id]
	return v, ok
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
	r.next = now + r.period
}

func (r *recent[V]) reset() {
	clear(r.cur)
	clear(r.old)
}

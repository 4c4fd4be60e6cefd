package engine

import "github.com/commitd/commitd/protocol"

// mapRecent is recent as it was before its generations were tables of its
// own: two Go maps. It is the reference the equivalence tests hold recent
// to, and the "before" of BenchmarkRecentPut.
type mapRecent[V any] struct {
	cur, old       map[protocol.TxnID]V
	curMax, oldMax uint64 // no id in cur (old) has a larger stamp
	period         int64  // ticks between rotations
	next           int64  // tick of the next rotation
}

func newMapRecent[V any](period int) mapRecent[V] {
	return mapRecent[V]{
		cur:    make(map[protocol.TxnID]V),
		old:    make(map[protocol.TxnID]V),
		period: int64(period),
		next:   int64(period),
	}
}

func (r *mapRecent[V]) get(id protocol.TxnID) (V, bool) {
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

func (r *mapRecent[V]) has(id protocol.TxnID) bool {
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
func (r *mapRecent[V]) put(id protocol.TxnID, v V) {
	r.curMax = max(r.curMax, stamp(id))
	r.cur[id] = v
}

func (r *mapRecent[V]) remove(id protocol.TxnID) {
	delete(r.cur, id)
	delete(r.old, id)
}

func (r *mapRecent[V]) len() int { return len(r.cur) + len(r.old) }

// tick rotates the generations when now reaches the next rotation. The
// dropped generation's map is cleared and reused, so steady state
// allocates nothing.
func (r *mapRecent[V]) tick(now int64) {
	if now < r.next {
		return
	}
	clear(r.old)
	r.old, r.cur = r.cur, r.old
	r.oldMax, r.curMax = r.curMax, 0
	r.next = now + r.period
}

func (r *mapRecent[V]) reset() {
	clear(r.cur)
	clear(r.old)
	r.curMax, r.oldMax = 0, 0
}

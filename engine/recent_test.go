package engine

import (
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

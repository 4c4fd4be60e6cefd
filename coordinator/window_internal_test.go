package coordinator

import (
	"testing"
	"time"

	"github.com/commitd/commitd/protocol"
)

// TestMemoryPrunes: entries go after keepMs; beyond max the oldest go
// early and the memory is complete only from after them (plus the ids'
// allowed lead); a later record for an id replaces its entry.
func TestMemoryPrunes(t *testing.T) {
	m := newMemory(time.Second, 3)
	since := m.since
	id := func(b byte) protocol.TxnID { return protocol.TxnID{b} }
	m.add(id(1), []byte("c"), since+10)
	m.add(id(2), nil, since+20)
	m.add(id(1), nil, since+30) // aborted later under the same id
	m.prune(since+30, 100)
	if len(m.ended) != 2 || m.since != since {
		t.Fatalf("after 3 adds of 2 ids: %d entries, since +%d", len(m.ended), m.since-since)
	}
	m.add(id(3), nil, since+40)
	m.add(id(4), nil, since+50)
	m.prune(since+50, 100)
	if _, ok := m.ended[id(2)]; ok || len(m.ended) != 3 || m.since != since+20+100+1 {
		t.Fatalf("beyond max: %d entries (id 2 kept: %v), since +%d, want 3, the oldest gone, since +121", len(m.ended), ok, m.since-since)
	}
	if e := m.ended[id(1)]; e.commit != nil || e.at != since+30 {
		t.Fatalf("id 1: %+v, want the later abort", e)
	}
	m.prune(since+50+1001, 100)
	if len(m.ended) != 0 || m.head != 0 || len(m.order) != 0 {
		t.Fatalf("after keepMs: %d entries, head %d of %d", len(m.ended), m.head, len(m.order))
	}
}

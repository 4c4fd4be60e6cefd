package participant

import (
	"testing"
	"time"

	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/protocol"
)

// TestRouter: a vote or ack goes where its prepare or decision came from,
// once; the last connection that brought one leads while it is fresh;
// an entry whose answer never left is gone after two generations.
func TestRouter(t *testing.T) {
	const fresh, keep = 2 * time.Second, 20 * time.Millisecond
	r := newRouter(fresh, keep)
	a, b := new(mux.Conn), new(mux.Conn)
	t1, t2, t3 := protocol.TxnID{1}, protocol.TxnID{2}, protocol.TxnID{3}
	if r.leading() != nil {
		t.Fatal("a router that heard from no replica names a leader")
	}
	r.arrived(a, t1)
	r.arrived(b, t2)
	if got := r.leading(); got != b {
		t.Errorf("leading: %p, want the last sender %p", got, b)
	}
	if got := r.take(t1); got != a {
		t.Errorf("t1 came on %p, routed to %p", a, got)
	}
	if got := r.take(t1); got != nil {
		t.Errorf("t1 taken twice")
	}
	time.Sleep(keep + 5*time.Millisecond)
	r.arrived(a, t3) // trades generations: t2 is old now, still found
	if got := r.take(t2); got != b {
		t.Errorf("t2 after one trade: %p, want %p", got, b)
	}
	time.Sleep(keep + 5*time.Millisecond)
	r.arrived(a, t1)
	time.Sleep(keep + 5*time.Millisecond)
	r.arrived(a, t2) // two trades after t3 arrived
	if got := r.take(t3); got != nil {
		t.Errorf("t3, never answered, still routed after two trades")
	}
	r.leaderAt.Store(time.Now().Add(-fresh - time.Millisecond).UnixNano()) // silent since
	if got := r.leading(); got != nil {
		t.Errorf("a leader silent for longer than fresh is still trusted")
	}
}

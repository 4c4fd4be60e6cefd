// This file holds how a participant given several coordinator replicas
// (docs/ha.md) finds the one that leads: it answers where it was asked.

package participant

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/protocol"
)

// maxRoutes bounds each generation of router.via: beyond it a prepare's
// connection is not kept, and its vote goes where inquiries go.
const maxRoutes = 1 << 16

// router remembers which connection each prepare and decision came on, so
// that its vote or ack goes back to the replica that sent it — the one
// that holds the transaction — and which connection last carried either,
// so that inquiries go to the replica that leads as far as this
// participant knows. Only replicas that lead send prepares and decisions,
// so no replica has to say who leads: the traffic does.
//
// A leader that stops sending (dead, paused, deposed) is trusted for fresh
// only: once it has sent nothing for that long, inquiries go to every
// replica again (the followers drop them, the leader answers on its own
// connection and so becomes the one trusted). A vote or ack whose
// connection has closed goes the same way.
//
// The connections are the ones the replicas dial in (the front door's);
// what this participant dials (Server.coord, Server.replicas) carries
// only inquiries that go to every replica. Nil for a lone coordinator:
// everything goes to it, as before.
type router struct {
	fresh time.Duration // how long the last sender is trusted to lead; immutable

	leader   atomic.Pointer[mux.Conn] // the connection that last brought a prepare or decision
	leaderAt atomic.Int64             // when, in UnixNano

	mu struct {
		sync.Mutex
		// via and old are two generations of txn → connection: via takes
		// arrivals, and every keep they trade places and the older is
		// cleared (kept for its buckets), so an entry whose vote or ack
		// never leaves is gone after at most twice keep.
		via, old map[protocol.TxnID]*mux.Conn
		swapAt   int64 // UnixNano of the next trade
	}
	keep time.Duration // immutable
}

func newRouter(fresh, keep time.Duration) *router {
	r := &router{fresh: fresh, keep: keep}
	r.mu.via = make(map[protocol.TxnID]*mux.Conn)
	r.mu.old = make(map[protocol.TxnID]*mux.Conn)
	r.mu.swapAt = time.Now().Add(keep).UnixNano()
	return r
}

// arrived notes that a prepare or decision for txn came on c. Called by
// the connections' readers.
func (r *router) arrived(c *mux.Conn, txn protocol.TxnID) {
	now := time.Now().UnixNano()
	if r.leader.Load() != c {
		r.leader.Store(c)
	}
	r.leaderAt.Store(now)
	r.mu.Lock()
	if now >= r.mu.swapAt {
		clear(r.mu.old)
		r.mu.via, r.mu.old = r.mu.old, r.mu.via
		r.mu.swapAt = now + int64(r.keep)
	}
	if len(r.mu.via) < maxRoutes {
		r.mu.via[txn] = c
	}
	r.mu.Unlock()
}

// take returns (and forgets) the connection txn's prepare or decision came
// on, or nil.
func (r *router) take(txn protocol.TxnID) *mux.Conn {
	r.mu.Lock()
	c, ok := r.mu.via[txn]
	if ok {
		delete(r.mu.via, txn)
	} else if c, ok = r.mu.old[txn]; ok {
		delete(r.mu.old, txn)
	}
	r.mu.Unlock()
	return c
}

// leading returns the connection of the replica that leads as far as this
// participant knows, or nil when it has heard from none for fresh.
func (r *router) leading() *mux.Conn {
	c := r.leader.Load()
	if c == nil || time.Now().UnixNano()-r.leaderAt.Load() > int64(r.fresh) {
		return nil
	}
	return c
}

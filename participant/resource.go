package participant

import (
	"sync"

	"github.com/commitd/commitd/engine"
)

// Inspectable is a Resource that admin queries can read: how many accounts
// (or rows) it has and what they sum to.
type Inspectable interface {
	engine.Resource
	Accounts() int
	Total() int64
}

// guarded wraps the participant's resource so that admin queries on other
// goroutines can read it while the pump goroutine drives it, and tracks
// which transactions hold a prepared (YES) state right now — the
// "prepared" lines of `commitd admin outcomes`.
type guarded struct {
	mu       sync.Mutex
	res      Inspectable
	prepared map[engine.TxnID]struct{}
}

func newGuarded(res Inspectable) *guarded {
	return &guarded{res: res, prepared: make(map[engine.TxnID]struct{})}
}

func (g *guarded) Prepare(txn engine.TxnID, work []byte) engine.Vote {
	g.mu.Lock()
	defer g.mu.Unlock()
	v := g.res.Prepare(txn, work)
	if v == engine.VoteYes {
		g.prepared[txn] = struct{}{}
	}
	return v
}

func (g *guarded) Commit(txn engine.TxnID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.res.Commit(txn)
	delete(g.prepared, txn)
}

func (g *guarded) Abort(txn engine.TxnID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.res.Abort(txn)
	delete(g.prepared, txn)
}

func (g *guarded) Restore(txn engine.TxnID, work []byte) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.res.Restore(txn, work)
	g.prepared[txn] = struct{}{}
}

func (g *guarded) Snapshot(dst []byte) []byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.res.Snapshot(dst)
}

func (g *guarded) Load(snapshot []byte) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	clear(g.prepared)
	return g.res.Load(snapshot)
}

// summary reads the resource for an admin query.
func (g *guarded) summary() (accounts int, total int64, prepared []engine.TxnID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	prepared = make([]engine.TxnID, 0, len(g.prepared))
	for id := range g.prepared {
		prepared = append(prepared, id)
	}
	return g.res.Accounts(), g.res.Total(), prepared
}

package participant

import (
	"context"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/protocol"
	"github.com/prometheus/client_golang/prometheus"
)

// Inspectable is a Resource that admin queries can read: how many accounts
// (or rows) it has and what they sum to.
type Inspectable interface {
	engine.Resource
	Accounts() int
	Total() int64
}

// Forwarding is a resource that keeps its state in the participant's log,
// like the bank, but answers Prepare with protocol.VotePending and hands
// the vote back later as a MsgResPrepared through the function given to
// Attach (participant/remote: a service behind HTTP, or Go code of one's
// own). Attach is called once, after recovery has replayed the log and
// before the first Prepare. Once Start has succeeded, the server owns the
// resource and closes it after the pump has stopped. Status is reported
// under "resource" by `commitd admin status`, Collectors on /metrics.
type Forwarding interface {
	Inspectable
	Attach(report func(engine.Message))
	Status() any
	Collectors() []prometheus.Collector
	// Held lists the transactions the service holds prepared for this
	// participant (its YES answered, no decision yet): the "prepared" of
	// `admin accounts` and `admin outcomes`. Safe on any goroutine.
	Held() []protocol.TxnID
	Close() error
}

// Durable is a resource that keeps its prepared and committed state
// durably itself and talks to a server (participant/postgres): Prepare
// may answer protocol.VotePending, Commit and Abort only start the work,
// and the results come back through the function given to Attach. The
// participant then runs its machine in durable-resource mode and forces
// nothing into its own log (docs/protocol.md, "Durable resources"). Once
// Start has succeeded, the server owns the resource and closes it.
type Durable interface {
	Inspectable
	// Attach sets where results go (MsgResPrepared, MsgResFinished,
	// MsgResFailed); called once, before anything else.
	Attach(report func(engine.Message))
	// InDoubt lists the transactions the resource holds prepared.
	InDoubt(ctx context.Context) ([]protocol.TxnID, error)
	// Decided lists decisions the resource remembers and Forget has not
	// dropped, so that the ledger can catch up after a crash.
	Decided(ctx context.Context) ([]engine.Applied, error)
	// Forget drops decisions the ledger has made durable.
	Forget(ctx context.Context, ids []protocol.TxnID) error
	// Summary is Accounts and Total with an error, safe on any goroutine.
	Summary(ctx context.Context) (accounts int, total int64, err error)
	// Close waits for the work in flight; nothing is reported after it.
	Close() error
}

// guarded wraps the participant's resource and tracks which transactions
// hold a prepared (YES) state right now — the "prepared" lines of
// `commitd admin outcomes`.
//
// It and the resource are owned by the goroutine that drives the machine:
// recovery's, then the pump's. Admin queries on other goroutines read them
// through the pump (Server.resSummary), or directly once it has stopped. A
// mutex taken around every call served the same purpose at the cost of
// two atomic operations per prepare and per commit on the pump's path
// (docs/benchmarks.md).
type guarded struct {
	res Inspectable
	// lister is res when it can list what it holds prepared; then
	// prepared stays nil. A set of its own costs an insert and a delete
	// on a map per transaction on the pump's path (about 4 % of a bank
	// participant's CPU at 1,000 callers, docs/benchmarks.md).
	lister   preparedLister
	prepared map[protocol.TxnID]struct{}
}

// preparedLister is a resource that knows which transactions hold a
// prepared (YES) state in it: exactly those it voted yes for or restored
// and has not committed or aborted since, none after a Load.
type preparedLister interface {
	AppendPrepared(dst []protocol.TxnID) []protocol.TxnID
}

func newGuarded(res Inspectable) *guarded {
	if l, ok := res.(preparedLister); ok {
		return &guarded{res: res, lister: l}
	}
	return &guarded{res: res, prepared: make(map[protocol.TxnID]struct{})}
}

func (g *guarded) Prepare(txn protocol.TxnID, work []byte) protocol.Vote {
	v := g.res.Prepare(txn, work)
	if v == protocol.VoteYes && g.lister == nil {
		g.prepared[txn] = struct{}{}
	}
	return v
}

func (g *guarded) Commit(txn protocol.TxnID) {
	g.res.Commit(txn)
	if g.lister == nil {
		delete(g.prepared, txn)
	}
}

func (g *guarded) Abort(txn protocol.TxnID) {
	g.res.Abort(txn)
	if g.lister == nil {
		delete(g.prepared, txn)
	}
}

func (g *guarded) Restore(txn protocol.TxnID, work []byte) {
	g.res.Restore(txn, work)
	if g.lister == nil {
		g.prepared[txn] = struct{}{}
	}
}

func (g *guarded) Snapshot(dst []byte) []byte {
	return g.res.Snapshot(dst)
}

func (g *guarded) Load(snapshot []byte) error {
	clear(g.prepared)
	return g.res.Load(snapshot)
}

// summary reads the resource for an admin query, on the goroutine that
// owns it (Server.resSummary).
func (g *guarded) summary() (accounts int, total int64, prepared []protocol.TxnID) {
	if g.lister != nil {
		prepared = g.lister.AppendPrepared(nil)
	} else {
		prepared = make([]protocol.TxnID, 0, len(g.prepared))
		for id := range g.prepared {
			prepared = append(prepared, id)
		}
	}
	if _, ok := g.res.(Durable); ok {
		// Its numbers are a server round trip away: not on the pump's
		// goroutine (AccountsSummary asks it).
		return 0, 0, prepared
	}
	return g.res.Accounts(), g.res.Total(), prepared
}

// guardedPreventer is guarded for a durable resource that can prevent
// (engine.Preventer): the machine sees a Preventer, and prevents through
// it. A prevention that finds the transaction prepared comes back to the
// machine, which calls Restore: it is then listed as prepared.
type guardedPreventer struct {
	*guarded
	pv engine.Preventer
}

var _ engine.Preventer = guardedPreventer{}

func (g guardedPreventer) Prevent(txn protocol.TxnID) {
	g.pv.Prevent(txn)
}

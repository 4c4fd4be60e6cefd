// This file holds the participant's tracing (docs/tracing.md): a side
// table of the transactions being traced, fed by the front door (prepares
// and decisions as they arrive) and the pump's output (votes, applied
// decisions). The engine knows nothing of it. With tracing off Server.tr
// is nil and every hook is one nil check.

package participant

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commitd/commitd/internal/tracing"
	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/protocol"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Traced is a resource whose calls to a service can carry the trace
// context (participant/remote: an HTTP service gets a traceparent
// header). The server calls TraceWith once, before Attach, only when it
// traces; trace returns ctx with the participant's span for txn (its
// prepare, or once the decision arrived, the decision's), or ctx itself.
type Traced interface {
	TraceWith(trace func(ctx context.Context, txn protocol.TxnID) context.Context)
}

// tracer keeps the participant's spans, under mu; live mirrors the
// table's size so that the pump's output skips the lock while nothing is
// traced.
//
//	commitd.prepare (the coordinator's)
//	├── commitd.participant.prepare   prepare arrived … vote sent
//	└── commitd.participant.commit    decision arrived … applied
//	    (or .abort)
type tracer struct {
	t    trace.Tracer // immutable
	name string       // the participant's
	live atomic.Int64
	mu   struct {
		sync.Mutex
		txns  map[protocol.TxnID]*partTrace
		swept time.Time
	}
}

// partTrace is one traced transaction's spans, guarded by tracer.mu.
type partTrace struct {
	started  time.Time
	parent   context.Context // carries the coordinator's prepare span
	prepare  trace.Span
	prepared bool // prepare ended
	decision trace.Span
}

func newTracer(tp trace.TracerProvider, name string) *tracer {
	t := &tracer{t: tp.Tracer(tracing.Scope), name: name}
	t.mu.txns = make(map[protocol.TxnID]*partTrace)
	return t
}

func (t *tracer) idle() bool { return t.live.Load() == 0 }

// prepare starts the span of a prepare that arrived, as a child of the
// coordinator's span the prepare names (or, without one, a root the
// sampler may pick). An untraced prepare takes no lock and builds no
// attributes.
func (t *tracer) prepare(p *wire.Prepare) {
	now := time.Now()
	parent := context.Background()
	if sc := tracing.SpanContext(&p.Trace); sc.IsValid() {
		parent = trace.ContextWithRemoteSpanContext(parent, sc)
	}
	_, sp := t.t.Start(parent, "commitd.participant.prepare", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithTimestamp(now))
	if !sp.IsRecording() {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Sub(t.mu.swept) > tracing.TableSweepEvery {
		t.sweepLocked(now)
	}
	if len(t.mu.txns) >= tracing.TableMaxTxns || t.mu.txns[p.Txn] != nil {
		return // full, or a duplicate prepare: the span is dropped unended
	}
	sp.SetAttributes(tracing.AttrTxn.String(p.Txn.String()), tracing.AttrParticipant.String(t.name),
		tracing.AttrOnePhase.Bool(p.OnePhase))
	t.mu.txns[p.Txn] = &partTrace{started: now, parent: parent, prepare: sp}
	t.live.Add(1)
}

// vote ends the prepare's span; a vote that is not YES ends the
// transaction here (no decision comes for it).
func (t *tracer) vote(txn protocol.TxnID, v protocol.Vote) {
	t.mu.Lock()
	defer t.mu.Unlock()
	x := t.mu.txns[txn]
	if x == nil || x.prepared {
		return
	}
	x.prepared = true
	x.prepare.SetAttributes(tracing.AttrVote.String(v.String()))
	if v == protocol.VoteNo {
		x.prepare.SetStatus(codes.Error, "voted no")
	}
	x.prepare.End()
	if v != protocol.VoteYes {
		t.forgetLocked(txn)
	}
}

// decision starts the span of a decision that arrived, as a child of the
// coordinator's prepare span (decisions carry no trace context: the
// prepare's is remembered here).
func (t *tracer) decision(txn protocol.TxnID, d protocol.Decision) {
	t.mu.Lock()
	defer t.mu.Unlock()
	x := t.mu.txns[txn]
	if x == nil || x.decision != nil {
		return // not traced, or a redelivered decision
	}
	name := "commitd.participant.commit"
	if d != protocol.DecisionCommit {
		name = "commitd.participant.abort"
	}
	_, x.decision = t.t.Start(x.parent, name, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(tracing.AttrTxn.String(txn.String()), tracing.AttrParticipant.String(t.name),
			tracing.AttrDecision.String(d.String())))
}

// applied ends the transaction's spans: its decision is applied to the
// resource (and recorded in the ledger).
func (t *tracer) applied(txn protocol.TxnID, d protocol.Decision) {
	t.mu.Lock()
	defer t.mu.Unlock()
	x := t.mu.txns[txn]
	if x == nil {
		return
	}
	if !x.prepared {
		// A one-phase commit, or a decision that overtook the vote.
		x.prepared = true
		x.prepare.SetAttributes(tracing.AttrDecision.String(d.String()))
		x.prepare.End()
	}
	if x.decision != nil {
		x.decision.End()
	}
	t.forgetLocked(txn)
}

// context returns ctx with the participant's current span for txn: the
// decision's once it arrived, else the prepare's. For Traced resources,
// on the pump goroutine.
func (t *tracer) context(ctx context.Context, txn protocol.TxnID) context.Context {
	if t.idle() {
		return ctx
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	x := t.mu.txns[txn]
	switch {
	case x == nil:
		return ctx
	case x.decision != nil:
		return trace.ContextWithSpan(ctx, x.decision)
	}
	return trace.ContextWithSpan(ctx, x.prepare)
}

func (t *tracer) forgetLocked(txn protocol.TxnID) {
	delete(t.mu.txns, txn)
	t.live.Add(-1)
}

// sweepLocked ends and forgets transactions traced for longer than
// tracing.TableMaxAge.
func (t *tracer) sweepLocked(now time.Time) {
	t.mu.swept = now
	for id, x := range t.mu.txns {
		if now.Sub(x.started) < tracing.TableMaxAge {
			continue
		}
		if !x.prepared {
			x.prepare.SetStatus(codes.Error, "abandoned: no vote seen")
			x.prepare.End()
		}
		if x.decision != nil {
			x.decision.SetStatus(codes.Error, "abandoned: not applied")
			x.decision.End()
		} else {
			x.prepare.AddEvent("abandoned: no decision within " + tracing.TableMaxAge.String())
		}
		t.forgetLocked(id)
	}
}

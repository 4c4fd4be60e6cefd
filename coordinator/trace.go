// This file holds the coordinator's tracing (docs/tracing.md): a side
// table of the transactions being traced, fed by the front door and the
// pumps. The engine knows nothing of it. With tracing off Server.tr is nil
// and every hook is one nil check; with tracing on and nothing traced, one
// atomic load.

package coordinator

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/internal/tracing"
	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/protocol"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// tracer keeps the spans of the transactions being traced. Its table is
// written by the connections' readers (begins, votes, acks) and the pumps
// (prepares, decisions, replies), under mu; live mirrors its size so that
// the hot paths skip the lock while nothing is traced.
type tracer struct {
	t    trace.Tracer // immutable
	live atomic.Int64
	mu   struct {
		sync.Mutex
		txns  map[protocol.TxnID]*txnTrace
		swept time.Time
	}
}

// txnTrace is one traced transaction's spans, guarded by tracer.mu.
//
//	commitd.txn                      begin … reply and, after a commit, the last ack
//	├── commitd.prepare (one each)   prepare sent … vote received
//	├── commitd.decision             every vote in (or a NO, or a timeout) … decision sent
//	└── commitd.phase2               decision sent … every ack received
//	    └── commitd.commit (one each) commit sent … ack received
type txnTrace struct {
	tag      uint64 // the begin's; a reply with another tag is a duplicate's
	started  time.Time
	ctx      context.Context // carries root
	root     trace.Span
	prepares []branchSpan // one per prepare sent
	waiting  int          // prepares without a vote
	decision trace.Span   // nil until started; ended once
	decided  bool
	// yes counts YES votes; onePhase marks a one-phase prepare. A commit
	// replied with a YES and not one-phase is a staged decision's
	// implicit commit: its decision messages (phase two) come after the
	// reply, and the transaction's span waits for them.
	yes      int
	onePhase bool
	decEnded bool // the decision span ended at an implicit commit
	phase2   trace.Span
	commits  []branchSpan // per participant, until its ack
	unacked  int
	replied  bool
}

// branchSpan is a span about one participant.
type branchSpan struct {
	name string
	span trace.Span
	open bool
}

func newTracer(tp trace.TracerProvider) *tracer {
	t := &tracer{t: tp.Tracer(tracing.Scope)}
	t.mu.txns = make(map[protocol.TxnID]*txnTrace)
	return t
}

// idle reports whether nothing is traced: the hot paths' one check.
func (t *tracer) idle() bool { return t.live.Load() == 0 }

// begin starts a transaction's root span if the client sent a trace
// context or the sampler picks it. Called by the connection's reader
// before it hands the begin to its shard. An untraced begin takes no lock
// and builds no attributes: the sampler's "no" is all it costs.
func (t *tracer) begin(b *wire.Begin, tag uint64) {
	now := time.Now()
	ctx := context.Background()
	if sc := tracing.SpanContext(&b.Trace); sc.IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, sc)
	}
	ctx, root := t.t.Start(ctx, "commitd.txn", trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(now))
	if !root.IsRecording() {
		return // not sampled: nothing to keep, nothing passed on
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Sub(t.mu.swept) > tracing.TableSweepEvery {
		t.sweepLocked(now)
	}
	if len(t.mu.txns) >= tracing.TableMaxTxns || t.mu.txns[b.Txn] != nil {
		// Full, or a duplicate id (the shard rejects it): the span is
		// dropped unended, so it is never exported.
		return
	}
	root.SetAttributes(tracing.AttrTxn.String(b.Txn.String()), tracing.AttrBranches.Int(len(b.Branches)))
	t.mu.txns[b.Txn] = &txnTrace{tag: tag, started: now, ctx: ctx, root: root}
	t.live.Add(1)
}

// prepare starts the span of the prepare to participant to and returns the
// trace context the prepare carries (zero if the transaction is not
// traced). Called by the shard's pump as it sends the prepare.
func (t *tracer) prepare(txn protocol.TxnID, to string, onePhase bool) wire.TraceContext {
	t.mu.Lock()
	defer t.mu.Unlock()
	x := t.mu.txns[txn]
	if x == nil {
		return wire.TraceContext{}
	}
	_, sp := t.t.Start(x.ctx, "commitd.prepare", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(tracing.AttrTxn.String(txn.String()), tracing.AttrParticipant.String(to),
			tracing.AttrOnePhase.Bool(onePhase)))
	x.prepares = append(x.prepares, branchSpan{name: to, span: sp, open: true})
	x.waiting++
	x.onePhase = x.onePhase || onePhase
	return tracing.Wire(sp.SpanContext())
}

// notSent ends the span of a prepare that never left: the participant was
// not connected.
func (t *tracer) notSent(txn protocol.TxnID, to string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if x := t.mu.txns[txn]; x != nil {
		if b := find(x.prepares, to); b != nil && b.open {
			b.span.SetStatus(codes.Error, "not sent: participant not connected")
			b.span.End()
			b.open = false
			x.waiting--
		}
	}
}

// vote ends the prepare span of participant from; the last vote, or one
// that is not a YES or read-only, starts the decision span.
func (t *tracer) vote(txn protocol.TxnID, from string, v protocol.Vote) {
	t.mu.Lock()
	defer t.mu.Unlock()
	x := t.mu.txns[txn]
	if x == nil {
		return
	}
	b := find(x.prepares, from)
	if b == nil || !b.open {
		return // a duplicate or late vote
	}
	b.span.SetAttributes(tracing.AttrVote.String(v.String()))
	if v == protocol.VoteYes {
		x.yes++
	}
	if v == protocol.VoteNo {
		b.span.SetStatus(codes.Error, "voted no")
	}
	b.span.End()
	b.open = false
	x.waiting--
	if x.decision == nil && !x.decided && (x.waiting == 0 || v == protocol.VoteNo) {
		_, x.decision = t.t.Start(x.ctx, "commitd.decision", trace.WithAttributes(tracing.AttrTxn.String(txn.String())))
	}
}

// decision notes a decision message to participant to: the first ends the
// decision span and starts phase two; a commit starts that participant's
// span, which its ack ends.
func (t *tracer) decision(txn protocol.TxnID, to string, d protocol.Decision) {
	t.mu.Lock()
	defer t.mu.Unlock()
	x := t.mu.txns[txn]
	if x == nil {
		return
	}
	if !x.decided {
		x.decided = true
		if x.decision == nil {
			// No vote started it: the prepare timed out, or a participant
			// was unreachable.
			_, x.decision = t.t.Start(x.ctx, "commitd.decision", trace.WithAttributes(tracing.AttrTxn.String(txn.String())))
		}
		if !x.decEnded {
			x.decision.SetAttributes(tracing.AttrDecision.String(d.String()))
			x.decision.End()
		}
		x.endPreparesLocked("no vote before the decision")
		_, x.phase2 = t.t.Start(x.ctx, "commitd.phase2",
			trace.WithAttributes(tracing.AttrTxn.String(txn.String()), tracing.AttrDecision.String(d.String())))
	}
	if d != protocol.DecisionCommit {
		return // presumed abort: no acknowledgement comes
	}
	if b := find(x.commits, to); b != nil {
		if b.open {
			b.span.AddEvent("redelivered")
		}
		return
	}
	ctx := trace.ContextWithSpan(x.ctx, x.phase2)
	_, sp := t.t.Start(ctx, "commitd.commit", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(tracing.AttrTxn.String(txn.String()), tracing.AttrParticipant.String(to)))
	x.commits = append(x.commits, branchSpan{name: to, span: sp, open: true})
	x.unacked++
}

// ack ends participant from's commit span; the last ack ends phase two,
// and the transaction's span if its reply has gone.
func (t *tracer) ack(txn protocol.TxnID, from string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	x := t.mu.txns[txn]
	if x == nil {
		return
	}
	b := find(x.commits, from)
	if b == nil || !b.open {
		return
	}
	b.span.End()
	b.open = false
	x.unacked--
	if x.unacked == 0 {
		x.phase2.End()
		if x.replied {
			t.endLocked(txn, x)
		}
	}
}

// reply records the outcome on the transaction's span and ends it, or,
// after a commit, leaves it to the last ack.
func (t *tracer) reply(r *engine.Reply) {
	t.mu.Lock()
	defer t.mu.Unlock()
	x := t.mu.txns[r.Txn]
	if x == nil || x.tag != r.Tag || x.replied {
		return
	}
	x.replied = true
	attrs := []attribute.KeyValue{tracing.AttrOutcome.String(r.Outcome.String())}
	if r.Cause != 0 {
		attrs = append(attrs, tracing.AttrCause.String(r.Cause.String()))
	}
	if r.Participant != "" {
		attrs = append(attrs, tracing.AttrCauseBy.String(r.Participant))
	}
	if r.Detail != "" {
		attrs = append(attrs, tracing.AttrDetail.String(r.Detail))
	}
	x.root.SetAttributes(attrs...)
	x.root.AddEvent("reply", trace.WithAttributes(tracing.AttrOutcome.String(r.Outcome.String())))
	if r.Outcome != protocol.OutcomeCommitted {
		desc := r.Outcome.String()
		if r.Cause != 0 {
			desc += ": " + r.Cause.String()
			if r.Participant != "" {
				desc += " (" + r.Participant + ")"
			}
		}
		x.root.SetStatus(codes.Error, desc)
	}
	x.endPreparesLocked("no vote before the reply")
	if r.Outcome == protocol.OutcomeCommitted && x.decision != nil && !x.decided && x.yes > 0 && !x.onePhase {
		// A staged decision's implicit commit: the decision is made (the
		// reply says so), its messages follow once the commit record is
		// durable; phase two, and the transaction's span, go on until
		// the last ack.
		x.decision.SetAttributes(tracing.AttrDecision.String(protocol.DecisionCommit.String()))
		x.decision.AddEvent("implicit commit: staged record and every YES durable")
		x.decision.End()
		x.decEnded = true
		return
	}
	if x.decision != nil && !x.decided {
		// A one-phase commit (the participant decided), or an abort
		// that reached no participant.
		switch r.Outcome {
		case protocol.OutcomeCommitted:
			x.decision.SetAttributes(tracing.AttrDecision.String(protocol.DecisionCommit.String()))
		case protocol.OutcomeAborted:
			x.decision.SetAttributes(tracing.AttrDecision.String(protocol.DecisionAbort.String()))
		}
		x.decision.End()
		x.decided = true
	}
	if x.unacked > 0 {
		return // the last ack ends it
	}
	if x.phase2 != nil {
		x.phase2.End()
	}
	t.endLocked(r.Txn, x)
}

// endPreparesLocked ends the prepare spans still waiting for a vote.
func (x *txnTrace) endPreparesLocked(why string) {
	for i := range x.prepares {
		if b := &x.prepares[i]; b.open {
			b.span.SetStatus(codes.Error, why)
			b.span.End()
			b.open = false
		}
	}
	x.waiting = 0
}

// endLocked ends the transaction's span and forgets it.
func (t *tracer) endLocked(txn protocol.TxnID, x *txnTrace) {
	x.root.End()
	delete(t.mu.txns, txn)
	t.live.Add(-1)
}

// sweepLocked ends and forgets the transactions traced for longer than
// tracing.TableMaxAge: their end never came (a participant that never acknowledged
// its commit, a coordinator that stopped leading).
func (t *tracer) sweepLocked(now time.Time) {
	t.mu.swept = now
	for id, x := range t.mu.txns {
		if now.Sub(x.started) < tracing.TableMaxAge {
			continue
		}
		x.endPreparesLocked("abandoned: no end seen")
		for i := range x.commits {
			if b := &x.commits[i]; b.open {
				b.span.SetStatus(codes.Error, "abandoned: no ack seen")
				b.span.End()
			}
		}
		if x.decision != nil && !x.decided {
			x.decision.End()
		}
		if x.phase2 != nil {
			x.phase2.End()
		}
		x.root.SetStatus(codes.Error, "abandoned: the coordinator saw no end within "+tracing.TableMaxAge.String())
		t.endLocked(id, x)
	}
}

func find(bs []branchSpan, name string) *branchSpan {
	for i := range bs {
		if bs[i].name == name {
			return &bs[i]
		}
	}
	return nil
}

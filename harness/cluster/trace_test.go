package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/harness/cluster"
	"github.com/commitd/commitd/internal/tracing"
	"github.com/commitd/commitd/participant/bank"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// tracedCluster is a cluster whose servers record their spans in rec,
// sampling only what arrives with a sampled trace context, and a tracer
// for the caller's own spans (sampled, not recorded).
func tracedCluster(t *testing.T) (*tracetest.SpanRecorder, trace.Tracer, *client.Client) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(tracing.Sampler(0)))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	_, cl := startCluster(t, cluster.Options{TracerProvider: tp})
	return rec, sdktrace.NewTracerProvider().Tracer("test"), cl
}

// spansOf waits until the spans of trace id include every name in want as
// often as it says, and returns them all.
func spansOf(t *testing.T, rec *tracetest.SpanRecorder, id trace.TraceID, want map[string]int) []sdktrace.ReadOnlySpan {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		var got []sdktrace.ReadOnlySpan
		n := map[string]int{}
		for _, s := range rec.Ended() {
			if s.SpanContext().TraceID() == id {
				got = append(got, s)
				n[s.Name()]++
			}
		}
		ok := true
		for name, k := range want {
			ok = ok && n[name] >= k
		}
		if ok {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("spans of trace %v: got %v, want at least %v", id, n, want)
		}
	}
}

func attr(s sdktrace.ReadOnlySpan, k attribute.Key) string {
	for _, kv := range s.Attributes() {
		if kv.Key == k {
			return kv.Value.String()
		}
	}
	return ""
}

// named returns the spans called name, by their participant attribute.
func named(spans []sdktrace.ReadOnlySpan, name string) map[string]sdktrace.ReadOnlySpan {
	m := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		if s.Name() == name {
			m[attr(s, tracing.AttrParticipant)] = s
		}
	}
	return m
}

func one(t *testing.T, spans []sdktrace.ReadOnlySpan, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	m := named(spans, name)
	if len(m) != 1 {
		t.Fatalf("%d %s spans, want 1", len(m), name)
	}
	for _, s := range m {
		return s
	}
	return nil
}

func childOf(t *testing.T, s sdktrace.ReadOnlySpan, parent trace.SpanContext, remote bool) {
	t.Helper()
	if s.Parent().SpanID() != parent.SpanID() || s.Parent().TraceID() != parent.TraceID() {
		t.Errorf("%s (%s): parent %v, want %v", s.Name(), attr(s, tracing.AttrParticipant), s.Parent().SpanID(), parent.SpanID())
	}
	if s.Parent().IsRemote() != remote {
		t.Errorf("%s (%s): parent remote = %v, want %v: the link must come %s", s.Name(), attr(s, tracing.AttrParticipant),
			s.Parent().IsRemote(), remote, map[bool]string{true: "over the wire", false: "from the same process"}[remote])
	}
}

// TestTraceOfACommit runs a transfer under a caller's span through a real
// coordinator and two participants and checks the whole trace: one span
// for the transaction, the caller's child (its context came in the
// Begin); a prepare span per participant, and under each, over the wire,
// the participant's prepare and commit spans; the decision and phase two,
// with a commit span per participant that its ack ends.
func TestTraceOfACommit(t *testing.T) {
	rec, tr, cl := tracedCluster(t)
	ctx, caller := tr.Start(context.Background(), "caller")
	id := uuid.Must(uuid.NewV7())
	res, err := cl.Run(ctx, id, transferOf("p1", "p2", 5))
	caller.End()
	if err != nil || res.Outcome != client.Committed {
		t.Fatalf("transfer: %v %v", res, err)
	}
	tid := caller.SpanContext().TraceID()
	spans := spansOf(t, rec, tid, map[string]int{"commitd.txn": 1, "commitd.prepare": 2, "commitd.participant.prepare": 2,
		"commitd.decision": 1, "commitd.phase2": 1, "commitd.commit": 2, "commitd.participant.commit": 2})

	txn := one(t, spans, "commitd.txn")
	childOf(t, txn, caller.SpanContext(), true)
	if attr(txn, tracing.AttrTxn) != id.String() || attr(txn, tracing.AttrOutcome) != "committed" || txn.Status().Code == codes.Error {
		t.Errorf("txn span: attributes %v, status %v", txn.Attributes(), txn.Status())
	}
	prepares := named(spans, "commitd.prepare")
	partPrepares := named(spans, "commitd.participant.prepare")
	partCommits := named(spans, "commitd.participant.commit")
	commits := named(spans, "commitd.commit")
	for _, p := range []string{"p1", "p2"} {
		cp, pp, pc, c := prepares[p], partPrepares[p], partCommits[p], commits[p]
		if cp == nil || pp == nil || pc == nil || c == nil {
			t.Fatalf("%s: prepare %v, participant prepare %v, participant commit %v, commit %v", p, cp != nil, pp != nil, pc != nil, c != nil)
		}
		childOf(t, cp, txn.SpanContext(), false)
		if attr(cp, tracing.AttrVote) != "yes" || attr(cp, tracing.AttrTxn) != id.String() {
			t.Errorf("%s: coordinator's prepare span attributes %v", p, cp.Attributes())
		}
		childOf(t, pp, cp.SpanContext(), true)
		if attr(pp, tracing.AttrVote) != "yes" || attr(pp, tracing.AttrTxn) != id.String() {
			t.Errorf("%s: participant's prepare span attributes %v", p, pp.Attributes())
		}
		childOf(t, pc, cp.SpanContext(), true)
		if attr(pc, tracing.AttrDecision) != "commit" {
			t.Errorf("%s: participant's commit span attributes %v", p, pc.Attributes())
		}
	}
	dec := one(t, spans, "commitd.decision")
	childOf(t, dec, txn.SpanContext(), false)
	if attr(dec, tracing.AttrDecision) != "commit" {
		t.Errorf("decision span attributes %v", dec.Attributes())
	}
	p2 := one(t, spans, "commitd.phase2")
	childOf(t, p2, txn.SpanContext(), false)
	for p, c := range commits {
		childOf(t, c, p2.SpanContext(), false)
		if c.EndTime().Before(c.StartTime()) || txn.EndTime().Before(c.EndTime()) {
			t.Errorf("%s: commit span %v … %v ends after the transaction's (%v)", p, c.StartTime(), c.EndTime(), txn.EndTime())
		}
	}
	for _, s := range spans {
		if attr(s, tracing.AttrTxn) != id.String() {
			t.Errorf("%s (%s): %s = %q, want the transaction's id", s.Name(), attr(s, tracing.AttrParticipant), tracing.AttrTxn, attr(s, tracing.AttrTxn))
		}
		if s.Name() != "commitd.txn" && (s.StartTime().Before(txn.StartTime()) || s.EndTime().After(txn.EndTime())) {
			t.Errorf("%s (%s) is not inside the transaction's span", s.Name(), attr(s, tracing.AttrParticipant))
		}
	}
}

// TestTraceOfAnAbort: a transfer p2 cannot pay for aborts; the
// transaction's span carries the outcome, the cause and the participant
// that caused it, and an error status that says so; p2's prepare spans
// carry its NO, and p1's abort is traced as a child of its prepare.
func TestTraceOfAnAbort(t *testing.T) {
	rec, tr, cl := tracedCluster(t)
	ctx, caller := tr.Start(context.Background(), "caller")
	a := nextAccount.Add(1) % 1000
	res, err := cl.Run(ctx, uuid.Must(uuid.NewV7()), []client.Branch{
		{Participant: "p1", Work: bank.AppendWork(nil, a, 1)},
		{Participant: "p2", Work: bank.AppendWork(nil, a, -1_000_000)},
	})
	caller.End()
	if err != nil || res.Outcome != client.Aborted {
		t.Fatalf("overdraft: %v %v", res, err)
	}
	spans := spansOf(t, rec, caller.SpanContext().TraceID(), map[string]int{"commitd.txn": 1, "commitd.prepare": 2,
		"commitd.participant.prepare": 2, "commitd.decision": 1, "commitd.participant.abort": 1})
	txn := one(t, spans, "commitd.txn")
	if attr(txn, tracing.AttrOutcome) != "aborted" || attr(txn, tracing.AttrCause) != "voted-no" || attr(txn, tracing.AttrCauseBy) != "p2" {
		t.Errorf("txn span attributes %v", txn.Attributes())
	}
	if st := txn.Status(); st.Code != codes.Error || st.Description != "aborted: voted-no (p2)" {
		t.Errorf("txn span status %+v", st)
	}
	if v := attr(named(spans, "commitd.prepare")["p2"], tracing.AttrVote); v != "no" {
		t.Errorf("p2's prepare span: vote %q", v)
	}
	if v := attr(named(spans, "commitd.participant.prepare")["p2"], tracing.AttrVote); v != "no" {
		t.Errorf("p2's own prepare span: vote %q", v)
	}
	if d := attr(one(t, spans, "commitd.decision"), tracing.AttrDecision); d != "abort" {
		t.Errorf("decision span: %q", d)
	}
	ab := one(t, spans, "commitd.participant.abort")
	if attr(ab, tracing.AttrParticipant) != "p1" {
		t.Errorf("abort traced at %q, want p1 (p2 voted no and hears no decision)", attr(ab, tracing.AttrParticipant))
	}
	childOf(t, ab, named(spans, "commitd.prepare")["p1"].SpanContext(), true)
}

// TestUntracedTransactionsLeaveNoSpans: with tracing on but a sampler that
// picks nothing of its own, a transaction without a trace context makes no
// span anywhere, and one with an unsampled context none either.
func TestUntracedTransactionsLeaveNoSpans(t *testing.T) {
	rec, _, cl := tracedCluster(t)
	mustCommit(t, cl)
	unsampled := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}}))
	res, err := cl.Run(unsampled, uuid.Must(uuid.NewV7()), transferOf("p1", "p2", 1))
	if err != nil || res.Outcome != client.Committed {
		t.Fatalf("transfer: %v %v", res, err)
	}
	// A traced one after them, so that the servers have handled the
	// untraced ones' every message by the time its spans are all in.
	ctx, caller := sdktrace.NewTracerProvider().Tracer("test").Start(context.Background(), "caller")
	res, err = cl.Run(ctx, uuid.Must(uuid.NewV7()), transferOf("p1", "p2", 1))
	caller.End()
	if err != nil || res.Outcome != client.Committed {
		t.Fatalf("transfer: %v %v", res, err)
	}
	spansOf(t, rec, caller.SpanContext().TraceID(), map[string]int{"commitd.txn": 1, "commitd.participant.commit": 2})
	time.Sleep(50 * time.Millisecond)
	for _, s := range rec.Ended() {
		if s.SpanContext().TraceID() != caller.SpanContext().TraceID() {
			t.Errorf("span %s of an untraced transaction (trace %v)", s.Name(), s.SpanContext().TraceID())
		}
	}
}

// TestTraceOfAOnePhaseCommit: a single-branch transaction commits in one
// phase; its trace has the transaction's span, the one prepare (marked
// one-phase) and under it the participant's prepare span, and a decision
// span; every span ends.
func TestTraceOfAOnePhaseCommit(t *testing.T) {
	rec, tr, cl := tracedCluster(t)
	ctx, caller := tr.Start(context.Background(), "caller")
	a := nextAccount.Add(1) % 1000
	res, err := cl.Run(ctx, uuid.Must(uuid.NewV7()), []client.Branch{{Participant: "p1", Work: bank.AppendWork(nil, a, 1)}})
	caller.End()
	if err != nil || res.Outcome != client.Committed {
		t.Fatalf("one-phase: %v %v", res, err)
	}
	spans := spansOf(t, rec, caller.SpanContext().TraceID(), map[string]int{"commitd.txn": 1, "commitd.prepare": 1, "commitd.participant.prepare": 1})
	txn := one(t, spans, "commitd.txn")
	if attr(txn, tracing.AttrOutcome) != "committed" {
		t.Errorf("txn span attributes %v", txn.Attributes())
	}
	cp := one(t, spans, "commitd.prepare")
	childOf(t, cp, txn.SpanContext(), false)
	if attr(cp, tracing.AttrOnePhase) != "true" {
		t.Errorf("prepare span attributes %v", cp.Attributes())
	}
	childOf(t, one(t, spans, "commitd.participant.prepare"), cp.SpanContext(), true)
	// The participant decided: the decision span runs from its vote to
	// the reply.
	if d := attr(one(t, spans, "commitd.decision"), tracing.AttrDecision); d != "commit" {
		t.Errorf("decision span: decision %q", d)
	}
}

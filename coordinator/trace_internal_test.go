package coordinator

import (
	"testing"
	"time"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/internal/tracing"
	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/protocol"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

func recTracer() (*tracer, *tracetest.SpanRecorder) {
	rec := tracetest.NewSpanRecorder()
	return newTracer(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))), rec
}

func ended(rec *tracetest.SpanRecorder) map[string][]sdktrace.ReadOnlySpan {
	m := map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		m[s.Name()] = append(m[s.Name()], s)
	}
	return m
}

// A prepare timeout: one participant never votes; the abort decision
// ends its prepare span as unanswered, the decision span starts and ends
// at the decision, and the reply ends the transaction with the cause.
func TestTraceTimeout(t *testing.T) {
	tr, rec := recTracer()
	id := uuid.Must(uuid.NewV7())
	tr.begin(&wire.Begin{Txn: id, Branches: make([]wire.Branch, 2)}, 7)
	if tr.idle() {
		t.Fatal("a sampled begin left the table empty")
	}
	if tc := tr.prepare(id, "p1", false); tc.IsZero() {
		t.Fatal("a traced prepare carries no trace context")
	}
	tr.prepare(id, "p2", false)
	tr.vote(id, "p1", protocol.VoteYes)
	tr.vote(id, "p1", protocol.VoteYes) // a duplicate: ignored
	tr.decision(id, "p1", protocol.DecisionAbort)
	tr.reply(&engine.Reply{Txn: id, Tag: 99, Outcome: protocol.OutcomeRejected}) // another begin's: ignored
	if got := ended(rec)["commitd.txn"]; len(got) != 0 {
		t.Fatal("a reply with another tag ended the transaction's span")
	}
	tr.reply(&engine.Reply{Txn: id, Tag: 7, Outcome: protocol.OutcomeAborted, Cause: protocol.CauseTimeout, Participant: "p2"})
	if !tr.idle() {
		t.Fatal("an ended transaction is still in the table")
	}
	m := ended(rec)
	if len(m["commitd.txn"]) != 1 || len(m["commitd.prepare"]) != 2 || len(m["commitd.decision"]) != 1 || len(m["commitd.phase2"]) != 1 {
		t.Fatalf("spans: %v", m)
	}
	if st := m["commitd.txn"][0].Status(); st.Code != codes.Error || st.Description != "aborted: timeout (p2)" {
		t.Errorf("txn status %+v", st)
	}
	for _, p := range m["commitd.prepare"] {
		part := ""
		for _, kv := range p.Attributes() {
			if kv.Key == tracing.AttrParticipant {
				part = kv.Value.AsString()
			}
		}
		if unanswered := p.Status().Code == codes.Error; unanswered != (part == "p2") {
			t.Errorf("prepare to %s: status %+v", part, p.Status())
		}
	}
}

// Untraced begins (an unsampled context, none with a ratio of 0) leave the
// table empty; a full table traces no more; a transaction that never ends
// is ended as abandoned by a sweep.
func TestTraceBoundsAndSweep(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tr := newTracer(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(tracing.Sampler(0))))
	tr.begin(&wire.Begin{Txn: uuid.Must(uuid.NewV7())}, 1)
	tr.begin(&wire.Begin{Txn: uuid.Must(uuid.NewV7()), Trace: wire.TraceContext{TraceID: [16]byte{1}, SpanID: [8]byte{1}}}, 2)
	if !tr.idle() {
		t.Fatal("an unsampled begin was traced")
	}
	sampled := wire.TraceContext{TraceID: [16]byte{1}, SpanID: [8]byte{1}, Flags: 1}
	old := uuid.Must(uuid.NewV7())
	tr.begin(&wire.Begin{Txn: old, Trace: sampled}, 3)
	tr.prepare(old, "p1", false)
	tr.vote(old, "p1", protocol.VoteYes)
	tr.decision(old, "p1", protocol.DecisionCommit) // no ack ever comes
	tr.reply(&engine.Reply{Txn: old, Tag: 3, Outcome: protocol.OutcomeCommitted})
	if tr.idle() {
		t.Fatal("a commit awaiting its ack left the table")
	}
	tr.mu.Lock()
	tr.mu.txns[old].started = time.Now().Add(-2 * tracing.TableMaxAge)
	tr.mu.swept = time.Time{}
	tr.mu.Unlock()
	tr.begin(&wire.Begin{Txn: uuid.Must(uuid.NewV7()), Trace: sampled}, 4) // the next traced begin sweeps
	tr.mu.Lock()
	_, kept := tr.mu.txns[old]
	n := len(tr.mu.txns)
	tr.mu.Unlock()
	if kept || n != 1 || tr.live.Load() != 1 {
		t.Fatalf("after the sweep: abandoned kept %v, %d traced (live %d), want only the new one", kept, n, tr.live.Load())
	}
	m := ended(rec)
	if len(m["commitd.txn"]) != 1 || m["commitd.txn"][0].Status().Code != codes.Error || len(m["commitd.commit"]) != 1 {
		t.Fatalf("abandoned transaction's spans: %v", m)
	}

	tr.mu.Lock()
	for i := range tracing.TableMaxTxns - 1 {
		tr.mu.txns[protocol.TxnID{0: byte(i), 1: byte(i >> 8), 15: 1}] = &txnTrace{started: time.Now()}
	}
	tr.mu.Unlock()
	extra := uuid.Must(uuid.NewV7())
	tr.begin(&wire.Begin{Txn: extra, Trace: sampled}, 5)
	tr.mu.Lock()
	_, traced := tr.mu.txns[extra]
	tr.mu.Unlock()
	if traced {
		t.Fatal("a full table took one more transaction")
	}
}

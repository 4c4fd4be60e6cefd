package httpres_test

import (
	"context"
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/internal/tracing"
	"github.com/commitd/commitd/protocol"
	"github.com/google/uuid"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// traceparentRE is a W3C traceparent of version 00: version, trace id,
// parent (span) id, flags, all lower-case hex.
var traceparentRE = regexp.MustCompile(`^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$`)

// TestServiceGetsTraceparent: with tracing on, a traced transaction's
// calls to an HTTP participant's service carry a well-formed traceparent
// in the caller's trace: the prepare's parent is the participant's
// prepare span, the commit's its commit span. An untraced transaction's
// calls carry none.
func TestServiceGetsTraceparent(t *testing.T) {
	a, b := newService(t, map[string]int64{"alice": 100}), newService(t, map[string]int64{"bob": 0})
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(tracing.Sampler(0)))
	defer tp.Shutdown(context.Background())
	r := startTracedRig(t, map[string]*service{"a": a, "b": b}, tp)

	// Untraced first: no header.
	r.run(t, 1, 1)
	settle(t, a, b)
	for _, s := range []*service{a, b} {
		s.headers.Lock()
		n := len(s.headers.byPath)
		s.headers.Unlock()
		if n != 0 {
			t.Fatalf("an untraced transaction's calls carried traceparent headers: %v", s.headers.byPath)
		}
	}

	ctx, caller := sdktrace.NewTracerProvider().Tracer("test").Start(context.Background(), "caller")
	res, err := r.cl.Run(ctx, uuid.Must(uuid.NewV7()), []client.Branch{
		{Participant: "a", Work: transfer("alice", -1)},
		{Participant: "b", Work: transfer("bob", 1)},
	})
	caller.End()
	if err != nil || res.Outcome != protocol.OutcomeCommitted {
		t.Fatalf("transfer: %v %v", res, err)
	}
	settle(t, a, b)
	want := caller.SpanContext().TraceID().String()
	// The participant's own spans, by name and participant, to match the
	// headers' parent ids against.
	spanID := func(name, part string) string {
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			for _, s := range rec.Ended() {
				for _, kv := range s.Attributes() {
					if s.Name() == name && kv.Key == tracing.AttrParticipant && kv.Value.AsString() == part {
						return s.SpanContext().SpanID().String()
					}
				}
			}
		}
		t.Fatalf("no %s span for %s", name, part)
		return ""
	}
	for name, s := range map[string]*service{"a": a, "b": b} {
		s.headers.Lock()
		got := fmt.Sprint(s.headers.byPath)
		prep, commit := s.headers.byPath["/prepare"], s.headers.byPath["/commit"]
		s.headers.Unlock()
		if len(prep) != 1 || len(commit) != 1 {
			t.Fatalf("%s: traceparent headers %s, want one on /prepare and one on /commit", name, got)
		}
		for path, h := range map[string]string{"/prepare": prep[0], "/commit": commit[0]} {
			m := traceparentRE.FindStringSubmatch(h)
			if m == nil {
				t.Fatalf("%s %s: traceparent %q is not well formed", name, path, h)
			}
			if m[1] != want || m[3] != "01" {
				t.Errorf("%s %s: traceparent %q, want trace id %s, sampled", name, path, h, want)
			}
			span := map[string]string{"/prepare": "commitd.participant.prepare", "/commit": "commitd.participant.commit"}[path]
			if id := spanID(span, name); m[2] != id {
				t.Errorf("%s %s: parent %s, want the %s span %s", name, path, m[2], span, id)
			}
		}
	}
}

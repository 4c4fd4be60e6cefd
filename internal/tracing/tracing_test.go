package tracing_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/commitd/commitd/internal/tracing"
	"github.com/commitd/commitd/net/wire"
	"go.opentelemetry.io/otel/trace"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// TestStartExportsOverOTLPHTTP: the provider --otlp-endpoint makes sends
// the spans it samples to the collector's /v1/traces as OTLP protobuf,
// with the service name, and flushes them at shutdown; with a sample
// ratio of 0 a root span is not sent, a child of a sampled remote parent
// is.
func TestStartExportsOverOTLPHTTP(t *testing.T) {
	var mu sync.Mutex
	var got []*coltrace.ExportTraceServiceRequest
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			t.Errorf("export to %s as %q", r.URL.Path, r.Header.Get("Content-Type"))
		}
		var req coltrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			t.Errorf("export body: %v", err)
		}
		mu.Lock()
		got = append(got, &req)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		b, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
		_, _ = w.Write(b)
	}))
	defer srv.Close()

	tp, shutdown, err := tracing.Start(tracing.Options{Endpoint: srv.URL, Service: "commitd-test"})
	if err != nil {
		t.Fatal(err)
	}
	tr := tp.Tracer(tracing.Scope)
	_, root := tr.Start(context.Background(), "unsampled-root")
	root.End()
	parent := tracing.SpanContext(&wire.TraceContext{TraceID: [16]byte{1}, SpanID: [8]byte{2}, Flags: 1})
	_, child := tr.Start(trace.ContextWithRemoteSpanContext(context.Background(), parent), "commitd.txn")
	child.End()
	if err := shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	var names []string
	for _, req := range got {
		for _, rs := range req.ResourceSpans {
			service := ""
			for _, kv := range rs.Resource.GetAttributes() {
				if kv.Key == "service.name" {
					service = kv.Value.GetStringValue()
				}
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					names = append(names, s.Name)
					if service != "commitd-test" {
						t.Errorf("span %s: service.name %q", s.Name, service)
					}
					if [16]byte(s.TraceId) != [16]byte{1} || [8]byte(s.ParentSpanId) != [8]byte{2} {
						t.Errorf("span %s: trace %x parent %x", s.Name, s.TraceId, s.ParentSpanId)
					}
				}
			}
		}
	}
	if len(names) != 1 || names[0] != "commitd.txn" {
		t.Fatalf("exported %v, want only the sampled child commitd.txn", names)
	}
}

func TestStartRefusesBadOptions(t *testing.T) {
	for _, o := range []tracing.Options{
		{Endpoint: "localhost:4318"},
		{Endpoint: "ftp://collector:4318"},
		{Endpoint: "http://"},
		{Endpoint: "http://localhost:4318", SampleRatio: 1.5},
		{Endpoint: "http://localhost:4318", SampleRatio: -0.1},
	} {
		if _, _, err := tracing.Start(o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}

// TestWireRoundTrip: a span context survives the wire's trace context, and
// the zero trace context is no span context.
func TestWireRoundTrip(t *testing.T) {
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{0xab, 15: 1}, SpanID: trace.SpanID{7: 9}, TraceFlags: trace.FlagsSampled})
	tc := tracing.Wire(sc)
	back := tracing.SpanContext(&tc)
	if back.TraceID() != sc.TraceID() || back.SpanID() != sc.SpanID() || !back.IsSampled() || !back.IsRemote() {
		t.Fatalf("round trip: %v → %+v → %v", sc, tc, back)
	}
	var zero wire.TraceContext
	if tracing.SpanContext(&zero).IsValid() || !func() bool { w := tracing.Wire(trace.SpanContext{}); return w.IsZero() }() {
		t.Fatal("the zero trace context is a span context")
	}
}

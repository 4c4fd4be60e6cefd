package tracing

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"github.com/commitd/commitd/net/wire"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Scope is the instrumentation scope of commitd's spans.
const Scope = "github.com/commitd/commitd"

// Span attribute keys, one vocabulary for the coordinator's and the
// participants' spans.
const (
	AttrTxn         = attribute.Key("commitd.txn")         // the transaction id, as text
	AttrParticipant = attribute.Key("commitd.participant") // a participant's name
	AttrBranches    = attribute.Key("commitd.branches")    // how many participants a begin names
	AttrOnePhase    = attribute.Key("commitd.one_phase")   // a prepare that commits at once
	AttrVote        = attribute.Key("commitd.vote")        // yes, no, read-only
	AttrDecision    = attribute.Key("commitd.decision")    // commit, abort
	AttrOutcome     = attribute.Key("commitd.outcome")     // committed, aborted, unknown, rejected
	AttrCause       = attribute.Key("commitd.cause")       // why it aborted (protocol.Cause)
	AttrCauseBy     = attribute.Key("commitd.cause.participant")
	AttrDetail      = attribute.Key("commitd.detail") // why a begin was rejected
)

// Bounds on a server's side table of traced transactions (the
// coordinator's and the participants' alike): a transaction whose end the
// server never sees — a participant that never acknowledges its commit, a
// decision that never comes — is ended as abandoned after TableMaxAge, at
// the next sweep (every TableSweepEvery); beyond TableMaxTxns transactions
// in the table, new ones are not traced, so that a stuck peer cannot grow
// a server's memory without bound.
const (
	TableMaxTxns    = 1 << 16
	TableMaxAge     = time.Minute
	TableSweepEvery = 10 * time.Second
)

// Options configure the exporter of a server's spans.
type Options struct {
	// Endpoint is the OTLP/HTTP collector's URL (http or https), e.g.
	// http://localhost:4318 (Jaeger, the OpenTelemetry Collector); a URL
	// without a path gets the standard /v1/traces.
	Endpoint string
	// SampleRatio is the share of transactions traced that arrive with no
	// trace context of their own (0 … 1). A trace context from the caller
	// decides for itself (its sampled flag), whatever the ratio.
	SampleRatio float64
	// Service is the service.name resource attribute, e.g.
	// "commitd-coordinator" or "commitd-participant bank-1".
	Service string
}

// Start makes a TracerProvider that exports to opts.Endpoint in batches.
// Its shutdown flushes what is pending (bounded by ctx) and stops it.
func Start(opts Options) (trace.TracerProvider, func(context.Context) error, error) {
	if opts.SampleRatio < 0 || opts.SampleRatio > 1 {
		return nil, nil, fmt.Errorf("--trace-sample %v: want a ratio from 0 to 1", opts.SampleRatio)
	}
	u, err := url.Parse(opts.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, nil, fmt.Errorf("--otlp-endpoint %q: want http://HOST:PORT[/PATH] or https://… (OTLP over HTTP, e.g. http://localhost:4318)", opts.Endpoint)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/traces"
	}
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(u.String()),
		otlptracehttp.WithTimeout(5*time.Second))
	if err != nil {
		return nil, nil, fmt.Errorf("--otlp-endpoint %q: %w", opts.Endpoint, err)
	}
	res := resource.NewSchemaless(attribute.String("service.name", opts.Service))
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(Sampler(opts.SampleRatio)),
	)
	return tp, tp.Shutdown, nil
}

// Sampler is commitd's sampler: a span with a parent (the caller's trace
// context, or the coordinator's prepare span) is sampled as its parent
// was; a transaction that arrives without one is sampled with probability
// ratio.
func Sampler(ratio float64) sdktrace.Sampler {
	return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))
}

// SpanContext is the remote span context a wire trace context carries; it
// is invalid for the zero TraceContext.
func SpanContext(tc *wire.TraceContext) trace.SpanContext {
	if tc.IsZero() {
		return trace.SpanContext{}
	}
	return trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    tc.TraceID,
		SpanID:     tc.SpanID,
		TraceFlags: trace.TraceFlags(tc.Flags),
		Remote:     true,
	})
}

// Wire is the trace context that carries sc to the next hop; zero when sc
// is invalid.
func Wire(sc trace.SpanContext) wire.TraceContext {
	if !sc.IsValid() {
		return wire.TraceContext{}
	}
	return wire.TraceContext{TraceID: sc.TraceID(), SpanID: sc.SpanID(), Flags: uint8(sc.TraceFlags())}
}

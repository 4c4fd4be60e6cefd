package main

import (
	"context"
	"errors"
	"flag"
	"time"

	"github.com/commitd/commitd/internal/tracing"
	"go.opentelemetry.io/otel/trace"
)

// traceFlags are the tracing flags of the servers (docs/tracing.md):
// off unless --otlp-endpoint is given.
type traceFlags struct {
	endpoint string
	ratio    float64
}

func (t *traceFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&t.endpoint, "otlp-endpoint", "", "turn tracing on: send spans by OTLP over HTTP to this collector, e.g. http://localhost:4318 (Jaeger, the OpenTelemetry Collector; a URL without a path gets /v1/traces); off if empty")
	fs.Float64Var(&t.ratio, "trace-sample", 0, "with --otlp-endpoint, the share (0 to 1) of transactions traced that arrive without a trace context; one that carries a caller's context is traced as its sampled flag says")
}

// start returns the TracerProvider the flags ask for (nil: tracing off)
// and a function that flushes and stops it, to call once the server has
// stopped.
func (t *traceFlags) start(service string) (trace.TracerProvider, func(), error) {
	if t.endpoint == "" {
		if t.ratio != 0 {
			return nil, nil, usageError{errors.New("--trace-sample needs --otlp-endpoint")}
		}
		return nil, func() {}, nil
	}
	tp, shutdown, err := tracing.Start(tracing.Options{Endpoint: t.endpoint, SampleRatio: t.ratio, Service: service})
	if err != nil {
		return nil, nil, usageError{err}
	}
	return tp, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = shutdown(ctx) // spans not sent by then are lost: tracing never holds up a stop
	}, nil
}

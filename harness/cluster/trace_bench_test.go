package cluster_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/harness/cluster"
	"github.com/commitd/commitd/internal/tracing"
	"github.com/google/uuid"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// BenchmarkTracing runs transfers from 100 callers through a whole
// cluster in this process (coordinator, two participants, client), with
// tracing off, on but with nothing traced (a provider whose sampler picks
// nothing, and no caller's trace context), and on with every transaction
// traced (each caller's context sampled, spans kept in memory). allocs/op
// and B/op are the whole process's per transaction: "off" against "idle"
// is the cost of having tracing on; against the commit before tracing
// existed, "off" is the cost of the hooks (run it there with the
// tracing-free harness; docs/tracing.md has the numbers).
func BenchmarkTracing(b *testing.B) {
	for _, mode := range []string{"off", "idle", "traced", "traced-batch"} {
		b.Run(mode, func(b *testing.B) {
			opts := cluster.Options{Dir: b.TempDir(), Logger: quietLogger()}
			var caller trace.Tracer
			switch mode {
			case "idle", "traced":
				opts.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithSampler(tracing.Sampler(0)),
					sdktrace.WithSpanProcessor(tracetest.NewSpanRecorder()))
			case "traced-batch":
				opts.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithSampler(tracing.Sampler(0)),
					sdktrace.WithBatcher(tracetest.NewNoopExporter()))
			}
			if mode != "off" && mode != "idle" {
				caller = sdktrace.NewTracerProvider().Tracer("bench")
			}
			c, err := cluster.Start(opts)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			cl, err := client.Dial(c.CoordinatorAddr, client.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer cl.Close()
			const callers = 100
			var next atomic.Int64
			var wg sync.WaitGroup
			var failed atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			for range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						ctx := context.Background()
						var sp trace.Span
						if caller != nil {
							ctx, sp = caller.Start(ctx, "caller")
						}
						res, err := cl.Run(ctx, uuid.Must(uuid.NewV7()), transferOf("p1", "p2", 1))
						if sp != nil {
							sp.End()
						}
						if err != nil || res.Outcome != client.Committed && res.Outcome != client.Aborted {
							failed.Add(1)
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			if n := failed.Load(); n > 0 {
				b.Fatalf("%d transactions failed or ended unknown", n)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "txn/s")
		})
	}
}

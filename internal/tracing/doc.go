// Package tracing is what the servers share for OpenTelemetry tracing
// (docs/tracing.md): the opt-in OTLP exporter behind --otlp-endpoint and
// --trace-sample, and the conversion between a wire.TraceContext and an
// OpenTelemetry span context.
//
// Tracing is off unless a server is given a TracerProvider: then it keeps
// no trace state and its hot paths pay one nil check. The engine knows
// nothing of it; the servers keep their spans in side tables keyed by
// transaction id.
package tracing

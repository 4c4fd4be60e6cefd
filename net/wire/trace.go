package wire

import "fmt"

// TraceContextLen is the size of a TraceContext on the wire: trace id,
// span id, flags.
const TraceContextLen = 16 + 8 + 1

// TraceContext is a W3C trace context (the fields of a traceparent header,
// version 00) that a Begin or a Prepare may carry, so that a trace follows
// a transaction from the client through the coordinator to the
// participants (docs/tracing.md). The zero value means "none": the frame
// is sent without FlagTrace and without these bytes.
//
// On the wire, after the message's own fields, when the header has
// FlagTrace:
//
//	trace id [16] | span id [8] | flags u8 (W3C trace-flags; bit 0 = sampled)
//
// A trace context with FlagTrace must have a non-zero trace id and a
// non-zero span id (W3C calls all-zero ids invalid): so every message keeps
// exactly one encoding. The flags byte is opaque here.
type TraceContext struct {
	TraceID [16]byte
	SpanID  [8]byte
	Flags   uint8
}

// IsZero reports whether t is the zero value: no trace context. Field by
// field, so that it compiles to three word compares rather than a call to
// memequal: every Begin and Prepare asks it.
func (t *TraceContext) IsZero() bool {
	return t.TraceID == [16]byte{} && t.SpanID == [8]byte{} && t.Flags == 0
}

// flag is the header flag for a message carrying t.
func (t *TraceContext) flag() Flags {
	if t.IsZero() {
		return 0
	}
	return FlagTrace
}

func (t *TraceContext) check() error {
	if t.IsZero() {
		return nil
	}
	if t.TraceID == [16]byte{} || t.SpanID == [8]byte{} {
		return fmt.Errorf("%w: trace context with an all-zero trace or span id", ErrMalformed)
	}
	return nil
}

func (t *TraceContext) append(dst []byte) []byte {
	if t.IsZero() {
		return dst
	}
	dst = append(dst, t.TraceID[:]...)
	dst = append(dst, t.SpanID[:]...)
	return append(dst, t.Flags)
}

// traceContext reads the trace context at the end of a payload if the
// frame's flags say there is one, and zeroes t otherwise. The test of the
// flag inlines, so an untraced frame pays no call.
func (d *decoder) traceContext(fl Flags, t *TraceContext) {
	if fl&FlagTrace == 0 {
		*t = TraceContext{}
		return
	}
	d.readTraceContext(t)
}

func (d *decoder) readTraceContext(t *TraceContext) {
	*t = TraceContext{}
	b := d.take(TraceContextLen, "trace context")
	if b == nil {
		return
	}
	copy(t.TraceID[:], b[:16])
	copy(t.SpanID[:], b[16:24])
	t.Flags = b[24]
	if t.TraceID == [16]byte{} || t.SpanID == [8]byte{} {
		if d.err == nil {
			d.err = fmt.Errorf("%w: trace context with an all-zero trace or span id", ErrMalformed)
		}
	}
}

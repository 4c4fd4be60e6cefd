package coordinator

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/protocol"
	"github.com/commitd/commitd/wal"
	"github.com/google/uuid"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Answering clients does not allocate, whatever the reply carries — nor
// does recording the outcome in the index, or its count and latency for
// the web console (rates.go): an
// abort names its participant, a rejection says why — and under overload
// every begin is answered with a rejection, as fast as clients send them.
// (Each reply used to allocate its participant and detail afresh: 2.45 M
// allocations for 2.44 M rejections in a probe.)
func TestDeliverRepliesDoNotAllocate(t *testing.T) {
	t.Run("tracing-off", func(t *testing.T) { testDeliverAllocs(t, nil) })
	// On, with nothing traced: the hooks read a count and go on, without
	// the table's lock or a lookup.
	t.Run("tracing-idle", func(t *testing.T) { testDeliverAllocs(t, newTracer(sdktrace.NewTracerProvider())) })
}

func testDeliverAllocs(t *testing.T, tr *tracer) {
	near, far := net.Pipe()
	go func() { _, _ = io.Copy(io.Discard, far) }()
	c := mux.NewConn(near, mux.Options{Logger: nodetest.Quiet()})
	defer c.Close()
	x, err := openOutcomes(t.TempDir(), wal.Options{SegmentBytes: 1 << 20}, time.Hour, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	defer x.close()
	s := &Server{metrics: newMetrics(), outcomes: x, rates: []*rates{newRates()}, tr: tr}
	id, _ := s.clients.add(c)
	o := &shardOutput{s: s}
	rd := &engine.Ready{Replies: []engine.Reply{
		{Txn: uuid.New(), Tag: id<<tagReqBits | 1, Outcome: protocol.OutcomeAborted, Cause: protocol.CauseVotedNo, Participant: "p1"},
		{Txn: uuid.New(), Tag: id<<tagReqBits | 3, Outcome: protocol.OutcomeCommitted, Participants: []string{"p1", "p2"}},
		{Txn: uuid.New(), Tag: id<<tagReqBits | 2, Outcome: protocol.OutcomeRejected, Cause: protocol.CauseOverloaded,
			Detail: "the coordinator holds as many transactions as it may"},
	}}
	for range 1000 { // the connection's queue grows to its working size
		o.Deliver(rd)
	}
	// A little slack: the writer may fall behind and the queue grow once.
	if n := testing.AllocsPerRun(1000, func() { o.Deliver(rd) }); n > 0.1 {
		t.Fatalf("%.2f allocations per Ready of three replies", n)
	}
}

// BenchmarkDeliverReplies is the pump's delivery of a Ready of three
// replies, with tracing off and on-but-idle: the hooks' cost on the path
// every transaction takes (docs/tracing.md, "Cost").
func BenchmarkDeliverReplies(b *testing.B) {
	for _, mode := range []string{"off", "idle"} {
		b.Run(mode, func(b *testing.B) {
			var tr *tracer
			if mode == "idle" {
				tr = newTracer(sdktrace.NewTracerProvider())
			}
			near, far := net.Pipe()
			go func() { _, _ = io.Copy(io.Discard, far) }()
			c := mux.NewConn(near, mux.Options{Logger: nodetest.Quiet()})
			defer c.Close()
			x, err := openOutcomes(b.TempDir(), wal.Options{SegmentBytes: 1 << 20}, time.Hour, 1<<30)
			if err != nil {
				b.Fatal(err)
			}
			defer x.close()
			s := &Server{metrics: newMetrics(), outcomes: x, rates: []*rates{newRates()}, tr: tr}
			id, _ := s.clients.add(c)
			o := &shardOutput{s: s}
			rd := &engine.Ready{Replies: []engine.Reply{
				{Txn: uuid.New(), Tag: id<<tagReqBits | 1, Outcome: protocol.OutcomeAborted, Cause: protocol.CauseVotedNo, Participant: "p1"},
				{Txn: uuid.New(), Tag: id<<tagReqBits | 3, Outcome: protocol.OutcomeCommitted, Participants: []string{"p1", "p2"}},
				{Txn: uuid.New(), Tag: id<<tagReqBits | 2, Outcome: protocol.OutcomeRejected, Cause: protocol.CauseOverloaded},
			}}
			b.ReportAllocs()
			for b.Loop() {
				o.Deliver(rd)
			}
		})
	}
}

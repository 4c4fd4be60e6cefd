package embed_test

import (
	"context"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/embed"
	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/google/uuid"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// spyService is a memService that keeps the span each call's ctx carries.
type spyService struct {
	*memService
	mu    sync.Mutex
	spans map[string]trace.SpanContext // by call
}

func (s *spyService) note(call string, ctx context.Context) {
	s.mu.Lock()
	s.spans[call] = trace.SpanContextFromContext(ctx)
	s.mu.Unlock()
}

func (s *spyService) Prepare(ctx context.Context, txn embed.TxnID, w []byte) (embed.Vote, error) {
	s.note("prepare", ctx)
	return s.memService.Prepare(ctx, txn, w)
}

func (s *spyService) Commit(ctx context.Context, txn embed.TxnID) error {
	s.note("commit", ctx)
	return s.memService.Commit(ctx, txn)
}

// With Config.TracerProvider, a Go Service's calls get a ctx carrying the
// participant's span, in the trace of the caller's span around Run: its
// prepare span for Prepare, its commit span for Commit.
func TestServiceCallsCarryTheSpan(t *testing.T) {
	dir := t.TempDir()
	ln := func() net.Listener {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	cln, aln, bln := ln(), ln(), ln()
	tp := sdktrace.NewTracerProvider()
	coord, err := coordinator.Start(coordinator.Config{Listener: cln, DataDir: filepath.Join(dir, "c"), SegmentBytes: 1 << 20,
		Logger: nodetest.Quiet(), Participants: map[string]string{"a": aln.Addr().String(), "b": bln.Addr().String()}, TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	defer coord.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	svcs := map[string]*spyService{}
	for name, l := range map[string]net.Listener{"a": aln, "b": bln} {
		svcs[name] = &spyService{memService: newMemService(), spans: map[string]trace.SpanContext{}}
		p, err := embed.Start(embed.Config{Name: name, Listener: l, DataDir: filepath.Join(dir, name),
			Coordinator: cln.Addr().String(), Service: svcs[name], SegmentBytes: 1 << 20, Logger: nodetest.Quiet(), TracerProvider: tp})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		if err := p.WaitConnected(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := coord.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	cl, err := client.Dial(cln.Addr().String(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	tctx, caller := tp.Tracer("test").Start(ctx, "caller")
	id := uuid.Must(uuid.NewV7())
	res, err := cl.Run(tctx, id, []client.Branch{{Participant: "a", Work: []byte("x")}, {Participant: "b", Work: []byte("y")}})
	caller.End()
	if err != nil || res.Outcome != client.Committed {
		t.Fatalf("%v %v", res, err)
	}
	for name, svc := range svcs {
		for deadline := time.Now().Add(5 * time.Second); !svc.is(id, svc.committed); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the commit never reached the service", name)
			}
		}
		svc.mu.Lock()
		prep, commit := svc.spans["prepare"], svc.spans["commit"]
		svc.mu.Unlock()
		for call, sc := range map[string]trace.SpanContext{"prepare": prep, "commit": commit} {
			if !sc.IsValid() || sc.TraceID() != caller.SpanContext().TraceID() || sc.SpanID() == caller.SpanContext().SpanID() {
				t.Errorf("%s: %s's ctx carried %v, want a span of trace %v", name, call, sc, caller.SpanContext().TraceID())
			}
		}
		if prep.SpanID() == commit.SpanID() {
			t.Errorf("%s: prepare and commit carried the same span", name)
		}
	}
}

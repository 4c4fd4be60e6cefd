package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/client/clienttest"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/protocol"
	"github.com/google/uuid"
)

func startFake(t testing.TB, decide func(uuid.UUID) client.Outcome) (*clienttest.Coordinator, *client.Client) {
	t.Helper()
	fake, err := clienttest.Start(decide)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fake.Close() })
	cl, err := client.Dial(fake.Addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return fake, cl
}

func transfer() []client.Branch {
	return []client.Branch{
		{Participant: "p1", Work: bank.AppendWork(nil, 7, -10)},
		{Participant: "p2", Work: bank.AppendWork(nil, 42, +10)},
	}
}

// TestRunOutcomes checks that each outcome the coordinator answers reaches
// the caller with its cause, and that the branches' names survive the
// pooled encoding from one call to the next.
func TestRunOutcomes(t *testing.T) {
	byFirstByte := func(id uuid.UUID) client.Outcome { return client.Outcome(1 + id[15]%3) }
	fake, cl := startFake(t, byFirstByte)
	ctx := context.Background()
	for i := range 30 {
		id := uuid.Must(uuid.NewV7())
		res, err := cl.Run(ctx, id, transfer())
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		want := byFirstByte(id)
		if res.Txn != id || res.Outcome != want {
			t.Fatalf("call %d: %v, want %v for %v", i, res, want, id)
		}
		switch want {
		case client.Aborted:
			if res.Cause != protocol.CauseVotedNo || res.Participant != "p1" {
				t.Fatalf("call %d: abort %v at %q, want voted-no at p1", i, res.Cause, res.Participant)
			}
		case client.Rejected:
			if res.Cause != protocol.CauseInvalid {
				t.Fatalf("call %d: rejection cause %v", i, res.Cause)
			}
		}
	}
	if fake.Begins() != 30 {
		t.Fatalf("the coordinator answered %d Begins, want 30", fake.Begins())
	}
	// Refused before sending: never reaches the coordinator.
	res, err := cl.Run(ctx, uuid.Must(uuid.NewV7()), []client.Branch{{Participant: string(make([]byte, 1000))}})
	if err != nil || res.Outcome != client.Rejected {
		t.Fatalf("an over-long name: %v, %v; want rejected", res, err)
	}
	if fake.Begins() != 30 {
		t.Fatal("a branch the wire cannot carry was sent")
	}
}

// TestRunAllocs pins the allocations of a committed call: none, once the
// pools are warm (the names are copied into pooled scratch, not converted
// to fresh byte slices). It bites without -race (go test ./client/).
func TestRunAllocs(t *testing.T) {
	_, cl := startFake(t, nil)
	ctx := context.Background()
	br := transfer()
	id := uuid.Must(uuid.NewV7())
	allocs := testing.AllocsPerRun(200, func() {
		if res, err := cl.Run(ctx, id, br); err != nil || res.Outcome != client.Committed {
			t.Fatalf("%v, %v", res, err)
		}
	})
	// A pooled call can miss its pool after a GC; allow for that. Under
	// the race detector pools drop items on purpose: only the calls are
	// checked there.
	if allocs > 0.5 && !raceEnabled {
		t.Fatalf("%.2f allocations per committed call, want 0", allocs)
	}
}

// BenchmarkRun is one caller's round trips to a coordinator that answers
// at once: the client's CPU and allocations per transaction. Run with
// -benchmem.
func BenchmarkRun(b *testing.B) {
	_, cl := startFake(b, nil)
	ctx := context.Background()
	br := transfer()
	id := uuid.Must(uuid.NewV7())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cl.Run(ctx, id, br); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRunParallel is the same with 64 callers per core sharing one
// client: pipelining over the multiplexed connection.
func BenchmarkRunParallel(b *testing.B) {
	_, cl := startFake(b, nil)
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(64)
	b.RunParallel(func(pb *testing.PB) {
		br := transfer()
		id := uuid.Must(uuid.NewV7())
		for pb.Next() {
			if _, err := cl.Run(ctx, id, br); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// TestRunNotConnected checks that a transaction that could not be sent is
// Aborted with an error a caller can classify with client.ErrNotConnected
// alone, without importing the transport.
func TestRunNotConnected(t *testing.T) {
	fake, err := clienttest.Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.Dial(fake.Addr, client.Options{DialTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	fake.Close()
	// A call racing the connection's end may be sent and come back
	// Unknown; once the client knows the connection is gone, none is sent.
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := cl.Run(context.Background(), uuid.Must(uuid.NewV7()), transfer())
		if errors.Is(err, client.ErrNotConnected) {
			if res.Outcome != client.Aborted {
				t.Fatalf("not sent, yet %v", res)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %v, %v after the coordinator closed", res, err)
		}
	}
}

package bench

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/protocol"
	"github.com/google/uuid"
)

// gateWriter records each Write call; while gate is set, Write blocks until
// the gate channel is closed.
type gateWriter struct {
	mu     sync.Mutex
	writes [][]byte
	gate   chan struct{}
	err    error
	called chan struct{} // cap 1: a Write began
}

func newGateWriter() *gateWriter { return &gateWriter{called: make(chan struct{}, 1)} }

func (g *gateWriter) Write(p []byte) (int, error) {
	g.mu.Lock()
	g.writes = append(g.writes, bytes.Clone(p))
	gate, err := g.gate, g.err
	g.mu.Unlock()
	select {
	case g.called <- struct{}{}:
	default:
	}
	if gate != nil {
		<-gate
	}
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

func (g *gateWriter) all() ([][]byte, []byte) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([][]byte(nil), g.writes...), bytes.Join(g.writes, nil)
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestAckLogWritesEachRoundAtOnce checks the promise Config.AckLog makes:
// a queued line is written without waiting for more lines or for the end
// (so a kill -9 cannot lose it once a round has passed), and a round
// writes everything queued with one Write call.
func TestAckLogWritesEachRoundAtOnce(t *testing.T) {
	g := newGateWriter()
	a := newAckLog(g, func() { t.Error("fail called without a write error") })

	// A lone line is written on its own, long before close.
	a.add([]byte("first\n"))
	waitFor(t, "a lone line was never written", func() bool { _, b := g.all(); return string(b) == "first\n" })

	// While one Write is in progress, lines pile up; the next round takes
	// them all in one Write.
	gate := make(chan struct{})
	g.mu.Lock()
	g.gate = gate
	g.mu.Unlock()
	<-g.called // drain the first round's signal
	a.add([]byte("second\n"))
	<-g.called // the round writing "second" is blocked in Write
	g.mu.Lock()
	g.gate = nil
	g.mu.Unlock()
	var want bytes.Buffer
	for i := range 100 {
		line := fmt.Appendf(nil, "line %d\n", i)
		want.Write(line)
		a.add(line)
	}
	close(gate)
	waitFor(t, "the queued lines were never written", func() bool { w, _ := g.all(); return len(w) == 3 })
	writes, _ := g.all()
	if !bytes.Equal(writes[2], want.Bytes()) {
		t.Fatalf("third round wrote %q, want the 100 lines queued during the second", writes[2])
	}

	// close writes what is left and stops the goroutine.
	a.add([]byte("last\n"))
	if err := a.close(); err != nil {
		t.Fatal(err)
	}
	_, all := g.all()
	if !bytes.HasSuffix(all, []byte("line 99\nlast\n")) || !bytes.HasPrefix(all, []byte("first\nsecond\nline 0\n")) {
		t.Fatalf("the log, in order, is %q", all)
	}
}

// TestAckLogWriteError checks that a failed write is reported once, stops
// the queue, and comes back from close.
func TestAckLogWriteError(t *testing.T) {
	g := newGateWriter()
	broken := errors.New("disk on fire")
	g.err = broken
	failed := make(chan struct{})
	a := newAckLog(g, func() { close(failed) })
	a.add([]byte("one\n"))
	select {
	case <-failed:
	case <-time.After(10 * time.Second):
		t.Fatal("fail was not called after a write error")
	}
	for range 10 {
		a.add([]byte("dropped\n"))
	}
	if err := a.close(); !errors.Is(err, broken) {
		t.Fatalf("close: %v, want %v", err, broken)
	}
	if w, _ := g.all(); len(w) != 1 {
		t.Fatalf("%d writes after the log failed, want only the failed one", len(w))
	}
}

// TestAckLogBoundsTheQueue checks that callers wait, rather than grow the
// queue past maxAckQueue, while the writer is stuck.
func TestAckLogBoundsTheQueue(t *testing.T) {
	g := newGateWriter()
	gate := make(chan struct{})
	g.gate = gate
	a := newAckLog(g, func() {})
	a.add([]byte("stuck\n"))
	<-g.called
	line := bytes.Repeat([]byte("x"), 1<<16-1)
	line = append(line, '\n')
	var added atomic.Int64
	go func() {
		for range 2 * maxAckQueue / len(line) {
			a.add(line)
			added.Add(1)
		}
	}()
	// The adder fills the queue, then must stop.
	waitFor(t, "the queue never filled", func() bool { return int(added.Load())*len(line) >= maxAckQueue })
	time.Sleep(100 * time.Millisecond)
	if n := int(added.Load()); n*len(line) > maxAckQueue+len(line) {
		t.Fatalf("%d bytes queued behind a stuck write, bound %d", n*len(line), maxAckQueue)
	}
	close(gate) // the writer drains; the adder finishes
	waitFor(t, "the adder never finished", func() bool {
		_, all := g.all()
		return len(all) == len("stuck\n")+2*maxAckQueue/len(line)*len(line)
	})
	if err := a.close(); err != nil {
		t.Fatal(err)
	}
}

func TestAppendAck(t *testing.T) {
	id := uuid.MustParse("0193a5b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b")
	got := appendAck(nil, id, protocol.OutcomeAborted, []client.Branch{{Participant: "p1"}, {Participant: "p22"}})
	if want := "0193a5b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b aborted p1,p22\n"; string(got) != want {
		t.Fatalf("%q, want %q", got, want)
	}
	for range 100 {
		id := uuid.New()
		if got := appendUUID(nil, id); string(got) != id.String() {
			t.Fatalf("appendUUID %q, want %q", got, id.String())
		}
	}
}

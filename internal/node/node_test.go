package node

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/commitd/commitd/internal/datadir"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/wal"
	"github.com/commitd/commitd/wal/waltest"
)

// rig is a server with every part but pumps (they need a machine; the
// servers' own tests cover them): a listener served by a mux server, a log
// on a MemFS, the data directory's lock, and a store and a drain that note
// when they run.
type rig struct {
	dir   string
	life  *Lifecycle
	parts Parts
	mu    sync.Mutex
	steps []string // "drain", "store", in the order they ran
}

func (r *rig) note(step string) {
	r.mu.Lock()
	r.steps = append(r.steps, step)
	r.mu.Unlock()
}

func newRig(t *testing.T, beforeRetire func() error) *rig {
	t.Helper()
	r := &rig{dir: t.TempDir()}
	lock, err := datadir.Acquire(r.dir)
	if err != nil {
		t.Fatal(err)
	}
	log, err := wal.Open("/wal", wal.Options{FS: waltest.NewMemFS(), SegmentBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	raw, ln, err := Listen(nil, "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.parts = Parts{
		Listener: raw,
		Drain:    func() { r.note("drain") },
		Mux:      mux.NewServer(mux.ServerOptions{}),
		Stores:   []func() error{func() error { r.note("store"); return nil }},
		Log:      log,
		Lock:     lock,
	}
	r.life = New(Config{Name: "test", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), BeforeRetire: beforeRetire})
	r.life.Serve(r.parts, ln)
	return r
}

func (r *rig) waitDone(t *testing.T) {
	t.Helper()
	select {
	case <-r.life.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not stop within 10s")
	}
}

// checkReleased checks that Close released every part, after the drain
// and the stores ran once each, in that order.
func (r *rig) checkReleased(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	steps := append([]string(nil), r.steps...)
	r.mu.Unlock()
	if len(steps) != 2 || steps[0] != "drain" || steps[1] != "store" {
		t.Errorf("close ran %v, want [drain store]", steps)
	}
	if _, err := r.parts.Log.Append([]byte("x")); !errors.Is(err, wal.ErrClosed) {
		t.Errorf("append after Close: %v, want wal.ErrClosed", err)
	}
	if c, err := net.Dial("tcp", r.parts.Listener.Addr().String()); err == nil {
		c.Close()
		t.Error("the listener still accepts after Close")
	}
	lock, err := datadir.Acquire(r.dir)
	if err != nil {
		t.Errorf("the data directory is still locked after Close: %v", err)
	}
	lock.Release()
	if !r.life.Closing() {
		t.Error("Closing is false after Close")
	}
}

func TestFailStopsTheServerAndKeepsTheFirstError(t *testing.T) {
	r := newRig(t, nil)
	first := errors.New("fsync failed")
	r.life.Fail(first)
	r.life.Fail(errors.New("a later failure"))
	r.waitDone(t)
	if err := r.life.Err(); err != first {
		t.Fatalf("Err() = %v, want %v", err, first)
	}
	if err := r.life.Close(); err != nil {
		t.Fatalf("a second Close: %v, want nil", err)
	}
	r.checkReleased(t)
}

func TestCloseStopsEverythingInOrder(t *testing.T) {
	r := newRig(t, nil)
	stopped := make(chan struct{})
	r.life.Go(func() {
		<-r.life.Stopping()
		close(stopped)
	})
	if err := r.life.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stopped:
	default:
		t.Fatal("Close returned before a goroutine started with Go")
	}
	r.waitDone(t)
	if err := r.life.Err(); err != nil {
		t.Fatalf("Err() after a clean Close = %v", err)
	}
	r.checkReleased(t)
}

// A failing BeforeRetire (the participant's ledger sync) stops the server
// with its error, without retiring anything.
func TestBeforeRetireFailureStopsTheServer(t *testing.T) {
	boom := errors.New("ledger sync failed")
	r := newRig(t, func() error { return boom })
	r.waitDone(t)
	if err := r.life.Err(); err != boom {
		t.Fatalf("Err() = %v, want %v", err, boom)
	}
	r.checkReleased(t)
}

func TestAbandonReleasesWhatWasAcquired(t *testing.T) {
	dir := t.TempDir()
	lock, err := datadir.Acquire(dir)
	if err != nil {
		t.Fatal(err)
	}
	log, err := wal.Open("/wal", wal.Options{FS: waltest.NewMemFS(), SegmentBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	raw, _, err := Listen(nil, "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	closed := 0
	Abandon(Parts{
		Listener: raw, Log: log, Lock: lock,
		Stores: []func() error{func() error { closed++; return nil }},
	})
	if closed != 1 {
		t.Errorf("stores closed %d times, want 1", closed)
	}
	if _, err := log.Append([]byte("x")); !errors.Is(err, wal.ErrClosed) {
		t.Errorf("append after Abandon: %v, want wal.ErrClosed", err)
	}
	if _, err := raw.Accept(); err == nil {
		t.Error("the listener still accepts after Abandon")
	}
	again, err := datadir.Acquire(dir)
	if err != nil {
		t.Fatalf("the data directory is still locked after Abandon: %v", err)
	}
	again.Release()
	// A start that failed before anything was acquired has nothing to
	// release: Abandon must not trip over the nil parts.
	Abandon(Parts{})
}

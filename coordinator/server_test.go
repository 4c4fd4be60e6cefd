package coordinator_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/protocol"
	"github.com/commitd/commitd/wal"
	"github.com/commitd/commitd/wal/waltest"
	"github.com/google/uuid"
)

// fakeParticipant stands in for a participant, as the coordinator sees one:
// it records every prepare and decision on the coordinator's connections,
// and answers on its own — a vote (if vote is set) for each prepare, an
// ack (if ack is set) for each commit decision.
type fakeParticipant struct {
	*nodetest.Peer
	name string
	vote atomic.Uint32 // protocol.Vote to answer prepares with; 0: none
	ack  atomic.Bool

	mu struct {
		sync.Mutex
		prepares  []protocol.TxnID
		decisions []wire.Decision
	}
}

func newFakeParticipant(t *testing.T, name string) *fakeParticipant {
	t.Helper()
	f := &fakeParticipant{name: name}
	f.vote.Store(uint32(protocol.VoteYes))
	f.ack.Store(true)
	f.Peer = nodetest.Listen(t, wire.Hello{Role: wire.RoleParticipant, Name: []byte(name)}, f.handle)
	return f
}

func (f *fakeParticipant) handle(_ *mux.Conn, fr wire.Frame) error {
	switch fr.Type {
	case wire.TypePrepare:
		var m wire.Prepare
		if err := m.Decode(fr); err != nil {
			return err
		}
		f.mu.Lock()
		f.mu.prepares = append(f.mu.prepares, m.Txn)
		f.mu.Unlock()
		if v := protocol.Vote(f.vote.Load()); v != 0 {
			_ = f.Send(&wire.Vote{Txn: m.Txn, From: []byte(f.name), Vote: v}) // lost if not connected: the coordinator copes
		}
	case wire.TypeDecision:
		var m wire.Decision
		if err := m.Decode(fr); err != nil {
			return err
		}
		f.mu.Lock()
		f.mu.decisions = append(f.mu.decisions, m)
		f.mu.Unlock()
		if m.Decision == protocol.DecisionCommit && f.ack.Load() {
			_ = f.Send(&wire.Ack{Txn: m.Txn, From: []byte(f.name)})
		}
	}
	return nil
}

// decisionsFor counts the decisions d for txn received so far.
func (f *fakeParticipant) decisionsFor(txn uuid.UUID, d protocol.Decision) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, m := range f.mu.decisions {
		if m.Txn == txn && m.Decision == d {
			n++
		}
	}
	return n
}

func (f *fakeParticipant) prepared(txn uuid.UUID) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range f.mu.prepares {
		if id == txn {
			return true
		}
	}
	return false
}

// rig is a coordinator with two fake participants, p1 and p2, and a client.
type rig struct {
	t     *testing.T
	cfg   coordinator.Config
	coord *coordinator.Server
	parts map[string]*fakeParticipant
	cl    *client.Client
}

// newRig starts the rig's coordinator on fs (nil: the operating system's),
// with its configuration changed first by each of with.
func newRig(t *testing.T, fs wal.FS, with ...func(*coordinator.Config)) *rig {
	t.Helper()
	r := &rig{t: t, parts: map[string]*fakeParticipant{}}
	r.cfg = coordinator.Config{
		Listen:         "127.0.0.1:0",
		DataDir:        t.TempDir(),
		Participants:   map[string]string{},
		Shards:         2,
		PrepareTimeout: 300 * time.Millisecond,
		RedeliverMin:   20 * time.Millisecond,
		RedeliverMax:   200 * time.Millisecond,
		SegmentBytes:   1 << 20,
		FS:             fs,
		Logger:         nodetest.Quiet(),
	}
	for _, name := range []string{"p1", "p2"} {
		f := newFakeParticipant(t, name)
		r.parts[name] = f
		r.cfg.Participants[name] = f.Addr()
	}
	for _, w := range with {
		w(&r.cfg)
	}
	r.start()
	return r
}

// start starts the coordinator on the rig's data directory, connects the
// fakes and a client to it.
func (r *rig) start() {
	t := r.t
	t.Helper()
	r.coord = nodetest.Start(t, coordinator.Start, r.cfg)
	addr := r.coord.Addr().String()
	for _, f := range r.parts {
		f.Connect(t, addr)
	}
	if r.cl != nil {
		r.cl.Close()
	}
	var err error
	r.cl, err = client.Dial(addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cl := r.cl
	t.Cleanup(func() { cl.Close() })
}

func (r *rig) run(id uuid.UUID, branches ...string) client.Result {
	r.t.Helper()
	bs := make([]client.Branch, len(branches))
	for i, name := range branches {
		bs[i] = client.Branch{Participant: name, Work: []byte("work")}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := r.cl.Run(ctx, id, bs)
	if err != nil {
		r.t.Fatalf("run %v: %v", branches, err)
	}
	return res
}

func newID() uuid.UUID { return uuid.Must(uuid.NewV7()) }

// sendMalformedBegin sends a Begin whose branch count says 11, which the
// wire refuses, on a connection of its own to the coordinator at addr, and
// reports whether the coordinator closed that connection (within 5 s).
func sendMalformedBegin(t *testing.T, addr string) (closed bool) {
	t.Helper()
	frame, err := wire.AppendFrame(nil, 1, &wire.Begin{Txn: newID(),
		Branches: []wire.Branch{{Participant: []byte("p1"), Work: []byte("w")}}})
	if err != nil {
		t.Fatal(err)
	}
	frame[wire.HeaderSize+16] = protocol.MaxBranches + 1 // the payload: txn (16), then the count
	hello, _ := wire.AppendFrame(nil, 0, &wire.Hello{Role: wire.RoleClient})
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Write(append(hello, frame...)); err != nil {
		t.Fatal(err)
	}
	raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	var ne net.Error
	_, err = io.Copy(io.Discard, raw)
	return !errors.As(err, &ne) || !ne.Timeout()
}

// Begins that cannot run get a rejection that says why, a request the
// coordinator does not serve gets an error reply, a malformed frame closes
// only its own connection — and the coordinator keeps committing.
func TestBadRequestsAreAnsweredAndServingGoesOn(t *testing.T) {
	r := newRig(t, nil)
	used := newID()
	if res := r.run(used, "p1", "p2"); res.Outcome != client.Committed {
		t.Fatalf("first transaction: %v", res)
	}
	cases := []struct {
		name     string
		id       uuid.UUID
		branches []string
		want     string // in the Detail
	}{
		{"more participants than the coordinator knows", newID(), []string{"p1", "p2", "p3"}, `unknown participant "p3"`},
		{"an unknown participant name", newID(), []string{"nobody"}, `unknown participant "nobody"`},
		{"one participant twice", newID(), []string{"p1", "p1"}, ""},
		{"no branches", newID(), nil, ""},
		{"an id already used", used, []string{"p1", "p2"}, ""},
	}
	for _, tc := range cases {
		res := r.run(tc.id, tc.branches...)
		if res.Outcome != client.Rejected || res.Cause != protocol.CauseInvalid || res.Detail == "" ||
			!strings.Contains(res.Detail, tc.want) {
			t.Errorf("%s: %v (cause %v, detail %q), want rejected saying %q", tc.name, res.Outcome, res.Cause, res.Detail, tc.want)
		}
	}
	for _, f := range r.parts {
		for _, tc := range cases[:4] {
			if f.prepared(tc.id) {
				t.Errorf("%s: %s was asked to prepare a rejected transaction", tc.name, f.name)
			}
		}
	}

	// An admin report only participants serve: an error reply, and the
	// connection stays usable for the next request.
	conn := nodetest.Admin(t, r.coord.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := conn.Call(ctx, &wire.AdminRequest{Kind: wire.AdminAccounts}, nil)
	if !nodetest.RemoteError(err, wire.CodeInvalid, "does not serve") {
		t.Errorf("admin accounts from the coordinator: %v, want an invalid-request error", err)
	}
	if _, err := conn.Call(ctx, &wire.AdminRequest{Kind: wire.AdminStatus}, nil); err != nil {
		t.Errorf("status on the same connection after the error: %v", err)
	}
	// Every rejection counts: the three the shards judge and the two the
	// front door judges (names it does not know) without a shard. A shard
	// may publish its counts a round after its reply (settledStatus).
	st := settledStatus(t, r.coord.Addr().String(), "every answer counted", func(st coordinator.Status) bool {
		return st.InFlight == 0 && st.Committed+st.Aborted+st.Unknown+st.Rejected >= uint64(1+len(cases))
	})
	if want := uint64(len(cases)); st.Committed != 1 || st.Rejected != want || st.InFlight != 0 {
		t.Errorf("status %+v, want 1 committed, %d rejected, none in flight", st, want)
	}

	if !sendMalformedBegin(t, r.coord.Addr().String()) {
		t.Error("a malformed Begin left its connection open")
	}

	if res := r.run(newID(), "p1", "p2"); res.Outcome != client.Committed {
		t.Fatalf("after the bad requests: %v", res)
	}
	if err := r.coord.Err(); err != nil {
		t.Fatalf("the coordinator failed: %v", err)
	}
}

// A begin the front door rejects itself (a participant it does not know)
// never reaches a shard, yet Status().Rejected counts it, once, as the
// metrics do; a rejection a shard judges is counted once by each too, not
// by the shard and the front door both; and a malformed Begin, answered by
// closing its connection rather than with a rejection, is counted by
// neither.
func TestRejectionsCountOnceInStatusAndMetrics(t *testing.T) {
	r := newRig(t, nil, func(c *coordinator.Config) { c.HTTP = nodetest.FreeAddr(t) })
	const series = `commitd_coordinator_transactions_total{outcome="rejected"}`
	status, metric := r.coord.Status().Rejected, nodetest.Metric(t, r.cfg.HTTP, series)
	moved := func(what string, want uint64) {
		t.Helper()
		st, m := r.coord.Status().Rejected, nodetest.Metric(t, r.cfg.HTTP, series)
		if st != status+want || m != metric+float64(want) {
			t.Fatalf("%s: Status().Rejected %d → %d, metric %v → %v; want both to move by %d",
				what, status, st, metric, m, want)
		}
		status, metric = st, m
	}

	res := r.run(newID(), "p1", "nobody")
	if res.Outcome != client.Rejected || !strings.Contains(res.Detail, `unknown participant "nobody"`) {
		t.Fatalf("a begin naming an unknown participant: %v (detail %q), want rejected", res.Outcome, res.Detail)
	}
	// The front door counts before it replies: no waiting.
	moved("the front door's rejection", 1)

	res = r.run(newID(), "p1", "p1")
	if res.Outcome != client.Rejected || !strings.Contains(res.Detail, "duplicate participant") {
		t.Fatalf("a begin naming p1 twice: %v (detail %q), want rejected by the shard", res.Outcome, res.Detail)
	}
	// A shard publishes its statistics after its loop, which may end after
	// the reply has gone out; the metric is counted before the reply.
	nodetest.Eventually(t, "the shard's rejection in Status", func() bool { return r.coord.Status().Rejected > status })
	moved("the shard's rejection", 1)

	if !sendMalformedBegin(t, r.coord.Addr().String()) {
		t.Fatal("a malformed Begin left its connection open")
	}
	moved("a malformed Begin", 0)
}

// A participant that does not vote in time aborts the transaction, and the
// participant that voted yes is told so.
func TestPrepareTimeoutAborts(t *testing.T) {
	r := newRig(t, nil)
	r.parts["p2"].vote.Store(0)
	id := newID()
	res := r.run(id, "p1", "p2")
	if res.Outcome != client.Aborted || res.Cause != protocol.CauseTimeout || res.Participant != "p2" {
		t.Fatalf("%v (cause %v at %q), want aborted: p2 timed out", res, res.Cause, res.Participant)
	}
	nodetest.Eventually(t, "p1 told to abort", func() bool { return r.parts["p1"].decisionsFor(id, protocol.DecisionAbort) > 0 })
	if n := r.parts["p1"].decisionsFor(id, protocol.DecisionCommit); n != 0 {
		t.Fatalf("p1 told to commit an aborted transaction %d times", n)
	}
}

// A commit decided but not acknowledged when the coordinator stops is
// decided again from its log after a restart, and delivered until
// acknowledged.
func TestRestartRedrivesAnUnacknowledgedCommit(t *testing.T) {
	r := newRig(t, nil)
	p1 := r.parts["p1"]
	p1.ack.Store(false)
	id := newID()
	if res := r.run(id, "p1", "p2"); res.Outcome != client.Committed {
		t.Fatalf("%v, want committed", res)
	}
	nodetest.Eventually(t, "one commit in doubt", func() bool { return r.coord.Status().InDoubt == 1 })
	if err := r.coord.Close(); err != nil {
		t.Fatal(err)
	}
	p1.mu.Lock()
	p1.mu.decisions = nil // only what comes after the restart counts
	p1.mu.Unlock()

	r.start() // the same data directory, a new address
	// The shards publish their statistics after their first loop.
	nodetest.Eventually(t, "the unacknowledged commit in doubt after the restart", func() bool { return r.coord.Status().InDoubt == 1 })
	// Acks are not logged, so every participant is told again
	// (docs/protocol.md, "Recovery"); p2 had acked and acks again.
	nodetest.Eventually(t, "the commit redelivered to p1", func() bool { return p1.decisionsFor(id, protocol.DecisionCommit) > 0 })
	// At least once more: if p2's ack of the first redelivery is lost (its own
	// connection to the new address may not be up yet) it is told again.
	nodetest.Eventually(t, "the commit redelivered to p2", func() bool { return r.parts["p2"].decisionsFor(id, protocol.DecisionCommit) >= 2 })
	if n := p1.decisionsFor(id, protocol.DecisionAbort) + r.parts["p2"].decisionsFor(id, protocol.DecisionAbort); n != 0 {
		t.Fatalf("%d abort decisions for a committed transaction", n)
	}
	p1.ack.Store(true)
	nodetest.Eventually(t, "nothing in doubt once p1 acknowledges", func() bool { return r.coord.Status().InDoubt == 0 })
}

// A failed fsync stops the coordinator: Done closes, Err names the failure,
// and the client is never told its transaction committed.
func TestFsyncFailureStopsTheCoordinator(t *testing.T) {
	fs := waltest.NewMemFS()
	r := newRig(t, fs)
	if res := r.run(newID(), "p1", "p2"); res.Outcome != client.Committed {
		t.Fatalf("before the fault: %v", res)
	}
	fs.Inject(waltest.FailNth(waltest.OpSync, 1, syscall.EIO, true))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, _ := r.cl.Run(ctx, newID(), []client.Branch{{Participant: "p1", Work: []byte("w")}, {Participant: "p2", Work: []byte("w")}})
	if res.Outcome == client.Committed {
		t.Fatalf("a transaction committed over a failed fsync: %v", res)
	}
	nodetest.WaitFailed(t, r.coord, "coordinator", syscall.EIO, wal.ErrFailed)
	if _, err := client.Dial(r.coord.Addr().String(), client.Options{DialTimeout: 200 * time.Millisecond}); err == nil {
		t.Fatal("a stopped coordinator still accepts clients")
	}
}

// A prepare for a participant the coordinator has no connection to never
// leaves it: the transaction is aborted at once (cause unreachable) —
// one-phase too, which would otherwise end unknown after the prepare
// timeout — and the participants that may have prepared are told abort.
func TestPrepareNotSentAbortsAtOnce(t *testing.T) {
	p1 := newFakeParticipant(t, "p1")
	dead := nodetest.FreeAddr(t) // nothing listens there: p3 is never connected
	c, err := coordinator.Start(coordinator.Config{
		Listen:         "127.0.0.1:0",
		DataDir:        t.TempDir(),
		Participants:   map[string]string{"p1": p1.Addr(), "p3": dead},
		Shards:         2,
		PrepareTimeout: time.Minute, // far beyond the test's patience
		SegmentBytes:   1 << 20,
		Logger:         nodetest.Quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	p1.Connect(t, c.Addr().String())
	cl, err := client.Dial(c.Addr().String(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	run := func(id uuid.UUID, names ...string) client.Result {
		t.Helper()
		bs := make([]client.Branch, len(names))
		for i, n := range names {
			bs[i] = client.Branch{Participant: n, Work: []byte("work")}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := cl.Run(ctx, id, bs)
		if err != nil {
			t.Fatalf("run %v: %v (waited for the prepare timeout?)", names, err)
		}
		return res
	}
	// p1's connection may still be coming up: wait until it is, so that
	// only p3 is unreachable.
	nodetest.Eventually(t, "p1 connected", func() bool {
		id := newID()
		return run(id, "p1").Outcome == client.Committed
	})

	res := run(newID(), "p3")
	if res.Outcome != client.Aborted || res.Cause != protocol.CauseUnreachable || res.Participant != "p3" {
		t.Fatalf("one-phase to an unconnected participant: %v (cause %v at %q), want aborted, unreachable p3", res.Outcome, res.Cause, res.Participant)
	}
	id := newID()
	res = run(id, "p1", "p3")
	if res.Outcome != client.Aborted || res.Cause != protocol.CauseUnreachable || res.Participant != "p3" {
		t.Fatalf("two-phase with an unconnected participant: %v (cause %v at %q), want aborted, unreachable p3", res.Outcome, res.Cause, res.Participant)
	}
	nodetest.Eventually(t, "p1 told to abort", func() bool { return p1.decisionsFor(id, protocol.DecisionAbort) > 0 })
}

// A byte flipped in the header of the coordinator's first segment (its
// first-LSN field) stops the next start with an error naming the file:
// the coordinator must not start on an empty log and forget the commit
// decisions it holds.
func TestDamagedSegmentHeaderRefusesToStart(t *testing.T) {
	fs := waltest.NewMemFS()
	r := newRig(t, fs)
	if res := r.run(newID(), "p1", "p2"); res.Outcome != client.Committed {
		t.Fatalf("%v, want committed", res)
	}
	if err := r.coord.Close(); err != nil {
		t.Fatal(err)
	}
	var first string
	for _, name := range fs.Files() {
		b, err := fs.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(name, ".wal") && len(b) > 32 && string(b[:8]) == "commitdW" {
			b[16] ^= 0x40
			fs.WriteFile(name, b)
			first = name
			break
		}
	}
	if first == "" {
		t.Fatalf("no used segment among %v", fs.Files())
	}
	c, err := coordinator.Start(r.cfg)
	if err == nil {
		c.Close()
		t.Fatal("the coordinator started on a log whose first segment header is damaged")
	}
	if !errors.Is(err, wal.ErrCorrupt) || !strings.Contains(err.Error(), first+" offset 0") {
		t.Fatalf("Start: %v", err)
	}
}

// The coordinator hands its logger to its log: a torn tail cut at the
// start is reported there, with the segment file, offset and bytes dropped.
func TestTornTailIsLoggedAtStart(t *testing.T) {
	fs := waltest.NewMemFS()
	r := newRig(t, fs)
	if res := r.run(newID(), "p1", "p2"); res.Outcome != client.Committed {
		t.Fatalf("%v, want committed", res)
	}
	if err := r.coord.Close(); err != nil {
		t.Fatal(err)
	}
	// Behind the last frame of the last used segment, the start of a frame
	// whose write was interrupted: its checksum does not match.
	var last string
	var lastFirst uint64
	for _, name := range fs.Files() {
		b, _ := fs.ReadFile(name)
		if strings.HasSuffix(name, ".wal") && len(b) > 32 && string(b[:8]) == "commitdW" {
			if first := binary.LittleEndian.Uint64(b[16:]); first >= lastFirst {
				last, lastFirst = name, first
			}
		}
	}
	b, _ := fs.ReadFile(last)
	off, lsn := 32, lastFirst-1
	for binary.LittleEndian.Uint64(b[off+8:]) != 0 { // frames: crc, length, LSN, data padded to 8
		lsn = binary.LittleEndian.Uint64(b[off+8:])
		off += (16 + int(binary.LittleEndian.Uint32(b[off+4:])) + 7) &^ 7
	}
	binary.LittleEndian.PutUint32(b[off:], 0xdeadbeef)
	binary.LittleEndian.PutUint32(b[off+4:], 8)
	binary.LittleEndian.PutUint64(b[off+8:], lsn+1)
	copy(b[off+16:], "torn!!!!")
	fs.WriteFile(last, b)

	var buf lockedBuffer
	r.cfg.Logger = slog.New(slog.NewTextHandler(&buf, nil))
	r.start()
	for _, want := range []string{"torn tail", "segment=" + last, fmt.Sprintf("offset=%d", off), "dropped_bytes=24"} {
		if !strings.Contains(buf.String(), want) {
			t.Fatalf("log %q does not mention %q", buf.String(), want)
		}
	}
}

// lockedBuffer is a bytes.Buffer for a logger that several goroutines use.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

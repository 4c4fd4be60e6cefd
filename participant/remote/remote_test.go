package remote

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/protocol"
	"github.com/google/uuid"
)

// fake is a Service whose answers a test scripts.
type fake struct {
	mu        sync.Mutex
	vote      protocol.Vote
	prepErr   error
	slow      bool // Prepare waits for its context to end
	failFirst int  // Commit and Abort fail this many times first
	prepared  []protocol.TxnID
	scanGate  chan struct{} // if set, Prepared waits for it
	scanErr   error
	calls     map[string][]protocol.TxnID
}

func newFake() *fake { return &fake{vote: protocol.VoteYes, calls: map[string][]protocol.TxnID{}} }

func (f *fake) note(op string, txn protocol.TxnID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[op] = append(f.calls[op], txn)
}

func (f *fake) count(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls[op])
}

func (f *fake) Prepare(ctx context.Context, txn protocol.TxnID, _ []byte) (protocol.Vote, error) {
	f.note("prepare", txn)
	f.mu.Lock()
	slow, v, err := f.slow, f.vote, f.prepErr
	f.mu.Unlock()
	if slow {
		<-ctx.Done()
		return 0, ctx.Err()
	}
	return v, err
}

func (f *fake) decide(op string, txn protocol.TxnID) error {
	f.note(op, txn)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failFirst > 0 {
		f.failFirst--
		return errors.New("503 service unavailable")
	}
	// A service that took the decision no longer holds txn prepared.
	for i, id := range f.prepared {
		if id == txn {
			f.prepared = append(f.prepared[:i:i], f.prepared[i+1:]...)
			break
		}
	}
	return nil
}

func (f *fake) Commit(_ context.Context, txn protocol.TxnID) error { return f.decide("commit", txn) }
func (f *fake) Abort(_ context.Context, txn protocol.TxnID) error  { return f.decide("abort", txn) }

func (f *fake) Prepared(ctx context.Context) ([]protocol.TxnID, error) {
	f.note("prepared", protocol.TxnID{})
	f.mu.Lock()
	gate, ids, err := f.scanGate, f.prepared, f.scanErr
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return ids, err
}

// rig is a Resource over a fake, with its reports in a channel.
type rig struct {
	*Resource
	f     *fake
	votes chan engine.Message
}

func newRig(t *testing.T, f *fake, opts Options) *rig {
	t.Helper()
	if opts.RetryMin == 0 {
		opts.RetryMin, opts.RetryMax = time.Millisecond, 4*time.Millisecond
	}
	if opts.ScanEvery == 0 {
		opts.ScanEvery = time.Hour
	}
	r := &rig{Resource: New(f, opts), f: f, votes: make(chan engine.Message, 100)}
	t.Cleanup(func() { r.Close() })
	return r
}

func (r *rig) attach() { r.Attach(func(m engine.Message) { r.votes <- m }) }

func (r *rig) vote(t *testing.T, txn protocol.TxnID) protocol.Vote {
	t.Helper()
	select {
	case m := <-r.votes:
		if m.Type != engine.MsgResPrepared || m.Txn != txn {
			t.Fatalf("reported %+v, want the vote for %v", m, txn)
		}
		return m.Vote
	case <-time.After(10 * time.Second):
		t.Fatalf("no vote for %v", txn)
	}
	return 0
}

// waitFor polls cond until it holds (10 s at most).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestPrepareYesThenCommit(t *testing.T) {
	r := newRig(t, newFake(), Options{})
	r.attach()
	txn := uuid.New()
	if v := r.Prepare(txn, []byte("w")); v != protocol.VotePending {
		t.Fatalf("Prepare = %v, want pending (the pump must not wait)", v)
	}
	if v := r.vote(t, txn); v != protocol.VoteYes {
		t.Fatalf("vote %v", v)
	}
	if h := r.Held(); len(h) != 1 || h[0] != txn {
		t.Fatalf("Held = %v, want %v", h, txn)
	}
	r.Commit(txn)
	waitFor(t, "the commit delivered", func() bool { return r.Stats().Delivered == 1 })
	if st := r.Stats(); st.Pending != 0 || st.VotedYes != 1 || r.f.count("commit") != 1 || r.f.count("abort") != 0 || len(r.Held()) != 0 {
		t.Fatalf("stats %+v, calls %v", st, r.f.calls)
	}
}

// A failed, garbled or late answer is a NO vote, and the service, which
// may have prepared all the same, is sent an abort.
func TestUnansweredPrepareVotesNoAndAborts(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*fake)
	}{
		{"error", func(f *fake) { f.prepErr = errors.New("500 internal server error") }},
		{"timeout", func(f *fake) { f.slow = true }},
		{"bad vote", func(f *fake) { f.vote = protocol.VotePending }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			tc.set(f)
			r := newRig(t, f, Options{PrepareTimeout: 20 * time.Millisecond})
			r.attach()
			txn := uuid.New()
			r.Prepare(txn, nil)
			if v := r.vote(t, txn); v != protocol.VoteNo {
				t.Fatalf("vote %v, want no", v)
			}
			waitFor(t, "the abort delivered", func() bool { return r.Stats().Delivered == 1 })
			if st := r.Stats(); st.Unanswered != 1 || f.count("abort") != 1 || f.count("commit") != 0 || st.LastError == "" {
				t.Fatalf("stats %+v, calls %v", st, f.calls)
			}
		})
	}
}

func TestPrepareNoHoldsNothing(t *testing.T) {
	f := newFake()
	f.vote = protocol.VoteNo
	r := newRig(t, f, Options{})
	r.attach()
	txn := uuid.New()
	r.Prepare(txn, nil)
	if v := r.vote(t, txn); v != protocol.VoteNo {
		t.Fatalf("vote %v", v)
	}
	if st := r.Stats(); st.Pending != 0 || f.count("abort") != 0 {
		t.Fatalf("stats %+v, calls %v", st, f.calls)
	}
}

// A commit the service fails is retried, with backoff, until it succeeds.
func TestCommitRetriedUntilTaken(t *testing.T) {
	f := newFake()
	r := newRig(t, f, Options{})
	r.attach()
	txn := uuid.New()
	r.Prepare(txn, nil)
	r.vote(t, txn)
	f.mu.Lock()
	f.failFirst = 5
	f.mu.Unlock()
	r.Commit(txn)
	waitFor(t, "the commit delivered", func() bool { return r.Stats().Delivered == 1 })
	if st := r.Stats(); st.Retries != 5 || f.count("commit") != 6 || st.Pending != 0 {
		t.Fatalf("stats %+v, %d commits", st, f.count("commit"))
	}
}

func TestOverloadVotesNoAtOnce(t *testing.T) {
	f := newFake()
	f.slow = true
	r := newRig(t, f, Options{MaxPrepares: 2, PrepareTimeout: time.Hour})
	r.attach()
	r.Prepare(uuid.New(), nil)
	r.Prepare(uuid.New(), nil)
	if v := r.Prepare(uuid.New(), nil); v != protocol.VoteNo {
		t.Fatalf("third prepare = %v, want no at once", v)
	}
	if st := r.Stats(); st.Overloaded != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// After a restart the decisions replayed from the log wait for the first
// scan: one the service still holds prepared is sent, one it does not is
// dropped (it was taken before the crash), and a transaction it holds
// that the participant never recorded is aborted.
func TestRestartSettlesWithTheScan(t *testing.T) {
	f := newFake()
	stillHeld, taken, orphan, inDoubt := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	f.prepared = []protocol.TxnID{stillHeld, orphan, inDoubt}
	f.scanGate = make(chan struct{})
	r := newRig(t, f, Options{})
	// Recovery: replayed records, before Attach.
	for _, id := range []protocol.TxnID{stillHeld, taken, inDoubt} {
		r.Restore(id, nil)
	}
	r.Commit(stillHeld)
	r.Abort(taken)
	r.attach()
	time.Sleep(5 * time.Millisecond) // nothing may go out before the scan
	if n := f.count("commit") + f.count("abort"); n != 0 {
		t.Fatalf("%d decisions sent before the first scan", n)
	}
	close(f.scanGate)
	waitFor(t, "the scan settled", func() bool { return r.Stats().Delivered == 2 })
	st := r.Stats()
	if st.Skipped != 1 || st.Orphans != 1 || st.Pending != 0 || st.LostPrepare != 0 {
		t.Fatalf("stats %+v", st)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls["commit"]) != 1 || f.calls["commit"][0] != stillHeld || len(f.calls["abort"]) != 1 || f.calls["abort"][0] != orphan {
		t.Fatalf("calls %v: want a commit of %v and an abort of %v only", f.calls, stillHeld, orphan)
	}
}

// A transaction decided and delivered while a scan is out may be listed in
// the scan's answer; it is not an orphan, and no abort follows a commit.
func TestScanDoesNotAbortWhatFinishedMeanwhile(t *testing.T) {
	f := newFake()
	r := newRig(t, f, Options{})
	r.attach()
	waitFor(t, "the first scan", func() bool { return r.Stats().Scans == 1 })
	txn := uuid.New()
	r.Prepare(txn, nil)
	r.vote(t, txn)
	f.mu.Lock()
	f.prepared = []protocol.TxnID{txn} // computed before the commit landed
	f.scanGate = make(chan struct{})
	f.mu.Unlock()
	scanned := make(chan error)
	go func() { scanned <- r.scan() }()
	waitFor(t, "the scan to be out", func() bool { return f.count("prepared") == 2 })
	r.Commit(txn)
	waitFor(t, "the commit delivered", func() bool { return r.Stats().Delivered == 1 })
	close(f.scanGate)
	if err := <-scanned; err != nil {
		t.Fatal(err)
	}
	if st := r.Stats(); st.Orphans != 0 || f.count("abort") != 0 {
		t.Fatalf("stats %+v, calls %v: a committed transaction was aborted", st, f.calls)
	}
}

// A held transaction restored from the log that the service does not list
// (decided just before the crash, or lost by the service) is counted and
// logged, never aborted: the coordinator's decision settles it.
func TestLostPrepareIsReported(t *testing.T) {
	f := newFake()
	r := newRig(t, f, Options{})
	txn := uuid.New()
	r.Restore(txn, nil)
	r.attach()
	waitFor(t, "the first scan", func() bool { return r.Stats().Scans == 1 })
	if st := r.Stats(); st.LostPrepare != 1 || f.count("abort") != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestScanRetriedUntilItSucceeds(t *testing.T) {
	f := newFake()
	f.scanErr = errors.New("connection refused")
	r := newRig(t, f, Options{})
	r.attach()
	waitFor(t, "a failed scan", func() bool { return r.Stats().ScanErrors >= 2 })
	f.mu.Lock()
	f.scanErr = nil
	f.mu.Unlock()
	waitFor(t, "a scan", func() bool { return r.Stats().Scans == 1 })
}

// The deliveries not yet taken are the resource's state: a checkpoint
// keeps them, and Load brings them back held for the first scan.
func TestSnapshotKeepsDeliveries(t *testing.T) {
	f := newFake()
	f.failFirst = 1 << 30 // the service is down
	r := newRig(t, f, Options{})
	r.attach()
	c, a, h := uuid.New(), uuid.New(), uuid.New()
	for _, id := range []protocol.TxnID{c, a, h} {
		r.Prepare(id, nil)
		r.vote(t, id)
	}
	r.Commit(c)
	r.Abort(a)
	snap := r.Snapshot([]byte("head"))
	r2 := newRig(t, newFake(), Options{})
	if err := r2.Load(snap[4:]); err != nil {
		t.Fatal(err)
	}
	r2.mu.Lock()
	got := map[protocol.TxnID]state{}
	for id, e := range r2.mu.txns {
		if !e.restored {
			t.Errorf("%v not held for the scan", id)
		}
		got[id] = e.state
	}
	r2.mu.Unlock()
	if len(got) != 2 || got[c] != committing || got[a] != aborting {
		t.Fatalf("loaded %v", got)
	}
	for _, bad := range [][]byte{nil, {1, 0, 0, 0}, append([]byte{1, 0, 0, 0}, make([]byte, 17)...)} {
		if err := r2.Load(bad); !errors.Is(err, ErrBadSnapshot) {
			t.Errorf("Load(%x) = %v, want ErrBadSnapshot", bad, err)
		}
	}
}

// Commit of a transaction the service did not vote YES on is a programmer
// error: the engine commits only what it holds prepared.
func TestCommitWithoutYesPanics(t *testing.T) {
	f := newFake()
	f.vote = protocol.VoteNo
	r := newRig(t, f, Options{})
	r.attach()
	txn := uuid.New()
	r.Prepare(txn, nil)
	r.vote(t, txn)
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
		if f.count("commit") != 0 {
			t.Fatal("a commit was sent")
		}
	}()
	r.Commit(txn)
}

// A service that is down fails every prepare: the aborts queued for them
// are bounded (MaxPrepares), and the rest are left to the next scan,
// which aborts whatever the service turns out to hold.
func TestUnansweredAbortsAreBounded(t *testing.T) {
	f := newFake()
	f.prepErr = errors.New("connection refused")
	f.failFirst = 1 << 30 // aborts fail too
	r := newRig(t, f, Options{MaxPrepares: 3})
	r.attach()
	// The scan Attach starts must be over before the test scans: one
	// that ran late (a loaded machine) listed the orphan again after its
	// abort was delivered, and Delivered went from 3 to 5 between polls.
	waitFor(t, "the first scan", func() bool { return r.Stats().Scans == 1 })
	for range 10 {
		txn := uuid.New()
		r.Prepare(txn, nil)
		if v := r.vote(t, txn); v != protocol.VoteNo {
			t.Fatalf("vote %v", v)
		}
	}
	st := r.Stats()
	if st.Pending != 3 || st.LeftToScan != 7 || st.Unanswered != 10 {
		t.Fatalf("stats %+v: want 3 aborts pending, 7 left to the scan", st)
	}
	// Back up, holding one of the left ones prepared: the queued aborts
	// go through and the scan aborts the one it lists.
	orphan := f.calls["prepare"][9]
	f.mu.Lock()
	f.failFirst, f.prepErr, f.prepared = 0, nil, []protocol.TxnID{orphan}
	f.mu.Unlock()
	r.scan()
	waitFor(t, "every abort delivered", func() bool { st := r.Stats(); return st.Pending == 0 && st.Delivered == 4 })
	if st := r.Stats(); st.Orphans != 1 {
		t.Fatalf("stats %+v", st)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mu.unanswered != 0 {
		t.Fatalf("%d unanswered aborts still counted", r.mu.unanswered)
	}
}

package pump

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/wal"
	"github.com/commitd/commitd/wal/waltest"
	"github.com/google/uuid"
)

func TestIndexMapDurableAndTrim(t *testing.T) {
	var m indexMap
	// Records 1..100 at LSNs 10, 20, ... (other machines' records between).
	for i := uint64(1); i <= 100; i++ {
		m.push(i, wal.LSN(i*10))
	}
	if idx, ok := m.markDurable(5); ok {
		t.Fatalf("nothing should be durable at LSN 5, got index %d", idx)
	}
	if idx, ok := m.markDurable(255); !ok || idx != 25 {
		t.Fatalf("markDurable(255) = %d, %v; want 25", idx, ok)
	}
	// Trim never drops records that are not durable, even if the machine
	// says it no longer needs them.
	if lsn, ok := m.trim(90); !ok || lsn != 260 {
		t.Fatalf("trim(90) = %d, %v; want oldest kept LSN 260", lsn, ok)
	}
	if idx, ok := m.markDurable(1000); !ok || idx != 100 {
		t.Fatalf("markDurable(1000) = %d, %v; want 100", idx, ok)
	}
	if lsn, ok := m.trim(50); !ok || lsn != 500 {
		t.Fatalf("trim(50) = %d, %v; want 500", lsn, ok)
	}
	if _, ok := m.trim(101); ok {
		t.Fatal("trim past every record should leave nothing needed")
	}
	// The ring keeps working after wrapping around.
	for i := uint64(101); i <= 1000; i++ {
		m.push(i, wal.LSN(i*10))
		if i%7 == 0 {
			m.markDurable(wal.LSN(i * 10))
			m.trim(i - 3)
		}
	}
	if idx, ok := m.markDurable(10000); !ok || idx != 1000 {
		t.Fatalf("after wrap: markDurable = %d, %v", idx, ok)
	}
	if lsn, ok := m.trim(995); !ok || lsn != 9950 {
		t.Fatalf("after wrap: trim(995) = %d, %v", lsn, ok)
	}
}

func TestInboxCopiesAndBatches(t *testing.T) {
	var q inbox
	q.wakeup = make(chan struct{}, 1)
	work := []byte("work-0")
	var want []engine.Message
	for i := range 50 {
		id := uuid.New()
		m := engine.Message{Type: engine.MsgBegin, Txn: id, Tag: uint64(i),
			Branches: []engine.Branch{{Participant: "a", Work: work}, {Participant: "b", Work: nil}}}
		if i%2 == 1 {
			m = engine.Message{Type: engine.MsgPrepare, Txn: id, Work: work}
		}
		q.put(&m, true)
		// The caller reuses its buffer at once: the queued copy must not change.
		want = append(want, engine.Message{Type: m.Type, Txn: id, Tag: m.Tag, Work: bytes.Clone(m.Work),
			Branches: cloneBranches(m.Branches)})
		work[5] = byte('0' + (i+1)%10)
	}
	got := q.take()
	if len(got) != len(want) {
		t.Fatalf("took %d messages, want %d", len(got), len(want))
	}
	for i := range got {
		if fmt.Sprint(got[i]) != fmt.Sprint(want[i]) {
			t.Fatalf("message %d:\n got %v\nwant %v", i, got[i], want[i])
		}
	}
	if got[0].Branches[1].Work != nil {
		t.Error("a nil work slice came back non-nil")
	}
	if len(q.take()) != 0 {
		t.Error("a second take returned messages again")
	}
}

func cloneBranches(bs []engine.Branch) []engine.Branch {
	if bs == nil {
		return nil
	}
	out := make([]engine.Branch, len(bs))
	for i, b := range bs {
		out[i] = engine.Branch{Participant: b.Participant, Work: bytes.Clone(b.Work)}
	}
	return out
}

// The inbox is on every message's path: once warm it must not allocate.
func TestInboxDoesNotAllocate(t *testing.T) {
	var q inbox
	q.wakeup = make(chan struct{}, 1)
	m := engine.Message{Type: engine.MsgBegin, Txn: uuid.New(),
		Branches: []engine.Branch{{Participant: "a", Work: make([]byte, 12)}, {Participant: "b", Work: make([]byte, 12)}}}
	round := func() {
		for range 64 {
			q.put(&m, true)
		}
		_ = q.take()
		select {
		case <-q.wakeup:
		default:
		}
	}
	for range 4 {
		round() // warm both buffer sets
	}
	if n := testing.AllocsPerRun(100, round); n != 0 {
		t.Errorf("a round of 64 puts and a take allocated %.1f times", n)
	}
}

func TestInboxConcurrentProducers(t *testing.T) {
	var q inbox
	q.wakeup = make(chan struct{}, 1)
	const producers, each = 8, 2000
	var wg sync.WaitGroup
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				w := []byte{byte(p), byte(i), byte(i >> 8)}
				q.put(&engine.Message{Type: engine.MsgPrepare, Tag: uint64(p*each + i), Work: w}, true)
			}
		}()
	}
	seen := make(map[uint64]bool)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	var batch []engine.Message
	check := func() {
		batch = q.take()
		for _, m := range batch {
			p, i := int(m.Tag)/each, int(m.Tag)%each
			if !bytes.Equal(m.Work, []byte{byte(p), byte(i), byte(i >> 8)}) {
				t.Fatalf("message %d carries work %v", m.Tag, m.Work)
			}
			seen[m.Tag] = true
		}
	}
	for {
		select {
		case <-q.wakeup:
			check()
			continue
		case <-done:
		}
		break
	}
	check()
	if len(seen) != producers*each {
		t.Fatalf("saw %d distinct messages, want %d", len(seen), producers*each)
	}
}

// A pump whose machine has not yet reported must let the log retire
// nothing: its restored records may be the only copy of needed state.
func TestNeededBeforeFirstReadyRetiresNothing(t *testing.T) {
	log, err := wal.Open(t.TempDir(), wal.Options{SegmentBytes: 1 << 16})
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	p := New(engine.NewShard(engine.ShardConfig{}), log, nil, 1)
	if got := p.Needed(); got != 0 {
		t.Fatalf("Needed() before the first Ready = %d, want 0", got)
	}
}

// oneMessage is a machine with one message ready after each step, as a
// shard or participant is at one transaction in flight.
type oneMessage struct {
	msgs  []engine.Message
	ready bool
}

func (m *oneMessage) Step(engine.Message) { m.ready = true }
func (m *oneMessage) Tick()               {}
func (m *oneMessage) Durable(uint64)      {}
func (m *oneMessage) HasReady() bool      { return m.ready }
func (m *oneMessage) Ready() engine.Ready {
	m.ready = false
	return engine.Ready{Messages: m.msgs}
}

type countOutput struct{ n int }

func (o *countOutput) Deliver(rd *engine.Ready) { o.n += len(rd.Messages) }

// Handing out a Ready does not allocate: at low load the pump flushes a
// Ready or more per transaction (it used to allocate one each, 3–5 per
// transaction at the coordinator with one client).
func TestFlushDoesNotAllocate(t *testing.T) {
	log, err := wal.Open(t.TempDir(), wal.Options{SegmentBytes: 1 << 16})
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	m := &oneMessage{msgs: []engine.Message{{Type: engine.MsgVote}}}
	out := &countOutput{}
	p := New(m, log, out, 1)
	round := func() {
		m.Step(engine.Message{})
		if err := p.flush(); err != nil {
			t.Fatal(err)
		}
	}
	if n := testing.AllocsPerRun(1000, round); n != 0 {
		t.Fatalf("%.2f allocations per flush of one Ready", n)
	}
	if out.n < 1000 {
		t.Fatalf("delivered %d messages, want at least 1000", out.n)
	}
}

// oneRecord is a machine with one lazy record ready at start; it notes
// every Durable it is told.
type oneRecord struct {
	ready   bool
	durable []uint64
}

func (m *oneRecord) Step(engine.Message) {}
func (m *oneRecord) Tick()               {}
func (m *oneRecord) Durable(i uint64)    { m.durable = append(m.durable, i) }
func (m *oneRecord) HasReady() bool      { return m.ready }
func (m *oneRecord) Ready() engine.Ready {
	m.ready = false
	return engine.Ready{FirstIndex: 1, Lazy: true,
		Records: []engine.Record{{Type: engine.RecAborted, Txn: uuid.New()}}}
}

// A failed fsync must never be reported durable, even when the failure
// lands between the pump's check for a failure and its read of the
// durable position — the interleaving that let a YES vote or a
// "committed" reply leave for a record whose fsync failed: the signal
// used to record the error and also advance its durable LSN to the
// failed record.
func TestFailureBetweenReadsMarksNothingDurable(t *testing.T) {
	fs := waltest.NewMemFS()
	log, err := wal.Open("wal", wal.Options{FS: fs, SegmentBytes: 1 << 16, LazyDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	m := &oneRecord{ready: true}
	p := New(m, log, &countOutput{}, time.Hour)
	var failing atomic.Bool
	fs.Inject(func(op waltest.Op) error {
		if op.Kind == waltest.OpSync && failing.Load() {
			return errInjected
		}
		return nil
	})
	hit := false
	p.afterFailureCheck = func() {
		if hit {
			return
		}
		hit = true
		// The failure check has passed. Now the record's fsync fails, and
		// the pump's waiter hears of it before the pump reads on.
		failing.Store(true)
		if err := log.Sync(1); err == nil {
			t.Error("Sync succeeded with every fsync failing")
		}
		<-p.signal.wakeup
		p.signal.wakeup <- struct{}{} // so that the next round sees the failure
	}
	errc := make(chan error, 1)
	go func() { errc <- p.Run() }()
	// Wake the pump once (after its first flush appended the record):
	// that round runs the hook.
	p.Submit(&engine.Message{Type: engine.MsgPrepare})
	select {
	case err := <-errc:
		if !errors.Is(err, errInjected) {
			t.Fatalf("Run returned %v, want the injected fsync error", err)
		}
	case <-time.After(10 * time.Second):
		p.Stop()
		t.Fatal("the pump did not stop after the log failed")
	}
	if !hit {
		t.Fatal("the pump never ran a round between its failure check and its durable read")
	}
	if len(m.durable) != 0 {
		t.Fatalf("the machine was told records %v are durable; their fsync failed", m.durable)
	}
}

var errInjected = errors.New("injected fsync failure")

// Producers faster than the consumer fill the inbox only up to its bound,
// then wait (the back-pressure that stops a connection's reader) — and
// every message still arrives, once, intact.
func TestInboxBoundPushesBack(t *testing.T) {
	const (
		maxBytes           = 64 << 10
		producers, each    = 8, 5000
		workLen            = 100
		consumerPauseRound = 200 * time.Microsecond
	)
	var q inbox
	q.wakeup = make(chan struct{}, 1)
	q.setMax(maxBytes)
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			w := make([]byte, workLen)
			for i := range each {
				w[0], w[1], w[2] = byte(p), byte(i), byte(i>>8)
				q.put(&engine.Message{Type: engine.MsgPrepare, Tag: uint64(p*each + i), Work: w}, true)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	msgSize := size(&engine.Message{Work: make([]byte, workLen)})
	seen := make(map[uint64]bool)
	var batch []engine.Message
	most, rounds := 0, 0
	take := func() {
		batch = q.take()
		rounds++
		bytes := 0
		for _, m := range batch {
			bytes += size(&m)
			p, i := int(m.Tag)/each, int(m.Tag)%each
			if m.Work[0] != byte(p) || m.Work[1] != byte(i) || m.Work[2] != byte(i>>8) || seen[m.Tag] {
				t.Fatalf("message %d: work %v, seen before %v", m.Tag, m.Work[:3], seen[m.Tag])
			}
			seen[m.Tag] = true
		}
		most = max(most, bytes)
	}
	for finished := false; !finished; {
		// A slow consumer: the producers outpace it.
		time.Sleep(consumerPauseRound)
		select {
		case <-done:
			finished = true
		default:
		}
		take()
	}
	take()
	t.Logf("%d messages of %d bytes in %d rounds; the largest batch held %d bytes (bound %d)",
		len(seen), msgSize, rounds, most, maxBytes)
	if len(seen) != producers*each {
		t.Fatalf("%d distinct messages arrived, want %d", len(seen), producers*each)
	}
	// Each producer may overshoot the bound by its one message.
	if limit := maxBytes + producers*msgSize; most > limit {
		t.Fatalf("a batch held %d bytes, more than the bound %d plus one message per producer (%d)", most, maxBytes, limit)
	}
}

// A sender waiting for room is released when the pump stops taking.
func TestInboxCloseReleasesWaiters(t *testing.T) {
	var q inbox
	q.wakeup = make(chan struct{}, 1)
	q.setMax(1)
	q.put(&engine.Message{Type: engine.MsgAck}, true) // fills it
	released := make(chan struct{})
	go func() {
		q.put(&engine.Message{Type: engine.MsgAck}, true)
		close(released)
	}()
	select {
	case <-released:
		t.Fatal("a put into a full inbox did not wait")
	case <-time.After(50 * time.Millisecond):
	}
	q.close()
	select {
	case <-released:
	case <-time.After(10 * time.Second):
		t.Fatal("close did not release the waiting put")
	}
	// Inject never waits, full or not.
	q2 := inbox{wakeup: make(chan struct{}, 1)}
	q2.setMax(1)
	injected := make(chan struct{})
	go func() {
		for range 3 {
			q2.put(&engine.Message{Type: engine.MsgNotSent}, false)
		}
		close(injected)
	}()
	select {
	case <-injected:
	case <-time.After(10 * time.Second):
		t.Fatal("a put without wait waited for room")
	}
}

// Do runs its function on the Run goroutine, and what the function makes
// the machine produce is flushed in the same round; after Stop, Do says
// ErrStopped instead of waiting for ever.
func TestDoRunsOnThePumpAndFlushes(t *testing.T) {
	log, err := wal.Open(t.TempDir(), wal.Options{SegmentBytes: 1 << 16})
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	m := &oneMessage{msgs: []engine.Message{{Type: engine.MsgVote}}}
	out := &countOutput{}
	p := New(m, log, out, time.Hour) // no tick: only Do wakes it
	done := make(chan error, 1)
	go func() { done <- p.Run() }()
	var delivered int
	if err := p.Do(t.Context(), func() { m.ready = true }); err != nil {
		t.Fatal(err)
	}
	// The flush of the round that ran the function came before the next
	// round's function.
	if err := p.Do(t.Context(), func() { delivered = out.n }); err != nil {
		t.Fatal(err)
	}
	if delivered != 1 {
		t.Fatalf("after Do made a message ready, %d were delivered, want 1", delivered)
	}
	p.Stop()
	if err := <-done; !errors.Is(err, ErrStopped) {
		t.Fatalf("Run returned %v", err)
	}
	if err := p.Do(t.Context(), func() {}); !errors.Is(err, ErrStopped) {
		t.Fatalf("Do after Stop = %v, want ErrStopped", err)
	}
}

// Only the put that makes the inbox non-empty wakes the consumer, yet no
// message is ever left without a wake-up: a consumer that takes only when
// woken (as Run does, after every wake-up) sees every message of many
// producers, and fewer wake-ups are sent than messages.
func TestInboxWakesOnlyWhenItWasEmpty(t *testing.T) {
	var q inbox
	q.wakeup = make(chan struct{}, 1)
	const producers, each = 4, 5000
	var wg sync.WaitGroup
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				q.put(&engine.Message{Type: engine.MsgVote, Tag: uint64(p*each + i)}, true)
				if i%64 == 0 {
					runtime.Gosched()
				}
			}
		}()
	}
	seen := make(map[uint64]bool)
	var batch []engine.Message
	wakes := 0
	for len(seen) < producers*each {
		select {
		case <-q.wakeup:
			wakes++
		case <-time.After(10 * time.Second):
			t.Fatalf("no wake-up for 10 s with %d of %d messages taken: one was left without one", len(seen), producers*each)
		}
		batch = q.take()
		for _, m := range batch {
			seen[m.Tag] = true
		}
	}
	wg.Wait()
	if batch = q.take(); len(batch) != 0 {
		t.Fatalf("%d messages left after all were seen", len(batch))
	}
	// An empty inbox wakes on the next put, exactly once.
	q.put(&engine.Message{Type: engine.MsgVote}, true)
	q.put(&engine.Message{Type: engine.MsgVote}, true)
	select {
	case <-q.wakeup:
	default:
		t.Fatal("a put into an empty inbox did not wake the consumer")
	}
	select {
	case <-q.wakeup:
		t.Fatal("a put into a non-empty inbox woke the consumer again")
	default:
	}
	t.Logf("%d messages, %d wake-ups", producers*each, wakes)
}

// BenchmarkInboxRound is the inbox's work for a round of 64 votes (the
// network's side: put; the pump's: take, and a look at each message as
// Step takes it), per message.
func BenchmarkInboxRound(b *testing.B) {
	var q inbox
	q.wakeup = make(chan struct{}, 1)
	m := engine.Message{Type: engine.MsgVote, Txn: uuid.New(), From: "bank-1"}
	var sum uint64
	b.ReportAllocs()
	for b.Loop() {
		for range 64 {
			q.put(&m, true)
		}
		select {
		case <-q.wakeup:
		default:
		}
		batch := q.take()
		for i := range batch {
			sum += batch[i].Tag + uint64(batch[i].Type)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*64), "ns/msg")
	if sum == 0 {
		b.Fatal("no message seen")
	}
}

// The inbox hands back, round after round, exactly the messages put into
// it, in order, as deep copies made at put time: random messages (works
// of every length, nil or empty, up to ten branches), random round sizes,
// and the caller's buffers scribbled over after each put. The batch taken
// is compared with plain clones; it must also stay intact while the next
// round is put (it is valid until the next take).
func TestInboxMatchesPlainCopies(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	var q inbox
	q.wakeup = make(chan struct{}, 1)
	randBytes := func() []byte {
		switch rng.IntN(4) {
		case 0:
			return nil
		case 1:
			return []byte{}
		}
		b := make([]byte, rng.IntN(300))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	clone := func(m engine.Message) engine.Message {
		m.Work = bytes.Clone(m.Work)
		m.Branches = cloneBranches(m.Branches)
		return m
	}
	var prev, prevWant []engine.Message
	for round := range 300 {
		n := rng.IntN(40)
		var want []engine.Message
		for i := range n {
			m := engine.Message{Type: engine.MsgType(1 + rng.IntN(5)), Tag: uint64(round<<16 | i),
				UnixMs: rng.Int64(), From: fmt.Sprint("p", rng.IntN(3)), Work: randBytes()}
			if rng.IntN(3) == 0 {
				m.Branches = make([]engine.Branch, rng.IntN(11))
				for j := range m.Branches {
					m.Branches[j] = engine.Branch{Participant: fmt.Sprint("b", j), Work: randBytes()}
				}
			}
			want = append(want, clone(m))
			q.put(&m, false)
			for j := range m.Work {
				m.Work[j] ^= 0xff
			}
			for _, br := range m.Branches {
				for j := range br.Work {
					br.Work[j] ^= 0xff
				}
			}
		}
		// The previous batch is intact until this take.
		if err := sameBatch(prev, prevWant); err != nil {
			t.Fatalf("round %d: the previous batch changed while this one was put: %v", round, err)
		}
		got := q.take()
		if err := sameBatch(got, want); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		prev, prevWant = got, want
	}
}

// sameBatch compares a batch taken with the messages put: every field
// equal, byte slices by content, and a nil work given back nil.
func sameBatch(got, want []engine.Message) error {
	if len(got) != len(want) {
		return fmt.Errorf("took %d messages, want %d", len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if !bytes.Equal(g.Work, w.Work) || (w.Work == nil) != (g.Work == nil) || len(g.Branches) != len(w.Branches) {
			return fmt.Errorf("message %d: took %v, want %v", i, g, w)
		}
		for j := range g.Branches {
			gb, wb := g.Branches[j], w.Branches[j]
			if gb.Participant != wb.Participant || !bytes.Equal(gb.Work, wb.Work) || (wb.Work == nil) != (gb.Work == nil) {
				return fmt.Errorf("message %d branch %d: took %v, want %v", i, j, gb, wb)
			}
		}
		g.Work, g.Branches, w.Work, w.Branches = nil, nil, nil, nil
		if !reflect.DeepEqual(g, w) {
			return fmt.Errorf("message %d: took %+v, want %+v", i, g, w)
		}
	}
	return nil
}

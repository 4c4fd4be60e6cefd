package pump

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/wal"
)

// Machine is what a pump drives: an engine.Shard or an engine.Participant.
type Machine interface {
	Step(m engine.Message)
	Tick()
	Durable(index uint64)
	HasReady() bool
	Ready() engine.Ready
}

// Log is what a pump appends to: a *wal.Log, or (a replicated
// coordinator) a log whose records are durable once a quorum holds them.
// Its Waiters must be told in LSN order, as wal.Log's are.
type Log interface {
	Append(rec []byte) (wal.LSN, error)
	AppendLazy(rec []byte) (wal.LSN, error)
	Notify(lsn wal.LSN, w wal.Waiter)
	LastLSN() wal.LSN
}

// Output receives what a machine produced. It is called on the pump's
// goroutine and must not block for long: it queues frames on connections.
// The Ready's slices are valid only during the call.
type Output interface {
	Deliver(rd *engine.Ready)
}

// ErrStopped is returned by Run after Stop.
var ErrStopped = errors.New("pump: stopped")

// Pump owns one machine. Fields are owned by the Run goroutine except where
// noted.
type Pump struct {
	m      Machine
	log    Log
	out    Output
	tick   time.Duration
	inbox  inbox         // shared: guarded by its own mutex
	signal durableSignal // shared: written by the log's flusher
	stop   chan struct{} // closed by Stop
	done   chan struct{} // closed when Run returns

	wake chan struct{} // the wake-up the inbox and the durable signal share

	// calls are the functions Do queued for the Run goroutine.
	calls struct {
		sync.Mutex
		q []*call
	}

	idx    indexMap
	encBuf []byte
	// rd holds the machine's latest Ready while flush hands it out: a
	// field, not a local, because the Output takes its address and a
	// local would escape — an allocation per Ready, which at low load is
	// one or more per transaction.
	rd engine.Ready

	// needed is the LSN of the oldest record this machine still needs (or,
	// when it needs none, a bound below every record it will append later);
	// read by the retirer on another goroutine.
	needed atomic.Uint64

	// OnLoop, if set before Run, is called on the Run goroutine after every
	// round of inputs: the place to publish the machine's statistics.
	OnLoop func()

	// MaxInboxBytes, if set before Run, replaces DefaultMaxInboxBytes.
	MaxInboxBytes int

	// NoBatch, if set before Run, turns batching off, for benchmarks that
	// show what it buys: the pump steps one input at a time and after each
	// appends that input's records, registers their durability waiter and
	// hands its messages to the Output before it steps the next — instead
	// of stepping every input that arrived since the last round and
	// flushing their outputs together.
	NoBatch bool

	// afterFailureCheck, if set before Run (tests only), runs on the Run
	// goroutine between the check of the log's failure and the read of its
	// durable position: the window a failure may land in, which a test
	// must be able to hit deterministically.
	afterFailureCheck func()
}

// New returns a pump for m over log. tick is the period of m.Tick().
func New(m Machine, log Log, out Output, tick time.Duration) *Pump {
	wake := make(chan struct{}, 1)
	p := &Pump{
		m:    m,
		log:  log,
		out:  out,
		tick: tick,
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	p.wake = wake
	p.inbox.wakeup = wake
	p.signal.wakeup = wake
	// Until the machine has published a low water, everything it restored
	// may be needed: 0 lets the log retire nothing.
	p.needed.Store(0)
	return p
}

// Restored tells the pump that the machine restored record index from the
// log at lsn (recovery, before Run).
func (p *Pump) Restored(index uint64, lsn wal.LSN) {
	p.idx.push(index, lsn)
	p.idx.markDurable(lsn)
}

// DefaultMaxInboxBytes bounds the messages (structs and their bytes)
// waiting for a pump's next round: about 25,000 small ones, far more than
// a round steps at any load we measure.
const DefaultMaxInboxBytes = 4 << 20

// Submit queues a message from the network for the machine, waiting while
// the inbox holds MaxInboxBytes (or until the pump stops). Waiting is the
// back-pressure: the caller is a connection's reader, which reads nothing
// meanwhile, so TCP's window closes and the sender slows down — rather
// than the inbox growing without limit when the inputs outpace the
// machine. Waiting loses nothing and needs no answer for every message
// type (a vote or an ack has no way to be refused), and it lasts until the
// pump's next round, not longer. It copies every byte slice in m, so the
// caller may reuse its buffers as soon as Submit returns. Safe for
// concurrent use; never call it on the pump's goroutine (Output.Deliver),
// where waiting for the pump would never end: use Inject.
func (p *Pump) Submit(m *engine.Message) { p.inbox.put(m, true) }

// Inject queues a message without waiting for room: for inputs that the
// machine's own outputs caused (a prepare that could not be sent, a
// resource's answer, a prepared transaction found in the resource), which
// are bounded by what the machine has in flight rather than by a sender,
// and may be submitted on the pump's own goroutine or before Run. It
// copies m as Submit does.
func (p *Pump) Inject(m *engine.Message) { p.inbox.put(m, false) }

// call is one function queued by Do; done is closed once it has run.
type call struct {
	fn   func()
	done chan struct{}
}

// Do runs fn on the Run goroutine, between two rounds — where the machine
// may be read, or driven by a method of its own (a redelivery asked for by
// an operator) — and waits until it has run, ctx ends or the pump stops.
// What fn makes the machine produce is flushed in the same round. fn must
// not block, and must copy out whatever it reads before it returns. It is
// for admin requests: it takes a lock and allocates, which the inputs of
// the protocol never do. It returns ctx's error or ErrStopped when fn did
// not run (or may run later: on ctx's end a queued fn is not withdrawn).
func (p *Pump) Do(ctx context.Context, fn func()) error {
	c := &call{fn: fn, done: make(chan struct{})}
	p.calls.Lock()
	p.calls.q = append(p.calls.q, c)
	p.calls.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	select {
	case <-c.done:
		return nil
	case <-p.done:
		select {
		case <-c.done: // ran in the last round
			return nil
		default:
		}
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
}

// runCalls runs the functions Do queued, on the Run goroutine.
func (p *Pump) runCalls() {
	p.calls.Lock()
	q := p.calls.q
	p.calls.q = nil
	p.calls.Unlock()
	for _, c := range q {
		c.fn()
		close(c.done)
	}
}

// Needed returns the LSN of the oldest log record this machine still needs
// (0 until the machine has first reported, which retires nothing); the log
// may retire everything below the minimum over all pumps sharing it.
func (p *Pump) Needed() wal.LSN { return wal.LSN(p.needed.Load()) }

// Stop asks Run to return and waits until it has.
func (p *Pump) Stop() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

// Run drives the machine until Stop or until the log fails. A log failure
// (a failed write or fsync) is returned: the node must stop acknowledging
// anything and recover from disk.
func (p *Pump) Run() error {
	defer close(p.done)
	// Nobody takes from the inbox once Run returns: release the senders
	// waiting for room.
	defer p.inbox.close()
	p.inbox.setMax(p.MaxInboxBytes)
	ticker := time.NewTicker(p.tick)
	defer ticker.Stop()
	// Deliver whatever recovery produced (re-driven decisions, inquiries).
	if err := p.flush(); err != nil {
		return err
	}
	for {
		ticked := false
		select {
		case <-p.stop:
			return ErrStopped
		case <-p.signal.wakeup:
		case <-ticker.C:
			ticked = true
		}
		if err := p.signal.failure(); err != nil {
			return fmt.Errorf("log failed, stopping: %w", err)
		}
		if p.afterFailureCheck != nil {
			p.afterFailureCheck()
		}
		if idx, ok := p.idx.markDurable(wal.LSN(p.signal.lsn.Load())); ok {
			p.m.Durable(idx)
		}
		if p.NoBatch {
			if err := p.flush(); err != nil {
				return err
			}
		}
		batch := p.inbox.take()
		for i := range batch {
			p.m.Step(batch[i])
			if p.NoBatch {
				if err := p.flush(); err != nil {
					return err
				}
			}
		}
		if ticked {
			p.m.Tick()
		}
		p.runCalls()
		if err := p.flush(); err != nil {
			return err
		}
		if p.OnLoop != nil {
			p.OnLoop()
		}
	}
}

// flush moves every pending output of the machine out: records into the
// log (not waiting for durability — the machine holds back what depends
// on it), messages and replies to the Output.
func (p *Pump) flush() error {
	for p.m.HasReady() {
		p.rd = p.m.Ready()
		rd := &p.rd
		var last wal.LSN
		for i := range rd.Records {
			var err error
			p.encBuf, err = rd.Records[i].AppendBinary(p.encBuf[:0])
			if err != nil {
				// The machine built a record the codec refuses: a programmer error.
				panic(fmt.Sprintf("pump: encoding %v record: %v", rd.Records[i].Type, err))
			}
			// Only the last record of an urgent batch hurries the log: it
			// takes every record appended before it along.
			var lsn wal.LSN
			if rd.Lazy || i < len(rd.Records)-1 {
				lsn, err = p.log.AppendLazy(p.encBuf)
			} else {
				lsn, err = p.log.Append(p.encBuf)
			}
			if err != nil {
				return fmt.Errorf("log append failed, stopping: %w", err)
			}
			p.idx.push(rd.FirstIndex+uint64(i), lsn)
			last = lsn
		}
		if last != 0 {
			p.log.Notify(last, &p.signal)
		}
		p.out.Deliver(rd)
		if lsn, ok := p.idx.trim(rd.LowWater); ok {
			p.needed.Store(uint64(lsn))
		} else {
			p.needed.Store(uint64(p.log.LastLSN() + 1))
		}
	}
	return nil
}

// inbox is a multi-producer queue of messages for one machine. Producers
// copy message bytes into an arena; the consumer takes the whole batch at
// once, so at steady state nothing is allocated. Two sets of buffers
// alternate: producers fill one while the consumer steps the other, and a
// batch's memory stays put until the consumer's next take.
//
// The inbox is bounded in bytes: put with wait set blocks while the filling
// buffers hold maxBytes (one message may overshoot it, so that no message
// is too big to ever fit), until take swaps them out or close.
type inbox struct {
	mu      sync.Mutex
	fill    inboxBuf
	bytes   int       // what fill holds, counted as in size; guarded by mu
	max     int       // bound on bytes; guarded by mu
	room    sync.Cond // on mu: take emptied fill, or close
	closed  bool      // guarded by mu: nobody will take again
	wakeup  chan struct{}
	stepped inboxBuf // owned by the consumer

	// branches is the consumer's scratch for the batch's Branch slices.
	branches []engine.Branch
}

type inboxBuf struct {
	// msgs are the messages with Work and Branches nil; refs[i] says
	// where msgs[i]'s bytes are, until take fills them in in place.
	msgs     []engine.Message
	refs     []queued
	branches []queuedBranch
	arena    []byte
}

// queued is where a message's byte slices are, as arena offsets, since
// the arena may move while the batch fills.
type queued struct {
	work        span
	firstBranch int
	nBranches   int
}

type queuedBranch struct {
	participant string
	work        span
}

type span struct{ off, n int }

// Sizes for the inbox's bound: what a message and a branch take in the
// buffers, besides their bytes.
const (
	queuedSize       = int(unsafe.Sizeof(engine.Message{}) + unsafe.Sizeof(queued{}))
	queuedBranchSize = int(unsafe.Sizeof(queuedBranch{}))
)

// size is what m takes in the inbox's buffers.
func size(m *engine.Message) int {
	n := queuedSize + len(m.Work)
	for _, br := range m.Branches {
		n += queuedBranchSize + len(br.Work)
	}
	return n
}

// setMax sets the bound (0: the default).
func (q *inbox) setMax(n int) {
	if n <= 0 {
		n = DefaultMaxInboxBytes
	}
	q.mu.Lock()
	q.max = n
	q.mu.Unlock()
}

// close releases every put waiting for room, for good.
func (q *inbox) close() {
	q.mu.Lock()
	q.closed = true
	q.room.Broadcast()
	q.mu.Unlock()
}

// put queues a copy of m; with wait it first waits while the inbox is full.
func (q *inbox) put(m *engine.Message, wait bool) {
	q.mu.Lock()
	if q.room.L == nil { // set here so that a zero inbox works
		q.room.L = &q.mu
	}
	if q.max == 0 {
		q.max = DefaultMaxInboxBytes
	}
	for wait && q.bytes >= q.max && !q.closed {
		q.room.Wait()
	}
	q.bytes += size(m)
	b := &q.fill
	// Only the message that makes the inbox non-empty wakes the pump: one
	// that finds it non-empty finds that wake-up still pending, or the pump
	// woken and yet to take — take empties the inbox, and Run takes after
	// every wake-up — so it is in the batch either way.
	wake := len(b.msgs) == 0
	e := queued{firstBranch: len(b.branches), nBranches: len(m.Branches)}
	e.work = b.stash(m.Work)
	for _, br := range m.Branches {
		b.branches = append(b.branches, queuedBranch{participant: br.Participant, work: b.stash(br.Work)})
	}
	b.msgs = append(b.msgs, *m)
	last := &b.msgs[len(b.msgs)-1]
	last.Work, last.Branches = nil, nil
	b.refs = append(b.refs, e)
	q.mu.Unlock()
	if wake {
		select {
		case q.wakeup <- struct{}{}:
		default:
		}
	}
}

func (b *inboxBuf) stash(p []byte) span {
	if p == nil {
		return span{off: -1}
	}
	off := len(b.arena)
	b.arena = append(b.arena, p...)
	return span{off, len(p)}
}

func (b *inboxBuf) bytes(s span) []byte {
	if s.off < 0 {
		return nil
	}
	return b.arena[s.off : s.off+s.n : s.off+s.n]
}

// take swaps the filled buffers for the stepped ones and returns the
// batch: the stepped buffers' own messages, their byte slices filled in in
// place (not copied out again). They stay valid until the next take.
func (q *inbox) take() []engine.Message {
	q.stepped.msgs = q.stepped.msgs[:0]
	q.stepped.refs = q.stepped.refs[:0]
	q.stepped.branches = q.stepped.branches[:0]
	q.stepped.arena = q.stepped.arena[:0]
	q.mu.Lock()
	q.fill, q.stepped = q.stepped, q.fill
	if q.bytes >= q.max && q.room.L != nil {
		q.room.Broadcast()
	}
	q.bytes = 0
	q.mu.Unlock()
	b := &q.stepped
	// Every branch first: the messages' Branches are slices of this
	// scratch, which must not move once they are taken.
	q.branches = q.branches[:0]
	for _, br := range b.branches {
		q.branches = append(q.branches, engine.Branch{Participant: br.participant, Work: b.bytes(br.work)})
	}
	for i := range b.msgs {
		e := &b.refs[i]
		m := &b.msgs[i]
		m.Work = b.bytes(e.work)
		if e.nBranches > 0 {
			m.Branches = q.branches[e.firstBranch : e.firstBranch+e.nBranches : e.firstBranch+e.nBranches]
		}
	}
	return b.msgs
}

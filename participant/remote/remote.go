package remote

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/protocol"
	"github.com/prometheus/client_golang/prometheus"
)

// Service is a data service that holds prepared work durably itself. Every
// call may block (a network round trip, a database); each is bounded by its
// context. Every call may arrive more than once for the same transaction,
// and must then answer as the first time did (idempotent by txn).
type Service interface {
	// Prepare makes work durable and holds whatever it needs until Commit
	// or Abort, and answers protocol.VoteYes; or holds nothing and answers
	// protocol.VoteNo (or VoteReadOnly: nothing to commit). An error is a
	// NO vote, followed by an Abort, since the service may have prepared.
	// A Prepare that arrives after an Abort of the same txn must vote no.
	Prepare(ctx context.Context, txn protocol.TxnID, work []byte) (protocol.Vote, error)
	// Commit makes a transaction the service voted YES on permanent. It is
	// never called for any other. An error is retried until nil.
	Commit(ctx context.Context, txn protocol.TxnID) error
	// Abort releases a prepared transaction; it may name one the service
	// never saw or already aborted. An error is retried until nil.
	Abort(ctx context.Context, txn protocol.TxnID) error
	// Prepared lists the transactions the service holds prepared: voted
	// YES on and neither committed nor aborted.
	Prepared(ctx context.Context) ([]protocol.TxnID, error)
}

// Options tune a Resource. Zero values take the defaults noted.
type Options struct {
	// PrepareTimeout bounds a Prepare call; no answer in time is a NO
	// vote (default 2s).
	PrepareTimeout time.Duration
	// CallTimeout bounds one attempt of Commit, Abort or Prepared
	// (default 10s).
	CallTimeout time.Duration
	// RetryMin and RetryMax: a failed Commit or Abort is tried again
	// after RetryMin, then after twice as long each time, up to RetryMax
	// (defaults 50ms and 5s), with up to a quarter of jitter.
	RetryMin, RetryMax time.Duration
	// ScanEvery is how often Prepared is asked, after the first scan at
	// start, for transactions to abort (default 2s, as --scan-every).
	ScanEvery time.Duration
	// MaxPrepares bounds the Prepare calls in flight; a prepare beyond it
	// is voted no at once (default 1024).
	MaxPrepares int
	// MaxDeliveries bounds the Commit and Abort calls in flight; the
	// others wait for a turn (default 64).
	MaxDeliveries int
	// Logger receives warnings about a failing service (default
	// slog.Default()).
	Logger *slog.Logger
	// AfterPrepare, if set, is called with each Prepare's vote before it
	// is reported: a test hook, to crash the process at exactly that
	// point (the service prepared, the participant recorded nothing).
	AfterPrepare func(txn protocol.TxnID, vote protocol.Vote)
}

func (o *Options) fill() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.PrepareTimeout, 2*time.Second)
	def(&o.CallTimeout, 10*time.Second)
	def(&o.RetryMin, 50*time.Millisecond)
	def(&o.RetryMax, 5*time.Second)
	def(&o.ScanEvery, 2*time.Second)
	o.RetryMax = max(o.RetryMax, o.RetryMin)
	if o.MaxPrepares <= 0 {
		o.MaxPrepares = 1024
	}
	if o.MaxDeliveries <= 0 {
		o.MaxDeliveries = 64
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// state is where a transaction is in this resource.
type state uint8

const (
	// calling: a Prepare call is out; the vote is not reported yet.
	calling state = iota + 1
	// held: the service voted YES; the engine has not decided yet.
	held
	// committing and aborting: a delivery of the decision is queued or
	// under way, and ends when the service answers success.
	committing
	aborting
)

func (s state) String() string {
	switch s {
	case calling:
		return "calling"
	case held:
		return "held"
	case committing:
		return "committing"
	case aborting:
		return "aborting"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// entry is one transaction the resource knows.
type entry struct {
	state state
	// restored: a delivery replayed from the log or a checkpoint; it
	// waits for the first scan, which says whether the service still
	// holds the transaction (send it) or not (it was delivered before).
	restored bool
	// sending: a goroutine owns the delivery.
	sending bool
	// fromLog: held, restored from the participant's log; the first scan
	// checks that the service still holds it.
	fromLog bool
	// unanswered: an abort sent because the prepare got no valid answer
	// (counted in mu.unanswered, which bounds them).
	unanswered bool
	// ctx, when tracing, is the context the delivery's calls derive
	// from: it carries the participant's span for the decision
	// (TraceWith). Nil: r.ctx.
	ctx context.Context
}

// Stats are the resource's counters (Resource.Stats, `admin status`,
// /metrics).
type Stats struct {
	Prepares    uint64 `json:"prepares"`     // Prepare calls made
	VotedYes    uint64 `json:"voted_yes"`    // answered yes
	VotedNo     uint64 `json:"voted_no"`     // answered no or read-only
	Unanswered  uint64 `json:"unanswered"`   // errors, bad answers, timeouts: voted no, abort sent
	LeftToScan  uint64 `json:"left_to_scan"` // of those, aborts not queued (too many): the next scan sends them
	Overloaded  uint64 `json:"overloaded"`   // voted no at once: MaxPrepares calls in flight
	Delivered   uint64 `json:"delivered"`    // commits and aborts the service took
	Retries     uint64 `json:"retries"`      // failed commit and abort attempts, each retried
	Pending     int    `json:"pending"`      // commits and aborts not yet taken (gauge)
	Orphans     uint64 `json:"orphans"`      // prepared at the service, unknown here: aborted (a scan)
	Skipped     uint64 `json:"skipped"`      // restored decisions the service had already taken
	Scans       uint64 `json:"scans"`        // Prepared answered
	ScanErrors  uint64 `json:"scan_errors"`  // Prepared failed
	LostPrepare uint64 `json:"lost_prepare"` // restored held, not listed at the first scan: logged
	LastError   string `json:"last_error,omitempty"`
}

// Resource is an engine.Resource over a Service: see the package comment.
// The engine calls Prepare, Commit, Abort, Restore, Snapshot and Load on
// the pump goroutine; the calls to the service run on goroutines of their
// own. Attach must be called once, after the participant's recovery has
// replayed its log and before the first Prepare; it starts the scans.
type Resource struct {
	svc  Service
	opts Options

	// ctx ends at Close; every call to the service runs under it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// sem bounds the Commit and Abort calls in flight.
	sem chan struct{}
	// report is set once by Attach, before any Prepare.
	report func(engine.Message)
	// trace, set once by TraceWith before Attach, adds a transaction's
	// span to a call's context (nil: tracing is off).
	trace func(context.Context, protocol.TxnID) context.Context
	// planted is a deliberately broken variant for the tests that must
	// catch it (export_test.go); zero outside tests.
	planted plantedBug

	mu struct {
		sync.Mutex
		txns  map[protocol.TxnID]*entry
		calls int // Prepare calls in flight
		// unanswered counts the aborts queued after prepares without a
		// valid answer: at most MaxPrepares. A service that is down
		// fails every prepare; past the bound the abort is left to the
		// next scan, which finds the transaction unknown here.
		unanswered int
		scanned    bool
		// finished collects the deliveries that end while a scan is
		// out: the service may list them as prepared in an answer
		// computed before they ended, and they are not orphans.
		finished map[protocol.TxnID]struct{}
		stats    Stats
		closed   bool
		logged   time.Time // the last warning logged, at most one a second
	}
}

// plantedBug is a deliberately broken variant of the resource, which the
// crash test must catch (TestCrashesCatchPlantedBugs).
type plantedBug uint8

const (
	// bugScanAbortsHeld: a scan aborts every transaction the service
	// lists that is not in flight — also those held prepared here, whose
	// YES went out.
	bugScanAbortsHeld plantedBug = 1 << iota
	// bugSnapshotForgets: checkpoints leave out the decisions the service
	// has not yet taken.
	bugSnapshotForgets
)

// New returns a Resource forwarding to svc.
func New(svc Service, opts Options) *Resource {
	opts.fill()
	r := &Resource{svc: svc, opts: opts, sem: make(chan struct{}, opts.MaxDeliveries)}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.mu.txns = make(map[protocol.TxnID]*entry)
	return r
}

// TraceWith makes the calls to the service carry the participant's span
// for their transaction: trace returns ctx with that span (the service's
// client sends it on, e.g. as a traceparent header). Called at most once,
// before Attach, only when the participant traces (docs/tracing.md).
func (r *Resource) TraceWith(trace func(ctx context.Context, txn protocol.TxnID) context.Context) {
	r.trace = trace
}

// callContext is the context a call about txn derives from: r.ctx, with
// the transaction's span when tracing. On the pump goroutine, while the
// participant's span for the prepare or the decision is open.
func (r *Resource) callContext(txn protocol.TxnID) context.Context {
	if r.trace == nil {
		return r.ctx
	}
	return r.trace(r.ctx, txn)
}

// Attach sets where the votes go and starts the scans: the first at once,
// then every Options.ScanEvery.
func (r *Resource) Attach(report func(engine.Message)) {
	r.report = report
	r.wg.Add(1)
	go r.scanLoop()
}

// Prepare starts a Prepare call and answers VotePending; the vote comes
// back as a MsgResPrepared.
func (r *Resource) Prepare(txn protocol.TxnID, work []byte) protocol.Vote {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.mu.txns[txn] != nil:
		// An id reused while the last decision for it is still being
		// delivered (the engine forgot it, this resource has not).
		r.mu.stats.VotedNo++
		return protocol.VoteNo
	case r.mu.calls >= r.opts.MaxPrepares || r.mu.closed:
		r.mu.stats.Overloaded++
		return protocol.VoteNo
	}
	r.mu.txns[txn] = &entry{state: calling}
	r.mu.calls++
	r.mu.stats.Prepares++
	w := append([]byte(nil), work...) // the engine's slice is reused
	r.wg.Add(1)
	go r.callPrepare(r.callContext(txn), txn, w)
	return protocol.VotePending
}

func (r *Resource) callPrepare(base context.Context, txn protocol.TxnID, work []byte) {
	defer r.wg.Done()
	ctx, cancel := context.WithTimeout(base, r.opts.PrepareTimeout)
	v, err := r.svc.Prepare(ctx, txn, work)
	cancel()
	if err == nil && v != protocol.VoteYes && v != protocol.VoteNo && v != protocol.VoteReadOnly {
		err = fmt.Errorf("the service answered %v", v)
	}
	if err != nil {
		v = protocol.VoteNo
	}
	r.mu.Lock()
	r.mu.calls--
	e := r.mu.txns[txn]
	switch {
	case err != nil:
		// The service may hold it prepared all the same (the answer
		// was lost, or comes after the timeout): abort it there.
		r.mu.stats.Unanswered++
		r.noteError(fmt.Errorf("prepare %v: %w", txn, err))
		if r.mu.unanswered >= r.opts.MaxPrepares {
			r.mu.stats.LeftToScan++
			r.dropLocked(txn)
			break
		}
		r.mu.unanswered++
		e.state, e.unanswered = aborting, true
		r.sendLocked(txn, e)
	case v == protocol.VoteYes:
		r.mu.stats.VotedYes++
		e.state = held
	default:
		r.mu.stats.VotedNo++
		r.dropLocked(txn)
	}
	r.mu.Unlock()
	if r.opts.AfterPrepare != nil {
		r.opts.AfterPrepare(txn, v)
	}
	r.report(engine.Message{Type: engine.MsgResPrepared, Txn: txn, Vote: v})
}

// Commit queues the delivery of a commit for a transaction held prepared.
func (r *Resource) Commit(txn protocol.TxnID) { r.decide(txn, committing) }

// Abort queues the delivery of an abort for a transaction held prepared.
func (r *Resource) Abort(txn protocol.TxnID) { r.decide(txn, aborting) }

func (r *Resource) decide(txn protocol.TxnID, s state) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.mu.txns[txn]
	if e == nil || e.state != held {
		panic(fmt.Sprintf("remote: %v of %v, which is %v", s, txn, stateName(e)))
	}
	e.state = s
	if r.trace != nil {
		e.ctx = r.trace(r.ctx, txn)
	}
	if r.report == nil {
		// Replayed from the log during recovery: perhaps delivered
		// before the crash. The first scan says.
		e.restored = true
		return
	}
	r.sendLocked(txn, e)
}

func stateName(e *entry) string {
	if e == nil {
		return "unknown"
	}
	return e.state.String()
}

// Restore re-establishes a transaction the service voted YES on, from the
// participant's log.
func (r *Resource) Restore(txn protocol.TxnID, _ []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mu.txns[txn] = &entry{state: held, fromLog: true}
}

// Snapshot appends the deliveries not yet taken by the service:
//
//	u32 n, n × { txn [16], u8 decision (protocol.Decision) }
//
// The transactions held prepared are not in it: the engine's checkpoint
// keeps those and Restores them.
func (r *Resource) Snapshot(dst []byte) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	at := len(dst)
	dst = binary.LittleEndian.AppendUint32(dst, 0)
	n := uint32(0)
	for id, e := range r.mu.txns {
		d := protocol.DecisionCommit
		switch e.state {
		case committing:
		case aborting:
			d = protocol.DecisionAbort
		default:
			continue
		}
		if r.planted&bugSnapshotForgets != 0 {
			continue
		}
		dst = append(dst, id[:]...)
		dst = append(dst, byte(d))
		n++
	}
	binary.LittleEndian.PutUint32(dst[at:], n)
	return dst
}

// ErrBadSnapshot is returned by Load for a snapshot it cannot read.
var ErrBadSnapshot = errors.New("remote: bad snapshot (a data directory of another backend?)")

// Load replaces the resource's state with a snapshot's deliveries, held
// back until the first scan as every delivery replayed at recovery is.
func (r *Resource) Load(snap []byte) error {
	if len(snap) < 4 {
		return fmt.Errorf("%w: %d bytes", ErrBadSnapshot, len(snap))
	}
	n := int(binary.LittleEndian.Uint32(snap))
	snap = snap[4:]
	if n*17 != len(snap) {
		return fmt.Errorf("%w: %d deliveries in %d bytes", ErrBadSnapshot, n, len(snap))
	}
	txns := make(map[protocol.TxnID]*entry, n)
	for ; len(snap) > 0; snap = snap[17:] {
		var id protocol.TxnID
		copy(id[:], snap)
		e := &entry{restored: true}
		switch protocol.Decision(snap[16]) {
		case protocol.DecisionCommit:
			e.state = committing
		case protocol.DecisionAbort:
			e.state = aborting
		default:
			return fmt.Errorf("%w: decision %d", ErrBadSnapshot, snap[16])
		}
		txns[id] = e
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mu.txns = txns
	r.mu.unanswered = 0
	return nil
}

// Accounts is 0: the service's data is its own.
func (r *Resource) Accounts() int { return 0 }

// Total is -1: the service's data is its own, and `commitd bench` skips
// the conservation check for it.
func (r *Resource) Total() int64 { return -1 }

// Stats returns the resource's counters.
func (r *Resource) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.mu.stats
	for _, e := range r.mu.txns {
		if e.state == committing || e.state == aborting {
			st.Pending++
		}
	}
	return st
}

// Close stops every call and waits for the goroutines; nothing is
// reported after it. Deliveries not yet taken are in the log, and are
// sent after the next start.
func (r *Resource) Close() error {
	r.mu.Lock()
	r.mu.closed = true
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
	return nil
}

// noteError keeps the last error for Stats and logs it (at most one a
// second: a service that is down fails every call).
func (r *Resource) noteError(err error) {
	r.mu.stats.LastError = err.Error()
	if now := time.Now(); r.ctx.Err() == nil && now.Sub(r.mu.logged) >= time.Second {
		r.mu.logged = now
		r.opts.Logger.Warn("remote service", "err", err)
	}
}

// dropLocked forgets txn: the service is done with it.
func (r *Resource) dropLocked(txn protocol.TxnID) {
	if e := r.mu.txns[txn]; e != nil && e.unanswered {
		r.mu.unanswered--
	}
	delete(r.mu.txns, txn)
	if r.mu.finished != nil {
		r.mu.finished[txn] = struct{}{}
	}
}

// sendLocked starts the delivery of e's decision unless one is under way.
func (r *Resource) sendLocked(txn protocol.TxnID, e *entry) {
	if e.sending || r.mu.closed {
		return
	}
	e.sending = true
	base := e.ctx
	if base == nil {
		base = r.ctx
	}
	r.wg.Add(1)
	go r.deliver(base, txn, e.state)
}

// deliver sends a decision until the service takes it, backing off
// between attempts, or until Close (base ends then: it is r.ctx, or
// derives from it).
func (r *Resource) deliver(base context.Context, txn protocol.TxnID, s state) {
	defer r.wg.Done()
	wait := r.opts.RetryMin
	for {
		select {
		case r.sem <- struct{}{}:
		case <-r.ctx.Done():
			return
		}
		ctx, cancel := context.WithTimeout(base, r.opts.CallTimeout)
		var err error
		if s == committing {
			err = r.svc.Commit(ctx, txn)
		} else {
			err = r.svc.Abort(ctx, txn)
		}
		cancel()
		<-r.sem
		r.mu.Lock()
		if err == nil {
			r.mu.stats.Delivered++
			r.dropLocked(txn)
			r.mu.Unlock()
			return
		}
		r.mu.stats.Retries++
		r.noteError(fmt.Errorf("%v %v (retrying in %v): %w", s, txn, wait, err))
		r.mu.Unlock()
		t := time.NewTimer(wait + rand.N(wait/4+1))
		select {
		case <-t.C:
		case <-r.ctx.Done():
			t.Stop()
			return
		}
		wait = min(2*wait, r.opts.RetryMax)
	}
}

// scanLoop scans at once, again with backoff until a scan succeeds, then
// every ScanEvery.
func (r *Resource) scanLoop() {
	defer r.wg.Done()
	wait := r.opts.RetryMin
	for {
		next := r.opts.ScanEvery
		if err := r.scan(); err != nil {
			next = wait
			wait = min(2*wait, r.opts.RetryMax)
		} else {
			wait = r.opts.RetryMin
		}
		t := time.NewTimer(next)
		select {
		case <-t.C:
		case <-r.ctx.Done():
			t.Stop()
			return
		}
	}
}

// scan asks the service what it holds prepared and settles it: a
// transaction unknown here is aborted (no YES for it left this
// participant); a restored delivery is sent if the service still holds
// its transaction and dropped if not.
func (r *Resource) scan() error {
	r.mu.Lock()
	r.mu.finished = make(map[protocol.TxnID]struct{})
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(r.ctx, r.opts.CallTimeout)
	ids, err := r.svc.Prepared(ctx)
	cancel()
	r.mu.Lock()
	defer r.mu.Unlock()
	finished := r.mu.finished
	r.mu.finished = nil
	if err != nil {
		r.mu.stats.ScanErrors++
		r.noteError(fmt.Errorf("listing prepared transactions: %w", err))
		return err
	}
	r.mu.stats.Scans++
	listed := make(map[protocol.TxnID]struct{}, len(ids))
	for _, id := range ids {
		listed[id] = struct{}{}
		e := r.mu.txns[id]
		if e != nil && e.state == held && r.planted&bugScanAbortsHeld != 0 {
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				ctx, cancel := context.WithTimeout(r.ctx, r.opts.CallTimeout)
				defer cancel()
				_ = r.svc.Abort(ctx, id)
			}()
			continue
		}
		switch {
		case e == nil:
			if _, ok := finished[id]; ok {
				continue // decided and delivered while the scan was out
			}
			r.mu.stats.Orphans++
			e = &entry{state: aborting}
			r.mu.txns[id] = e
			r.sendLocked(id, e)
		case e.restored:
			e.restored = false
			r.sendLocked(id, e)
		}
	}
	for id, e := range r.mu.txns {
		if _, ok := listed[id]; ok {
			continue
		}
		switch {
		case e.restored:
			// Taken by the service before the crash: a decision it no
			// longer holds prepared can only be the one it was sent.
			r.mu.stats.Skipped++
			delete(r.mu.txns, id)
		case e.state == held && e.fromLog && !r.mu.scanned:
			// Either its decision reached the service just before the
			// crash (a commit is applied before its record is durable,
			// and an abort's record is not forced) — the coordinator's
			// answer to the inquiry sends it again — or the service
			// lost a YES, which breaks the contract.
			r.mu.stats.LostPrepare++
			r.opts.Logger.Warn("remote service: a transaction it voted yes on is not listed as prepared (decided just before a crash, or lost by the service)", "txn", id)
		}
	}
	r.mu.scanned = true
	return nil
}

// Held lists the transactions the service voted YES on that are not yet
// decided here.
func (r *Resource) Held() []protocol.TxnID {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ids []protocol.TxnID
	for id, e := range r.mu.txns {
		if e.state == held {
			ids = append(ids, id)
		}
	}
	return ids
}

// Status is Stats, for `commitd admin status`.
func (r *Resource) Status() any { return r.Stats() }

// Collectors are the resource's Prometheus series.
func (r *Resource) Collectors() []prometheus.Collector {
	stat := func(pick func(Stats) float64) func() float64 {
		return func() float64 { return pick(r.Stats()) }
	}
	counter := func(name, help string, pick func(Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "commitd_remote_" + name + "_total", Help: help},
			stat(func(s Stats) float64 { return float64(pick(s)) }))
	}
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "commitd_remote_pending_deliveries",
			Help: "Commits and aborts the service has not yet taken (each retried with backoff)."},
			stat(func(s Stats) float64 { return float64(s.Pending) })),
		counter("prepares", "Prepare calls made to the service.", func(s Stats) uint64 { return s.Prepares }),
		counter("unanswered", "Prepare calls that failed, timed out or were answered with garbage: voted no, abort sent.", func(s Stats) uint64 { return s.Unanswered }),
		counter("overloaded", "Prepares voted no at once: too many calls in flight.", func(s Stats) uint64 { return s.Overloaded }),
		counter("delivered", "Commits and aborts the service took.", func(s Stats) uint64 { return s.Delivered }),
		counter("retries", "Commit and abort attempts that failed and were retried.", func(s Stats) uint64 { return s.Retries }),
		counter("orphans", "Transactions the service held prepared that were unknown here, aborted.", func(s Stats) uint64 { return s.Orphans }),
		counter("scan_errors", "Failed requests for the list of prepared transactions.", func(s Stats) uint64 { return s.ScanErrors }),
	}
}

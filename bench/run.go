package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/protocol"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"
)

// Config describes one load run against a coordinator.
type Config struct {
	Client *client.Client // connected to the coordinator
	// Cluster, instead of Client, drives a cluster of coordinator groups
	// (docs/scale.md): each id is stamped with a group by the weights of
	// the map the cluster client holds when the id is made, and the report
	// adds each group's figures (Report.Groups).
	Cluster *client.Cluster
	Work    Workload
	// Concurrency is the number of closed-loop callers (default 10): each
	// starts its next transaction when the previous one has answered.
	// Ignored when Rate is set.
	Concurrency int
	// Rate, if positive, makes the run open-loop: transactions are started
	// on a fixed schedule of Rate per second whether or not earlier ones
	// have answered, and each latency is measured from the transaction's
	// intended start on that schedule, so a stall shows in the latencies
	// instead of silently lowering the load (no coordinated omission).
	Rate float64
	// MaxInFlight bounds the transactions in flight in an open-loop run
	// (default 10,000). Past it the schedule falls behind, which the
	// latencies show.
	MaxInFlight int
	// Duration bounds the run; Txns bounds the number of transactions.
	// The run ends at whichever comes first; at least one must be set.
	Duration time.Duration
	Txns     int64
	// Warmup, with Duration, runs the load for this long first without
	// measuring it: transactions that start (are scheduled) before the
	// warmup ends are logged (AckLog) but counted in no figure, and the
	// coordinator's counters are read when it ends. Servers that just
	// started are still preparing log segments (writing 64 MiB files) and
	// growing their maps: the warmup keeps that out of steady-state
	// figures. The run then lasts Warmup + Duration.
	Warmup time.Duration
	// CallTimeout, if positive, bounds each transaction: a Run without an
	// answer by then ends Unknown (the client's rule for a lost answer) and
	// the caller starts its next one. Without it a caller waits as long as
	// the run lasts — behind a replica that is paused or cut off, say,
	// while the rest of a replicated coordinator elects another leader and
	// would take the caller's next transaction (the client moves on to
	// another replica after a timeout).
	CallTimeout time.Duration
	// Seed makes the workload repeatable.
	Seed uint64
	// TraceRatio is the share (0 to 1) of transactions sent with a sampled
	// W3C trace context of their own (a random trace id), so that a
	// coordinator that traces (docs/tracing.md) traces them: to measure
	// what tracing costs under load without instrumenting the caller.
	TraceRatio float64
	// Progress, if set, receives a live progress line every second.
	Progress io.Writer
	// AckLog, if set, receives one line per transaction:
	// "<uuid> <outcome> <participant>,<participant>...\n", the outcome the
	// caller was told (a transaction cut off by the end of the run is
	// logged as unknown but not counted). A caller queues its line as soon
	// as it has recorded the outcome, before it starts its next
	// transaction. One writer goroutine writes in rounds: woken by the
	// first line queued after a round, it yields once so that the callers
	// runnable at that moment queue theirs too, then writes everything
	// queued with one Write call. Nothing is held in a user-space buffer
	// across rounds: with an *os.File every line is in the kernel (one
	// write(2)) by the end of the first round that begins after it is
	// queued, so a kill -9 loses only the lines queued since the last
	// round began, and a write it interrupts may leave the last line cut
	// short. Run writes the rest before it returns. Callers wait while
	// 4 MiB of lines are queued. If a Write fails the run stops and Run
	// returns the error.
	AckLog io.Writer
	// Sample, if set, is called once a second and at the start and end of
	// the run to read the coordinator's allocation and memory counters.
	Sample func(context.Context) (ServerSample, error)
	// SampleGroup, with Cluster, reads one group's coordinator counters
	// when measuring begins and at the end, for the group's CPU per
	// transaction (GroupReport.CPUusPerTxn).
	SampleGroup func(ctx context.Context, group uint16) (ServerSample, error)
}

// ServerSample is a reading of a server's runtime counters.
type ServerSample struct {
	Mallocs    uint64  `json:"mallocs"`     // heap objects allocated since start
	HeapBytes  uint64  `json:"heap_bytes"`  // bytes in heap objects, garbage not yet collected included
	CPUSeconds float64 `json:"cpu_seconds"` // user + system CPU since start
}

// Latency is a latency distribution in milliseconds.
type Latency struct {
	Count  int64   `json:"count"`
	P50ms  float64 `json:"p50_ms"`
	P90ms  float64 `json:"p90_ms"`
	P99ms  float64 `json:"p99_ms"`
	P999ms float64 `json:"p999_ms"`
	MaxMs  float64 `json:"max_ms"`
	MeanMs float64 `json:"mean_ms"`
	// Spectrum is the latency at quantiles 0.5, 0.75, 0.9, 0.99, ...
	// (each "nines" step), for plotting.
	Spectrum []Quantile `json:"spectrum,omitempty"`
}

// Quantile is one point of a latency spectrum.
type Quantile struct {
	Q  float64 `json:"q"` // percentile, 0..100
	Ms float64 `json:"ms"`
}

// Interval is one second of a run.
type Interval struct {
	T         float64 `json:"t"` // seconds since the start, at the interval's end
	Committed int64   `json:"committed"`
	Aborted   int64   `json:"aborted"`
	Unknown   int64   `json:"unknown"`
	Errors    int64   `json:"errors"`
	P50ms     float64 `json:"p50_ms"` // committed in this interval
	P99ms     float64 `json:"p99_ms"`
	// HeapBytes is the coordinator's heap (bytes in heap objects, garbage
	// not yet collected included) at the interval's end (0 without
	// Config.Sample).
	HeapBytes uint64 `json:"heap_bytes,omitempty"`
}

// Report is what a run measured. Latencies are in milliseconds; the
// top-level percentiles are those of committed transactions.
type Report struct {
	Mode          string  `json:"mode"` // "closed" or "open"
	Concurrency   int     `json:"concurrency,omitempty"`
	Rate          float64 `json:"rate,omitempty"`
	PerTxn        int     `json:"per_txn"`
	Committed     int64   `json:"committed"`
	Aborted       int64   `json:"aborted"`
	Unknown       int64   `json:"unknown"`
	Rejected      int64   `json:"rejected"`
	Errors        int64   `json:"errors"`
	Seconds       float64 `json:"seconds"`
	CommittedPerS float64 `json:"committed_per_s"`
	P50ms         float64 `json:"p50_ms"`
	P90ms         float64 `json:"p90_ms"`
	P99ms         float64 `json:"p99_ms"`
	P999ms        float64 `json:"p999_ms"`
	MaxMs         float64 `json:"max_ms"`
	// Latency holds the distribution of every outcome seen, by name
	// (committed, aborted, unknown, rejected, error).
	Latency map[string]Latency `json:"latency"`
	// Causes counts the transactions that did not commit by why, most
	// frequent first (the same participant voting no, the same rejection,
	// the same error).
	Causes []Cause    `json:"causes,omitempty"`
	Series []Interval `json:"series"`
	// Coordinator is what Config.Sample read: allocations and CPU per
	// answered transaction over the run, and the heap at start and end.
	Coordinator *ServerReport `json:"coordinator,omitempty"`
	// Groups is each coordinator group's share of a run against a
	// cluster (Config.Cluster), in group order.
	Groups []GroupReport `json:"groups,omitempty"`
}

// ServerReport sums up a server's samples over a run.
type ServerReport struct {
	AllocsPerTxn   float64 `json:"allocs_per_txn"`
	CPUusPerTxn    float64 `json:"cpu_us_per_txn"`
	HeapBytesStart uint64  `json:"heap_bytes_start"`
	HeapBytesEnd   uint64  `json:"heap_bytes_end"`
	HeapBytesMax   uint64  `json:"heap_bytes_max"`
}

// outcome slots in the recorder; error is for calls that failed without
// an outcome.
const (
	slotCommitted = iota
	slotAborted
	slotUnknown
	slotRejected
	slotError
	nSlots
)

var slotNames = [nSlots]string{"committed", "aborted", "unknown", "rejected", "error"}

func slotOf(o protocol.Outcome, err error) int {
	switch {
	case err != nil && o != client.Unknown:
		return slotError
	case o == client.Committed:
		return slotCommitted
	case o == client.Aborted:
		return slotAborted
	case o == client.Unknown:
		return slotUnknown
	case o == client.Rejected:
		return slotRejected
	}
	return slotError
}

// Run drives load until the duration or the transaction count is reached,
// or ctx ends: closed-loop with Concurrency callers, or open-loop at Rate.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if (cfg.Client == nil) == (cfg.Cluster == nil) {
		return Report{}, errors.New("bench: want a client or a cluster client (one of the two)")
	}
	if cfg.Duration <= 0 && cfg.Txns <= 0 {
		return Report{}, errors.New("bench: set a duration or a transaction count")
	}
	if cfg.Rate < 0 || cfg.CallTimeout < 0 {
		return Report{}, errors.New("bench: negative rate or call timeout")
	}
	if cfg.Warmup < 0 || cfg.Warmup > 0 && cfg.Duration <= 0 {
		return Report{}, errors.New("bench: a warmup needs a duration (and cannot be negative)")
	}
	if cfg.Concurrency < 0 || cfg.MaxInFlight < 0 || cfg.Txns < 0 || cfg.Duration < 0 {
		return Report{}, errors.New("bench: negative concurrency, in-flight bound, transaction count or duration")
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 10
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = 10_000
	}
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Warmup+cfg.Duration)
		defer cancel()
	}
	r := &runner{cfg: cfg, rec: newRecorder()}
	var first ServerSample
	var firstGroups map[uint16]ServerSample
	if cfg.Warmup == 0 {
		firstGroups = r.groupSamples(context.Background())
	}
	if cfg.Sample != nil && cfg.Warmup == 0 {
		var err error
		if first, err = sampleSettled(cfg.Sample); err != nil {
			return Report{}, fmt.Errorf("bench: reading the coordinator's counters: %w", err)
		}
	}
	if cfg.AckLog != nil {
		// A failed ack log makes the run worthless to a crash test: stop.
		// From here on Run returns only after closing the log.
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		r.ack = newAckLog(cfg.AckLog, cancel)
	}
	r.start = time.Now()
	r.measureFrom = r.start.Add(cfg.Warmup)
	var firstDone chan error
	if (cfg.Sample != nil || cfg.SampleGroup != nil) && cfg.Warmup > 0 {
		// Read the coordinator's counters when the warmup ends.
		firstDone = make(chan error, 1)
		go func() {
			time.Sleep(time.Until(r.measureFrom))
			var err error
			firstGroups = r.groupSamples(context.Background())
			if cfg.Sample != nil {
				first, err = sampleSettled(cfg.Sample)
			}
			firstDone <- err
		}()
	}
	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		r.progress(stopProgress)
	}()
	if cfg.Rate > 0 {
		r.openLoop(ctx)
	} else {
		r.closedLoop(ctx)
	}
	elapsed := time.Since(r.measureFrom)
	close(stopProgress)
	if firstDone != nil {
		if err := <-firstDone; err != nil {
			return Report{}, fmt.Errorf("bench: reading the coordinator's counters after the warmup: %w", err)
		}
	}
	<-progressDone
	var ackErr error
	if r.ack != nil {
		if err := r.ack.close(); err != nil {
			ackErr = fmt.Errorf("bench: writing the ack log: %w", err)
		}
	}
	if cfg.Progress != nil {
		fmt.Fprintln(cfg.Progress)
	}
	rep := r.rec.report()
	rep.Series = r.series
	rep.Seconds = elapsed.Seconds()
	rep.CommittedPerS = float64(rep.Committed) / elapsed.Seconds()
	rep.PerTxn = cfg.Work.perTxn()
	if cfg.Rate > 0 {
		rep.Mode, rep.Rate = "open", cfg.Rate
	} else {
		rep.Mode, rep.Concurrency = "closed", cfg.Concurrency
	}
	if cfg.Cluster != nil {
		rep.Groups = r.groupReports(elapsed, firstGroups, r.groupSamples(context.Background()))
	}
	if cfg.Sample != nil {
		last, err := sampleSettled(cfg.Sample)
		if err != nil {
			return rep, errors.Join(ackErr, fmt.Errorf("bench: reading the coordinator's counters: %w", err))
		}
		answered := float64(max(1, rep.Committed+rep.Aborted+rep.Unknown+rep.Rejected))
		sr := &ServerReport{
			AllocsPerTxn:   float64(last.Mallocs-first.Mallocs) / answered,
			CPUusPerTxn:    (last.CPUSeconds - first.CPUSeconds) * 1e6 / answered,
			HeapBytesStart: first.HeapBytes,
			HeapBytesEnd:   last.HeapBytes,
			HeapBytesMax:   max(first.HeapBytes, last.HeapBytes),
		}
		for _, in := range r.series {
			sr.HeapBytesMax = max(sr.HeapBytesMax, in.HeapBytes)
		}
		rep.Coordinator = sr
	}
	return rep, ackErr
}

// runner is one run's shared state.
type runner struct {
	cfg   Config    // immutable
	rec   *recorder // safe for concurrent use
	ack   *ackLog   // nil without Config.AckLog; safe for concurrent use
	start time.Time // set before any worker starts
	// measureFrom is start + Config.Warmup: transactions intended to start
	// earlier are not recorded. Set before any worker starts.
	measureFrom time.Time
	issued      atomic.Int64
	series      []Interval // owned by the progress goroutine until Run reads it
	// groups records each group's outcomes too, with Config.Cluster.
	groups groupRecorders
}

// next reports whether another transaction may start (Txns not reached).
func (r *runner) next() bool {
	return r.cfg.Txns <= 0 || r.issued.Add(1) <= r.cfg.Txns
}

// worker is one caller's reusable state, owned by its goroutine. The
// generators live inside it rather than behind pointers: with a thousand
// callers taking turns on two cores each turn starts with cold caches, and
// every separate object is one more miss per transaction.
type worker struct {
	rng      rand.Rand // the workload's, reading pcg
	pcg      rand.PCG  // seeded from Config.Seed and the worker's index
	ids      idSource
	branches []client.Branch
	line     []byte
	stripe   *stripe
	index    int // the worker's, for its stripe of a group's recorder
}

// traced returns ctx with a new sampled span context, as a caller's
// tracer would put there.
func (w *worker) traced(ctx context.Context) context.Context {
	var tid trace.TraceID
	var sid trace.SpanID
	binary.BigEndian.PutUint64(tid[:8], w.rng.Uint64()|1)
	binary.BigEndian.PutUint64(tid[8:], w.rng.Uint64())
	binary.BigEndian.PutUint64(sid[:], w.rng.Uint64()|1)
	return trace.ContextWithSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled}))
}

func (r *runner) newWorker(i int) *worker {
	w := &worker{stripe: r.rec.stripe(i), index: i}
	w.pcg.Seed(r.cfg.Seed, uint64(i))
	w.rng = *rand.New(&w.pcg)
	w.ids.seed()
	return w
}

// one runs one transaction whose latency counts from intended. It reports
// false if the run was cut off by its end (ctx), not by the system.
func (r *runner) one(ctx context.Context, w *worker, intended time.Time) bool {
	w.branches = r.cfg.Work.Next(&w.rng, w.branches)
	// The id's time is when the transaction is sent, not when it was
	// intended: an open-loop run that falls behind its schedule would
	// otherwise send ids older than the coordinator accepts (stale-id).
	id, group := r.stampedID(w, time.Now())
	if r.cfg.TraceRatio > 0 && w.rng.Float64() < r.cfg.TraceRatio {
		ctx = w.traced(ctx)
	}
	var res client.Result
	var err error
	if r.cfg.CallTimeout > 0 {
		cctx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
		res, err = r.run(cctx, id, w.branches)
		cancel()
	} else {
		res, err = r.run(ctx, id, w.branches)
	}
	us := time.Since(intended).Microseconds()
	if err != nil && ctx.Err() != nil && res.Outcome == client.Unknown {
		// Cut off by the end of the run: the ack log still records it as
		// unknown, which it is, but it is not counted.
		r.writeAck(w, id, res.Outcome)
		return false
	}
	if !intended.Before(r.measureFrom) {
		why := causeKey{cause: res.Cause, participant: res.Participant, detail: res.Detail}
		if err != nil && why.detail == "" {
			why.detail = err.Error()
		}
		w.stripe.record(slotOf(res.Outcome, err), us, why)
		if r.cfg.Cluster != nil {
			r.groups.of(group).stripe(w.index).record(slotOf(res.Outcome, err), us, why)
		}
	}
	r.writeAck(w, id, res.Outcome)
	if errors.Is(err, client.ErrNotConnected) {
		// The coordinator is down (a restart, a chaos test): nothing was
		// sent. Without a pause every caller would spin here, logging
		// hundreds of thousands of not-sent aborts a second and taking the
		// CPU the restarting servers need.
		select {
		case <-ctx.Done():
		case <-time.After(notConnectedPause):
		}
	}
	return true
}

// notConnectedPause is how long a caller waits after a transaction could
// not be sent for want of a connection.
const notConnectedPause = 10 * time.Millisecond

func (r *runner) closedLoop(ctx context.Context) {
	var wg sync.WaitGroup
	for i := 0; i < r.cfg.Concurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := r.newWorker(i)
			for ctx.Err() == nil && r.next() {
				if !r.one(ctx, w, time.Now()) {
					return
				}
			}
		}()
	}
	wg.Wait()
}

// openLoop is vegeta's pacer shape: a pacer goroutine (this one) hands
// intended start times to a pool of workers, growing the pool when every
// worker is busy, up to MaxInFlight. When the pool is exhausted the pacer
// blocks, but the intended times keep following the schedule, so the
// waiting shows up in the latencies.
func (r *runner) openLoop(ctx context.Context) {
	var wg sync.WaitGroup
	ticks := make(chan time.Time)
	workers := 0
	spawn := func() {
		i := workers
		workers++
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := r.newWorker(i)
			for t := range ticks {
				r.one(ctx, w, t)
			}
		}()
	}
	interval := time.Duration(float64(time.Second) / r.cfg.Rate)
	if interval <= 0 {
		interval = 1
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	var n int64
pace:
	for ctx.Err() == nil {
		intended := r.start.Add(time.Duration(n) * interval)
		if d := time.Until(intended); d > 0 {
			// Sleep to the next due time; every tick already due is sent
			// in a burst below, so the timer's granularity does not limit
			// the rate.
			timer.Reset(d)
			select {
			case <-ctx.Done():
				break pace
			case <-timer.C:
			}
		}
		if !r.next() {
			break
		}
		select {
		case ticks <- intended:
		default:
			if workers < r.cfg.MaxInFlight {
				spawn()
			}
			select {
			case ticks <- intended:
			case <-ctx.Done():
				break pace
			}
		}
		n++
	}
	close(ticks)
	wg.Wait()
}

// writeAck queues the transaction's ack log line (see Config.AckLog).
func (r *runner) writeAck(w *worker, id uuid.UUID, o protocol.Outcome) {
	if r.ack == nil {
		return
	}
	w.line = appendAck(w.line[:0], id, o, w.branches)
	r.ack.add(w.line)
}

// progress samples the recorder once a second: it keeps the series and
// prints the live line.
func (r *runner) progress(stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var total [nSlots]int64
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if time.Now().Before(r.measureFrom) {
			if r.cfg.Progress != nil {
				fmt.Fprintf(r.cfg.Progress, "\r%6.1fs  warming up (not measured) ", time.Since(r.start).Seconds())
			}
			continue
		}
		in := r.rec.interval()
		in.T = time.Since(r.measureFrom).Seconds()
		if r.cfg.Sample != nil {
			if s, err := r.cfg.Sample(context.Background()); err == nil {
				in.HeapBytes = s.HeapBytes
			}
		}
		r.series = append(r.series, in)
		total[slotCommitted] += in.Committed
		total[slotAborted] += in.Aborted
		total[slotUnknown] += in.Unknown
		total[slotError] += in.Errors
		if r.cfg.Progress != nil {
			fmt.Fprintf(r.cfg.Progress, "\r%6.1fs  committed %9d  aborted %7d  unknown %5d  errors %5d  rate %7d/s  p99 %7.2f ms ",
				in.T, total[slotCommitted], total[slotAborted], total[slotUnknown], total[slotError], in.Committed, in.P99ms)
		}
	}
}

// Summary formats a report as a small table.
func (r Report) Summary() string {
	var b []byte
	b = fmt.Appendf(b, "transactions  committed %d  aborted %d  unknown %d  rejected %d  errors %d\n",
		r.Committed, r.Aborted, r.Unknown, r.Rejected, r.Errors)
	load := fmt.Sprintf("closed loop, %d callers", r.Concurrency)
	if r.Mode == "open" {
		load = fmt.Sprintf("open loop, %.0f/s scheduled", r.Rate)
	}
	b = fmt.Appendf(b, "throughput    %.0f committed/s over %.1fs (%s, %d participants per transaction)\n",
		r.CommittedPerS, r.Seconds, load, r.PerTxn)
	b = fmt.Appendf(b, "latency (ms)  %-10s %9s %8s %8s %8s %8s %8s\n", "outcome", "count", "p50", "p90", "p99", "p99.9", "max")
	for _, name := range slotNames {
		l, ok := r.Latency[name]
		if !ok {
			continue
		}
		b = fmt.Appendf(b, "              %-10s %9d %8.2f %8.2f %8.2f %8.2f %8.2f\n",
			name, l.Count, l.P50ms, l.P90ms, l.P99ms, l.P999ms, l.MaxMs)
	}
	for i, c := range r.Causes {
		if i == summaryCauses {
			b = fmt.Appendf(b, "              ... and %d more causes (see --json)\n", len(r.Causes)-i)
			break
		}
		label := "not committed"
		if i > 0 {
			label = ""
		}
		b = fmt.Appendf(b, "%-13s %9d  %s\n", label, c.Count, c)
	}
	if c := r.Coordinator; c != nil {
		b = fmt.Appendf(b, "coordinator   %.2f allocs/txn  %.1f µs CPU/txn  heap %.1f → %.1f MiB (max %.1f)\n",
			c.AllocsPerTxn, c.CPUusPerTxn, mib(c.HeapBytesStart), mib(c.HeapBytesEnd), mib(c.HeapBytesMax))
	}
	b = r.groupSummary(b)
	return string(b[:len(b)-1])
}

// summaryCauses is how many causes Summary lists.
const summaryCauses = 5

// Answered is the number of transactions measured: every outcome,
// errors included.
func (r Report) Answered() int64 {
	return r.Committed + r.Aborted + r.Unknown + r.Rejected + r.Errors
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// sampleRetryFor is how long reading the coordinator's counters is retried:
// a coordinator restarting (a chaos run's kill -9, a failover) answers again
// within a second or two, and a load run should not end for that blip.
var sampleRetryFor = 5 * time.Second

// sampleSettled reads the coordinator's counters, retrying every 100 ms for
// up to sampleRetryFor; the last error if none answered.
func sampleSettled(sample func(context.Context) (ServerSample, error)) (ServerSample, error) {
	deadline := time.Now().Add(sampleRetryFor)
	for {
		s, err := sample(context.Background())
		if err == nil || time.Now().After(deadline) {
			return s, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

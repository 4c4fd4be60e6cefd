package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/engine"
	"github.com/google/uuid"
)

// Config describes one load run against a coordinator.
type Config struct {
	Client *client.Client // connected to the coordinator
	Work   Workload
	// Concurrency is the number of closed-loop callers (default 10).
	Concurrency int
	// Duration bounds the run; Txns bounds the number of transactions.
	// The run ends at whichever comes first; at least one must be set.
	Duration time.Duration
	Txns     int64
	// Seed makes the workload repeatable.
	Seed uint64
	// Progress, if set, receives a live progress line every second.
	Progress io.Writer
	// AckLog, if set, receives one line per transaction:
	// "<uuid> <outcome> <participant>,<participant>...".
	AckLog io.Writer
}

// Report is what a run measured. Latencies are in milliseconds.
type Report struct {
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
}

// latency histograms record microseconds from 1µs to 1 minute with 3
// significant digits.
func newHistogram() *hdrhistogram.Histogram { return hdrhistogram.New(1, 60_000_000, 3) }

// Run drives closed-loop load until the duration or the transaction count
// is reached, or ctx ends.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if cfg.Client == nil {
		return Report{}, errors.New("bench: no client")
	}
	if cfg.Duration <= 0 && cfg.Txns <= 0 {
		return Report{}, errors.New("bench: set a duration or a transaction count")
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 10
	}
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	var (
		issued                                      atomic.Int64
		committed, aborted, unknown, rejected, errs atomic.Int64
		mu                                          sync.Mutex
		total                                       = newHistogram()
		window                                      = newHistogram()
		ackMu                                       sync.Mutex
	)
	start := time.Now()
	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		if cfg.Progress == nil {
			return
		}
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var last int64
		for {
			select {
			case <-stopProgress:
				return
			case <-t.C:
			}
			c := committed.Load()
			mu.Lock()
			p99 := float64(window.ValueAtQuantile(99)) / 1000
			window.Reset()
			mu.Unlock()
			fmt.Fprintf(cfg.Progress, "\r%6.1fs  committed %9d  aborted %8d  unknown %5d  errors %5d  rate %8d/s  p99 %7.2f ms ",
				time.Since(start).Seconds(), c, aborted.Load(), unknown.Load(), errs.Load(), c-last, p99)
			last = c
		}
	}()
	var wg sync.WaitGroup
	for w := 0; w < cfg.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(cfg.Seed, uint64(w)))
			var branches []client.Branch
			var line []byte
			for ctx.Err() == nil {
				if cfg.Txns > 0 && issued.Add(1) > cfg.Txns {
					return
				}
				branches = cfg.Work.Next(rng, branches)
				id, err := uuid.NewV7()
				if err != nil {
					errs.Add(1)
					continue
				}
				t0 := time.Now()
				res, err := cfg.Client.Run(ctx, id, branches)
				us := time.Since(t0).Microseconds()
				if err != nil && ctx.Err() != nil && res.Outcome == client.Unknown {
					// Cut off by the end of the run, not by the system: the
					// ack log still records it as unknown, which it is.
					writeAck(cfg.AckLog, &ackMu, &line, id, res.Outcome, branches)
					return
				}
				switch {
				case err != nil && res.Outcome != client.Unknown:
					errs.Add(1)
				case res.Outcome == client.Committed:
					committed.Add(1)
				case res.Outcome == client.Aborted:
					aborted.Add(1)
				case res.Outcome == client.Unknown:
					unknown.Add(1)
				case res.Outcome == client.Rejected:
					rejected.Add(1)
				}
				if res.Outcome == client.Committed {
					mu.Lock()
					_ = total.RecordValue(us)
					_ = window.RecordValue(us)
					mu.Unlock()
				}
				writeAck(cfg.AckLog, &ackMu, &line, id, res.Outcome, branches)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stopProgress)
	<-progressDone
	if cfg.Progress != nil {
		fmt.Fprintln(cfg.Progress)
	}
	r := Report{
		Committed: committed.Load(), Aborted: aborted.Load(), Unknown: unknown.Load(),
		Rejected: rejected.Load(), Errors: errs.Load(), Seconds: elapsed.Seconds(),
	}
	r.CommittedPerS = float64(r.Committed) / elapsed.Seconds()
	ms := func(q float64) float64 { return float64(total.ValueAtQuantile(q)) / 1000 }
	r.P50ms, r.P90ms, r.P99ms, r.P999ms = ms(50), ms(90), ms(99), ms(99.9)
	r.MaxMs = float64(total.Max()) / 1000
	return r, nil
}

func writeAck(w io.Writer, mu *sync.Mutex, line *[]byte, id uuid.UUID, o engine.Outcome, branches []client.Branch) {
	if w == nil {
		return
	}
	b := (*line)[:0]
	b = append(b, id.String()...)
	b = append(b, ' ')
	b = append(b, o.String()...)
	b = append(b, ' ')
	for i, br := range branches {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, br.Participant...)
	}
	b = append(b, '\n')
	*line = b
	mu.Lock()
	_, _ = w.Write(b)
	mu.Unlock()
}

// Summary formats a report as a small table.
func (r Report) Summary() string {
	return fmt.Sprintf(`transactions  committed %d  aborted %d  unknown %d  rejected %d  errors %d
throughput    %.0f committed/s over %.1fs
latency (committed)  p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  p99.9 %.2f ms  max %.2f ms`,
		r.Committed, r.Aborted, r.Unknown, r.Rejected, r.Errors, r.CommittedPerS, r.Seconds,
		r.P50ms, r.P90ms, r.P99ms, r.P999ms, r.MaxMs)
}

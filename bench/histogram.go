package bench

import (
	"math"
	"sync"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds from 1µs to 1 minute with 3
// significant digits (HdrHistogram). Values above the range are clamped.
const (
	histMinUs = 1
	histMaxUs = 60_000_000
	histSig   = 3
)

func newHistogram() *hdrhistogram.Histogram { return hdrhistogram.New(histMinUs, histMaxUs, histSig) }

// nStripes spreads the recording over several locks so that thousands of
// callers do not queue on one mutex (pebble's bench keeps one histogram
// per worker; a few stripes are enough here and keep memory bounded).
const nStripes = 16

// recorder holds every latency of a run: a cumulative histogram per
// outcome, and for the current one-second interval a histogram of the
// committed latencies and a count per outcome.
type recorder struct {
	stripes [nStripes]stripe
}

// stripe is one lock's share of the recorder. Fields are guarded by mu.
type stripe struct {
	mu     sync.Mutex
	total  [nSlots]*hdrhistogram.Histogram
	window *hdrhistogram.Histogram // committed, this interval
	counts [nSlots]int64           // this interval
}

func newRecorder() *recorder {
	r := &recorder{}
	for i := range r.stripes {
		s := &r.stripes[i]
		for j := range s.total {
			s.total[j] = newHistogram()
		}
		s.window = newHistogram()
	}
	return r
}

func (r *recorder) stripe(worker int) *stripe { return &r.stripes[worker%nStripes] }

func (s *stripe) record(slot int, us int64) {
	us = min(max(us, histMinUs), histMaxUs)
	s.mu.Lock()
	_ = s.total[slot].RecordValue(us)
	if slot == slotCommitted {
		_ = s.window.RecordValue(us)
	}
	s.counts[slot]++
	s.mu.Unlock()
}

// interval takes (and resets) the current interval's counts and committed
// latencies.
func (r *recorder) interval() Interval {
	win := newHistogram()
	var counts [nSlots]int64
	for i := range r.stripes {
		s := &r.stripes[i]
		s.mu.Lock()
		win.Merge(s.window)
		s.window.Reset()
		for j := range counts {
			counts[j] += s.counts[j]
			s.counts[j] = 0
		}
		s.mu.Unlock()
	}
	return Interval{
		Committed: counts[slotCommitted],
		Aborted:   counts[slotAborted],
		Unknown:   counts[slotUnknown],
		Errors:    counts[slotError] + counts[slotRejected],
		P50ms:     ms(win.ValueAtQuantile(50)),
		P99ms:     ms(win.ValueAtQuantile(99)),
	}
}

// report merges the stripes into the run's totals and distributions.
func (r *recorder) report() Report {
	var h [nSlots]*hdrhistogram.Histogram
	for j := range h {
		h[j] = newHistogram()
	}
	for i := range r.stripes {
		s := &r.stripes[i]
		s.mu.Lock()
		for j := range h {
			h[j].Merge(s.total[j])
		}
		s.mu.Unlock()
	}
	rep := Report{
		Committed: h[slotCommitted].TotalCount(),
		Aborted:   h[slotAborted].TotalCount(),
		Unknown:   h[slotUnknown].TotalCount(),
		Rejected:  h[slotRejected].TotalCount(),
		Errors:    h[slotError].TotalCount(),
		Latency:   make(map[string]Latency),
	}
	for j, name := range slotNames {
		if h[j].TotalCount() > 0 {
			rep.Latency[name] = latencyOf(h[j])
		}
	}
	c := rep.Latency["committed"]
	rep.P50ms, rep.P90ms, rep.P99ms, rep.P999ms, rep.MaxMs = c.P50ms, c.P90ms, c.P99ms, c.P999ms, c.MaxMs
	return rep
}

func ms(us int64) float64 { return float64(us) / 1000 }

func latencyOf(h *hdrhistogram.Histogram) Latency {
	l := Latency{
		Count:  h.TotalCount(),
		P50ms:  ms(h.ValueAtQuantile(50)),
		P90ms:  ms(h.ValueAtQuantile(90)),
		P99ms:  ms(h.ValueAtQuantile(99)),
		P999ms: ms(h.ValueAtQuantile(99.9)),
		MaxMs:  ms(h.Max()),
		MeanMs: h.Mean() / 1000,
	}
	// The spectrum: 0, 50, 75, 90, 95, 99, 99.5, 99.9, ... up to where the
	// count still resolves a quantile, then the maximum.
	qs := []float64{0, 50, 75, 90, 95}
	for nines := 2; ; nines++ {
		tail := math.Pow(10, -float64(nines))
		if float64(l.Count)*tail < 1 {
			break
		}
		qs = append(qs, 100*(1-tail), 100*(1-tail/2))
	}
	for _, q := range qs {
		l.Spectrum = append(l.Spectrum, Quantile{Q: q, Ms: ms(h.ValueAtQuantile(q))})
	}
	l.Spectrum = append(l.Spectrum, Quantile{Q: 100, Ms: l.MaxMs})
	return l
}

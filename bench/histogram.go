package bench

import (
	"cmp"
	"math"
	"slices"
	"sync"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/commitd/commitd/protocol"
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
	// causes counts every outcome but committed by why it happened, at
	// most maxCauses distinct keys; the rest are counted under otherCause.
	causes map[causeKey]int64
}

// causeKey is why a transaction did not commit. Its strings come from the
// client's Result, so counting a cause seen before allocates nothing.
type causeKey struct {
	slot        int
	cause       protocol.Cause
	participant string
	detail      string
}

// maxCauses bounds the distinct causes a stripe keeps: an error text that
// varies from call to call cannot grow the recorder without bound.
const maxCauses = 32

// otherCause is the detail of the key that counts causes past maxCauses.
const otherCause = "(other causes)"

// Cause is one reason transactions did not commit, and how many.
type Cause struct {
	Outcome     string `json:"outcome"`               // aborted, unknown, rejected or error
	Cause       string `json:"cause,omitempty"`       // voted-no, timeout, invalid, unreachable
	Participant string `json:"participant,omitempty"` // who voted no or did not answer
	Detail      string `json:"detail,omitempty"`      // the coordinator's or the client's words
	Count       int64  `json:"count"`
}

func (c Cause) String() string {
	s := c.Outcome
	if c.Cause != "" {
		s += " " + c.Cause
	}
	if c.Participant != "" {
		s += " at " + c.Participant
	}
	if c.Detail != "" {
		s += ": " + c.Detail
	}
	return s
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

// record counts one transaction's outcome and latency; why is the cause
// of an outcome other than committed (ignored for committed).
func (s *stripe) record(slot int, us int64, why causeKey) {
	us = min(max(us, histMinUs), histMaxUs)
	s.mu.Lock()
	_ = s.total[slot].RecordValue(us)
	if slot == slotCommitted {
		_ = s.window.RecordValue(us)
	} else {
		why.slot = slot
		if s.causes == nil {
			s.causes = make(map[causeKey]int64)
		}
		if _, ok := s.causes[why]; !ok && len(s.causes) >= maxCauses {
			why = causeKey{slot: slot, detail: otherCause}
		}
		s.causes[why]++
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
	causes := map[causeKey]int64{}
	for i := range r.stripes {
		s := &r.stripes[i]
		s.mu.Lock()
		for j := range h {
			h[j].Merge(s.total[j])
		}
		for k, n := range s.causes {
			causes[k] += n
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
	for k, n := range causes {
		c := Cause{Outcome: slotNames[k.slot], Participant: k.participant, Detail: k.detail, Count: n}
		if k.cause != 0 {
			c.Cause = k.cause.String()
		}
		rep.Causes = append(rep.Causes, c)
	}
	slices.SortFunc(rep.Causes, func(a, b Cause) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return cmp.Compare(a.String(), b.String())
	})
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

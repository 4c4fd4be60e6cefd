package coordinator

import (
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/commitd/commitd/protocol"
)

// The last minutes of answers, for the web console (console.go): how many
// transactions each second ended in each outcome, and the latency of the
// committed ones per ten seconds.
const (
	// rateSeconds is how many seconds of counts are kept.
	rateSeconds = 300
	// latencySlotSeconds is the span of one latency histogram, and
	// latencySlots how many are kept (rateSeconds' worth).
	latencySlotSeconds = 10
	latencySlots       = rateSeconds / latencySlotSeconds
	// The histograms hold microseconds from 1 µs to a minute (larger
	// values are counted as a minute) with one significant digit: HDR's
	// buckets are then 1/16 of a power of two wide (a percentile is
	// within ~6 %) and a histogram is ~3 KB, so a shard keeps ~90 KB.
	latencyMaxUs = 60_000_000
	latencySig   = 1
)

// rates is one shard's record of its recent answers. The shard's pump
// records each reply (record, under mu: only that pump and a console
// reader once a second take it, so it is not contended); everything is
// allocated at the start, so recording allocates nothing. Slots are
// reused in a ring: one whose second (or ten seconds) is past is cleared
// as it is reused, and a reader skips slots older than its window.
type rates struct {
	mu     sync.Mutex
	counts [rateSeconds]secondCounts
	lat    [latencySlots]latencySlot
}

// secondCounts are the answers of one second (Unix time sec).
type secondCounts struct {
	sec int64
	n   [protocol.OutcomeRejected + 1]uint32
}

// latencySlot is the committed latencies of the ten seconds starting at
// Unix time k*latencySlotSeconds.
type latencySlot struct {
	k int64
	h *hdrhistogram.Histogram
}

func newLatencyHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, latencyMaxUs, latencySig)
}

func newRates() *rates {
	r := &rates{}
	for i := range r.lat {
		r.lat[i] = latencySlot{k: -1, h: newLatencyHistogram()}
	}
	for i := range r.counts {
		r.counts[i].sec = -1
	}
	return r
}

// record counts one answer o at Unix time nowMs and, when it committed and
// its latency d is known (measured), records d.
func (r *rates) record(nowMs int64, o protocol.Outcome, d time.Duration, measured bool) {
	if int(o) >= len(r.counts[0].n) {
		return
	}
	sec := nowMs / 1000
	r.mu.Lock()
	c := &r.counts[sec%rateSeconds]
	if c.sec != sec {
		*c = secondCounts{sec: sec}
	}
	c.n[o]++
	if measured && o == protocol.OutcomeCommitted {
		k := sec / latencySlotSeconds
		l := &r.lat[k%latencySlots]
		if l.k != k {
			l.k = k
			l.h.Reset()
		}
		us := max(d.Microseconds(), 1)
		_ = l.h.RecordValue(min(us, latencyMaxUs)) // in range: cannot fail
	}
	r.mu.Unlock()
}

// Rates is the console's view of the last minutes, summed over the shards.
type Rates struct {
	// Seconds is how many seconds the series below cover, each ending
	// with the last whole second before the report.
	Seconds   int      `json:"seconds"`
	Committed []uint32 `json:"committed"`
	Aborted   []uint32 `json:"aborted"`
	Unknown   []uint32 `json:"unknown"`
	Rejected  []uint32 `json:"rejected"`
	// Latency is the committed transactions' latency (from a Begin's
	// arrival to its answer) per SlotSeconds, oldest first; the last slot
	// is the current one, still filling.
	SlotSeconds int              `json:"slot_seconds"`
	Latency     []LatencySummary `json:"latency"`
	// LastMinute sums the last 60 whole seconds (rates) and the last six
	// latency slots (percentiles).
	LastMinute LastMinute `json:"last_minute"`
}

// LatencySummary is a latency histogram's count and percentiles, in
// milliseconds (zero when the count is).
type LatencySummary struct {
	Count  int64   `json:"count"`
	P50Ms  float64 `json:"p50_ms"`
	P99Ms  float64 `json:"p99_ms"`
	P999Ms float64 `json:"p999_ms"`
}

// LastMinute is the console's headline: answers per second by outcome and
// the committed latency's percentiles over about the last minute.
type LastMinute struct {
	CommittedPerSec float64 `json:"committed_per_s"`
	AbortedPerSec   float64 `json:"aborted_per_s"`
	UnknownPerSec   float64 `json:"unknown_per_s"`
	RejectedPerSec  float64 `json:"rejected_per_s"`
	LatencySummary
}

func summarize(h *hdrhistogram.Histogram) LatencySummary {
	n := h.TotalCount()
	if n == 0 {
		return LatencySummary{}
	}
	ms := func(q float64) float64 { return float64(h.ValueAtQuantile(q)) / 1000 }
	return LatencySummary{Count: n, P50Ms: ms(50), P99Ms: ms(99), P999Ms: ms(99.9)}
}

// report sums the shards' rates at Unix time nowMs.
func report(shards []*rates, nowMs int64) Rates {
	rep := Rates{
		Seconds:     rateSeconds,
		Committed:   make([]uint32, rateSeconds),
		Aborted:     make([]uint32, rateSeconds),
		Unknown:     make([]uint32, rateSeconds),
		Rejected:    make([]uint32, rateSeconds),
		SlotSeconds: latencySlotSeconds,
		Latency:     make([]LatencySummary, latencySlots),
	}
	sec := nowMs / 1000
	first := sec - rateSeconds // the series' first second
	curK := sec / latencySlotSeconds
	firstK := curK - latencySlots + 1
	merged := make([]*hdrhistogram.Histogram, latencySlots)
	for i := range merged {
		merged[i] = newLatencyHistogram()
	}
	for _, r := range shards {
		r.mu.Lock()
		for i := range r.counts {
			c := &r.counts[i]
			if c.sec < first || c.sec >= sec {
				continue // stale, or the second still counting
			}
			j := c.sec - first
			rep.Committed[j] += c.n[protocol.OutcomeCommitted]
			rep.Aborted[j] += c.n[protocol.OutcomeAborted]
			rep.Unknown[j] += c.n[protocol.OutcomeUnknown]
			rep.Rejected[j] += c.n[protocol.OutcomeRejected]
		}
		for i := range r.lat {
			l := &r.lat[i]
			if l.k < firstK || l.k > curK {
				continue
			}
			merged[l.k-firstK].Merge(l.h)
		}
		r.mu.Unlock()
	}
	minute := newLatencyHistogram()
	for i, h := range merged {
		rep.Latency[i] = summarize(h)
		if i >= latencySlots-60/latencySlotSeconds {
			minute.Merge(h)
		}
	}
	lm := &rep.LastMinute
	lm.LatencySummary = summarize(minute)
	perSec := func(xs []uint32) float64 {
		var n uint64
		for _, x := range xs[len(xs)-60:] {
			n += uint64(x)
		}
		return float64(n) / 60
	}
	lm.CommittedPerSec = perSec(rep.Committed)
	lm.AbortedPerSec = perSec(rep.Aborted)
	lm.UnknownPerSec = perSec(rep.Unknown)
	lm.RejectedPerSec = perSec(rep.Rejected)
	return rep
}

package coordinator

import (
	"testing"
	"time"

	"github.com/commitd/commitd/protocol"
)

// The console's rates: counts land in their second and are summed over
// shards; a second still counting is not reported, one older than the
// window is not either (its slot reused and cleared); latency
// percentiles come from the committed answers only, per ten seconds and
// over the last minute.
func TestRatesReport(t *testing.T) {
	a, b := newRates(), newRates()
	const t0 = 1_700_000_000_000 // ms, on a ten-second boundary
	at := func(sec int64) int64 { return t0 + sec*1000 }
	// Second 0: 3 commits (1 ms) on a, 2 on b (3 ms), an abort on b.
	for range 3 {
		a.record(at(0), protocol.OutcomeCommitted, time.Millisecond, true)
	}
	for range 2 {
		b.record(at(0)+500, protocol.OutcomeCommitted, 3*time.Millisecond, true)
	}
	b.record(at(0), protocol.OutcomeAborted, 300*time.Millisecond, true)
	// An unmeasured commit counts, but has no latency.
	a.record(at(0), protocol.OutcomeCommitted, 0, false)
	// Second 65: 100 commits of 10 ms; the last of 200 ms.
	for range 99 {
		a.record(at(65), protocol.OutcomeCommitted, 10*time.Millisecond, true)
	}
	a.record(at(65), protocol.OutcomeCommitted, 200*time.Millisecond, true)
	a.record(at(66), protocol.OutcomeRejected, 0, false)

	rep := report([]*rates{a, b}, at(66)+100)
	if rep.Seconds != rateSeconds || len(rep.Committed) != rateSeconds || len(rep.Latency) != latencySlots {
		t.Fatalf("shape: %d seconds, %d counts, %d latency slots", rep.Seconds, len(rep.Committed), len(rep.Latency))
	}
	// The series ends with second 65; second 0 is 66 seconds before its end.
	last := rateSeconds - 1
	if got := rep.Committed[last-65]; got != 6 {
		t.Fatalf("committed in second 0: %d, want 6 (3 + 2 + 1 unmeasured)", got)
	}
	if got := rep.Aborted[last-65]; got != 1 {
		t.Fatalf("aborted in second 0: %d", got)
	}
	if got := rep.Committed[last]; got != 100 {
		t.Fatalf("committed in second 65: %d", got)
	}
	if got := rep.Rejected[last]; got != 0 {
		t.Fatalf("second 66 is still counting, reported %d rejected", got)
	}
	// The last minute is seconds 6..65: the 100 of second 65 only.
	if lm := rep.LastMinute; lm.CommittedPerSec != 100.0/60 || lm.AbortedPerSec != 0 {
		t.Fatalf("last minute: %+v", lm)
	}
	// Latency slots: second 0's is the 7th from the end (60..69 is the
	// current one).
	s0 := rep.Latency[latencySlots-7]
	if s0.Count != 5 || s0.P50Ms < 0.9 || s0.P50Ms > 1.1 || s0.P99Ms < 2.8 || s0.P99Ms > 3.2 {
		t.Fatalf("slot of second 0: %+v, want 5 commits, p50 ~1 ms, p99 ~3 ms (the 300 ms abort not in it)", s0)
	}
	cur := rep.Latency[latencySlots-1]
	if cur.Count != 100 || cur.P50Ms < 9.4 || cur.P50Ms > 10.7 || cur.P999Ms < 188 || cur.P999Ms > 213 {
		t.Fatalf("current slot: %+v, want 100 commits, p50 ~10 ms, p99.9 ~200 ms", cur)
	}
	if lm := rep.LastMinute.LatencySummary; lm.Count != 100 {
		t.Fatalf("last minute's latency: %+v, want the 100 of second 65 (second 0 is older than a minute)", lm)
	}

	// 300 seconds on, second 0's slots are reused: cleared, not added to.
	a.record(at(300), protocol.OutcomeCommitted, time.Millisecond, true)
	rep = report([]*rates{a, b}, at(301))
	if got := rep.Committed[rateSeconds-1]; got != 1 {
		t.Fatalf("second 300 reuses second 0's slot: %d committed, want 1", got)
	}
	var n uint32
	for _, x := range rep.Committed {
		n += x
	}
	if n != 101 {
		t.Fatalf("%d commits over the window at second 301 (seconds 1..300), want 101: second 65's and second 300's", n)
	}
}

// Recording allocates nothing: it runs on a pump for every reply.
func TestRatesRecordDoesNotAllocate(t *testing.T) {
	r := newRates()
	ms := time.Now().UnixMilli()
	if n := testing.AllocsPerRun(1000, func() {
		ms += 7 // crosses seconds and latency slots, reusing them
		r.record(ms, protocol.OutcomeCommitted, 2*time.Millisecond, true)
	}); n != 0 {
		t.Fatalf("%.2f allocations per record", n)
	}
}

// BenchmarkRatesRecord is the pump's cost per reply (run with -benchmem:
// 0 allocs/op).
func BenchmarkRatesRecord(b *testing.B) {
	r := newRates()
	ms := time.Now().UnixMilli()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		r.record(ms+int64(i>>10), protocol.OutcomeCommitted, time.Duration(i%5000)*time.Microsecond, true)
	}
}

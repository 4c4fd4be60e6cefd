package participant

import (
	"slices"
	"testing"
	"time"

	"github.com/commitd/commitd/protocol"
	"github.com/prometheus/client_golang/prometheus"
)

// observed is a histogram that keeps what it was given.
type observed struct {
	prometheus.Histogram
	got []float64
}

func (o *observed) Observe(v float64) { o.got = append(o.got, v) }

// The votes of one Ready share one clock reading, taken at the first vote
// measured: each observation is that reading less its prepare's arrival.
// A vote whose arrival was not kept reads no clock and observes nothing.
func TestVoteSentReadsTheClockOncePerReady(t *testing.T) {
	o := &observed{}
	m := &metrics{prepare: o}
	a, b, unmeasured := protocol.TxnID{8: 1}, protocol.TxnID{8: 2}, protocol.TxnID{8: 3}
	m.prepareArrived(a)
	m.prepareArrived(b)
	ia, _ := slotOf(a)
	ib, _ := slotOf(b)
	m.starts[ia].at.Store(1_000)
	m.starts[ib].at.Store(3_000)

	var nowNs int64
	m.voteSent(unmeasured, &nowNs)
	if nowNs != 0 || len(o.got) != 0 {
		t.Fatalf("an unmeasured vote read the clock (%d) or observed %v", nowNs, o.got)
	}
	m.voteSent(a, &nowNs)
	first := nowNs
	if first == 0 {
		t.Fatal("the first measured vote did not read the clock")
	}
	m.voteSent(b, &nowNs)
	if nowNs != first {
		t.Fatalf("the second vote read the clock again: %d, then %d", first, nowNs)
	}
	want := []float64{time.Duration(first - 1_000).Seconds(), time.Duration(first - 3_000).Seconds()}
	if !slices.Equal(o.got, want) {
		t.Fatalf("observed %v, want %v", o.got, want)
	}
	// Each arrival is used once: a duplicate vote observes nothing more.
	m.voteSent(a, &nowNs)
	if len(o.got) != 2 {
		t.Fatalf("a second vote for a observed again: %v", o.got)
	}
}

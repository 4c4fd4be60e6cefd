package bench

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/commitd/commitd/protocol"
)

// TestRecorderLosesNothing records from many goroutines while intervals
// are being collected: the intervals' counts must add up to the totals,
// and the totals must hold exactly the values recorded.
func TestRecorderLosesNothing(t *testing.T) {
	rec := newRecorder()
	const callers, intervals = 16, 3
	var (
		wg       sync.WaitGroup
		done     atomic.Bool // set by the collector after its intervals
		mu       sync.Mutex  // guards want and recorded
		want     = newHistogram()
		recorded [nSlots]int64
	)
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := rec.stripe(c)
			var mine [nSlots]int64
			var committed []int64
			for i := 0; i < 1000 || (!done.Load() && i < 20_000); i++ {
				slot := (c + i) % nSlots
				us := int64(1 + (c*7919+i*31)%50_000)
				s.record(slot, us, causeKey{detail: "x"})
				mine[slot]++
				if slot == slotCommitted {
					committed = append(committed, us)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			for j := range recorded {
				recorded[j] += mine[j]
			}
			for _, us := range committed {
				_ = want.RecordValue(us)
			}
		}()
	}
	var seen Interval
	add := func(in Interval) {
		seen.Committed += in.Committed
		seen.Aborted += in.Aborted
		seen.Unknown += in.Unknown
		seen.Errors += in.Errors
	}
	for range intervals {
		add(rec.interval())
	}
	done.Store(true)
	wg.Wait()
	add(rec.interval()) // what came after the last interval
	rep := rec.report()
	got := [nSlots]int64{rep.Committed, rep.Aborted, rep.Unknown, rep.Rejected, rep.Errors}
	if got != recorded {
		t.Fatalf("totals by outcome %v, recorded %v", got, recorded)
	}
	if seen.Committed != rep.Committed || seen.Aborted != rep.Aborted || seen.Unknown != rep.Unknown ||
		seen.Errors != rep.Rejected+rep.Errors {
		t.Fatalf("the intervals add up to %+v, the totals are %v", seen, got)
	}
	c := rep.Latency["committed"]
	for _, q := range []struct{ got, q float64 }{{c.P50ms, 50}, {c.P90ms, 90}, {c.P99ms, 99}, {c.MaxMs, 100}} {
		if w := ms(want.ValueAtQuantile(q.q)); q.got != w {
			t.Fatalf("committed p%v %v ms, want %v ms", q.q, q.got, w)
		}
	}
}

// BenchmarkRecorder is the recording cost per transaction at 40,000
// transactions a second spread over every stripe, latencies of 5-60 ms,
// one in ten aborted, including the once-a-second interval.
func BenchmarkRecorder(b *testing.B) {
	rec := newRecorder()
	const perSecond = 40_000
	var x uint64 = 1
	i := 0
	for b.Loop() {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		slot := slotCommitted
		if x%10 == 0 {
			slot = slotAborted
		}
		rec.stripe(int(x>>32)).record(slot, int64(5_000+x%55_000), causeKey{cause: protocol.CauseVotedNo, participant: "p1"})
		if i++; i == perSecond {
			i = 0
			rec.interval()
		}
	}
}

// TestRecorderBoundsCauses: causes are counted by kind, and a detail that
// differs every time cannot grow the recorder past maxCauses keys.
func TestRecorderBoundsCauses(t *testing.T) {
	rec := newRecorder()
	s := rec.stripe(0)
	for i := range 1000 {
		s.record(slotError, 10, causeKey{detail: fmt.Sprintf("error %d", i)})
		s.record(slotAborted, 10, causeKey{cause: protocol.CauseVotedNo, participant: "p1"})
		s.record(slotCommitted, 10, causeKey{})
	}
	if len(s.causes) > maxCauses+1 {
		t.Fatalf("%d causes kept, want at most %d", len(s.causes), maxCauses+1)
	}
	rep := rec.report()
	var sum int64
	for _, c := range rep.Causes {
		sum += c.Count
	}
	if sum != 2000 {
		t.Fatalf("causes add up to %d, want 2000 (every transaction not committed): %v", sum, rep.Causes)
	}
	top := rep.Causes[0]
	if top.String() != "aborted voted-no at p1" || top.Count != 1000 {
		t.Fatalf("top cause %q ×%d, want aborted voted-no at p1 ×1000", top, top.Count)
	}
	if other := rep.Causes[1]; other.Detail != otherCause || other.Count != 1000-(maxCauses-1) {
		t.Fatalf("second cause %+v, want the overflow of %d", other, 1000-(maxCauses-1))
	}
}

package engine

import (
	"math/rand/v2"
	"testing"
)

// rtxn is a transaction struct for the retry tests: a generation only.
type rtxn struct{ gen uint32 }

func (t *rtxn) generation() uint32 { return t.gen }

// plainRetries is retries as they were before first arms had a fifo of
// their own: every timer in one heap. It is the reference the equivalence
// test holds retries to, and the "before" of BenchmarkRetries.
type plainRetries[T any, P genPtr[T]] struct {
	heap        timerHeap[T]
	first, most int
}

func (r *plainRetries[T, P]) start(now int64, t *T, gen uint32) {
	r.heap.push(timer[T]{at: now + int64(r.first), t: t, gen: gen, backoff: int32(r.first)})
}

func (r *plainRetries[T, P]) due(now int64) *T {
	for r.heap.len() > 0 && r.heap.min().at <= now {
		e := r.heap.min()
		r.heap.pop()
		if P(e.t).generation() != e.gen {
			continue
		}
		e.backoff = int32(min(2*int(e.backoff), r.most))
		e.at = now + int64(e.backoff)
		r.heap.push(e)
		return e.t
	}
	return nil
}

func (r *plainRetries[T, P]) reset() { r.heap.reset() }

// retries fire exactly as one heap of every timer does — the same
// transactions in the same order at the same ticks — through many starts
// (several per transaction and generation, several per tick), generations
// bumped, dues at random times, resets, and (never done by the machines,
// whose clocks only go forward) starts at an earlier now.
func TestRetriesMatchPlainHeap(t *testing.T) {
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 0x7e7))
		first := 1 + rng.IntN(12)
		most := first + rng.IntN(4*first)
		got := retries[rtxn, *rtxn]{first: first, most: most}
		want := plainRetries[rtxn, *rtxn]{first: first, most: most}
		txns := make([]rtxn, 1+rng.IntN(60))
		var now int64
		fired, rearmed := 0, 0
		for step := range 3000 {
			switch r := rng.IntN(100); {
			case r < 45:
				tx := &txns[rng.IntN(len(txns))]
				at := now
				if rng.IntN(200) == 0 {
					at -= int64(rng.IntN(3 * first)) // out of order: the heap's fallback
				}
				got.start(at, tx, tx.gen)
				want.start(at, tx, tx.gen)
			case r < 70:
				txns[rng.IntN(len(txns))].gen++
			case r < 99:
				now += int64(rng.IntN(2 * first))
				for {
					g, w := got.due(now), want.due(now)
					if g != w {
						t.Fatalf("seed %d step %d now %d: due gave txn %d, the plain heap txn %d",
							seed, step, now, index(txns, g), index(txns, w))
					}
					if g == nil {
						break
					}
					fired++
				}
			default:
				got.reset()
				want.reset()
			}
			if got.firsts.len()+got.heap.len() != want.heap.len() {
				t.Fatalf("seed %d step %d: %d+%d timers pending, the plain heap %d",
					seed, step, got.firsts.len(), got.heap.len(), want.heap.len())
			}
			rearmed = max(rearmed, got.heap.len())
		}
		if fired == 0 || rearmed == 0 {
			t.Fatalf("seed %d: the run fired %d retries and re-armed at most %d at once: it tests nothing", seed, fired, rearmed)
		}
	}
}

func index(txns []rtxn, t *rtxn) int {
	for i := range txns {
		if &txns[i] == t {
			return i
		}
	}
	return -1
}

// retrier is what BenchmarkRetries drives: retries or plainRetries.
type retrier interface {
	start(now int64, t *rtxn, gen uint32)
	due(now int64) *rtxn
}

// BenchmarkRetries is the retry timers' cost per transaction in a
// coordinator's steady state: each transaction arms one retry (first
// after 10 ticks, as RedeliverMinTicks), perTick transactions a tick; all
// but one in 100 finish before it is due, so their retry comes up stale
// and is dropped; the one in 100 stays undecided for 80 ticks and is
// retried at 10, 30 and 70 ticks.
func BenchmarkRetries(b *testing.B) {
	const first, most, perTick, live = 10, 200, 256, 100
	for _, bc := range []struct {
		name  string
		fresh func() retrier
	}{
		{"heap", func() retrier { return &plainRetries[rtxn, *rtxn]{first: first, most: most} }},
		{"fifo+heap", func() retrier { return &retries[rtxn, *rtxn]{first: first, most: most} }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := bc.fresh()
			txns := make([]rtxn, perTick*8*first)
			var now int64
			var n, fired int
			run := func() {
				tx := &txns[n%len(txns)]
				tx.gen++ // the slot's previous transaction is long gone
				r.start(now, tx, tx.gen)
				n++
				if n%live != 0 {
					tx.gen++ // finished before its retry
				}
				if n%perTick == 0 {
					now++
					for t := r.due(now); t != nil; t = r.due(now) {
						fired++
					}
				}
			}
			for range 2 * len(txns) {
				run()
			}
			b.ReportAllocs()
			b.ResetTimer()
			fired = 0
			for b.Loop() {
				run()
			}
			b.ReportMetric(float64(fired)/float64(b.N), "retries/txn")
		})
	}
}

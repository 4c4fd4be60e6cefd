package engine

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// sliceFifo is fifo as it was before its chunks: one slice, slid down as
// the front advances and regrown by append. It is the reference the
// equivalence test holds fifo to, and the "before" of BenchmarkFifo.
type sliceFifo[T any] struct {
	buf  []T
	head int
}

func (q *sliceFifo[T]) push(v T) {
	if q.head > 0 && q.head == len(q.buf) {
		// Empty: start again at the front of the same array.
		q.buf = q.buf[:0]
		q.head = 0
	} else if q.head >= 1024 && q.head*2 >= len(q.buf) {
		// Mostly consumed: slide the live part down.
		n := copy(q.buf, q.buf[q.head:])
		clear(q.buf[n:])
		q.buf = q.buf[:n]
		q.head = 0
	}
	q.buf = append(q.buf, v)
}

func (q *sliceFifo[T]) len() int   { return len(q.buf) - q.head }
func (q *sliceFifo[T]) front() *T  { return &q.buf[q.head] }
func (q *sliceFifo[T]) reset()     { clear(q.buf); q.buf = q.buf[:0]; q.head = 0 }
func (q *sliceFifo[T]) pop()       { var zero T; q.buf[q.head] = zero; q.head++ }
func (q *fifo[T]) chunksHeld() int { return countChunks(q.ring) + len(q.spare) }

func countChunks[T any](ring []*[fifoChunkLen]T) int {
	n := 0
	for _, c := range ring {
		if c != nil {
			n++
		}
	}
	return n
}

// queue is what the fifo tests and BenchmarkFifo drive: fifo or sliceFifo.
type queue[T any] interface {
	push(T)
	len() int
	front() *T
	pop()
	reset()
}

// TestFifoMatchesSlice: random pushes and pops in runs (so that the queue
// empties, refills, grows across many chunks and doubles its ring while
// its front is in the middle of it) and resets give the same fronts and
// lengths as the slice queue; popped entries are zeroed (no pointer kept
// for the garbage collector).
func TestFifoMatchesSlice(t *testing.T) {
	for seed := range uint64(40) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 0xf1f0))
			var got fifo[*int]
			var want sliceFifo[*int]
			vals := make([]int, 5000)
			next := 0
			maxLen := 0
			for step := range 4000 {
				switch r := rng.IntN(100); {
				case r < 50:
					for range rng.IntN(3 * fifoChunkLen) {
						v := &vals[next%len(vals)]
						next++
						got.push(v)
						want.push(v)
					}
				case r < 99:
					for k := rng.IntN(3 * fifoChunkLen); k > 0 && want.len() > 0; k-- {
						if g, w := *got.front(), *want.front(); g != w {
							t.Fatalf("step %d: front %p, the slice's %p", step, g, w)
						}
						p := got.front()
						got.pop()
						want.pop()
						if *p != nil && got.len() > 0 {
							t.Fatalf("step %d: a popped entry still points", step)
						}
					}
				default:
					got.reset()
					want.reset()
				}
				if got.len() != want.len() {
					t.Fatalf("step %d: len %d, the slice's %d", step, got.len(), want.len())
				}
				if got.len() > 0 && *got.front() != *want.front() {
					t.Fatalf("step %d: front %p, the slice's %p", step, *got.front(), *want.front())
				}
				maxLen = max(maxLen, got.len())
			}
			if maxLen < 4*fifoChunkLen {
				t.Fatalf("the queue held at most %d: it never spanned many chunks", maxLen)
			}
			if held := got.chunksHeld(); held > maxLen/fifoChunkLen+2 {
				t.Fatalf("%d chunks held for at most %d entries", held, maxLen)
			}
		})
	}
}

// TestFifoSteadyStateDoesNotAllocate: a queue as long as a timer window,
// pushed and popped at the same rate, allocates nothing once it has held
// its longest.
func TestFifoSteadyStateDoesNotAllocate(t *testing.T) {
	var q fifo[timer[partTxn]]
	for i := range 10_000 {
		q.push(timer[partTxn]{at: int64(i)})
	}
	i := 10_000
	// 1,000 pushes and pops a run: a chunk consumed and one begun every
	// 256 (AllocsPerRun counts whole allocations per run).
	if n := testing.AllocsPerRun(100, func() {
		for range 1000 {
			q.push(timer[partTxn]{at: int64(i)})
			i++
			if q.front().at != int64(i-10_001) {
				panic("out of order")
			}
			q.pop()
		}
	}); n != 0 {
		t.Fatalf("%v allocations per 1,000 pushes and pops", n)
	}
}

// BenchmarkFifo is a machine's timer queue (timer[partTxn], 40 bytes) with
// a window of window timers: each op pushes one, and pops one once window
// are queued. steady: the window is full, as in a long-running server;
// fresh: a new queue every 4·window pushes, as in the first seconds of a
// server (and throughout the cluster benchmarks' cells, whose servers are
// fresh): the queue grows from empty to its window. The slice queue
// before (slice) against the chunks (chunks), in one run.
func BenchmarkFifo(b *testing.B) {
	for _, window := range []int{1000, 100_000} {
		for _, fresh := range []bool{false, true} {
			for _, bc := range []struct {
				name string
				new  func() queue[timer[partTxn]]
			}{
				{"slice", func() queue[timer[partTxn]] { return &sliceFifo[timer[partTxn]]{} }},
				{"chunks", func() queue[timer[partTxn]] { return &fifo[timer[partTxn]]{} }},
			} {
				mode := "steady"
				if fresh {
					mode = "fresh"
				}
				b.Run(fmt.Sprintf("window%d/%s/%s", window, mode, bc.name), func(b *testing.B) {
					q := bc.new()
					n := 0
					op := func() {
						n++
						if fresh && n%(4*window) == 0 {
							q = bc.new()
						}
						q.push(timer[partTxn]{at: int64(n)})
						if q.len() > window {
							q.pop()
						}
					}
					for range 2 * window {
						op()
					}
					b.ReportAllocs()
					b.ResetTimer()
					for b.Loop() {
						op()
					}
				})
			}
		}
	}
}

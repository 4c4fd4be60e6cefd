package engine

// The machines keep three kinds of pending work, all without allocating in
// the steady state:
//
//   - fifo: deadlines of a constant duration (prepare timeout, remember
//     expiry) and records awaiting durability are pushed in non-decreasing
//     order, so a FIFO queue is already sorted and a tick pops only what is
//     due.
//   - timerHeap: deadlines with backoff (redelivery, inquiry) come in any
//     order; a binary min-heap keeps them, ordered by (deadline, push
//     sequence) so equal deadlines fire in push order and runs replay
//     exactly.
//
// Entries are never removed early. Each entry carries the generation of
// its transaction at push time; a transaction bumps its generation on every
// state change and when it is freed, so a stale entry is recognised and
// dropped when it comes up.

// fifo is a queue that reuses its backing array.
type fifo[T any] struct {
	buf  []T
	head int
}

func (q *fifo[T]) push(v T) {
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

func (q *fifo[T]) len() int { return len(q.buf) - q.head }

// front returns a pointer to the oldest entry; the queue must not be empty.
func (q *fifo[T]) front() *T { return &q.buf[q.head] }

func (q *fifo[T]) pop() {
	var zero T
	q.buf[q.head] = zero // drop the reference for the garbage collector
	q.head++
}

// timer is one deadline for a transaction of type T.
type timer[T any] struct {
	at      int64 // tick at which it fires
	seq     uint64
	t       *T
	gen     uint32
	backoff int32 // retries: ticks from the push to at
}

// timerHeap is a min-heap of timers by (at, seq).
type timerHeap[T any] struct {
	h   []timer[T]
	seq uint64
}

func (th *timerHeap[T]) less(i, j int) bool {
	a, b := &th.h[i], &th.h[j]
	return a.at < b.at || (a.at == b.at && a.seq < b.seq)
}

// push adds e, ordered after every timer already pushed for the same tick.
func (th *timerHeap[T]) push(e timer[T]) {
	th.seq++
	e.seq = th.seq
	th.h = append(th.h, e)
	i := len(th.h) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !th.less(i, p) {
			break
		}
		th.h[i], th.h[p] = th.h[p], th.h[i]
		i = p
	}
}

func (th *timerHeap[T]) len() int { return len(th.h) }

// min returns the earliest timer; the heap must not be empty.
func (th *timerHeap[T]) min() timer[T] { return th.h[0] }

func (th *timerHeap[T]) pop() {
	n := len(th.h) - 1
	th.h[0] = th.h[n]
	th.h[n] = timer[T]{}
	th.h = th.h[:n]
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && th.less(r, l) {
			m = r
		}
		if !th.less(m, i) {
			break
		}
		th.h[i], th.h[m] = th.h[m], th.h[i]
		i = m
	}
}

func (th *timerHeap[T]) reset() {
	clear(th.h)
	th.h = th.h[:0]
}

// retries are per-transaction timers that fire again and again, with a
// backoff doubling from first to most ticks, until their transaction
// changes: a commit decision redelivered until it is acked, an inquiry
// repeated until the decision arrives. Neither ever gives up: a prepared
// participant must not decide on its own, and a commit decision must
// reach every YES voter.
type retries[T any, P genPtr[T]] struct {
	heap        timerHeap[T]
	first, most int // ticks
}

// genPtr is what retries need of a transaction struct T: its generation
// (txnLife), to drop the retries of a transaction that has changed.
type genPtr[T any] interface {
	*T
	generation() uint32
}

// start arms the retry of t, at generation gen, first due at now+first.
func (r *retries[T, P]) start(now int64, t *T, gen uint32) {
	r.heap.push(timer[T]{at: now + int64(r.first), t: t, gen: gen, backoff: int32(r.first)})
}

// due returns the next transaction whose retry is due at now, and arms its
// next retry, twice as far off (at most most ticks); nil when none is due.
// Retries of transactions that have changed since they were armed are
// dropped.
func (r *retries[T, P]) due(now int64) *T {
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

func (r *retries[T, P]) reset() { r.heap.reset() }

// backoffRange returns the first and the longest wait of a doubling
// backoff from a config, each defaulted where zero, the longest at least
// the first.
func backoffRange(first, most, defFirst, defMost int) (int, int) {
	first = orDefault(first, defFirst)
	return first, max(orDefault(most, defMost), first)
}

// orDefault is v, or def for a zero (unset) config field.
func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

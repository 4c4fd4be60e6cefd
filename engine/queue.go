package engine

// The machines keep three kinds of pending work, all without allocating in
// the steady state:
//
//   - fifo: deadlines of a constant duration (prepare timeout, remember
//     expiry) and records awaiting durability are pushed in non-decreasing
//     order, so a FIFO queue is already sorted and a tick pops only what is
//     due.
//   - retries: deadlines with backoff (redelivery, inquiry). A first arm
//     is due a constant duration after now, so first arms too come in
//     non-decreasing order and wait in a fifo; only re-arms (the backoff
//     doubling) come in any order, and a binary min-heap (timerHeap) keeps
//     them. Both are ordered by (deadline, push sequence), one sequence
//     over both, so equal deadlines fire in push order and runs replay
//     exactly.
//
// Entries are never removed early. Each entry carries the generation of
// its transaction at push time; a transaction bumps its generation on every
// state change and when it is freed, so a stale entry is recognised and
// dropped when it comes up.

// fifo is a queue in chunks of fifoChunkLen entries, kept in a ring and
// reused: it never copies an entry. A queue in one slice copied every
// entry whenever it grew (append's growslice copies the consumed front
// too) and slid its live part down as the front advanced; a timer queue
// of a fresh server grows for as long as its deadline (the coordinator's
// 2 s prepare timeouts, the participants' 1 s inquiries: 50,000–200,000
// timers at the 1,000-caller cell's rate), and that copying was 1.2–1.9 %
// of each process's CPU in that cell. Here
// growth adds a chunk (and, rarely, doubles the ring of chunk pointers),
// and a consumed chunk is reused as the back advances into it.
type fifo[T any] struct {
	first, last *[fifoChunkLen]T // the chunks of the front and the back (the same when one holds all)
	head, tail  int              // the front is first[head]; the back was last[tail-1]
	n           int              // entries
	// ring holds the chunks in use, first at firstAt to last at lastAt
	// (mod len(ring)), the other slots nil; spare the chunks consumed,
	// for the back to reuse: so a queue holds no more chunks than it
	// used at once, plus one.
	ring            []*[fifoChunkLen]T
	firstAt, lastAt int
	spare           []*[fifoChunkLen]T
}

// fifoChunkLen is the entries of a chunk: a few pages of timers.
const fifoChunkLen = 256

func (q *fifo[T]) push(v T) {
	if q.last == nil || q.tail == fifoChunkLen {
		q.nextChunk()
	}
	q.last[q.tail] = v
	q.tail++
	q.n++
}

// nextChunk makes a chunk, spare or new, the back, in the ring's next
// slot, doubling the ring if every slot is in use. (Not inlined: the slow
// path would make push too costly to inline.)
//
//go:noinline
func (q *fifo[T]) nextChunk() {
	if q.last == nil {
		q.ring = make([]*[fifoChunkLen]T, 2)
		q.ring[0] = new([fifoChunkLen]T)
		q.first, q.last = q.ring[0], q.ring[0]
		return
	}
	next := (q.lastAt + 1) & (len(q.ring) - 1)
	if next == q.firstAt {
		// Every chunk is in use: double the ring, its chunks in queue
		// order from the front.
		old := q.ring
		q.ring = make([]*[fifoChunkLen]T, 2*len(old))
		k := copy(q.ring, old[q.firstAt:])
		copy(q.ring[k:], old[:q.firstAt])
		q.firstAt, q.lastAt = 0, len(old)-1
		next = len(old)
	}
	var c *[fifoChunkLen]T
	if k := len(q.spare); k > 0 {
		c = q.spare[k-1]
		q.spare[k-1] = nil
		q.spare = q.spare[:k-1]
	} else {
		c = new([fifoChunkLen]T)
	}
	q.ring[next] = c
	q.last, q.lastAt, q.tail = c, next, 0
}

func (q *fifo[T]) len() int { return q.n }

// front returns a pointer to the oldest entry; the queue must not be empty.
func (q *fifo[T]) front() *T { return &q.first[q.head] }

// reset empties the queue, keeping its chunks.
func (q *fifo[T]) reset() {
	for q.n > 0 {
		q.pop()
	}
}

func (q *fifo[T]) pop() {
	var zero T
	q.first[q.head] = zero // drop the reference for the garbage collector
	q.head++
	q.n--
	if q.n == 0 || q.head == fifoChunkLen {
		q.advance()
	}
}

// advance runs when pop has emptied the queue (then the back chunk is
// used again from its start) or the front chunk (then the next is the
// front). (Not inlined: the slow path would make pop too costly to
// inline.)
//
//go:noinline
func (q *fifo[T]) advance() {
	if q.n == 0 {
		q.first, q.firstAt = q.last, q.lastAt
		q.head, q.tail = 0, 0
		return
	}
	q.spare = append(q.spare, q.first) // popped: all zero
	q.ring[q.firstAt] = nil
	q.firstAt = (q.firstAt + 1) & (len(q.ring) - 1)
	q.first, q.head = q.ring[q.firstAt], 0
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

// earlier orders timers by (at, seq): equal deadlines fire in push order.
func (a *timer[T]) earlier(b *timer[T]) bool {
	return a.at < b.at || (a.at == b.at && a.seq < b.seq)
}

func (th *timerHeap[T]) less(i, j int) bool { return th.h[i].earlier(&th.h[j]) }

// push adds e, ordered after every timer already pushed for the same tick.
func (th *timerHeap[T]) push(e timer[T]) {
	e.seq = th.nextSeq()
	th.pushSeq(e)
}

// nextSeq numbers a timer pushed now, here or (retries' first arms) in a
// fifo beside the heap: one sequence over both keeps their order total.
func (th *timerHeap[T]) nextSeq() uint64 {
	th.seq++
	return th.seq
}

// pushSeq adds e, already numbered by nextSeq.
func (th *timerHeap[T]) pushSeq(e timer[T]) {
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
//
// Almost every retry is armed once and dropped as stale when it comes up
// (the decision was acked, the inquiry answered), so first arms — due
// first ticks after now, in non-decreasing order — wait in a fifo, which
// pushes and pops in constant time, and only re-arms go through the heap.
// due takes the earlier of the two fronts by (at, seq), and the sequence
// is the heap's, one counter over both: the firing order is exactly that
// of one heap holding every timer.
type retries[T any, P genPtr[T]] struct {
	firsts      fifo[timer[T]] // first arms, sorted by (at, seq) as pushed
	lastFirst   int64          // at of the last first arm in firsts
	heap        timerHeap[T]   // re-arms, and a first arm that would be out of order
	first, most int            // ticks
}

// genPtr is what retries need of a transaction struct T: its generation
// (txnLife), to drop the retries of a transaction that has changed.
type genPtr[T any] interface {
	*T
	generation() uint32
}

// start arms the retry of t, at generation gen, first due at now+first.
func (r *retries[T, P]) start(now int64, t *T, gen uint32) {
	e := timer[T]{at: now + int64(r.first), seq: r.heap.nextSeq(), t: t, gen: gen, backoff: int32(r.first)}
	if r.firsts.len() > 0 && e.at < r.lastFirst {
		// The machines' clocks never go back, so this does not happen;
		// were it to, the heap keeps the order all the same.
		r.heap.pushSeq(e)
		return
	}
	r.firsts.push(e)
	r.lastFirst = e.at
}

// due returns the next transaction whose retry is due at now, and arms its
// next retry, twice as far off (at most most ticks); nil when none is due.
// Retries of transactions that have changed since they were armed are
// dropped.
func (r *retries[T, P]) due(now int64) *T {
	for {
		var e timer[T]
		switch {
		case r.firsts.len() > 0 && (r.heap.len() == 0 || r.firsts.front().earlier(&r.heap.h[0])):
			if r.firsts.front().at > now {
				return nil
			}
			e = *r.firsts.front()
			r.firsts.pop()
		case r.heap.len() > 0 && r.heap.h[0].at <= now:
			e = r.heap.min()
			r.heap.pop()
		default:
			return nil
		}
		if P(e.t).generation() != e.gen {
			continue
		}
		e.backoff = int32(min(2*int(e.backoff), r.most))
		e.at = now + int64(e.backoff)
		r.heap.push(e)
		return e.t
	}
}

func (r *retries[T, P]) reset() {
	r.firsts.reset()
	r.heap.reset()
}

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

package engine

import "fmt"

// outbox is the plumbing a Shard and a Participant share, written once
// (as raft's raft struct holds msgs and msgsAfterAppend for every role):
// the pending Ready and the numbering of records, the records waiting to
// become durable, and the transaction structs in hand, retired and
// recycled. Each machine embeds one; T is its transaction struct.
//
// The outbox holds two things back, and both for the same reason: an
// output must never promise what a crash or the caller could take back.
//
//   - Outputs that depend on a record. A YES vote promises the work
//     survives a crash (RecPrepared), an ack that the commit does
//     (RecCommitted), a commit decision or a "committed" reply that the
//     decision does (RecCommit). Sent before its record is durable, such
//     a promise could outlive the record in a crash. So a machine that
//     appends such a record puts a wait for it on waits, and acts on it
//     — sends the vote, the ack, the decision — only when Durable covers
//     its index (popDurable). Nothing is forced by a write: the caller's
//     group commit decides when records become durable, and a machine
//     holds back only what depends on them.
//   - Transaction structs. A Ready's slices point into them (a prepare's
//     Work, a RecCommit's Participants, a RecPrepared's Work), and the
//     caller may read a Ready until its next call into the machine. A
//     finished transaction is retired at once (its lookups fail, its
//     timers and waits go stale) but reused only once the Ready that may
//     point into it is superseded, by the next call to ready.
type outbox[T any, P txnPtr[T]] struct {
	rd Ready
	// forced: rd.Records holds a record an output waits for (a commit
	// decision, a YES vote, a one-phase commit): the caller should sync
	// it at once rather than lazily (Ready.Lazy).
	forced       bool
	nextIndex    uint64 // index the next record takes
	durable      uint64 // every record up to here is durable
	lastLowWater uint64 // the LowWater of the last Ready
	started      bool   // an input other than Restore has arrived

	// waits are the records appended and not yet durable that something
	// waits for (an output, a transaction's end, the low-water mark), in
	// index order.
	waits fifo[wait[T]]

	// txns are the transactions in hand; finished ones are retired, and
	// their structs go back to free once no Ready refers to them.
	txns map[TxnID]*T
	free []*T
	// retired are finished since the last Ready, draining finished before
	// it: the pending or last-handed-out Ready may still point into their
	// buffers, so they go back to free only once that Ready is superseded.
	retired, draining []*T
}

// txnPtr is what the outbox needs of a machine's transaction struct T.
type txnPtr[T any] interface {
	*T
	// generation changes whenever the transaction's state does, and when
	// it is retired and recycled.
	generation() uint32
	// retire marks the transaction as finished: its generation changes,
	// so every timer and wait still queued for it goes stale.
	retire()
	// recycle readies a retired struct for reuse: zero but for its
	// generation (changed again) and the buffers it keeps.
	recycle()
}

// wait is a record a transaction's output waits for: its index, and the
// transaction's generation when the record was appended.
type wait[T any] struct {
	index uint64
	t     *T // nil for a record no transaction waits for (a checkpoint)
	gen   uint32
}

func newOutbox[T any, P txnPtr[T]]() outbox[T, P] {
	return outbox[T, P]{txns: make(map[TxnID]*T), nextIndex: 1, lastLowWater: 1}
}

// restoreRecord counts a record replayed from the log: it takes the next
// index and is durable. It panics once other input has arrived.
func (o *outbox[T, P]) restoreRecord(machine string) uint64 {
	if o.started {
		panic(fmt.Sprintf("engine: %s.Restore after other input", machine))
	}
	idx := o.nextIndex
	o.nextIndex++
	o.durable = idx
	return idx
}

// start reports whether this is the first input after the restore phase.
func (o *outbox[T, P]) start() bool {
	if o.started {
		return false
	}
	o.started = true
	return true
}

// appendRecord adds r to the pending Ready and returns its index.
func (o *outbox[T, P]) appendRecord(r Record) uint64 {
	idx := o.nextIndex
	o.nextIndex++
	if len(o.rd.Records) == 0 {
		o.rd.FirstIndex = idx
	}
	o.rd.Records = append(o.rd.Records, r)
	return idx
}

// holdUntilDurable holds back t's output that depends on record idx: it
// comes out of popDurable once Durable covers idx. forced says the output
// is one the caller should not wait for long (see forced).
func (o *outbox[T, P]) holdUntilDurable(idx uint64, t *T, gen uint32, forced bool) {
	o.waits.push(wait[T]{index: idx, t: t, gen: gen})
	if forced {
		o.forced = true
	}
}

// markDurable records that every record up to index is durable and
// reports whether that is news. It panics beyond the records appended.
func (o *outbox[T, P]) markDurable(index uint64) bool {
	if index >= o.nextIndex {
		panic(fmt.Sprintf("engine: Durable(%d) but only %d records appended", index, o.nextIndex-1))
	}
	if index <= o.durable {
		return false
	}
	o.durable = index
	return true
}

// popDurable returns the oldest wait whose record is now durable.
func (o *outbox[T, P]) popDurable() (wait[T], bool) {
	if o.waits.len() == 0 || o.waits.front().index > o.durable {
		return wait[T]{}, false
	}
	e := *o.waits.front()
	o.waits.pop()
	return e, true
}

// alloc returns a transaction struct for id, in hand from now on; the
// caller sets its id.
func (o *outbox[T, P]) alloc(id TxnID) *T {
	var t *T
	if n := len(o.free); n > 0 {
		t = o.free[n-1]
		o.free = o.free[:n-1]
	} else {
		t = new(T)
	}
	o.txns[id] = t
	return t
}

// retire takes the finished t (known as id) out of hand at once — lookups
// no longer find it, and its timers and waits go stale — but keeps its
// memory intact until the Ready that may refer to it is superseded.
func (o *outbox[T, P]) retire(id TxnID, t *T) {
	delete(o.txns, id)
	P(t).retire()
	o.retired = append(o.retired, t)
}

// hasReady reports whether ready has anything to hand out.
func (o *outbox[T, P]) hasReady(lowWater uint64) bool {
	return len(o.rd.Records) > 0 || len(o.rd.Messages) > 0 || len(o.rd.Replies) > 0 || len(o.rd.Applied) > 0 ||
		lowWater != o.lastLowWater
}

// ready drains the pending output, with lowWater. The previous Ready is
// superseded by this call: what was retired before it is reused; what
// was retired since is referred to by this one.
func (o *outbox[T, P]) ready(lowWater uint64) Ready {
	for i, t := range o.draining {
		P(t).recycle()
		o.free = append(o.free, t)
		o.draining[i] = nil
	}
	o.draining, o.retired = o.retired, o.draining[:0]
	rd := o.rd
	rd.LowWater = lowWater
	rd.Lazy = len(rd.Records) > 0 && !o.forced
	o.forced = false
	o.lastLowWater = lowWater
	o.rd.FirstIndex = 0
	o.rd.Records = o.rd.Records[:0]
	o.rd.Messages = o.rd.Messages[:0]
	o.rd.Replies = o.rd.Replies[:0]
	o.rd.Applied = o.rd.Applied[:0]
	return rd
}

package engine

import (
	"fmt"

	"github.com/commitd/commitd/protocol"
)

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
//     point into it is superseded by the next one (reuse, then take).
type outbox[T any] struct {
	output

	// waits are the records appended and not yet durable that something
	// waits for (an output, a transaction's end, the low-water mark), in
	// index order: a machine that appends such a record pushes a wait for
	// it (and sets forced if an output waits), and acts on it when
	// popDurable returns it. (Pushed by the machines themselves: a
	// generic helper that is not inlined cost the shard's hot path
	// several per cent.)
	waits fifo[wait[T]]

	// txns are the transactions in hand; finished ones are retired, and
	// their structs go back to free once no Ready refers to them.
	txns txnTable[T]
	free []*T
	// retired are finished since the last Ready, draining finished before
	// it: the pending or last-handed-out Ready may still point into their
	// buffers, so they go back to free only once that Ready is superseded.
	retired, draining []*T
}

// output is the part of the outbox that knows no transaction type: the
// pending Ready and the numbering of records. (Its methods are not
// generic, so that the hot path copies a Ready as plainly as before.)
type output struct {
	rd Ready
	// forced: rd.Records holds a record an output waits for (a commit
	// decision, a YES vote, a one-phase commit), or one that takes along
	// an earlier, lazy record an output waits for (a shard's RecStaged):
	// the caller should sync it at once rather than lazily (Ready.Lazy).
	forced       bool
	nextIndex    uint64 // index the next record takes
	durable      uint64 // every record up to here is durable
	lastLowWater uint64 // the LowWater of the last Ready
	started      bool   // an input other than Restore has arrived
}

// wait is a record a transaction's output waits for: its index, and the
// transaction's generation when the record was appended.
type wait[T any] struct {
	index uint64
	t     *T // nil for a record no transaction waits for (a checkpoint)
	gen   uint32
}

func newOutbox[T any]() outbox[T] {
	return outbox[T]{output: output{nextIndex: 1, lastLowWater: 1}, txns: newTxnTable[T]()}
}

// restoreRecord counts a record replayed from the log: it takes the next
// index and is durable. It panics once other input has arrived.
func (o *output) restoreRecord(machine string) uint64 {
	if o.started {
		panic(fmt.Sprintf("engine: %s.Restore after other input", machine))
	}
	idx := o.nextIndex
	o.nextIndex++
	o.durable = idx
	return idx
}

// start reports whether this is the first input after the restore phase.
func (o *output) start() bool {
	if o.started {
		return false
	}
	o.started = true
	return true
}

// appendRecord adds r to the pending Ready and returns its index.
func (o *output) appendRecord(r Record) uint64 {
	idx := o.nextIndex
	o.nextIndex++
	if len(o.rd.Records) == 0 {
		o.rd.FirstIndex = idx
	}
	o.rd.Records = append(o.rd.Records, r)
	return idx
}

// markDurable records that every record up to index is durable and
// reports whether that is news. It panics beyond the records appended.
func (o *output) markDurable(index uint64) bool {
	if index >= o.nextIndex {
		panic(durableBeyond{index, o.nextIndex - 1})
	}
	if index <= o.durable {
		return false
	}
	o.durable = index
	return true
}

// durableBeyond is the panic of a Durable beyond the records appended (a
// value, not a message: formatting it here would keep markDurable from
// being inlined).
type durableBeyond struct{ index, appended uint64 }

func (d durableBeyond) Error() string {
	return fmt.Sprintf("engine: Durable(%d) but only %d records appended", d.index, d.appended)
}

// popDurable returns the oldest wait whose record is now durable.
func (o *outbox[T]) popDurable() (e wait[T], ok bool) {
	q := &o.waits
	if q.n == 0 || q.first[q.head].index > o.durable {
		return e, false
	}
	e = q.first[q.head]
	q.pop()
	return e, true
}

// alloc returns a transaction struct for id, in hand from now on; the
// caller sets its id.
func (o *outbox[T]) alloc(id protocol.TxnID) *T {
	var t *T
	if n := len(o.free); n > 0 {
		t = o.free[n-1]
		o.free = o.free[:n-1]
	} else {
		t = new(T)
	}
	o.txns.put(id, t)
	return t
}

// retire takes the finished t (known as id) out of hand at once, so that
// lookups no longer find it, but keeps its memory intact until the Ready
// that may refer to it is superseded. The caller has changed t's
// generation, so that its timers and waits are stale.
func (o *outbox[T]) retire(id protocol.TxnID, t *T) {
	o.txns.remove(id)
	o.retired = append(o.retired, t)
}

// hasReady reports whether ready has anything to hand out.
func (o *output) hasReady(lowWater uint64) bool {
	return len(o.rd.Records) > 0 || len(o.rd.Messages) > 0 || len(o.rd.Replies) > 0 || len(o.rd.Applied) > 0 ||
		lowWater != o.lastLowWater
}

// reuse returns the structs retired before the last Ready to free, and
// returns them too: the caller resets each before it allocates again.
// Call it as a Ready is handed out (take), which supersedes the last one;
// what was retired since is referred to by the new one.
func (o *outbox[T]) reuse() []*T {
	n := len(o.free)
	for i, t := range o.draining {
		// One by one: a bulk append and clear of a slice of pointers cost
		// more here, in runtime calls, than the one or two there usually
		// are.
		o.free = append(o.free, t)
		o.draining[i] = nil
	}
	o.draining, o.retired = o.retired, o.draining[:0]
	return o.free[n:]
}

// take drains the pending output, with lowWater.
func (o *output) take(lowWater uint64) Ready {
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

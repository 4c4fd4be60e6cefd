package engine

import (
	"fmt"
	"hash/maphash"

	"github.com/commitd/commitd/protocol"
)

// txnTable maps the ids of the transactions a machine has in hand to
// their structs (outbox.txns): a Go map's job, done with the remembered
// set's index (tagIndex, shared with recent) over a dense array of
// entries whose positions are reused.
//
// Every transaction is looked up, put and removed again within
// milliseconds, so the table sees a put and a removal per transaction
// while it holds only the few thousand in flight. A Go map under that
// churn grows to several times its contents (measured with Go 1.26: a
// map of 1,000 16-byte ids takes 55 KB built, 219 KB after 5 million puts
// and removals), so its lookups miss the cache more, where this table's
// index (8-byte slots, at most half full) and entries (24 bytes each) of
// a thousand transactions take 40 KB. Removal shifts the slots after it
// back (tagIndex.remove), so there are no tombstones, and a removed
// entry's position is the next one put, while still in cache. Nothing
// is allocated once the table has held as many transactions as it will
// hold.
//
// It is not a general map: ids are hashed with a seed (idTag), and
// iteration (all) goes through the entries in position order, which
// depends on the order of puts and removals only — deterministic, where
// a Go map's order is random; no caller depends on either.
type txnTable[T any] struct {
	seed    maphash.Seed
	index   tagIndex // len 0 or a power of two, ≥ 2·n
	entries []txnEntry[T]
	free    []uint32 // positions in entries not in use, the latest freed last
	n       int      // entries in use
}

// txnEntry is one transaction in a txnTable: t is nil while its position
// is free.
type txnEntry[T any] struct {
	id protocol.TxnID
	t  *T
}

// minTableSlots is a fresh table's index; it doubles as the table fills.
const minTableSlots = 16

func newTxnTable[T any]() txnTable[T] {
	return txnTable[T]{seed: maphash.MakeSeed()}
}

// get returns the struct for id, or nil.
func (tb *txnTable[T]) get(id protocol.TxnID) *T {
	if tb.n == 0 {
		return nil
	}
	tag := idTag(tb.seed, id)
	mask := uint32(len(tb.index) - 1)
	for i := tag & mask; ; i = (i + 1) & mask {
		s := tb.index[i]
		if s == 0 {
			return nil
		}
		if uint32(s>>32) == tag {
			if e := &tb.entries[uint32(s)-1]; e.id == id {
				return e.t
			}
		}
	}
}

// put maps id to t (not nil), replacing what id mapped to, if anything.
func (tb *txnTable[T]) put(id protocol.TxnID, t *T) {
	tag := idTag(tb.seed, id)
	free := uint32(0) // the free slot a new id takes, if the index does not grow
	if len(tb.index) > 0 {
		mask := uint32(len(tb.index) - 1)
		i := tag & mask
		for ; tb.index[i] != 0; i = (i + 1) & mask {
			if s := tb.index[i]; uint32(s>>32) == tag {
				if e := &tb.entries[uint32(s)-1]; e.id == id {
					e.t = t
					return
				}
			}
		}
		free = i
	}
	var pos uint32
	if k := len(tb.free); k > 0 {
		pos = tb.free[k-1]
		tb.free = tb.free[:k-1]
	} else {
		if len(tb.entries) >= 1<<32-1 {
			panic(fmt.Sprintf("engine: %d transactions in flight", len(tb.entries)))
		}
		pos = uint32(len(tb.entries))
		tb.entries = append(tb.entries, txnEntry[T]{})
	}
	tb.entries[pos] = txnEntry[T]{id: id, t: t}
	tb.n++
	if 2*tb.n > len(tb.index) {
		n := max(len(tb.index), minTableSlots)
		for n < 2*tb.n {
			n *= 2
		}
		tb.index.grow(n)
		tb.index.place(indexSlot(tag, pos))
		return
	}
	tb.index[free] = indexSlot(tag, pos)
}

// remove forgets id, if the table has it.
func (tb *txnTable[T]) remove(id protocol.TxnID) {
	if tb.n == 0 {
		return
	}
	tag := idTag(tb.seed, id)
	mask := uint32(len(tb.index) - 1)
	for i := tag & mask; ; i = (i + 1) & mask {
		s := tb.index[i]
		if s == 0 {
			return
		}
		if uint32(s>>32) != tag {
			continue
		}
		pos := uint32(s) - 1
		if tb.entries[pos].id != id {
			continue
		}
		tb.entries[pos] = txnEntry[T]{} // no pointer kept for the garbage collector
		tb.free = append(tb.free, pos)
		tb.n--
		tb.index.remove(i)
		return
	}
}

// len is the number of ids in the table.
func (tb *txnTable[T]) len() int { return tb.n }

// all yields every id and its struct (an iter.Seq2, spelt out: the engine
// imports only what TestNoIO allows). The body may remove the id it is
// given (a removed entry is not yielded), but not put.
func (tb *txnTable[T]) all() func(yield func(protocol.TxnID, *T) bool) {
	return func(yield func(protocol.TxnID, *T) bool) {
		for i := range tb.entries {
			if e := &tb.entries[i]; e.t != nil && !yield(e.id, e.t) {
				return
			}
		}
	}
}

// clear forgets every id, keeping the memory for reuse.
func (tb *txnTable[T]) clear() {
	clear(tb.index)
	clear(tb.entries)
	tb.entries = tb.entries[:0]
	tb.free = tb.free[:0]
	tb.n = 0
}

package bank

import (
	"hash/maphash"

	"github.com/commitd/commitd/protocol"
)

// holdTable maps a transaction id to its hold: an open-addressing hash
// table with linear probing and backward-shift deletion (no tombstones).
//
// Why not a Go map: the bank needs "insert unless present" at prepare and
// "delete and return the value" at commit, which a map does in two probes
// each (a lookup, then an assign or a delete) — four hashings and four
// probes of a table larger than the L1 cache per transaction. Here find
// returns the slot where the id is or would go, so a prepare probes once
// and a commit once (docs/benchmarks.md).
//
// A slot is free when its amount is 0: a hold never has amount 0 (such a
// prepare is read-only and Restore refuses it). The table is at most half
// full, so every probe sequence ends at a free slot.
type holdTable struct {
	slots []holdSlot // len a power of two, or 0 before the first insert
	n     int        // slots in use
	// seed keys the hash: transaction ids come from clients, and an
	// unkeyed hash would let one choose ids that all probe the same run.
	seed maphash.Seed
}

// holdSlot is a hold and its id, 40 bytes.
type holdSlot struct {
	id protocol.TxnID
	// home is the low 32 bits of the id's hash: the slot the id hashes to
	// is home&mask (a table never reaches 2^32 slots: holds never exceed
	// MaxAccounts), kept so that deletion and growth move entries without
	// hashing them again, and compared before the id.
	home    uint32
	account uint32
	amount  int64 // 0: free
	after   int64
}

// minHoldSlots is the size of the first table.
const minHoldSlots = 64

func newHoldTable() holdTable { return holdTable{seed: maphash.MakeSeed()} }

func (t *holdTable) hash(id *protocol.TxnID) uint32 {
	return uint32(maphash.Bytes(t.seed, id[:]))
}

// find returns the index of id's slot and true, or the index of the free
// slot where id would be inserted and false; and id's hash, for put. It
// first makes room for one more hold, so that the index stays valid for
// one put.
func (t *holdTable) find(id *protocol.TxnID) (int, uint32, bool) {
	if 2*(t.n+1) > len(t.slots) {
		t.grow()
	}
	h := t.hash(id)
	mask := len(t.slots) - 1
	for i := int(h) & mask; ; i = (i + 1) & mask {
		s := &t.slots[i]
		if s.amount == 0 {
			return i, h, false
		}
		if s.home == h && s.id == *id {
			return i, h, true
		}
	}
}

// put fills the free slot i, which find returned for id (and hash h) with
// no other change to the table since.
func (t *holdTable) put(i int, h uint32, id *protocol.TxnID, v hold) {
	t.slots[i] = holdSlot{id: *id, home: h, account: v.account, amount: v.amount, after: v.after}
	t.n++
}

// take removes id's hold and returns it; ok is false if id holds nothing.
func (t *holdTable) take(id *protocol.TxnID) (h hold, ok bool) {
	if len(t.slots) == 0 {
		return hold{}, false
	}
	hh := t.hash(id)
	mask := len(t.slots) - 1
	i := int(hh) & mask
	for {
		s := &t.slots[i]
		if s.amount == 0 {
			return hold{}, false
		}
		if s.home == hh && s.id == *id {
			h = hold{account: s.account, amount: s.amount, after: s.after}
			break
		}
		i = (i + 1) & mask
	}
	// Backward shift: move each later entry of the run that may sit at i
	// (its home is not in (i, j]) back into the hole, until a free slot.
	for j := (i + 1) & mask; t.slots[j].amount != 0; j = (j + 1) & mask {
		home := int(t.slots[j].home) & mask
		if (j-home)&mask >= (j-i)&mask {
			t.slots[i] = t.slots[j]
			i = j
		}
	}
	t.slots[i] = holdSlot{}
	t.n--
	return h, true
}

// grow doubles the table (or makes the first one) and reinserts every hold.
func (t *holdTable) grow() {
	old := t.slots
	t.slots = make([]holdSlot, max(minHoldSlots, 2*len(old)))
	mask := len(t.slots) - 1
	for k := range old {
		s := &old[k]
		if s.amount == 0 {
			continue
		}
		i := int(s.home) & mask
		for t.slots[i].amount != 0 {
			i = (i + 1) & mask
		}
		t.slots[i] = *s
	}
}

// reset drops every hold, keeping the table's size.
func (t *holdTable) reset() {
	clear(t.slots)
	t.n = 0
}

// appendIDs appends the id of every hold to dst, in slot order.
func (t *holdTable) appendIDs(dst []protocol.TxnID) []protocol.TxnID {
	for k := range t.slots {
		if t.slots[k].amount != 0 {
			dst = append(dst, t.slots[k].id)
		}
	}
	return dst
}

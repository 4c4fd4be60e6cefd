package engine

import (
	"hash/maphash"

	"github.com/commitd/commitd/protocol"
)

// tagIndex is the open-addressed index with linear probing that both of
// the machines' tables of transactions keep over their entries: the
// remembered set's generations (recent) and the transactions in flight
// (txnTable). A slot is 0 when free, else an id's tag (the high 32 bits of
// its seeded hash, idTag) over the entry's position + 1. The slot an id
// wants is tag&mask; a probe compares tags before it reads an entry, so
// most probes touch the index alone. Its length is 0 or a power of two,
// and its owner keeps it at most half full, so probes stay short.
//
// The tags are all a slot needs to be placed again, so growing hashes no
// id again, and removal (backward shift) needs no tombstones.
type tagIndex []uint64

// idTag is the tag of id under seed: the high bits of a seeded hash, so
// that ids chosen by a client cannot be made to collide at will.
func idTag(seed maphash.Seed, id protocol.TxnID) uint32 {
	return uint32(maphash.Bytes(seed, id[:]) >> 32)
}

// indexSlot is the slot of the entry at position pos with tag.
func indexSlot(tag uint32, pos uint32) uint64 { return uint64(tag)<<32 | uint64(pos+1) }

// place puts slot s into the first free slot from where its tag wants.
func (x tagIndex) place(s uint64) {
	mask := uint32(len(x) - 1)
	i := uint32(s>>32) & mask
	for x[i] != 0 {
		i = (i + 1) & mask
	}
	x[i] = s
}

// grow replaces the index by one of n slots (a power of two) and places
// every slot again: the tags say where, so no id is hashed again.
func (x *tagIndex) grow(n int) {
	old := *x
	*x = make(tagIndex, n)
	for _, s := range old {
		if s != 0 {
			x.place(s)
		}
	}
}

// remove frees slot i by backward shift: each later slot of the run that
// would no longer be reachable from the slot its tag wants moves into the
// hole, until the run ends. So a run never holds a free slot that a probe
// would stop at before its id, and removal leaves nothing behind.
func (x tagIndex) remove(i uint32) {
	mask := uint32(len(x) - 1)
	for j := (i + 1) & mask; x[j] != 0; j = (j + 1) & mask {
		want := uint32(x[j]>>32) & mask
		// The slot at j may fill the hole at i if i lies on its probe
		// path, from want up to j (cyclically): i is no farther back
		// from j than want is.
		if (j-i)&mask <= (j-want)&mask {
			x[i] = x[j]
			i = j
		}
	}
	x[i] = 0
}

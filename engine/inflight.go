package engine

import (
	"encoding/binary"
	"slices"

	"github.com/commitd/commitd/protocol"
)

// InFlight appends to dst the transactions this shard holds — voting,
// deciding, delivering or ending — whose ids sort after *after (all of
// them if after is nil), in id order (UUIDv7 ids sort by their time), at
// most max of them, and returns it with how many the shard holds in all.
// It is an operator's view (admin.go): a page of a list that may be long
// (the web console pages through it with the last id of a page), so it
// makes views of the page only and keeps at most max pointers while it
// scans.
func (s *Shard) InFlight(dst []TxnView, after *protocol.TxnID, max int) ([]TxnView, int) {
	if max <= 0 {
		return dst, s.txns.len()
	}
	// page holds the smallest ids seen so far past after, sorted: a new
	// id goes in only if it is smaller than the largest kept. Ids compare
	// as two big-endian words (their byte order), the scan's only work
	// for most of a long list.
	type entry struct {
		hi, lo uint64
		t      *coordTxn
	}
	key := func(id *protocol.TxnID) (uint64, uint64) {
		return binary.BigEndian.Uint64(id[:8]), binary.BigEndian.Uint64(id[8:])
	}
	less := func(ahi, alo, bhi, blo uint64) bool { return ahi < bhi || ahi == bhi && alo < blo }
	var fromHi, fromLo uint64
	if after != nil {
		fromHi, fromLo = key(after)
	}
	page := make([]entry, 0, min(max, s.txns.len()))
	for id, t := range s.txns.all() {
		hi, lo := key(&id)
		if after != nil && !less(fromHi, fromLo, hi, lo) {
			continue
		}
		if len(page) == max && !less(hi, lo, page[max-1].hi, page[max-1].lo) {
			continue
		}
		i, _ := slices.BinarySearchFunc(page, entry{hi: hi, lo: lo}, func(e, x entry) int {
			if less(e.hi, e.lo, x.hi, x.lo) {
				return -1
			}
			return 1 // ids are distinct
		})
		if len(page) == max {
			page = page[:max-1]
		}
		page = slices.Insert(page, i, entry{hi, lo, t})
	}
	for _, e := range page {
		dst = append(dst, s.view(e.t))
	}
	return dst, s.txns.len()
}

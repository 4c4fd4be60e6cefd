package engine

import (
	"bytes"
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
		return dst, len(s.txns)
	}
	// page holds the smallest ids seen so far past after, sorted: a new
	// id goes in only if it is smaller than the largest kept.
	page := make([]*coordTxn, 0, min(max, len(s.txns)))
	less := func(a, b *coordTxn) int { return bytes.Compare(a.id[:], b.id[:]) }
	for _, t := range s.txns {
		if after != nil && bytes.Compare(t.id[:], after[:]) <= 0 {
			continue
		}
		if len(page) == max && less(t, page[max-1]) >= 0 {
			continue
		}
		i, _ := slices.BinarySearchFunc(page, t, less)
		if len(page) == max {
			page = page[:max-1]
		}
		page = slices.Insert(page, i, t)
	}
	for _, t := range page {
		dst = append(dst, s.view(t))
	}
	return dst, len(s.txns)
}

package coordinator

import (
	"fmt"
	"slices"
	"time"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/protocol"
	"github.com/commitd/commitd/wal"
)

// The id window of a reign (docs/ha.md). A lone coordinator refuses every
// id older than its start: it may have used one before a restart and
// forgotten it. A new leader of a group need not forget so much. Every
// replica applies every committed entry, and the group replicates, before
// it acts on them, everything a later reign must know to refuse a reused
// id: commit records (then ends), and an abort marker (engine.RecAborted)
// for every abort decision and every "aborted" reply, which no record
// backs otherwise. So a replica remembers what ended or was aborted for
// a while (memory), a new reign restores that into its shards and takes
// StartUnixMs = the time since which that memory is complete, and a begin
// made just before a failover runs at the new leader instead of being
// refused stale-id, while a reused id is still caught. A reign also
// remembers the ids it presumes aborted (engine.ShardConfig.
// RememberPresumedAborts): an earlier reign may have begun one, and a
// reuse of it must not meet that abort at a participant.
//
// An abort marker committed in the reign's own term also proves that this
// replica still led after it made the abort (a quorum took the entry in
// its term, so no later leader had been elected): it replaces a ReadIndex
// as the gate a stale leader cannot pass (replica.holdAbort).

// memory is what a replica remembers of transactions that ended or were
// aborted: owned by the replica's run goroutine.
type memory struct {
	ended map[protocol.TxnID]endedTxn
	order []endedRef // oldest first from head, for pruning; may name entries since replaced
	head  int
	// since is the Unix ms since which the memory is complete: the
	// replica's start, or the leader's snapshot it last installed (the
	// memory is not in snapshots), or later if the bound made it drop
	// an entry early.
	since  int64
	keepMs int64 // how long an entry is kept after it was applied
	max    int   // entries at most
}

// endedTxn is a transaction that ended (its commit record) or was aborted
// (commit nil), applied at Unix ms at.
type endedTxn struct {
	commit []byte
	at     int64
}

type endedRef struct {
	txn protocol.TxnID
	at  int64
}

func newMemory(keep time.Duration, maxTxns int) memory {
	return memory{ended: make(map[protocol.TxnID]endedTxn), keepMs: keep.Milliseconds(), max: maxTxns,
		since: time.Now().UnixMilli()}
}

// reset forgets everything: the memory is complete from now on.
func (m *memory) reset() {
	clear(m.ended)
	m.order, m.head = m.order[:0], 0
	m.since = time.Now().UnixMilli()
}

func (m *memory) add(id protocol.TxnID, commit []byte, now int64) {
	m.ended[id] = endedTxn{commit: commit, at: now}
	m.order = append(m.order, endedRef{id, now})
}

// forget drops id: a commit record reuses it (after every replica forgot
// its first use).
func (m *memory) forget(id protocol.TxnID) { delete(m.ended, id) }

// prune drops what is older than keepMs, and the oldest beyond max: then
// the memory is complete only from a little after that one was applied
// (an id's first use may have been stamped up to maxAheadMs before).
func (m *memory) prune(now, maxAheadMs int64) {
	k := m.head
	for ; k < len(m.order); k++ {
		ref := m.order[k]
		e, ok := m.ended[ref.txn]
		old := now-ref.at > m.keepMs
		if !old && len(m.ended) <= m.max {
			break
		}
		if ok && e.at == ref.at {
			delete(m.ended, ref.txn)
			if !old {
				m.since = max(m.since, ref.at+maxAheadMs+1)
			}
		}
	}
	m.head = k
	if m.head > len(m.order)/2 {
		// Compact once half is pruned: each entry is moved O(1) times.
		m.order = append(m.order[:0], m.order[m.head:]...)
		m.head = 0
	}
}

// restore gives a reign's shards what the memory holds, in transaction
// order: an ended commit as its commit and end records, an abort as
// remembered. It returns how many records each shard restored, and the
// last LSN, after idx and lsn.
func (m *memory) restore(g *reign, idx []uint64, lsn wal.LSN) (wal.LSN, error) {
	ids := make([]protocol.TxnID, 0, len(m.ended))
	for id := range m.ended {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b protocol.TxnID) int { return slices.Compare(a[:], b[:]) })
	var rec engine.Record
	for _, id := range ids {
		k := engine.ShardFor(id, len(g.shards))
		e := m.ended[id]
		if e.commit == nil {
			g.shards[k].RestoreAborted(id)
			continue
		}
		rec = engine.Record{}
		if err := rec.UnmarshalBinary(e.commit); err != nil {
			panic(fmt.Sprintf("coordinator: a record apply accepted does not decode: %v", err))
		}
		for _, r := range []engine.Record{rec, {Type: engine.RecEnd, Txn: id}} {
			if err := g.shards[k].Restore(r); err != nil {
				return lsn, err
			}
			idx[k]++
			lsn++
			g.pumps[k].Restored(idx[k], lsn)
		}
	}
	return lsn, nil
}

// marker is the record an abort marker carries.
func marker(id protocol.TxnID) []byte {
	b, err := (&engine.Record{Type: engine.RecAborted, Txn: id}).AppendBinary(nil)
	if err != nil {
		panic(fmt.Sprintf("coordinator: encoding an abort marker: %v", err))
	}
	return b
}

// holdAbort sends an abort decision a shard produced once its marker is
// committed in the reign's term. No record backs an abort (presumed abort
// answers an inquiry or a vote about a transaction the shard does not
// know; a timeout aborts one it never decided): a leader that was paused
// or cut off, and does not know yet that another replica leads, could
// answer "abort" for a transaction the new leader committed — its marker
// cannot commit in its old term, so the abort never leaves. And a later
// reign learns the id from the marker, so it refuses a reuse that this
// abort could otherwise reach. If the reign ends first the decision is
// dropped; the participant asks again. Called on a pump goroutine.
func (r *replica) holdAbort(shard int, to string, txn protocol.TxnID) {
	g := r.cur.Load()
	if g == nil {
		return
	}
	lsn, err := g.log.Append(marker(txn))
	if err != nil {
		return // the reign has ended
	}
	g.log.Notify(lsn, &heldAbort{s: r.s, shard: shard, to: to, txn: txn})
}

// heldAbort is an abort decision waiting for its marker.
type heldAbort struct {
	s     *Server
	shard int
	to    string
	txn   protocol.TxnID
}

func (h *heldAbort) LogDurable(wal.LSN) {
	// The participant may have been removed meanwhile (partmembers.go):
	// nothing names it any more, so there is no one to tell.
	if p := h.s.set().peers[h.to]; p != nil {
		d := wire.Decision{Txn: h.txn, Decision: protocol.DecisionAbort}
		p.send(h.shard, &d)
	}
}

func (h *heldAbort) LogFailed(wal.LSN, error) {} // deposed: dropped

// holdReply sends an "aborted" outcome once its marker is committed in the
// reign's term, for the same reasons as holdAbort: a later reign must
// refuse a reuse of an id whose client was told aborted. Called on a pump
// goroutine; o is copied.
func (r *replica) holdReply(cc *clientConn, reqID uint64, o *wire.Outcome) {
	g := r.cur.Load()
	if g == nil {
		return // the client sees its connection close: unknown
	}
	lsn, err := g.log.Append(marker(o.Txn))
	if err != nil {
		return
	}
	h := &heldReply{cc: cc, reqID: reqID, o: *o}
	h.o.Participant, h.o.Detail = slices.Clone(o.Participant), slices.Clone(o.Detail)
	g.log.Notify(lsn, h)
}

// heldReply is an "aborted" outcome waiting for its marker.
type heldReply struct {
	cc    *clientConn
	reqID uint64
	o     wire.Outcome
}

func (h *heldReply) LogDurable(wal.LSN) { _ = h.cc.conn.Reply(h.reqID, &h.o) }

func (h *heldReply) LogFailed(wal.LSN, error) {} // deposed: the client sees unknown

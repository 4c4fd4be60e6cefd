package coordinator

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/commitd/commitd/protocol"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// entryOf is a raft entry of index and term holding records proposed by
// proposer's reign of reignTerm, as replog.take makes them.
func entryOf(t *testing.T, index, term, reignTerm, proposer uint64, recs ...engine.Record) *pb.Entry {
	t.Helper()
	d := binary.LittleEndian.AppendUint64(nil, reignTerm)
	d = binary.LittleEndian.AppendUint64(d, proposer)
	d = binary.LittleEndian.AppendUint64(d, 1)
	d = binary.LittleEndian.AppendUint32(d, uint32(len(recs)))
	for _, r := range recs {
		b, err := r.AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		d = binary.LittleEndian.AppendUint32(d, uint32(len(b)))
		d = append(d, b...)
	}
	return &pb.Entry{Index: proto.Uint64(index), Term: proto.Uint64(term), Type: pb.EntryNormal.Enum(), Data: d}
}

// A deposed reign's records that reached the raft log in a later term (a
// follower handed its proposal on to the leader — proposal forwarding,
// now off) are skipped by apply: a chaos run had the term-1 reign's commit
// record for a transaction the term-2 leader had already presumed aborted
// (its abort marker committed, the participants told abort) committed in
// term 2, and every later leader redelivered that commit to participants
// that had aborted. The records of an entry appended in their own reign's
// term are applied as before.
func TestApplySkipsADeposedReignsEntry(t *testing.T) {
	r := &replica{
		open:  make(map[protocol.TxnID][]byte),
		ended: newMemory(time.Minute, 100),
		s:     &Server{cfg: Config{Logger: nodetest.Quiet()}},
	}
	x, y := protocol.TxnID{1}, protocol.TxnID{2}
	// Term 2's marker for x: the new leader presumed it aborted.
	if err := r.apply(entryOf(t, 10, 2, 2, 2, engine.Record{Type: engine.RecAborted, Txn: x})); err != nil {
		t.Fatal(err)
	}
	// The term-1 reign's commit record for x (and y), appended in term 2.
	if err := r.apply(entryOf(t, 11, 2, 1, 3,
		engine.Record{Type: engine.RecCommit, Txn: x, Participants: []string{"p1", "p2"}},
		engine.Record{Type: engine.RecCommit, Txn: y, Participants: []string{"p1"}})); err != nil {
		t.Fatal(err)
	}
	if len(r.open) != 0 {
		t.Fatalf("a deposed reign's commit records were applied: %d open", len(r.open))
	}
	if e, ok := r.ended.ended[x]; !ok || e.commit != nil {
		t.Fatalf("x is remembered as %+v (%v), want aborted", e, ok)
	}
	if n := r.staleEntries.Load(); n != 1 || r.applied != 11 {
		t.Fatalf("stale entries %d, applied %d; want 1, 11", n, r.applied)
	}
}

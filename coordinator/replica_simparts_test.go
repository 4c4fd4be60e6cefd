package coordinator_test

import (
	"encoding/binary"
	"slices"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/protocol"
)

// Participant changes in the replica simulation (partmembers.go; docs/ha.md,
// "Participants"): a third participant, p3, is not in the replicas'
// --participant lists ({p1, p2}); once some transactions ran, the leader
// adds it with a tagged raft entry, begins then name it (p3 with p1 or p2),
// and later the leader removes it — only when its shard names p3 in no
// transaction and p3 holds none prepared (the operator's check, docs/ha.md),
// withdrawing it from new begins first — then adds it again. Every replica
// applies the changes in log order: an add puts the name in its table, a
// removal takes it out unless a commit record without an end names it
// (refused alike on every replica); snapshots carry the table.
//
// A reign sends nothing but a (presumed) abort to a participant outside
// its replica's table — the real coordinator has no connection to it, and
// would panic on anything else — and a replica takes no message from one
// (its Hello is refused). Checked: a reign never holds a transaction
// naming a participant outside its table (it would have to send it a
// prepare or a commit), and, at the end, every participant a committed
// transaction names has applied it. Planted bugs: a snapshot that drops the
// table (a replica restored from it knows only its flags), and a removal
// that skips both checks (the leader's shards and the log's open commits).

// simFlags is every replica's --participant list.
var simFlags = []string{"p1", "p2"}

const simPartsSection = 0xFFFFFFFE

// simPartEntry is a participant change's entry: u64 0 | u8 1 | u8 op (1
// add, 2 remove) | name (the real entry also carries the proposer, a
// sequence and the proposer's table, which the simulation's replicas, all
// given the same flags, need not).
func simPartEntry(remove bool, name string) []byte {
	b := make([]byte, 8, 16)
	op := byte(1)
	if remove {
		op = 2
	}
	return append(append(b, 1, op), name...)
}

// table is the participants replica n serves: its log's, or its flags
// while the log holds none.
func (n *simNode) partTable() []string {
	if n.table == nil {
		return simFlags
	}
	return n.table
}

func (n *simNode) knows(name string) bool { return slices.Contains(n.partTable(), name) }

// applyParts applies a participant change, as replica.applyParticipants.
func (s *sim) applyParts(n *simNode, d []byte) {
	remove, name := d[9] == 2, string(d[10:])
	t := slices.Clone(n.partTable())
	switch {
	case !remove && !slices.Contains(t, name):
		t = append(t, name)
		slices.Sort(t)
	case remove && slices.Contains(t, name):
		if !s.bugs.removeInDoubt {
			for _, c := range n.open {
				var rec engine.Record
				if err := rec.UnmarshalBinary(c); err != nil {
					s.t.Fatal(err)
				}
				if slices.Contains(rec.Participants, name) {
					s.events["participant removals refused at apply"]++
					return
				}
			}
		}
		t = slices.DeleteFunc(t, func(x string) bool { return x == name })
	}
	n.table = t
}

// appendParts is a snapshot's participants section, as replica.appendParts.
func (s *sim) appendParts(n *simNode, b []byte) []byte {
	if n.table == nil || s.bugs.snapshotDropsParts {
		return b
	}
	b = binary.LittleEndian.AppendUint32(b, simPartsSection)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(n.table)))
	for _, name := range n.table {
		b = append(b, byte(len(name)))
		b = append(b, name...)
	}
	return b
}

// takeParts reads a snapshot's participants section into n's table.
func (s *sim) takeParts(n *simNode, d []byte) []byte {
	n.table = nil
	if len(d) < 4 || binary.LittleEndian.Uint32(d) != simPartsSection {
		return d
	}
	k := binary.LittleEndian.Uint32(d[4:])
	d = d[8:]
	n.table = []string{}
	for range k {
		l := int(d[0])
		n.table = append(n.table, string(d[1:1+l]))
		d = d[1+l:]
	}
	return d
}

// mayDeliver reports whether replica n's reign may send m: anything to a
// participant of its table; only a (presumed) abort to one outside it,
// which is dropped (there is no connection to send it on). Anything else
// means the reign holds a transaction naming a participant it does not
// know: the real coordinator panics there.
func (s *sim) mayDeliver(n *simNode, m engine.Message) bool {
	if n.knows(m.To) {
		return true
	}
	if m.Type == engine.MsgDecision && m.Decision == protocol.DecisionAbort {
		s.events["aborts to a removed participant dropped"]++
		return false
	}
	s.fail("replica %d's reign sends %v %v of txn %x to %s, which is not in its table %v",
		n.id, m.Type, m.Decision, m.Txn[:], m.To, n.partTable())
	return false
}

// beginParts are the participants a new transaction names at leader n.
func (s *sim) beginParts(n *simNode) []string {
	if n.knows("p3") && n.reign.withdrawn != "p3" && s.rng.IntN(3) == 0 {
		return []string{simFlags[s.rng.IntN(2)], "p3"}
	}
	return simFlags
}

// changeParts proposes the next participant change at the leader, at most
// one every 30 ticks: add p3, and once 15 transactions named it, remove it
// when nothing names it, then add it again.
func (s *sim) changeParts() {
	if len(s.txns) < 20 || s.now < s.lastPartChange+30 || s.partChanges >= 4 {
		return
	}
	l := s.leader()
	if l == nil || s.now < l.pausedUntil {
		return
	}
	g := l.reign
	if !l.knows("p3") {
		g.withdrawn = "" // added again: no longer barred
		if l.rn.Propose(simPartEntry(false, "p3")) == nil {
			s.lastPartChange = s.now
			s.partChanges++
			s.events["participant adds proposed"]++
			s.drive(l)
		}
		return
	}
	if s.p3Named < 15 || g.withdrawn == "p3" {
		return
	}
	if !s.bugs.removeInDoubt && (g.shard.Naming("p3") > 0 || s.parts["p3"].p.Stats().Prepared > 0) {
		return
	}
	// Withdrawn from new begins for the rest of the reign; the shard names
	// it in nothing, so nothing is barred that it holds.
	g.withdrawn = "p3"
	if l.rn.Propose(simPartEntry(true, "p3")) == nil {
		s.lastPartChange, s.p3Named = s.now, 0
		s.partChanges++
		s.events["participant removals proposed"]++
		s.drive(l)
	}
}

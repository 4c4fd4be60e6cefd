package participant

import (
	"time"

	"github.com/commitd/commitd/cluster"
	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/protocol"
)

// This file holds how a participant of a cluster of coordinator groups
// (docs/scale.md) talks to them: every message about a transaction goes to
// the group stamped in its id, and within a group of several replicas as
// it would to one replicated coordinator (route.go). Nothing is ever sent
// to another group: a group that does not own a transaction presumes it
// aborted (the coordinator's --group refuses to answer, as a second
// guard).

// groupLink is one coordinator group as this participant sees it.
type groupLink struct {
	peers []*mux.Peer // the connections this participant dials, one per replica
	route *router     // finds the group's leader; nil for a group of one replica
}

// clusterAddrs lists every replica of every group of m but the retired
// ones (which own no transaction any participant may still hold
// undecided), in the order dialGroups follows.
func clusterAddrs(m *cluster.Map) []string {
	var addrs []string
	for _, g := range m.Groups {
		if g.State != cluster.Retired {
			for _, r := range g.Replicas {
				addrs = append(addrs, r.Addr)
			}
		}
	}
	return addrs
}

// dialGroups sets up s.groups from m, and groupOrder in clusterAddrs'
// order.
func (s *Server) dialGroups(m *cluster.Map) {
	s.groups = make(map[uint16]*groupLink, len(m.Groups))
	for _, g := range m.Groups {
		if g.State == cluster.Retired {
			continue
		}
		l := &groupLink{}
		if len(g.Replicas) > 1 {
			l.route = newRouter(s.cfg.InquireAfter, max(s.cfg.InquireAfter, time.Second))
		}
		s.groups[g.ID] = l
		for range g.Replicas {
			s.groupOrder = append(s.groupOrder, l)
		}
	}
}

// groupAt is the group of the i-th coordinator address dialed, or nil
// without a cluster.
func (s *Server) groupAt(i int) *groupLink {
	if i < len(s.groupOrder) {
		return s.groupOrder[i]
	}
	return nil
}

// arrived notes that a prepare or decision for txn came on c (route.go).
func (s *Server) arrived(c *mux.Conn, txn protocol.TxnID) {
	switch {
	case s.route != nil:
		s.route.arrived(c, txn)
	case s.groups != nil:
		if g := s.groups[cluster.GroupOf(txn)]; g != nil && g.route != nil {
			g.route.arrived(c, txn)
		}
	}
}

// sendToGroup sends a vote, ack or inquiry to the group that owns its
// transaction, and reports false when this participant serves no cluster.
// A transaction of a group the map does not list is dropped and counted:
// only its own group may answer about it.
func (s *Server) sendToGroup(m *engine.Message, wm wire.Message) bool {
	if s.groups == nil {
		return false
	}
	g := s.groups[cluster.GroupOf(m.Txn)]
	if g == nil {
		s.unknownGroup.Add(1)
		return true
	}
	if g.route != nil && g.route.send(m, wm) {
		return true
	}
	for _, p := range g.peers {
		_ = p.SendVia(0, wm) // every replica of the group: only its leader takes it
	}
	return true
}

// retiredInDoubt appends to dst the transactions of held whose group m
// lists as retired and that are undecided here (prepared, or still being
// prepared): the participant aborts them without asking anyone
// (docs/protocol.md, "Retired groups"). This is safe because a group is
// retired only once drained — nothing in flight and every commit
// acknowledged by every participant — so its commits are all finished
// here, and what is still undecided was never committed: presumed abort,
// checked by the drain rather than assumed. A draining group is not
// retired: it may still decide what it holds.
func retiredInDoubt(dst []protocol.TxnID, m *cluster.Map, held []engine.PreparedView) []protocol.TxnID {
	for _, v := range held {
		switch v.State {
		case "prepared", "preparing", "voting":
		default:
			continue // the decision is in: committing or aborting
		}
		if g, ok := m.Group(cluster.GroupOf(v.Txn)); ok && g.State == cluster.Retired {
			dst = append(dst, v.Txn)
		}
	}
	return dst
}

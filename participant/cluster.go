package participant

import (
	"context"
	"errors"
	"fmt"
	"slices"
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

// clusterView is one version of the cluster map as this participant uses
// it: the map, and a link to every group it does not list as retired.
// A view is not changed once published (Server.cluster); a reload
// publishes a new one.
type clusterView struct {
	m      *cluster.Map
	groups map[uint16]*groupLink
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

// newGroupLink is the link to group g, without its peers.
func (s *Server) newGroupLink(g *cluster.Group) *groupLink {
	l := &groupLink{}
	if len(g.Replicas) > 1 {
		l.route = newRouter(s.cfg.InquireAfter, max(s.cfg.InquireAfter, time.Second))
	}
	return l
}

// dialGroups publishes the first view of m, and sets up groupOrder in
// clusterAddrs' order (Start then dials a peer for each address).
func (s *Server) dialGroups(m *cluster.Map) {
	v := &clusterView{m: m, groups: make(map[uint16]*groupLink, len(m.Groups))}
	for i := range m.Groups {
		g := &m.Groups[i]
		if g.State == cluster.Retired {
			continue
		}
		l := s.newGroupLink(g)
		v.groups[g.ID] = l
		for range g.Replicas {
			s.groupOrder = append(s.groupOrder, l)
		}
	}
	s.cluster.Store(v)
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
	if s.route != nil {
		s.route.arrived(c, txn)
		return
	}
	if v := s.cluster.Load(); v != nil {
		if g := v.groups[cluster.GroupOf(txn)]; g != nil && g.route != nil {
			g.route.arrived(c, txn)
		}
	}
}

// sendToGroup sends a vote, ack or inquiry to the group that owns its
// transaction, and reports false when this participant serves no cluster.
// Nothing is ever sent to another group, nor to a retired one: a YES vote
// or an inquiry for a retired group's transaction is answered here, by an
// abort (the retired rule, retiredInDoubt; a one-phase YES means
// committed, and the machine ignores that abort). A transaction of a
// group the map does not list is dropped and counted: only its own group
// may answer about it, and a map that lists it may come.
func (s *Server) sendToGroup(m *engine.Message, wm wire.Message) bool {
	v := s.cluster.Load()
	if v == nil {
		return false
	}
	id := cluster.GroupOf(m.Txn)
	g := v.groups[id]
	if g == nil {
		if grp, ok := v.m.Group(id); ok && grp.State == cluster.Retired {
			if m.Type == engine.MsgInquire || m.Type == engine.MsgVote && m.Vote == protocol.VoteYes {
				s.abortRetired(m.Txn, v.m.Version)
			}
			return true
		}
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

// abortRetired gives the machine the abort of txn, whose group the map of
// version says is retired (the retired rule). On the pump's goroutine or
// any other.
func (s *Server) abortRetired(txn protocol.TxnID, version uint64) {
	s.retiredAborts.Add(1)
	s.cfg.Logger.Warn("aborting a transaction of a retired coordinator group: the group was drained, so it never committed it",
		"txn", txn.String(), "group", cluster.GroupOf(txn), "map_version", version)
	s.pump.Inject(&engine.Message{Type: engine.MsgDecision, Txn: txn, To: s.cfg.Name, Decision: protocol.DecisionAbort})
}

// ErrClusterReload marks a cluster map that ReloadCluster refused; the
// map in use is kept.
var ErrClusterReload = errors.New("cluster map refused")

// ReloadCluster replaces the cluster map this participant uses with m
// (SIGHUP re-reads --cluster): m must follow the map in use
// (cluster.Map.CanFollow) and keep every group's replicas as they are
// (a running participant dials the groups a map adds, but re-dials no
// group it has: restart it for that). Groups m adds are dialed; groups m
// retires are closed, and what this participant holds undecided of them
// is aborted (retiredInDoubt). A refused map changes nothing.
func (s *Server) ReloadCluster(ctx context.Context, m *cluster.Map) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	old := s.cluster.Load()
	if old == nil {
		return fmt.Errorf("%w: this participant was started with --coordinator, not a cluster map", ErrClusterReload)
	}
	if err := m.CanFollow(old.m); err != nil {
		return fmt.Errorf("%w: %v; keeping version %d", ErrClusterReload, err, old.m.Version)
	}
	for i := range m.Groups {
		g := &m.Groups[i]
		prev, ok := old.m.Group(g.ID)
		if ok && g.State != cluster.Retired && !slices.Equal(prev.Replicas, g.Replicas) {
			return fmt.Errorf("%w: version %d changes group %d's replicas, which a running participant does not re-dial: restart it with the new map; keeping version %d",
				ErrClusterReload, m.Version, g.ID, old.m.Version)
		}
	}
	v := &clusterView{m: m, groups: make(map[uint16]*groupLink, len(m.Groups))}
	var retired []*groupLink
	for i := range m.Groups {
		g := &m.Groups[i]
		l := old.groups[g.ID]
		switch {
		case g.State == cluster.Retired:
			if l != nil {
				retired = append(retired, l)
			}
			continue
		case l == nil:
			l = s.newGroupLink(g)
			for _, r := range g.Replicas {
				l.peers = append(l.peers, s.dialCoordinator(r.Addr))
			}
			s.addedMu.Lock()
			s.added = append(s.added, l.peers...)
			s.addedMu.Unlock()
			s.cfg.Logger.Info("cluster map: dialing a new coordinator group", "group", g.ID, "map_version", m.Version)
		}
		v.groups[g.ID] = l
	}
	s.cluster.Store(v)
	s.cfg.Logger.Info("cluster map reloaded", "version", m.Version, "previous", old.m.Version)
	for _, l := range retired {
		for _, p := range l.peers {
			p.Close() // the group's process is gone: stop redialling it
		}
	}
	var ids []protocol.TxnID
	if err := s.pump.Do(ctx, func() {
		held, _ := s.machine.InDoubt(nil, 0)
		ids = retiredInDoubt(nil, m, held)
	}); err != nil {
		return err // the map is in use; its inquiries abort the rest
	}
	for _, id := range ids {
		s.abortRetired(id, m.Version)
	}
	return nil
}

// waitGroups waits until this participant's own connection to every
// replica of every group of the map in use is up: the groups a reload
// added too, which Start's peers do not cover, and no retired group, whose
// peers are closed. Until it is up, the votes, acks and inquiries for that
// group's transactions are dropped (mux.Peer): the protocol copes — the
// group times its prepare out and aborts — but a caller that is about to
// send the group's prepares (a test, a harness) waits here first.
func (s *Server) waitGroups(ctx context.Context) error {
	for {
		v := s.cluster.Load()
		err := waitView(ctx, v)
		if s.cluster.Load() == v {
			if err != nil {
				return fmt.Errorf("participant %s: %w", s.cfg.Name, err)
			}
			return nil
		}
		// A reload replaced the map meanwhile: it may add a group, or
		// have closed the peers waited for (a group it retires). Wait
		// for the new map's (the groups already up return at once).
	}
}

// waitView waits for a connection of every peer of every group of v, in
// the map's order.
func waitView(ctx context.Context, v *clusterView) error {
	for i := range v.m.Groups {
		id := v.m.Groups[i].ID
		l := v.groups[id]
		if l == nil {
			continue // retired
		}
		for _, p := range l.peers {
			if err := p.WaitConnected(ctx); err != nil {
				return fmt.Errorf("coordinator group %d not connected: %w", id, err)
			}
		}
	}
	return nil
}

// ClusterVersion is the version of the cluster map in use, 0 without one.
func (s *Server) ClusterVersion() uint64 {
	if v := s.cluster.Load(); v != nil {
		return v.m.Version
	}
	return 0
}

// closeAdded closes the peers ReloadCluster dialed, at shutdown.
func (s *Server) closeAdded() error {
	s.addedMu.Lock()
	defer s.addedMu.Unlock()
	for _, p := range s.added {
		p.Close()
	}
	return nil
}

// retiredInDoubt appends to dst the transactions of held whose group m
// lists as retired and that are undecided here (prepared, or still being
// prepared): the participant aborts them without asking anyone
// (docs/protocol.md, "Clusters of groups"). This is safe because a group is
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

// ReloadClusterFile re-reads Config.ClusterFile and hands the map to
// ReloadCluster: what SIGHUP and `commitd admin cluster reload` do. It
// returns the version in use afterwards; an error (wrapping
// ErrClusterReload when the file was read but its map refused) says in
// one line why nothing changed.
func (s *Server) ReloadClusterFile(ctx context.Context) (cluster.Reloaded, error) {
	file := s.cfg.ClusterFile
	if file == "" {
		return cluster.Reloaded{}, fmt.Errorf("%w: this participant was started without --cluster: it has no map file to reload", ErrClusterReload)
	}
	m, err := cluster.Load(file)
	if err != nil {
		v := s.ClusterVersion()
		return cluster.Reloaded{MapVersion: v, File: file}, fmt.Errorf("%w: %v; keeping version %d", ErrClusterReload, err, v)
	}
	err = s.ReloadCluster(ctx, m)
	return cluster.Reloaded{MapVersion: s.ClusterVersion(), File: file}, err
}

// sawMap notes the cluster map version a coordinator's Hello said it
// holds, and logs once per version one newer than this participant's:
// the participant does not act on it (the operator's tooling pushes the
// file; a map is taken only by SIGHUP or admin cluster reload), it says
// so.
func (s *Server) sawMap(version uint64, from string) {
	if own := s.ClusterVersion(); s.newerMap.Saw(version, own) {
		s.cfg.Logger.Warn("a coordinator holds a newer cluster map than this participant: push the file here and reload it (SIGHUP or commitd admin cluster reload)",
			"coordinator", from, "its_version", version, "map_version", own)
	}
}

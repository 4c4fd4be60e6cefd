package coordinator

import (
	"errors"
	"fmt"

	"github.com/commitd/commitd/cluster"
	"github.com/commitd/commitd/protocol"
)

// This file holds what a coordinator group knows of the cluster's map
// (docs/scale.md): with Config.Cluster it refuses new transactions while
// the map drains or retires its group, and its refusals name the map's
// version, so that a client with an older map learns there is a newer
// one.

// ErrClusterReload marks a cluster map that ReloadCluster refused; the
// map in use is kept.
var ErrClusterReload = errors.New("cluster map refused")

// checkClusterMap checks that m, if not nil, may be the map of group g.
func checkClusterMap(m *cluster.Map, g uint16) error {
	if m == nil {
		return nil
	}
	if g == 0 {
		return errors.New("a cluster map needs the group this coordinator is (--group)")
	}
	if _, ok := m.Group(g); !ok {
		return fmt.Errorf("cluster map version %d does not list group %d, which this coordinator is", m.Version, g)
	}
	return nil
}

// refuseGroup says why a Begin of id is refused by this group (Config.Group
// is set), or "" if it is not: id is stamped for another group, or the
// map in use drains or retires this one. The first is a client's mistake
// or an old map; the second a map change the client has not taken yet.
func (s *Server) refuseGroup(id protocol.TxnID) string {
	r := cluster.Refusal{Group: s.cfg.Group, Owner: cluster.GroupOf(id)}
	m := s.clusterMap.Load()
	if m != nil {
		r.Version = m.Version
	}
	if r.Owner != r.Group {
		return r.Detail(id)
	}
	if m == nil {
		return ""
	}
	if grp, ok := m.Group(r.Group); ok && grp.State != cluster.Active {
		r.State = grp.State
		return r.Detail(id)
	}
	return ""
}

// ReloadCluster replaces the cluster map this group uses with m (SIGHUP
// re-reads --cluster): m must follow the map in use (cluster.Map.CanFollow)
// and list this group. A refused map changes nothing. What the group
// already runs is not disturbed: a draining group resolves its own.
func (s *Server) ReloadCluster(m *cluster.Map) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	old := s.clusterMap.Load()
	if old == nil {
		return fmt.Errorf("%w: this coordinator was started without a cluster map", ErrClusterReload)
	}
	if err := m.CanFollow(old); err != nil {
		return fmt.Errorf("%w: %v; keeping version %d", ErrClusterReload, err, old.Version)
	}
	if err := checkClusterMap(m, s.cfg.Group); err != nil {
		return fmt.Errorf("%w: %v; keeping version %d", ErrClusterReload, err, old.Version)
	}
	s.clusterMap.Store(m)
	s.cfg.Logger.Info("cluster map reloaded", "version", m.Version, "previous", old.Version)
	return nil
}

// ClusterVersion is the version of the cluster map in use, 0 without one.
func (s *Server) ClusterVersion() uint64 {
	if m := s.clusterMap.Load(); m != nil {
		return m.Version
	}
	return 0
}

// ReloadClusterFile re-reads Config.ClusterFile and hands the map to
// ReloadCluster: what SIGHUP and `commitd admin cluster reload` do. It
// returns the version in use afterwards; an error (wrapping
// ErrClusterReload when the file was read but its map refused) says in
// one line why nothing changed.
func (s *Server) ReloadClusterFile() (cluster.Reloaded, error) {
	file := s.cfg.ClusterFile
	if file == "" {
		return cluster.Reloaded{}, fmt.Errorf("%w: this coordinator was started without --cluster: it has no map file to reload", ErrClusterReload)
	}
	m, err := cluster.Load(file)
	if err != nil {
		v := s.ClusterVersion()
		return cluster.Reloaded{MapVersion: v, File: file}, fmt.Errorf("%w: %v; keeping version %d", ErrClusterReload, err, v)
	}
	err = s.ReloadCluster(m)
	return cluster.Reloaded{MapVersion: s.ClusterVersion(), File: file}, err
}

// sawMap notes the cluster map version a peer's Hello said it holds (a
// participant's, or another replica's of this group: from names it), and
// logs once per version one newer than this coordinator's: it does not
// act on it (the operator's tooling pushes the file; a map is taken only
// by SIGHUP or admin cluster reload), it says so.
func (s *Server) sawMap(version uint64, from string) {
	if own := s.ClusterVersion(); s.newerMap.Saw(version, own) {
		s.cfg.Logger.Warn("a peer holds a newer cluster map than this coordinator: push the file here and reload it (SIGHUP or commitd admin cluster reload)",
			"peer", from, "its_version", version, "map_version", own)
	}
}

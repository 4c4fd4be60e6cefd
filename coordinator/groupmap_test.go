package coordinator_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/cluster"
	"github.com/commitd/commitd/coordinator"
)

func groupMap(t *testing.T, version int, group2 string) *cluster.Map {
	t.Helper()
	m, err := cluster.Parse(strings.NewReader(fmt.Sprintf(
		"version %d\ngroup 1 replicas 1=127.0.0.1:1 weight 1\ngroup 2 replicas 1=127.0.0.1:2 %s\n", version, group2)), "test")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// A group that reads the cluster's map names the map's version when it
// refuses another group's Begin, takes new transactions while the map
// says it is active, refuses them (naming the version) once a reloaded
// map drains it, and refuses a map that does not follow the one in use,
// keeping it.
func TestGroupFollowsTheClusterMap(t *testing.T) {
	r := newRig(t, nil, func(c *coordinator.Config) { c.Group, c.Cluster = 2, groupMap(t, 3, "weight 1") })
	if res := r.run(cluster.Stamp(newID(), 2), "p1", "p2"); res.Outcome != client.Committed {
		t.Fatalf("a group-2 transaction while active: %+v", res)
	}
	res := r.run(cluster.Stamp(newID(), 1), "p1", "p2")
	if res.Outcome != client.Rejected || !strings.Contains(res.Detail, "belongs to group 1, and this coordinator is group 2 (cluster map version 3)") {
		t.Fatalf("another group's transaction: %+v", res)
	}

	for _, c := range []struct {
		m    *cluster.Map
		want string
	}{
		{groupMap(t, 3, "draining"), "does not follow version 3"},
		{groupMap(t, 4, "retired"), "retires group 2, which is active: drain it first"},
	} {
		if err := r.coord.ReloadCluster(c.m); !errors.Is(err, coordinator.ErrClusterReload) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("reload: %v, want %q", err, c.want)
		}
	}
	if v := r.coord.Status().MapVersion; v != 3 {
		t.Fatalf("map version %d in status after refused reloads, want 3", v)
	}

	if err := r.coord.ReloadCluster(groupMap(t, 4, "draining")); err != nil {
		t.Fatal(err)
	}
	id := cluster.Stamp(newID(), 2)
	res = r.run(id, "p1", "p2")
	if res.Outcome != client.Rejected || !strings.Contains(res.Detail, "group 2 is draining in cluster map version 4") {
		t.Fatalf("a new transaction of a draining group: %+v", res)
	}
	if r.parts["p1"].prepared(id) {
		t.Fatal("a draining group prepared a new transaction")
	}
}

// A cluster map must name the coordinator's group.
func TestClusterMapNeedsItsGroup(t *testing.T) {
	for _, c := range []struct {
		group uint16
		want  string
	}{
		{0, "needs the group this coordinator is"},
		{3, "does not list group 3"},
	} {
		cfg := coordinator.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Participants: map[string]string{"p1": "127.0.0.1:1"},
			Group: c.group, Cluster: groupMap(t, 1, "weight 1")}
		s, err := coordinator.Start(cfg)
		if err == nil {
			s.Close()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("group %d: %v, want %q", c.group, err, c.want)
		}
	}
}

package coordinator_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/cluster"
	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/internal/node/nodetest"
)

// writeMap writes m to path, as an operator's tooling pushes the file.
func writeMap(t *testing.T, path string, m *cluster.Map) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := m.Format(f); err != nil {
		t.Fatal(err)
	}
}

// `admin cluster reload` re-reads the coordinator's --cluster file over
// the admin connection: it answers the version now in use and the group
// acts on it; a file that does not parse or a map that may not follow is
// refused in one line naming why, and the map in use is kept; a
// coordinator without a map file says it has none.
func TestAdminClusterReload(t *testing.T) {
	file := filepath.Join(t.TempDir(), "cluster.map")
	writeMap(t, file, groupMap(t, 3, "weight 1"))
	r := newRig(t, nil, func(c *coordinator.Config) {
		c.Group, c.Cluster, c.ClusterFile = 2, groupMap(t, 3, "weight 1"), file
	})
	addr := r.coord.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	writeMap(t, file, groupMap(t, 4, "draining"))
	got, err := client.ReloadCluster(ctx, addr, nil)
	if err != nil || got.MapVersion != 4 || got.File != file {
		t.Fatalf("reload: %+v, %v; want version 4 from %s", got, err, file)
	}
	if res := r.run(cluster.Stamp(newID(), 2), "p1", "p2"); res.Outcome != client.Rejected || !strings.Contains(res.Detail, "draining in cluster map version 4") {
		t.Fatalf("a begin after the reload drained the group: %+v", res)
	}

	for _, c := range []struct{ text, want string }{
		{"version 5\ngroup 2 replicas 1=127.0.0.1:2 draining\nbogus\n", "cluster.map:3: unknown key \"bogus\""},
		{"version 4\ngroup 1 replicas 1=127.0.0.1:1\ngroup 2 replicas 1=127.0.0.1:2 draining\n", "does not follow version 4"},
	} {
		if err := os.WriteFile(file, []byte(c.text), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := client.ReloadCluster(ctx, addr, nil)
		var re *client.RefusedError
		if !errors.As(err, &re) || !strings.Contains(re.Message, c.want) || !strings.Contains(re.Message, "keeping version 4") || strings.Contains(re.Message, "\n") {
			t.Errorf("reload of a bad map: %v; want a one-line refusal naming %q", err, c.want)
		}
	}
	if v := r.coord.Status().MapVersion; v != 4 {
		t.Fatalf("map version %d after refused reloads, want 4", v)
	}
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if _, err := client.ReloadCluster(ctx, addr, nil); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("reload of a missing file: %v", err)
	}

	plain := newRig(t, nil)
	_, err = client.ReloadCluster(ctx, plain.coord.Addr().String(), nil)
	var re *client.RefusedError
	if !errors.As(err, &re) || !strings.Contains(re.Message, "started without --cluster") {
		t.Fatalf("reload at a coordinator without a map: %v", err)
	}
}

// The replicas of a group tell each other their map versions in their
// Hellos: the two behind report the third's newer version, and it reports
// none; none of them changes its map.
func TestReplicasSeeANewerMap(t *testing.T) {
	g := newGroup(t, func(c *coordinator.Config) {
		v := 1
		if c.ID == 3 {
			v = 2
		}
		c.Group, c.Cluster = 1, groupMap(t, v, "weight 1")
	})
	nodetest.Eventually(t, "replicas 1 and 2 see replica 3's version 2", func() bool {
		return g.coords[1].Status().NewerMapSeen == 2 && g.coords[2].Status().NewerMapSeen == 2
	})
	for id, want := range map[uint64]uint64{1: 1, 2: 1, 3: 2} {
		if st := g.coords[id].Status(); st.MapVersion != want || id == 3 && st.NewerMapSeen != 0 {
			t.Errorf("replica %d: map version %d, newer seen %d; want its own %d, and nothing newer at 3", id, st.MapVersion, st.NewerMapSeen, want)
		}
	}
}

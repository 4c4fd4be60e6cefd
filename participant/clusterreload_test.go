package participant_test

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
	"github.com/commitd/commitd/internal/node/nodetest"
)

func writeMapFile(t *testing.T, path string, m *cluster.Map) {
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

// `admin cluster reload` re-reads a participant's --cluster file, as
// SIGHUP: it answers the version now in use (and the participant acts on
// it: what it held of a group the map retires is aborted); a map that
// may not follow is refused in one line and the map in use kept; a
// participant without a map file says so.
func TestAdminClusterReload(t *testing.T) {
	r := newClusterRig(t, 1, 2)
	file := filepath.Join(t.TempDir(), "cluster.map")
	r.cfg.ClusterFile = file
	writeMapFile(t, file, r.mapOf(1, nil))
	r.start(r.mapOf(1, nil))
	addr := r.p.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	held := r.prepared(2, 1)

	writeMapFile(t, file, r.mapOf(2, map[uint16]string{2: "retired"})) // not drained first
	_, err := client.ReloadCluster(ctx, addr, nil)
	var re *client.RefusedError
	if !errors.As(err, &re) || !strings.Contains(re.Message, "retires group 2, which is active") || !strings.Contains(re.Message, "keeping version 1") {
		t.Fatalf("reload of a map that may not follow: %v", err)
	}
	for _, v := range []struct {
		version uint64
		state   string
	}{{2, "draining"}, {3, "retired"}} {
		writeMapFile(t, file, r.mapOf(v.version, map[uint16]string{2: v.state}))
		got, err := client.ReloadCluster(ctx, addr, nil)
		if err != nil || got.MapVersion != v.version {
			t.Fatalf("reload to version %d: %+v, %v", v.version, got, err)
		}
	}
	nodetest.Eventually(t, "the retired group's transaction aborted", func() bool { return !r.inDoubt()[held] })
	if st := r.status(); st.MapVersion != 3 || st.RetiredAborts < 1 {
		t.Fatalf("status after reloads: version %d, retired aborts %d", st.MapVersion, st.RetiredAborts)
	}

	plain := newClusterRig(t, 1)
	plain.start(plain.mapOf(1, nil)) // a map, but no file to re-read
	_, err = client.ReloadCluster(ctx, plain.p.Addr().String(), nil)
	if !errors.As(err, &re) || !strings.Contains(re.Message, "started without --cluster") {
		t.Fatalf("reload at a participant without a map file: %v", err)
	}
}

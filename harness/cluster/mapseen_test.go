package cluster_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	commitdcluster "github.com/commitd/commitd/cluster"
	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/commitd/commitd/participant"
	"github.com/commitd/commitd/participant/bank"
)

// lockedBuffer is a log destination shared by a server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Processes tell each other their cluster map versions in their Hellos
// (docs/scale.md): a coordinator whose map is older than a participant's
// reports the newer version in its status (newer_map_seen) and logs it
// once, and acts on nothing (it keeps its own map); a participant whose
// map is older than the coordinator's does the same; a process with the
// newest map, or one that has since taken it, reports nothing.
func TestNewerMapSeenInHellos(t *testing.T) {
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	coordLn, partLn := listen(), []net.Listener{listen(), listen()}
	mapOf := func(v int) *commitdcluster.Map {
		m, err := commitdcluster.Parse(strings.NewReader(fmt.Sprintf("version %d\ngroup 1 replicas 1=%s weight 1\n", v, coordLn.Addr())), "test")
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	var coordLog lockedBuffer
	coord, err := coordinator.Start(coordinator.Config{Listener: coordLn, DataDir: t.TempDir(), Group: 1, Cluster: mapOf(2),
		SegmentBytes: 1 << 20, Logger: slog.New(slog.NewTextHandler(&coordLog, nil)),
		Participants: map[string]string{"p1": partLn[0].Addr().String(), "p2": partLn[1].Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { coord.Close() })
	// p1 is behind the coordinator (version 1), p2 ahead (version 3).
	var parts []*participant.Server
	var partLogs [2]lockedBuffer
	for i, v := range []int{1, 3} {
		p, err := participant.Start(participant.Config{Name: fmt.Sprintf("p%d", i+1), Listener: partLn[i], DataDir: t.TempDir(),
			Cluster: mapOf(v), Resource: bank.New(10, 10), SegmentBytes: 1 << 20, Logger: slog.New(slog.NewTextHandler(&partLogs[i], nil))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		parts = append(parts, p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := coord.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range parts {
		if err := p.WaitConnected(ctx); err != nil {
			t.Fatal(err)
		}
	}
	status := func(i int) participant.Status {
		var st participant.Status
		nodetest.Report(t, partLn[i].Addr().String(), "status", &st)
		return st
	}
	nodetest.Eventually(t, "the coordinator sees p2's version 3, p1 the coordinator's 2", func() bool {
		return coord.Status().NewerMapSeen == 3 && status(0).NewerMapSeen == 2
	})
	if st := status(1); st.NewerMapSeen != 0 || st.MapVersion != 3 {
		t.Fatalf("p2, with the newest map: %+v", st)
	}
	if st := coord.Status(); st.MapVersion != 2 {
		t.Fatalf("the coordinator acted on a peer's version: it uses %d, want its own 2", st.MapVersion)
	}
	// The log line follows the status by a moment: wait for it, then
	// check that more Hellos of the same version did not repeat it.
	const line = "holds a newer cluster map"
	nodetest.Eventually(t, "the newer maps logged", func() bool {
		return strings.Contains(coordLog.String(), line) && strings.Contains(partLogs[0].String(), line)
	})
	if n := strings.Count(coordLog.String(), line); n != 1 {
		t.Errorf("the coordinator logged a newer map %d times, want once:\n%s", n, coordLog.String())
	}
	if n := strings.Count(partLogs[0].String(), line); n != 1 {
		t.Errorf("p1 logged a newer map %d times, want once", n)
	}
	if strings.Contains(partLogs[1].String(), line) {
		t.Errorf("p2, with the newest map, logged a newer one")
	}
	// Once a process takes the newer map it has nothing newer to report.
	if err := coord.ReloadCluster(mapOf(3)); err != nil {
		t.Fatal(err)
	}
	if v := coord.Status().NewerMapSeen; v != 0 {
		t.Fatalf("newer_map_seen %d after taking version 3, want 0", v)
	}
}

package bench

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/client/clienttest"
	"github.com/commitd/commitd/cluster"
	"github.com/google/uuid"
)

// TestRunCluster drives two stand-in coordinators as groups 1 and 2 of a
// cluster map (weights 1 and 3): every id a group receives is stamped
// with that group, the groups' shares follow the weights, the per-group
// figures add up to the run's, a group added by Replace between two runs
// gets its share, and what a cluster run adds per transaction allocates
// nothing.
func TestRunCluster(t *testing.T) {
	var wrong atomic.Int64
	var got [4]atomic.Int64
	start := func(g uint16) string {
		c, err := clienttest.Start(func(id uuid.UUID) client.Outcome {
			got[g].Add(1)
			if cluster.GroupOf(id) != g {
				wrong.Add(1)
			}
			return client.Committed
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.Addr
	}
	a1, a2, a3 := start(1), start(2), start(3)
	parse := func(text string) *cluster.Map {
		m, err := cluster.Parse(strings.NewReader(text), "test")
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	m1 := parse(fmt.Sprintf("version 1\ngroup 1 replicas 1=%s weight 1\ngroup 2 replicas 1=%s weight 3\n", a1, a2))
	cc, err := client.DialCluster(m1, client.Options{Conns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	const txns = 20_000
	cfg := Config{Cluster: cc, Work: twoBanks, Concurrency: 64, Seed: 3, AckLog: io.Discard, Txns: 2000}
	if _, err := Run(context.Background(), cfg); err != nil { // warm the pools
		t.Fatal(err)
	}
	cfg.Txns = txns
	rep, err := Run(context.Background(), cfg)
	if err != nil || rep.Committed != txns {
		t.Fatalf("%d committed, %v", rep.Committed, err)
	}
	// What a cluster run adds per transaction — the stamp by the map's
	// weights and the record in the group's figures — allocates nothing.
	// (A whole run's allocations are dominated by its setup and by the
	// progress line's histogram each second, which vary with its length.)
	r := &runner{cfg: cfg, rec: newRecorder()}
	w := r.newWorker(5)
	var now = time.Now()
	if a := testing.AllocsPerRun(1000, func() {
		_, g := r.stampedID(w, now)
		r.groups.of(g).stripe(w.index).record(slotCommitted, 900, causeKey{})
	}); a != 0 {
		t.Errorf("stamping and recording by group: %v allocations per transaction", a)
	}
	if len(rep.Groups) != 2 || rep.Groups[0].Group != 1 || rep.Groups[1].Group != 2 ||
		rep.Groups[0].Committed+rep.Groups[1].Committed != rep.Committed {
		t.Fatalf("groups %+v, %d committed in all", rep.Groups, rep.Committed)
	}
	// Group 2 has 3/4 of the weight: 15,000 of 20,000 expected, and a
	// binomial's standard deviation is ~61.
	if n := rep.Groups[1].Committed; n < 14_500 || n > 15_500 {
		t.Errorf("group 2 committed %d of %d; weight 3 of 4 wants about 15,000", n, txns)
	}
	if rep.Groups[0].P50ms <= 0 || rep.Groups[0].CommittedPerS <= 0 {
		t.Errorf("group 1: %+v", rep.Groups[0])
	}
	if !strings.Contains(rep.Summary(), "groups        group") {
		t.Errorf("the summary lacks the groups' table:\n%s", rep.Summary())
	}

	m2 := parse(fmt.Sprintf("version 2\ngroup 1 replicas 1=%s weight 1\ngroup 2 replicas 1=%s weight 3\ngroup 3 replicas 1=%s weight 4\n", a1, a2, a3))
	if err := cc.Replace(m2); err != nil {
		t.Fatal(err)
	}
	cfg.Txns = 4000
	rep, err = Run(context.Background(), cfg)
	if err != nil || len(rep.Groups) != 3 || rep.Groups[2].Committed < 1500 {
		t.Fatalf("after adding group 3 (half the weight): %+v, %v", rep.Groups, err)
	}
	if wrong.Load() != 0 {
		t.Fatalf("%d ids reached a group they were not stamped for", wrong.Load())
	}
	if got[3].Load() != rep.Groups[2].Committed {
		t.Errorf("group 3 received %d, the report says %d", got[3].Load(), rep.Groups[2].Committed)
	}
}

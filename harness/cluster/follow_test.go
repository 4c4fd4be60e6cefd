package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	commitdcluster "github.com/commitd/commitd/cluster"
	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/commitd/commitd/participant"
	"github.com/commitd/commitd/participant/bank"
	"github.com/google/uuid"
)

// A client follows a group's refusal (docs/scale.md): two groups share two
// bank participants under load from a client whose map says both are
// active; mid-run the operator pushes a map that drains group 2 and group
// 2's coordinator takes it first. The client's next ids for group 2 are
// refused (naming version 2); the client re-reads the map file
// (Options.ClusterReload) and runs each again under a new id of group 1.
// Every transaction ends committed, or aborted by a participant's no
// (lock conflicts), never unknown and never refused; none runs at the
// draining group once it drained (its count of transactions does not move
// after its own in flight ended); a retried one has a new id of group 1,
// its first id group 2's. Money is conserved and nothing is left in doubt.
// Then: without ClusterReload, or when the file holds no newer map, the
// refusal is a *WrongGroupError naming both versions.
func TestClientFollowsWrongGroupRefusal(t *testing.T) {
	const accounts, balance = 100, 1000
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	coordLn := []net.Listener{listen(), listen()}
	partLn := []net.Listener{listen(), listen()}
	mapText := func(v int, group2 string) string {
		return fmt.Sprintf("version %d\ngroup 1 replicas 1=%s weight 1\ngroup 2 replicas 1=%s %s\n", v, coordLn[0].Addr(), coordLn[1].Addr(), group2)
	}
	dir := t.TempDir()
	mapFile := filepath.Join(dir, "cluster.map")
	writeMap := func(path, text string) *commitdcluster.Map {
		t.Helper()
		if err := os.WriteFile(path+".new", []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".new", path); err != nil {
			t.Fatal(err)
		}
		m, err := commitdcluster.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	m1 := writeMap(mapFile, mapText(1, "weight 1"))
	var coords []*coordinator.Server
	for i, ln := range coordLn {
		c, err := coordinator.Start(coordinator.Config{Listener: ln, DataDir: t.TempDir(), Group: uint16(i + 1), Cluster: m1,
			Shards: 2, SegmentBytes: 1 << 20, PrepareTimeout: 500 * time.Millisecond, Logger: nodetest.Quiet(),
			Participants: map[string]string{"p1": partLn[0].Addr().String(), "p2": partLn[1].Addr().String()}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		coords = append(coords, c)
	}
	var parts []*participant.Server
	for i, ln := range partLn {
		p, err := participant.Start(participant.Config{
			Name: fmt.Sprintf("p%d", i+1), Listener: ln, DataDir: t.TempDir(), Cluster: m1,
			Resource: bank.New(accounts, balance), SegmentBytes: 1 << 20,
			InquireAfter: 50 * time.Millisecond, InquireMax: 200 * time.Millisecond, Logger: nodetest.Quiet(),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		parts = append(parts, p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range coords {
		if err := c.WaitConnected(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range parts {
		if err := p.WaitConnected(ctx); err != nil {
			t.Fatal(err)
		}
	}
	cl, err := client.DialCluster(m1, client.Options{ClusterReload: client.MapFile(mapFile)})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	transfer := func(c, i int) []client.Branch {
		from, to := 1, 2
		if i%2 == 1 {
			from, to = 2, 1
		}
		acct := uint32((c*13 + i) % accounts)
		return []client.Branch{
			{Participant: fmt.Sprintf("p%d", from), Work: bank.AppendWork(nil, acct, -1)},
			{Participant: fmt.Sprintf("p%d", to), Work: bank.AppendWork(nil, acct, 1)},
		}
	}
	type tally struct{ committed, aborted, retried int }
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var total tally
	for c := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var n tally
			defer func() {
				mu.Lock()
				total.committed, total.aborted, total.retried = total.committed+n.committed, total.aborted+n.aborted, total.retried+n.retried
				mu.Unlock()
			}()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id, err := cl.NewID()
				if err != nil {
					t.Error(err)
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				res, err := cl.Run(ctx, id, transfer(c, i))
				cancel()
				switch {
				case err != nil:
					t.Errorf("Run %v: %v, %v", id, res, err)
					return
				case res.Txn != id:
					n.retried++
					if commitdcluster.GroupOf(id) != 2 || commitdcluster.GroupOf(res.Txn) != 1 {
						t.Errorf("retried %v (group %d) as %v (group %d); want a group-2 id retried at group 1",
							id, commitdcluster.GroupOf(id), res.Txn, commitdcluster.GroupOf(res.Txn))
					}
				}
				switch res.Outcome {
				case client.Committed:
					n.committed++
				case client.Aborted:
					n.aborted++
				default:
					t.Errorf("Run %v: %v; want committed or aborted", id, res)
					return
				}
			}
		}()
	}
	nodetest.Eventually(t, "both groups committing", func() bool {
		return coords[0].Status().Committed > 50 && coords[1].Status().Committed > 50
	})
	// The operator pushes version 2; group 2 takes it before the client.
	m2 := writeMap(mapFile, mapText(2, "draining"))
	for _, p := range parts {
		if err := p.ReloadCluster(ctx, m2); err != nil {
			t.Fatal(err)
		}
	}
	if err := coords[1].ReloadCluster(m2); err != nil {
		t.Fatal(err)
	}
	nodetest.Eventually(t, "group 2's transactions begun before the drain ended", func() bool { return coords[1].Status().InFlight == 0 })
	st := coords[1].Status()
	ended := st.Committed + st.Aborted
	before := coords[0].Status().Committed
	nodetest.Eventually(t, "group 1 committing on", func() bool { return coords[0].Status().Committed > before+200 })
	close(stop)
	wg.Wait()
	if st := coords[1].Status(); st.Committed+st.Aborted != ended {
		t.Errorf("the draining group ended %d transactions after its drain", st.Committed+st.Aborted-ended)
	}
	if total.retried == 0 || cl.Map().Version != 2 {
		t.Fatalf("%d retried, client map version %d: the refusal was never followed", total.retried, cl.Map().Version)
	}

	nodetest.Eventually(t, "nothing in doubt anywhere", func() bool {
		for _, p := range parts {
			if p.AccountsSummary().Prepared != 0 {
				return false
			}
		}
		for _, c := range coords {
			if st := c.Status(); st.InDoubt != 0 || st.InFlight != 0 {
				return false
			}
		}
		return true
	})
	money := int64(0)
	for _, p := range parts {
		money += p.AccountsSummary().Total
	}
	if money != 2*accounts*balance {
		t.Fatalf("money: %d, want %d", money, 2*accounts*balance)
	}
	for i, c := range coords {
		if st := c.Status(); st.OtherGroup != 0 {
			t.Errorf("group %d got %d messages about another group's transactions", i+1, st.OtherGroup)
		}
	}
	t.Logf("%d committed, %d aborted (voted no), %d retried at group 1 after group 2's refusal", total.committed, total.aborted, total.retried)

	// Without a way to a newer map, the refusal is returned, naming both
	// versions; so too when the file holds no newer one.
	stale := filepath.Join(dir, "stale.map")
	writeMap(stale, mapText(1, "weight 1"))
	for _, opts := range []client.Options{{}, {ClusterReload: client.MapFile(stale)}} {
		old, err := client.DialCluster(m1, opts)
		if err != nil {
			t.Fatal(err)
		}
		id := commitdcluster.Stamp(uuid.Must(uuid.NewV7()), 2)
		res, err := old.Run(ctx, id, transfer(0, 0))
		old.Close()
		var wrong *client.WrongGroupError
		if res.Outcome != client.Rejected || res.Txn != id || !errors.As(err, &wrong) || !errors.Is(err, client.ErrWrongGroup) ||
			wrong.Refusal.Version != 2 || wrong.MapVersion != 1 || !strings.Contains(err.Error(), "group 2 refused") ||
			!strings.Contains(err.Error(), "draining in its cluster map version 2 (this client's: version 1)") {
			t.Fatalf("refused without a newer map (%+v): %+v, %v", opts, res, err)
		}
	}
}

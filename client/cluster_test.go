package client_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/client/clienttest"
	"github.com/commitd/commitd/cluster"
	"github.com/commitd/commitd/protocol"
	"github.com/google/uuid"
)

// groupRig is n fake coordinators, each the lone replica of a group, that
// note the group stamped in every id they are sent.
type groupRig struct {
	coords []*clienttest.Coordinator
	mu     sync.Mutex
	seen   map[int]map[uint16]int // coordinator → stamped group → count
}

func newGroupRig(t *testing.T, n int) *groupRig {
	r := &groupRig{seen: map[int]map[uint16]int{}}
	for i := range n {
		r.seen[i] = map[uint16]int{}
		c, err := clienttest.Start(func(id uuid.UUID) client.Outcome {
			r.mu.Lock()
			r.seen[i][cluster.GroupOf(id)]++
			r.mu.Unlock()
			return client.Committed
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		r.coords = append(r.coords, c)
	}
	return r
}

// mapOf is a map in which coordinator i is group i+1, with lines appended
// to each group's line by index.
func (r *groupRig) mapOf(t *testing.T, version int, groups ...string) *cluster.Map {
	t.Helper()
	text := fmt.Sprintf("version %d\n", version)
	for i, extra := range groups {
		text += fmt.Sprintf("group %d replicas 1=%s %s\n", i+1, r.coords[i].Addr, extra)
	}
	m, err := cluster.Parse(strings.NewReader(text), "test")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestClusterRoutesByTheStampedGroup(t *testing.T) {
	r := newGroupRig(t, 3)
	c, err := client.DialCluster(r.mapOf(t, 1, "weight 1", "weight 3"), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	run := func(n int) []uuid.UUID {
		var ids []uuid.UUID
		for range n {
			id, err := c.NewID()
			if err != nil {
				t.Fatal(err)
			}
			res, err := c.Run(ctx, id, []client.Branch{{Participant: "p1", Work: []byte("w")}})
			if err != nil || res.Outcome != client.Committed {
				t.Fatalf("Run: %v %v", res, err)
			}
			ids = append(ids, id)
		}
		return ids
	}
	run(400)
	r.mu.Lock()
	// Each coordinator saw only its own group's ids, in the weights' shares.
	if len(r.seen[0]) != 1 || len(r.seen[1]) != 1 || r.seen[0][1] < 60 || r.seen[1][2] < 240 || r.seen[0][1]+r.seen[1][2] != 400 {
		t.Fatalf("seen %v, want about 100 ids of group 1 at the first and 300 of group 2 at the second", r.seen)
	}
	r.mu.Unlock()

	// An id of no group in the map is refused without being sent.
	for _, id := range []uuid.UUID{uuid.New(), cluster.Stamp(uuid.Must(uuid.NewV7()), 3)} {
		res, err := c.Run(ctx, id, []client.Branch{{Participant: "p1"}})
		if err != nil || res.Outcome != client.Rejected || res.Cause != protocol.CauseInvalid || !strings.Contains(res.Detail, "not in the cluster map") {
			t.Fatalf("Run(%v) = %+v, %v; want rejected: no such group", id, res, err)
		}
	}

	// A new map adds group 3 and drains group 1: new ids go to 2 and 3
	// only, and an old id of group 1 still runs at group 1.
	old := cluster.Stamp(uuid.Must(uuid.NewV7()), 1)
	if err := c.Replace(r.mapOf(t, 2, "draining", "weight 1", "weight 1")); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	clear(r.seen[0])
	clear(r.seen[1])
	r.mu.Unlock()
	run(200)
	if res, err := c.Run(ctx, old, []client.Branch{{Participant: "p1"}}); err != nil || res.Outcome != client.Committed {
		t.Fatalf("an old id of the draining group: %+v %v", res, err)
	}
	r.mu.Lock()
	if r.seen[0][1] != 1 || r.seen[1][2] < 50 || r.seen[2][3] < 50 || r.seen[1][2]+r.seen[2][3] != 200 {
		t.Fatalf("seen %v after the new map, want the one old id at group 1 and the rest shared by 2 and 3", r.seen)
	}
	r.mu.Unlock()

	// A map that skips a rule is refused and changes nothing.
	if err := c.Replace(r.mapOf(t, 2, "draining", "weight 1", "weight 1")); err == nil {
		t.Fatal("a map of the same version was taken")
	}
	if err := c.Replace(r.mapOf(t, 3, "retired", "weight 1")); err == nil || !strings.Contains(err.Error(), "drops group 3") {
		t.Fatalf("a map dropping an active group: %v", err)
	}
	// Retiring group 1 closes its client: its ids are refused.
	if err := c.Replace(r.mapOf(t, 3, "retired", "weight 1", "weight 1")); err != nil {
		t.Fatal(err)
	}
	if res, _ := c.Run(ctx, old, []client.Branch{{Participant: "p1"}}); res.Outcome != client.Rejected {
		t.Fatalf("an id of a retired group: %+v", res)
	}
	if c.Map().Version != 3 {
		t.Fatalf("map version %d", c.Map().Version)
	}
}

func TestDialClusterNamesTheGroupItCannotReach(t *testing.T) {
	r := newGroupRig(t, 1)
	m, err := cluster.Parse(strings.NewReader(fmt.Sprintf("version 1\ngroup 1 replicas 1=%s\ngroup 7 replicas 1=127.0.0.1:1\n", r.coords[0].Addr)), "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.DialCluster(m, client.Options{DialTimeout: 200 * time.Millisecond}); err == nil || !strings.Contains(err.Error(), "group 7") {
		t.Fatalf("DialCluster = %v, want an error naming group 7", err)
	}
}

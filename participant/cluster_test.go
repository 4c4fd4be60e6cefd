package participant_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commitd/commitd/cluster"
	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/commitd/commitd/participant"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/protocol"
)

// clusterRig is participant p1 serving a cluster whose groups are fake
// coordinators, one replica each.
type clusterRig struct {
	t      *testing.T
	cfg    participant.Config
	p      *participant.Server
	bank   *bank.Bank
	groups map[uint16]*fakeCoordinator
}

func newClusterRig(t *testing.T, groups ...uint16) *clusterRig {
	r := &clusterRig{t: t, groups: map[uint16]*fakeCoordinator{}}
	for _, g := range groups {
		r.groups[g] = newFakeCoordinator(t)
	}
	r.cfg = participant.Config{
		Name:         "p1",
		Listen:       "127.0.0.1:0",
		DataDir:      t.TempDir(),
		InquireAfter: 50 * time.Millisecond,
		InquireMax:   200 * time.Millisecond,
		SegmentBytes: 1 << 20,
		Logger:       nodetest.Quiet(),
	}
	return r
}

// mapOf is a map of version v with the rig's groups: "draining" or
// "retired" in states, by group; the others active.
func (r *clusterRig) mapOf(v uint64, states map[uint16]string) *cluster.Map {
	r.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "version %d\n", v)
	for g, f := range r.groups {
		fmt.Fprintf(&b, "group %d replicas 1=%s %s\n", g, f.Addr(), states[g])
	}
	m, err := cluster.Parse(strings.NewReader(b.String()), "test")
	if err != nil {
		r.t.Fatal(err)
	}
	return m
}

func (r *clusterRig) start(m *cluster.Map) {
	r.t.Helper()
	r.bank = bank.New(accounts, balance)
	r.cfg.Resource, r.cfg.Cluster = r.bank, m
	r.p = nodetest.Start(r.t, participant.Start, r.cfg)
	for _, f := range r.groups {
		f.Connect(r.t, r.p.Addr().String())
	}
}

func (r *clusterRig) reload(m *cluster.Map) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return r.p.ReloadCluster(ctx, m)
}

// waitConnected waits, up to d, until p1's own connections to every group
// of the map in use are up (Server.WaitConnected).
func (r *clusterRig) waitConnected(d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return r.p.WaitConnected(ctx)
}

func (r *clusterRig) status() participant.Status {
	r.t.Helper()
	var st participant.Status
	nodetest.Report(r.t, r.p.Addr().String(), "status", &st)
	return st
}

func (r *clusterRig) inDoubt() map[protocol.TxnID]bool {
	r.t.Helper()
	var rep participant.InDoubt
	nodetest.Report(r.t, r.p.Addr().String(), "in-doubt", &rep)
	held := map[protocol.TxnID]bool{}
	for _, e := range rep.Txns {
		held[e.Txn] = true
	}
	return held
}

// prepared has group g's fake prepare a new id of g and waits for the YES,
// which must come back to g alone.
func (r *clusterRig) prepared(g uint16, account uint32) protocol.TxnID {
	r.t.Helper()
	id := cluster.Stamp(newID(), g)
	f := r.groups[g]
	f.prepare(r.t, id, account, -10)
	nodetest.Eventually(r.t, fmt.Sprintf("group %d's YES", g), func() bool { return f.vote(id) == protocol.VoteYes })
	return id
}

// A participant of a cluster takes a new map while it runs: a map that
// does not follow the one in use is refused and changes nothing; a
// draining group keeps what it has in doubt; once a map retires the
// group, what the participant holds prepared of it is aborted — at the
// reload, and after a restart with that map — and nothing more is sent to
// it; a group the map adds is dialed and gets its votes.
func TestClusterReloadRetiresAndAdds(t *testing.T) {
	r := newClusterRig(t, 1, 2)
	r.start(r.mapOf(1, nil))
	own1 := r.prepared(1, 1)
	own2 := r.prepared(2, 2)
	if r.groups[1].vote(own2) != 0 || r.groups[2].vote(own1) != 0 {
		t.Fatal("a vote went to a group other than the one stamped in its id")
	}

	// Refused: not a newer version; a group retired without draining.
	for _, c := range []struct {
		m    *cluster.Map
		want string
	}{
		{r.mapOf(1, map[uint16]string{2: "draining"}), "does not follow version 1"},
		{r.mapOf(2, map[uint16]string{2: "retired"}), "retires group 2, which is active: drain it first"},
	} {
		err := r.reload(c.m)
		if !errors.Is(err, participant.ErrClusterReload) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "keeping version 1") {
			t.Errorf("reload: %v, want %q", err, c.want)
		}
	}
	if v := r.status().MapVersion; v != 1 {
		t.Fatalf("map version %d after refused reloads, want 1", v)
	}

	// Draining: nothing changes for what is in doubt.
	if err := r.reload(r.mapOf(2, map[uint16]string{2: "draining"})); err != nil {
		t.Fatal(err)
	}
	drainingHeld := r.prepared(2, 3)
	time.Sleep(3 * r.cfg.InquireMax) // inquiries go to group 2, unanswered
	if held := r.inDoubt(); !held[own2] || !held[drainingHeld] {
		t.Fatalf("a draining group's transactions were not kept in doubt: %v", held)
	}
	if !r.groups[2].inquired(own2) {
		t.Fatal("no inquiry reached the draining group")
	}

	// Retired: both of group 2's are aborted, group 1's is kept.
	if err := r.reload(r.mapOf(3, map[uint16]string{2: "retired"})); err != nil {
		t.Fatal(err)
	}
	nodetest.Eventually(t, "group 2's transactions aborted", func() bool {
		held := r.inDoubt()
		return !held[own2] && !held[drainingHeld] && held[own1]
	})
	st := r.status()
	if st.MapVersion != 3 || st.RetiredAborts < 2 {
		t.Fatalf("status: map version %d, retired aborts %d; want 3, at least 2", st.MapVersion, st.RetiredAborts)
	}
	r.groups[1].decide(t, own1, protocol.DecisionCommit)
	nodetest.Eventually(t, "group 1's commit acknowledged", func() bool { return r.groups[1].acked(own1) })

	// A group added: dialed, and its transactions' votes go to it. Its
	// prepare waits for p1's own connection to it: a vote sent before that
	// is up is dropped (mux.Peer), which a real group survives by timing
	// the prepare out, but this fake would wait for the YES forever.
	r.groups[3] = newFakeCoordinator(t)
	if err := r.reload(r.mapOf(4, map[uint16]string{2: "retired"})); err != nil {
		t.Fatal(err)
	}
	if err := r.waitConnected(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	r.groups[3].Connect(t, r.p.Addr().String())
	own3 := r.prepared(3, 4)
	r.groups[3].decide(t, own3, protocol.DecisionCommit)
	nodetest.Eventually(t, "group 3's commit acknowledged", func() bool { return r.groups[3].acked(own3) })

	// Money: only the two commits moved it.
	if err := r.p.Close(); err != nil {
		t.Fatal(err)
	}
	if got, want := r.bank.Total(), int64(accounts*balance-20); got != want {
		t.Fatalf("bank total %d, want %d (two commits of -10)", got, want)
	}
}

// WaitConnected follows the map in use: it waits for a group a reload
// added (here one whose replica accepts p1's connection and never answers
// its Hello, so the connection is never up), and no longer for a group the
// map retires, whose connections are closed.
func TestWaitConnectedFollowsTheMap(t *testing.T) {
	r := newClusterRig(t, 1, 2)
	r.start(r.mapOf(1, nil))
	for _, v := range []struct {
		version uint64
		state   string
	}{{2, "draining"}, {3, "retired"}} {
		if err := r.reload(r.mapOf(v.version, map[uint16]string{2: v.state})); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.waitConnected(5 * time.Second); err != nil {
		t.Fatalf("WaitConnected with group 2 retired: %v", err)
	}

	silent := silentListener(t)
	text := fmt.Sprintf("version 4\ngroup 1 replicas 1=%s\ngroup 2 replicas 1=%s retired\ngroup 3 replicas 1=%s\n",
		r.groups[1].Addr(), r.groups[2].Addr(), silent)
	m, err := cluster.Parse(strings.NewReader(text), "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.reload(m); err != nil {
		t.Fatal(err)
	}
	if err := r.waitConnected(300 * time.Millisecond); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "group 3") {
		t.Fatalf("WaitConnected with group 3 unanswered: %v, want group 3's deadline", err)
	}
}

// silentListener is the address of a listener that accepts connections
// and never reads or writes on them, until the test ends.
func silentListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// A participant restarted with a map that retires a group it holds a
// prepared transaction of aborts it (it learns the group's fate from its
// map, and asks nobody), and keeps the others' in doubt.
func TestRestartWithRetiredGroupAborts(t *testing.T) {
	r := newClusterRig(t, 1, 2)
	r.start(r.mapOf(1, map[uint16]string{2: "draining"}))
	own1 := r.prepared(1, 1)
	own2 := r.prepared(2, 2)
	if err := r.p.Close(); err != nil {
		t.Fatal(err)
	}
	r.start(r.mapOf(2, map[uint16]string{2: "retired"}))
	nodetest.Eventually(t, "the retired group's transaction aborted", func() bool {
		held := r.inDoubt()
		return !held[own2] && held[own1]
	})
	if st := r.status(); st.RetiredAborts == 0 || st.MapVersion != 2 {
		t.Fatalf("status after restart: %+v", st)
	}
	r.groups[1].decide(t, own1, protocol.DecisionAbort)
	nodetest.Eventually(t, "nothing in doubt", func() bool { return len(r.inDoubt()) == 0 })
	if err := r.p.Close(); err != nil {
		t.Fatal(err)
	}
	if got := r.bank.Total(); got != accounts*balance {
		t.Fatalf("bank total %d after two aborts, want %d", got, accounts*balance)
	}
}

package coordinator_test

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/commitd/commitd/internal/raftlog"
	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/wal/waltest"
)

// changeReplicas runs `admin replicas add|remove` against the group.
func (g *group) changeReplicas(change, arg string) (coordinator.Members, error) {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var m coordinator.Members
	err := client.ChangeReplicas(ctx, g.list(), change, arg, nil, &m)
	return m, err
}

// list is every address, started or spare, as ADDR1,ADDR2,...
func (g *group) list() string {
	var all []string
	for id := uint64(1); id <= uint64(len(g.addrs)); id++ {
		all = append(all, g.addrs[id])
	}
	return strings.Join(all, ",")
}

func role(m coordinator.Members, id uint64) string {
	for _, r := range m.Replicas {
		if r.ID == id {
			return r.Role
		}
	}
	return ""
}

// waitRemoved waits for replica id to stop with the error of a removed
// replica, and forgets it.
func (g *group) waitRemoved(id uint64) {
	g.t.Helper()
	c := g.coords[id]
	deadline := time.Now().Add(15 * time.Second)
	for c.Err() == nil {
		if time.Now().After(deadline) {
			g.t.Fatalf("replica %d still serves after its removal: %+v", id, c.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !errors.Is(c.Err(), raftlog.ErrRemoved) {
		g.t.Fatalf("replica %d stopped with %v, want ErrRemoved", id, c.Err())
	}
	g.t.Logf("replica %d: %v", id, c.Err())
	_ = c.Close()
	delete(g.coords, id)
}

// TestGroupChangesMembersUnderLoad: under a steady load of transfers, a
// 3-replica group adds a 4th (it joins with an empty directory and
// catches up from a snapshot), removes a follower and then its leader
// (which hands leadership over first), keeps committing on the two
// replicas left, one of which restarts with its original peers; the
// removed replicas stop, and one restarted refuses to serve. Nothing
// acknowledged is lost and no decision is contradicted (group.check).
func TestGroupChangesMembersUnderLoad(t *testing.T) {
	const accounts = 10000
	g := newGroupSpare(t, 1, accounts, func(c *coordinator.Config) { c.RaftSnapshotEvery = 50 })
	g.leader(10 * time.Second)
	// (The participants wait for replica 4 too: no WaitConnected.)
	cl, err := client.Dial(g.list(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var next, committed atomic.Int64
	stop := make(chan struct{})
	var stopOnce sync.Once
	var wg sync.WaitGroup
	// The load stops however the test ends: a goroutine left running
	// would race with the next test (the simulation swaps crypto/rand).
	defer func() {
		stopOnce.Do(func() { close(stop) })
		wg.Wait()
	}()
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(2 * time.Millisecond):
				}
				i := int(next.Add(1)) - 1
				if i >= accounts {
					return
				}
				if g.run(cl, i).Outcome == client.Committed {
					committed.Add(1)
				} else {
					// No leader for a moment: do not burn accounts.
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	progress := func(what string) {
		t.Helper()
		want := committed.Load() + 20
		deadline := time.Now().Add(20 * time.Second)
		for committed.Load() < want {
			if time.Now().After(deadline) || next.Load() >= accounts {
				t.Fatalf("%s: no commits (%d so far)", what, committed.Load())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	progress("before the changes")

	// A 4th replica joins: empty directory, --join, then `replicas add`.
	g.join[4] = true
	g.start(4, g.spare[4])
	m, err := g.changeReplicas("add", "4="+g.addrs[4])
	if err != nil {
		t.Fatalf("adding replica 4: %v", err)
	}
	if role(m, 4) != "voter" || len(m.Replicas) != 4 {
		t.Fatalf("after adding replica 4: %+v", m)
	}
	if st := g.coords[4].Status(); st.RaftSnapshot == 0 || st.Members == nil || len(st.Members.Replicas) != 4 {
		t.Fatalf("replica 4 did not catch up from a snapshot: %+v", st)
	}
	progress("after adding replica 4")

	// A follower goes.
	l := g.leader(5 * time.Second)
	f := uint64(1)
	for f == l || f == 4 {
		f++
	}
	if m, err = g.changeReplicas("remove", itoa(f)); err != nil {
		t.Fatalf("removing follower %d: %v", f, err)
	}
	if role(m, f) != "" || len(m.Replicas) != 3 || !slices.Contains(m.Removed, f) {
		t.Fatalf("after removing %d: %+v", f, m)
	}
	g.waitRemoved(f)
	// Its Hello is refused by name from now on — by replica 4 once it has
	// applied the removal too, which under load (a CI run) can come after
	// the removed replica has stopped: until then it takes the Hello.
	nodetest.Eventually(t, "replica 4 applied the removal", func() bool {
		st := g.coords[4].Status()
		return st.Members != nil && slices.Contains(st.Members.Removed, f)
	})
	if e := nodetest.Refused(t, g.addrs[4], wire.Hello{Role: wire.RoleReplica, Name: []byte(itoa(f))}); e.Code != wire.CodeRefused ||
		!strings.Contains(string(e.Message), "replica "+itoa(f)+" was removed from the group") {
		t.Errorf("the hello of removed replica %d: %v %q", f, e.Code, e.Message)
	}
	progress("after removing a follower")

	// The leader goes: it hands leadership over, the tool follows. It
	// must not be replica 4, which the steps after restart as the replica
	// that joined — and 4 may win an election once it has caught up (a
	// removed 4 failed the test with a nil replica to stop). A leader 4 is
	// stopped, so that the two others elect one, and started again.
	leaderNot4 := func() uint64 {
		t.Helper()
		for range 5 {
			l := g.leader(5 * time.Second)
			if l != 4 {
				return l
			}
			g.stop(4)
			g.leader(5 * time.Second) // one of the other two
			g.start(4, nil)
		}
		t.Fatalf("replica 4 led again after each of 5 restarts")
		return 0
	}
	// First wait until the leader sees the two other voters up (replica
	// 4 may still be catching up after the change): with one of them
	// down, the removal is rightly refused (no quorum possible).
	l = leaderNot4()
	upDeadline := time.Now().Add(10 * time.Second)
	for {
		var m coordinator.Members
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := client.Admin(ctx, g.addrs[l], "replicas", nil, &m)
		cancel()
		allUp := err == nil
		for _, r := range m.Replicas {
			if r.ID != l && (r.Up == nil || !*r.Up) {
				allUp = false
			}
		}
		if allUp {
			break
		}
		if time.Now().After(upDeadline) {
			t.Fatalf("the leader %d does not see the other voters up: %+v (%v)", l, m, err)
		}
		time.Sleep(20 * time.Millisecond)
		l = leaderNot4()
	}
	// The leader judges "up" again when it takes the request, and on a
	// loaded machine a replica can miss its window between the check
	// above and then: the refusal is right, and an operator tries again.
	for retryUntil := time.Now().Add(10 * time.Second); ; {
		m, err = g.changeReplicas("remove", itoa(l))
		if err == nil || !strings.Contains(err.Error(), "no quorum possible") || time.Now().After(retryUntil) {
			break
		}
		time.Sleep(100 * time.Millisecond)
		l = leaderNot4()
	}
	if err != nil {
		t.Fatalf("removing the leader %d: %v", l, err)
	}
	if role(m, l) != "" || len(m.Replicas) != 2 || m.Leader == l {
		t.Fatalf("after removing the leader %d: %+v", l, m)
	}
	g.waitRemoved(l)
	progress("after removing the leader")

	// The replica that joined restarts as it was started (Join still set,
	// its directory no longer empty): it carries on from its own log.
	g.stop(4)
	g.start(4, nil)
	progress("after restarting replica 4")

	// The original replica left restarts with its original --peers: the
	// log's configuration wins.
	var orig uint64
	for id := range g.coords {
		if id != 4 {
			orig = id
		}
	}
	g.stop(orig)
	g.start(orig, nil)
	progress("after restarting replica " + itoa(orig) + " with its original peers")

	// A removed replica restarted with its data refuses to serve: at the
	// start (its log knows) or as soon as a member refuses it.
	ln, err := net.Listen("tcp", g.addrs[f])
	if err != nil {
		t.Fatal(err)
	}
	if c, err := coordinator.Start(g.config(f, ln)); err != nil {
		if !errors.Is(err, raftlog.ErrRemoved) {
			t.Fatalf("restarting removed replica %d: %v, want ErrRemoved", f, err)
		}
		t.Logf("restarting removed replica %d: %v", f, err)
	} else {
		g.coords[f] = c
		g.waitRemoved(f)
	}
	progress("after the removed replica came back")
	stopOnce.Do(func() { close(stop) })
	wg.Wait()
	t.Logf("%d transfers, %d committed", min(next.Load(), accounts), committed.Load())
	g.check()
}

func itoa(id uint64) string { return strconv.FormatUint(id, 10) }

// TestReplicaChangesRefused: changes that cannot or must not be made are
// refused with a clear error, and change nothing.
func TestReplicaChangesRefused(t *testing.T) {
	g := newGroupSpare(t, 1, groupAccounts)
	l := g.leader(10 * time.Second)
	cases := []struct {
		change, arg, want string
	}{
		{"add", itoa(l%3+1) + "=127.0.0.1:1", "is already a member (voter"},
		{"add", "4=" + g.addrs[l], "is replica"},
		{"add", "4", "want ID=ADDR"},
		{"add", "x=127.0.0.1:1", "want a number"},
		{"remove", "9", "not a member of the group"},
		{"remove", "4=a", "want the replica's ID only"},
	}
	for _, c := range cases {
		_, err := g.changeReplicas(c.change, c.arg)
		var re *client.RefusedError
		if !errors.As(err, &re) || re.NotLeader || !strings.Contains(re.Message, c.want) {
			t.Errorf("replicas %s %s: %v, want an error saying %q", c.change, c.arg, err, c.want)
		} else {
			t.Logf("replicas %s %s: %s", c.change, c.arg, re.Message)
		}
	}
	// One follower down: removing the other would leave no quorum possible.
	down := l%3 + 1
	up := 6 - l - down
	g.stop(down)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var m coordinator.Members
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := client.Admin(ctx, g.addrs[l], "replicas", nil, &m)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if i := slices.IndexFunc(m.Replicas, func(r coordinator.Replica) bool { return r.ID == down }); i >= 0 && m.Replicas[i].Up != nil && !*m.Replicas[i].Up {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the leader does not see replica %d down: %+v", down, m)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Refused for want of a quorum after the removal; on a loaded machine
	// the leader may also have missed replica up's heartbeats for a
	// moment and refuse because the group has no quorum now — refused
	// either way, for the same reason.
	if _, err := g.changeReplicas("remove", itoa(up)); err == nil ||
		!strings.Contains(err.Error(), "no quorum possible") && !strings.Contains(err.Error(), "the group has no quorum now") {
		t.Fatalf("removing replica %d while %d is down: %v, want no quorum possible", up, down, err)
	} else {
		t.Logf("remove %d with %d down: %v", up, down, err)
	}
	// A directory that bootstrapped a group cannot join one.
	cfg := g.config(down, nil)
	cfg.Join, cfg.Peers = true, g.addrs
	cfg = withListener(t, cfg)
	c, err := coordinator.Start(cfg)
	cfg.Listener.Close()
	if err == nil {
		c.Close()
		t.Fatal("a bootstrapped directory started with Join")
	} else if !errors.Is(err, raftlog.ErrIdentity) {
		t.Fatalf("Join on a bootstrapped directory: %v", err)
	} else {
		t.Log(err)
	}
	g.start(down, nil)
	var m coordinator.Members
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := client.Admin(ctx, g.list(), "replicas", nil, &m); err != nil || len(m.Replicas) != 3 {
		t.Fatalf("members after the refusals: %+v %v", m, err)
	}
	if res := g.transfer(g.leader(5*time.Second), 1); res.Outcome != client.Committed {
		t.Fatalf("a transfer after the refusals: %v", res)
	}

	// A coordinator that runs alone has no replicas.
	lone := newRig(t, nil)
	err = client.ChangeReplicas(ctx, lone.coord.Addr().String(), "add", "2=127.0.0.1:1", nil, &m)
	if err == nil || !strings.Contains(err.Error(), "runs alone") {
		t.Fatalf("replicas add at a lone coordinator: %v", err)
	}
	t.Log(err)
}

func withListener(t *testing.T, cfg coordinator.Config) coordinator.Config {
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listener = ln
	return cfg
}

// TestReplicaWithoutJoinIsKeptOut: a new replica started by mistake
// without Join bootstraps a group of its own; added to the real group, it
// is refused by every member (another group id in its Hello) and refuses
// them, so it never takes the group's entries into its own configuration:
// the add gives up, naming the cause, and the learner stays harmless.
// Removed (a learner: one step), its id is never reused; a replica added
// before it runs stays a learner, and once it runs the same add resumes
// and promotes it.
func TestReplicaWithoutJoinIsKeptOut(t *testing.T) {
	g := newGroupSpare(t, 2, groupAccounts, func(c *coordinator.Config) { c.CatchUpTimeout = 2 * time.Second })
	l := g.leader(10 * time.Second)
	cfg := g.config(4, g.spare[4])
	cfg.Peers = map[uint64]string{1: g.addrs[1], 2: g.addrs[2], 4: g.addrs[4]}
	wrong, err := coordinator.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.coords[4] = wrong
	_, err = g.changeReplicas("add", "4="+g.addrs[4])
	// Which refusal the connection reports depends on who dialed whom
	// first: the wrong replica's refusal of a member, or a member's of it.
	if err == nil || !strings.Contains(err.Error(), "has not caught up") ||
		!strings.Contains(err.Error(), "belongs to another group") && !strings.Contains(err.Error(), "is not a member of this replica's group") {
		t.Fatalf("adding a replica bootstrapped without Join: %v", err)
	}
	t.Log(err)
	st := wrong.Status()
	if st.Members == nil || st.Members.Group == g.coords[l].Status().Members.Group || st.Role == "leader" || st.RaftApplied > 1 {
		t.Fatalf("the replica bootstrapped without Join took part: %+v", st)
	}
	if res := g.transfer(g.leader(5*time.Second), 1); res.Outcome != client.Committed {
		t.Fatalf("a transfer with the stray replica around: %v", res)
	}
	// The stray learner is removed (one step: a learner counts in no
	// quorum), and its id cannot come back.
	m, err := g.changeReplicas("remove", "4")
	if err != nil || role(m, 4) != "" || !slices.Contains(m.Removed, 4) {
		t.Fatalf("removing the stray learner 4: %+v %v", m, err)
	}
	g.stop(4)
	if _, err := g.changeReplicas("add", "4="+g.addrs[4]); err == nil || !strings.Contains(err.Error(), "ids are never reused") {
		t.Fatalf("adding removed replica 4 again: %v", err)
	}
	// Replica 5, added before it runs: the add gives up, 5 stays a
	// learner; started properly (empty directory, Join), the same add
	// resumes and promotes it.
	if _, err := g.changeReplicas("add", "5="+g.addrs[5]); err == nil || !strings.Contains(err.Error(), "has not caught up") {
		t.Fatalf("adding replica 5 before it runs: %v", err)
	}
	g.join[5] = true
	g.start(5, g.spare[5])
	m, err = g.changeReplicas("add", "5="+g.addrs[5])
	if err != nil || role(m, 5) != "voter" || len(m.Replicas) != 4 {
		t.Fatalf("adding replica 5 again, now running: %+v %v", m, err)
	}
	if res := g.transfer(g.leader(5*time.Second), 2); res.Outcome != client.Committed {
		t.Fatalf("a transfer after the add: %v", res)
	}
}

// TestJoinerCatchesUpFromALargeSnapshot: with hundreds of commits held
// open (the participants never acknowledge), the group's snapshot is
// larger than one frame (wire.MaxPayload): it travels in several
// (wire.Raft.More), and a joining replica catches up from it.
func TestJoinerCatchesUpFromALargeSnapshot(t *testing.T) {
	names := []string{strings.Repeat("a", 60), strings.Repeat("b", 60)}
	parts := map[string]string{}
	var fakes []*fakeParticipant
	for _, n := range names {
		f := newFakeParticipant(t, n)
		f.ack.Store(false)
		fakes = append(fakes, f)
		parts[n] = f.Addr()
	}
	addrs := map[uint64]string{}
	for id := uint64(1); id <= 4; id++ {
		addrs[id] = nodetest.FreeAddr(t)
	}
	boot := map[uint64]string{1: addrs[1], 2: addrs[2], 3: addrs[3]}
	dir := t.TempDir()
	coords := map[uint64]*coordinator.Server{}
	start := func(id uint64, peers map[uint64]string, join bool) {
		c, err := coordinator.Start(coordinator.Config{
			ID: id, Peers: peers, Join: join, Listen: addrs[id], DataDir: filepath.Join(dir, itoa(id)),
			Participants: parts, Shards: 1, PrepareTimeout: 5 * time.Second, RedeliverMin: 5 * time.Second,
			RedeliverMax: 10 * time.Second, SegmentBytes: 1 << 20, RaftTick: 20 * time.Millisecond, ElectionTicks: 10,
			CatchUpTimeout: 20 * time.Second, Logger: nodetest.Quiet(), FS: waltest.NewMemFS(),
		})
		if err != nil {
			t.Fatalf("starting replica %d: %v", id, err)
		}
		coords[id] = c
		t.Cleanup(func() { c.Close() })
	}
	for id := uint64(1); id <= 3; id++ {
		start(id, boot, false)
	}
	var l uint64
	for deadline := time.Now().Add(10 * time.Second); l == 0; {
		for id, c := range coords {
			if st := c.Status(); st.Role == "leader" && st.Shards > 0 {
				l = id
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, f := range fakes {
		f.Connect(t, addrs[l]) // votes go to the leader (a fake sends to one address)
	}
	cl, err := client.Dial(addrs[l], client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const n = 800
	var wg sync.WaitGroup
	var committed atomic.Int64
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				res, _ := cl.Run(ctx, newID(), []client.Branch{{Participant: names[0], Work: []byte("w")}, {Participant: names[1], Work: []byte("w")}})
				cancel()
				if res.Outcome == client.Committed {
					committed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	// Each open commit record names both participants: 120 bytes of names
	// alone, so the snapshot of them needs more than one frame.
	if open := coords[l].Status().InDoubt; open*120 <= wire.MaxPayload {
		t.Fatalf("%d commits open (%d committed): the snapshot would fit one frame", open, committed.Load())
	}
	start(4, addrs, true)
	var m coordinator.Members
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := client.ChangeReplicas(ctx, addrs[l], "add", "4="+addrs[4], nil, &m); err != nil || role(m, 4) != "voter" {
		t.Fatalf("adding replica 4: %+v %v", m, err)
	}
	if st := coords[4].Status(); st.RaftSnapshot == 0 {
		t.Fatalf("replica 4 has no snapshot: %+v", st)
	}
	t.Logf("%d commits open in the snapshot replica 4 caught up from", coords[l].Status().InDoubt)
}

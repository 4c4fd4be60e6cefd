package coordinator_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/commitd/commitd/protocol"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/participant"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/wal/waltest"
)

// group is three coordinator replicas and two bank participants on
// loopback. Transaction i moves 5 from account i of p1 to account i of p2.
type group struct {
	t      *testing.T
	dir    string
	addrs  map[uint64]string
	peers  map[string]string // participant name → address
	coords map[uint64]*coordinator.Server
	parts  []*participant.Server
	banks  []*bank.Bank
	fs     map[uint64]*waltest.MemFS // each replica's disk: a crash keeps what it synced
	with   []func(*coordinator.Config)
	spare  map[uint64]net.Listener // reserved for replicas not started yet
	join   map[uint64]bool         // replicas started with Join

	mu      sync.Mutex
	results map[int]client.Result // guarded by mu
}

const groupAccounts = 400

func newGroup(t *testing.T, with ...func(*coordinator.Config)) *group {
	return newGroupSpare(t, 0, groupAccounts, with...)
}

// newGroupSpare makes a group of 3 with spare more addresses reserved
// (replicas 4, 5, …, in g.spare until they start) and banks of accounts
// accounts: participants are given
// every address, since they do not learn the group's membership.
func newGroupSpare(t *testing.T, spare, accounts int, with ...func(*coordinator.Config)) *group {
	return newGroupRes(t, spare, accounts, nil, with...)
}

// newGroupRes is newGroupSpare with each participant's resource made by
// res from its bank (nil: the bank itself).
func newGroupRes(t *testing.T, spare, accounts int, res func(name string, b *bank.Bank) participant.Inspectable, with ...func(*coordinator.Config)) *group {
	g := &group{t: t, with: with, dir: t.TempDir(), addrs: map[uint64]string{}, peers: map[string]string{},
		coords: map[uint64]*coordinator.Server{}, results: map[int]client.Result{}, fs: map[uint64]*waltest.MemFS{},
		spare: map[uint64]net.Listener{}, join: map[uint64]bool{}}
	lns := map[uint64]net.Listener{}
	for id := uint64(1); id <= uint64(3+spare); id++ {
		// A replica restarts on its address: a port from below the
		// ephemeral range, which no client socket can take meanwhile.
		ln, err := net.Listen("tcp", nodetest.FreeAddr(t))
		if err != nil {
			t.Fatal(err)
		}
		lns[id], g.addrs[id] = ln, ln.Addr().String()
		g.fs[id] = waltest.NewMemFS()
	}
	var all []string
	for id := uint64(1); id <= uint64(3+spare); id++ {
		all = append(all, g.addrs[id])
	}
	coordList := strings.Join(all, ",")
	for i, name := range []string{"p1", "p2"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		g.peers[name] = ln.Addr().String()
		b := bank.New(accounts, 1000)
		var r participant.Inspectable = b
		if res != nil {
			r = res(name, b)
		}
		p, err := participant.Start(participant.Config{
			Name: name, Listener: ln, DataDir: filepath.Join(g.dir, name), Coordinator: coordList,
			Resource: r, InquireAfter: 200 * time.Millisecond, InquireMax: time.Second,
			SegmentBytes: 1 << 20, Logger: nodetest.Quiet(),
		})
		if err != nil {
			t.Fatalf("starting %s: %v", name, err)
		}
		g.parts, g.banks = append(g.parts, p), append(g.banks, b)
		_ = i
	}
	for id := uint64(1); id <= 3; id++ {
		g.start(id, lns[id])
	}
	for id := uint64(4); id <= uint64(3+spare); id++ {
		g.spare[id] = lns[id]
	}
	t.Cleanup(g.close)
	return g
}

func (g *group) config(id uint64, ln net.Listener) coordinator.Config {
	boot := map[uint64]string{1: g.addrs[1], 2: g.addrs[2], 3: g.addrs[3]}
	cfg := coordinator.Config{
		ID: id, Peers: boot, Listener: ln, Listen: g.addrs[id],
		DataDir: filepath.Join(g.dir, fmt.Sprintf("c%d", id)), Participants: g.peers,
		Shards: 2, PrepareTimeout: 500 * time.Millisecond, RedeliverMin: 50 * time.Millisecond,
		RedeliverMax: 500 * time.Millisecond, SegmentBytes: 1 << 20,
		RaftTick: 20 * time.Millisecond, ElectionTicks: 10, Logger: nodetest.Quiet(), FS: g.fs[id],
	}
	if g.join[id] {
		// A replica that joins knows where the group's replicas are.
		cfg.Peers, cfg.Join = g.addrs, true
	}
	for _, w := range g.with {
		w(&cfg)
	}
	return cfg
}

func (g *group) start(id uint64, ln net.Listener) {
	g.t.Helper()
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", g.addrs[id]); err != nil {
			g.t.Fatal(err)
		}
	}
	c, err := coordinator.Start(g.config(id, ln))
	if err != nil {
		g.t.Fatalf("starting replica %d: %v", id, err)
	}
	g.coords[id] = c
}

func (g *group) stop(id uint64) {
	g.t.Helper()
	if err := g.coords[id].Close(); err != nil {
		g.t.Fatalf("closing replica %d: %v", id, err)
	}
	delete(g.coords, id)
}

// crash takes replica id's disk away as a power cut would — only what it
// synced survives, for its next start — and stops it (its closing fails:
// the disk is gone).
func (g *group) crash(id uint64) {
	g.fs[id] = g.fs[id].Crash(nil)
	_ = g.coords[id].Close()
	delete(g.coords, id)
}

func (g *group) close() {
	for id := range g.coords {
		g.coords[id].Close()
	}
	g.coords = nil
	for _, p := range g.parts {
		p.Close()
	}
	g.parts = nil
}

// leader waits for one running replica to lead and returns its id.
func (g *group) leader(within time.Duration) uint64 {
	g.t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		for id, c := range g.coords {
			if c.Status().Role == "leader" && c.Status().Shards > 0 {
				return id
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	g.t.Fatalf("no leader within %v", within)
	return 0
}

// transfer runs transaction i at replica id.
func (g *group) transfer(id uint64, i int) client.Result {
	g.t.Helper()
	cl, err := client.Dial(g.addrs[id], client.Options{})
	if err != nil {
		return client.Result{Outcome: client.Unknown, Detail: err.Error()}
	}
	defer cl.Close()
	return g.run(cl, i)
}

// run runs transaction i through cl and records its result.
func (g *group) run(cl *client.Client, i int) client.Result {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	res, _ := cl.Run(ctx, uuid.Must(uuid.NewV7()), []client.Branch{
		{Participant: "p1", Work: bank.AppendWork(nil, uint32(i), -5)},
		{Participant: "p2", Work: bank.AppendWork(nil, uint32(i), 5)},
	})
	g.mu.Lock()
	g.results[i] = res
	g.mu.Unlock()
	return res
}

// check settles the participants, stops everything and checks every
// transaction: all or nothing, and every acknowledged outcome is the one
// the banks hold.
func (g *group) check() {
	g.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, p := range g.parts {
		for p.AccountsSummary().Prepared > 0 {
			if time.Now().After(deadline) {
				g.t.Fatalf("participant still holds %d prepared transactions", p.AccountsSummary().Prepared)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	g.close()
	counts := map[client.Outcome]int{}
	for i, res := range g.results {
		from, to := g.banks[0].Balance(uint32(i)), g.banks[1].Balance(uint32(i))
		if from+to != 2000 {
			g.t.Errorf("txn %d (%v): p1 %d + p2 %d: not atomic", i, res.Outcome, from, to)
		}
		switch res.Outcome {
		case client.Committed:
			if to != 1005 {
				g.t.Errorf("txn %d was acknowledged committed, p2 holds %d", i, to)
			}
		case client.Aborted, client.Rejected:
			if to != 1000 {
				g.t.Errorf("txn %d was acknowledged %v, p2 holds %d", i, res.Outcome, to)
			}
		}
		counts[res.Outcome]++
		if res.Outcome != client.Committed {
			g.t.Logf("txn %d: %v %s", i, res, res.Detail)
		}
	}
	g.t.Logf("outcomes: %v", counts)
}

// TestReplicatedCoordinatorFailsOver: commits go through the leader, a
// follower names the leader, the leader's loss — a crash that keeps only
// what it synced, then a Close — is followed by commits at a new leader
// within seconds, a restarted replica catches up (the last commit needs
// it: two of three), a client given every replica follows the leader, and
// nothing acknowledged is lost.
func TestReplicatedCoordinatorFailsOver(t *testing.T) {
	g := newGroup(t)
	l := g.leader(5 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, p := range g.parts {
		if err := p.WaitConnected(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range g.coords {
		if err := c.WaitConnected(ctx); err != nil {
			t.Fatal(err)
		}
	}
	next := 0
	for range 20 {
		if res := g.transfer(l, next); res.Outcome != client.Committed {
			t.Fatalf("txn %d at the leader: %v", next, res)
		}
		next++
	}

	// A follower refuses, naming the leader.
	f := l%3 + 1
	cl, err := client.Dial(g.addrs[f], client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := cl.Run(ctx, uuid.Must(uuid.NewV7()), []client.Branch{{Participant: "p1", Work: bank.AppendWork(nil, 399, 0)}})
	cl.Close()
	var re *mux.RemoteError
	if res.Outcome != client.Aborted || !errors.As(err, &re) || re.Code != wire.CodeNotLeader || re.Message != g.addrs[l] {
		t.Fatalf("a follower answered %v, %v; want not-leader naming %s", res, err, g.addrs[l])
	}
	if st := g.coords[f].Status(); st.Role != "follower" || st.Leader != g.addrs[l] || st.Term == 0 {
		t.Fatalf("follower status %+v", st)
	}

	// A client given every replica follows the leader, all along; its
	// transactions in flight across a failover may end unknown, never
	// wrong (check).
	all, err := client.Dial(strings.Join([]string{g.addrs[1], g.addrs[2], g.addrs[3]}, ","), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close()
	stopLoad := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		for i := groupAccounts / 2; i < groupAccounts; i++ {
			select {
			case <-stopLoad:
				return
			default:
			}
			g.run(all, i)
		}
	}()

	// Lose the leader: a new one commits soon.
	failover := func(old uint64, crash bool) {
		start := time.Now()
		if crash {
			g.crash(old)
		} else {
			g.stop(old)
		}
		for {
			if time.Since(start) > 5*time.Second {
				t.Fatalf("no commit within 5s of losing leader %d", old)
			}
			nl := g.leader(5 * time.Second)
			if res := g.transfer(nl, next); res.Outcome == client.Committed {
				t.Logf("leader %d lost: replica %d committed %v later", old, nl, time.Since(start))
				next++
				return
			}
			next++
			time.Sleep(10 * time.Millisecond)
		}
	}
	failover(l, true)
	for range 10 {
		g.transfer(g.leader(time.Second), next)
		next++
	}
	// The old leader comes back and catches up; then the new leader goes:
	// what remains must elect and commit with it.
	g.start(l, nil)
	time.Sleep(200 * time.Millisecond)
	failover(g.leader(time.Second), false)
	for range 10 {
		g.transfer(g.leader(time.Second), next)
		next++
	}
	close(stopLoad)
	<-loadDone
	g.mu.Lock()
	background := 0
	for i := range g.results {
		if i >= groupAccounts/2 {
			background++
		}
	}
	g.mu.Unlock()
	if background < 10 {
		t.Errorf("the client given every replica ran only %d transactions", background)
	}
	g.check()
}

// TestReplicaCatchesUpFromSnapshot: with a snapshot every 10 entries, a
// follower that was down while the others went far on gets the leader's
// snapshot, restarts from it, and then carries commits when the leader is
// lost.
func TestReplicaCatchesUpFromSnapshot(t *testing.T) {
	g := newGroup(t, func(c *coordinator.Config) { c.RaftSnapshotEvery = 10 })
	l := g.leader(5 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, p := range g.parts {
		if err := p.WaitConnected(ctx); err != nil {
			t.Fatal(err)
		}
	}
	f := l%3 + 1
	g.stop(f)
	next := 0
	for range 60 {
		if res := g.transfer(l, next); res.Outcome != client.Committed {
			t.Fatalf("txn %d: %v", next, res)
		}
		next++
	}
	if st := g.coords[l].Status(); st.RaftSnapshot < 50 {
		t.Fatalf("the leader's latest snapshot is at %d after %d entries", st.RaftSnapshot, st.RaftApplied)
	}
	g.start(f, nil)
	deadline := time.Now().Add(5 * time.Second)
	for g.coords[f].Status().RaftSnapshot < 50 {
		if time.Now().After(deadline) {
			t.Fatalf("the restarted follower has no recent snapshot: %+v", g.coords[f].Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Restarted once more, it starts from the snapshot on its disk.
	g.stop(f)
	g.start(f, nil)
	// The leader goes: the follower that caught up is needed for a quorum.
	g.stop(l)
	nl := g.leader(5 * time.Second)
	for range 10 {
		g.transfer(nl, next)
		next++
	}
	if res := g.transfer(g.leader(time.Second), next); res.Outcome != client.Committed {
		t.Fatalf("after losing the leader: %v", res)
	}
	g.check()
}

// Raft frames are taken only from the other replicas of the group (issue 14
// merged with issue 13's identity checks): a connection must say Hello as a
// replica (wire.Sender(TypeRaft) is RoleReplica), with the raft id of one
// of Peers other than the replica's own, and each raft message on it must
// come from that id. Everything else is refused with an Error frame before
// it reaches raft, and a coordinator that runs alone takes no replica at
// all. The group still elects and commits afterwards.
func TestOnlyPeersMayReplicate(t *testing.T) {
	g := newGroup(t)
	id := g.leader(10 * time.Second)
	other := id%3 + 1
	addr := g.addrs[id]
	raftMsg := func(from uint64) *wire.Raft {
		b, err := proto.Marshal(&pb.Message{Type: pb.MsgHeartbeat.Enum(), From: proto.Uint64(from), To: proto.Uint64(id), Term: proto.Uint64(1 << 40)})
		if err != nil {
			t.Fatal(err)
		}
		return &wire.Raft{Msg: b}
	}
	replica := func(name string) wire.Hello { return wire.Hello{Role: wire.RoleReplica, Name: []byte(name)} }
	cases := []struct {
		name  string
		hello wire.Hello
		m     wire.Message
		want  string
	}{
		{"a client sends raft", wire.Hello{Role: wire.RoleClient}, raftMsg(other), "may not send raft"},
		{"a participant sends raft", wire.Hello{Role: wire.RoleParticipant, Name: []byte("p1")}, raftMsg(other), "may not send raft"},
		{"an admin tool sends raft", wire.Hello{Role: wire.RoleAdmin}, raftMsg(other), "may not send raft"},
		{"an unknown replica", replica("9"), raftMsg(9), `replica "9" is not a member of this replica's group`},
		{"a replica named like this one", replica(fmt.Sprint(id)), raftMsg(id), "is not a member of this replica's group"},
		{"a replica that is not a number", replica("two"), raftMsg(other), `replica "two" is not a member`},
		{"a replica speaking for another", replica(fmt.Sprint(other)), raftMsg(6 - id - other), "raft message from"},
		// A member's id with another group's id: a replica bootstrapped
		// without --join must never take this group's entries.
		{"a replica of another group", replica(fmt.Sprintf("%d/0123456789abcdef", other)), raftMsg(other), "belongs to another group"},
		{"a replica with a bad group id", replica(fmt.Sprintf("%d/xyz", other)), raftMsg(other), "is not a member"},
		{"a replica that begins", replica(fmt.Sprint(other)), &wire.Begin{Txn: uuid.Must(uuid.NewV7())}, "may not send begin"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := nodetest.Refused(t, addr, tc.hello, tc.m)
			if e.Code != wire.CodeRefused || !strings.Contains(string(e.Message), tc.want) {
				t.Errorf("refused with %v %q, want one saying %q", e.Code, e.Message, tc.want)
			}
		})
	}
	// A heartbeat of term 2^40 from a real peer's id, had it been
	// stepped, would have deposed the leader.
	if got := g.coords[id].Status(); got.Role != "leader" || got.Term >= 1<<40 {
		t.Errorf("leader after the refusals: %s in term %d, want still leading its term", got.Role, got.Term)
	}
	if res := g.transfer(id, 1); res.Outcome != client.Committed {
		t.Errorf("a transfer after the refusals: %v %s", res.Outcome, res.Detail)
	}

	lone := newRig(t, nil)
	e := nodetest.Refused(t, lone.coord.Addr().String(), replica("1"), raftMsg(1))
	if e.Code != wire.CodeRefused || !strings.Contains(string(e.Message), "not a replica of a group") {
		t.Errorf("a lone coordinator refused a replica with %v %q", e.Code, e.Message)
	}
}

// A reign's memory of ended and aborted transactions is complete only
// since its replica started (window.go), so its shards refuse
// (CauseStaleID) an id older than that, as a restarted coordinator does;
// an id made after it commits.
func TestReignRefusesIDsOlderThanItsStart(t *testing.T) {
	before := time.Now()
	g := newGroup(t)
	id := g.leader(10 * time.Second)
	cl, err := client.Dial(g.addrs[id], client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// 1.5 s before the group started: within the window the shards
	// remember (Remember less MaxIDAhead, 4 s), older than their start.
	old := uuid.Must(uuid.NewV7())
	ms := uint64(before.Add(-1500 * time.Millisecond).UnixMilli())
	for i := range 6 {
		old[i] = byte(ms >> (40 - 8*i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	branches := []client.Branch{
		{Participant: "p1", Work: bank.AppendWork(nil, 1, -5)},
		{Participant: "p2", Work: bank.AppendWork(nil, 1, 5)},
	}
	res, err := cl.Run(ctx, old, branches)
	if err != nil || res.Outcome != client.Rejected || res.Cause != protocol.CauseStaleID {
		t.Errorf("an id from before the reign: %v (cause %v) %s %v, want rejected stale-id", res.Outcome, res.Cause, res.Detail, err)
	}
	if res, err := cl.Run(ctx, uuid.Must(uuid.NewV7()), branches); err != nil || res.Outcome != client.Committed {
		t.Errorf("a fresh id: %v %s %v, want committed", res.Outcome, res.Detail, err)
	}
}

// Outcomes by id on a group: every replica answers committed from the
// commit records it applied; an abort is the leader's, so a follower
// sends the question on ("not leader") and the tools, given every
// replica, get the leader's answer.
func TestOutcomeOnEveryReplica(t *testing.T) {
	g := newGroup(t)
	l := g.leader(5 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, p := range g.parts {
		if err := p.WaitConnected(ctx); err != nil {
			t.Fatal(err)
		}
	}
	cl, err := client.Dial(g.addrs[l], client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	run := func(acct uint32, amount int64) uuid.UUID {
		id := uuid.Must(uuid.NewV7())
		if _, err := cl.Run(ctx, id, []client.Branch{
			{Participant: "p1", Work: bank.AppendWork(nil, acct, -amount)},
			{Participant: "p2", Work: bank.AppendWork(nil, acct, amount)},
		}); err != nil {
			t.Fatal(err)
		}
		return id
	}
	// Two accounts: a staged commit is told before its participants
	// hear the decision, and p2 may still hold account 1's lock (a NO).
	committed, aborted := run(1, 5), run(2, 1_000_000) // p1 cannot pay a million
	ask := func(addr string, id uuid.UUID) (protocol.TxnStatus, error) {
		var st protocol.TxnStatus
		err := client.AdminArg(ctx, addr, "txn", id.String(), nil, &st)
		return st, err
	}
	for id, addr := range g.addrs {
		nodetest.Eventually(t, fmt.Sprintf("replica %d answers committed", id), func() bool {
			st, err := ask(addr, committed)
			return err == nil && st.State == protocol.TxnCommitted
		})
	}
	f := l%3 + 1
	_, err = ask(g.addrs[f], aborted)
	var re *client.RefusedError
	if !errors.As(err, &re) || !re.NotLeader || re.Message != g.addrs[l] {
		t.Fatalf("a follower asked about an abort: %v, want not leader naming %s", err, g.addrs[l])
	}
	all := strings.Join([]string{g.addrs[f], g.addrs[l]}, ",")
	if st, err := ask(all, aborted); err != nil || st.State != protocol.TxnAborted || st.Cause != "voted-no" || st.Participant != "p1" {
		t.Fatalf("asked every replica about the abort: %+v, %v", st, err)
	}
}

// A replica compacts its raft log every RaftSnapshotEvery entries, and the
// commits it applied before a compaction then live only in its outcome
// index: it syncs the index first. Crashed (its disk keeps only what was
// synced) and restarted, a replica — leader or not — still answers
// committed for every acknowledged commit.
func TestOutcomesSurviveCompactionAndCrash(t *testing.T) {
	g := newGroup(t, func(c *coordinator.Config) { c.RaftSnapshotEvery = 10 })
	l := g.leader(5 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, p := range g.parts {
		if err := p.WaitConnected(ctx); err != nil {
			t.Fatal(err)
		}
	}
	cl, err := client.Dial(g.addrs[l], client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var committed []uuid.UUID
	for i := range 60 {
		id := uuid.Must(uuid.NewV7())
		res, err := cl.Run(ctx, id, []client.Branch{
			{Participant: "p1", Work: bank.AppendWork(nil, uint32(i), -5)},
			{Participant: "p2", Work: bank.AppendWork(nil, uint32(i), 5)},
		})
		if err != nil || res.Outcome != client.Committed {
			t.Fatalf("txn %d: %v %v", i, res, err)
		}
		committed = append(committed, id)
	}
	cl.Close()
	f := l%3 + 1
	nodetest.Eventually(t, "the follower applied and compacted", func() bool {
		st := g.coords[f].Status()
		return st.RaftSnapshot >= 50
	})
	for _, id := range []uint64{f, l} {
		g.crash(id)
		g.start(id, nil)
	}
	// A restarted replica learns which of its log's entries are committed
	// only from a leader (raft persists the commit index lazily, and the
	// crash kept only what was synced): until then it sends whoever asks
	// about a transaction it has not applied to the leader. So each
	// replica is asked until it answers; any answer but committed fails at
	// once. A commit that the compaction lost from the outcome index is
	// never answered — no snapshot carries ended transactions, and the
	// raft log no longer holds it — and fails at the deadline.
	for _, id := range []uint64{f, l} {
		for _, txn := range committed {
			var st protocol.TxnStatus
			var err error
			nodetest.Eventually(t, fmt.Sprintf("replica %d answers about %v", id, txn), func() bool {
				st = protocol.TxnStatus{}
				err = client.AdminArg(ctx, g.addrs[id], "txn", txn.String(), nil, &st)
				var re *client.RefusedError
				return !errors.As(err, &re) || !re.NotLeader
			})
			if err != nil || st.State != protocol.TxnCommitted {
				t.Fatalf("replica %d after compaction and a crash, acknowledged commit %v: %+v, %v", id, txn, st, err)
			}
		}
	}
}

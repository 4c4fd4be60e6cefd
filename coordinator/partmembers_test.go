package coordinator_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/protocol"
)

// answeringParticipant is a fake participant for a replica group: it votes
// yes and (while ack holds) acknowledges commits on the connection each
// prepare or decision came on — the replica that sent it, as a real
// participant does (participant/route.go) — and counts what it got.
type answeringParticipant struct {
	*nodetest.Peer
	name     string
	ack      atomic.Bool
	mu       sync.Mutex
	prepares map[uuid.UUID]int
	commits  map[uuid.UUID]int
}

func newAnsweringParticipant(t *testing.T, name string) *answeringParticipant {
	f := &answeringParticipant{name: name, prepares: map[uuid.UUID]int{}, commits: map[uuid.UUID]int{}}
	f.ack.Store(true)
	f.Peer = nodetest.Listen(t, wire.Hello{Role: wire.RoleParticipant, Name: []byte(name)}, func(c *mux.Conn, fr wire.Frame) error {
		switch fr.Type {
		case wire.TypePrepare:
			var m wire.Prepare
			if err := m.Decode(fr); err != nil {
				return err
			}
			f.mu.Lock()
			f.prepares[m.Txn]++
			f.mu.Unlock()
			return c.Send(&wire.Vote{Txn: m.Txn, From: []byte(name), Vote: protocol.VoteYes})
		case wire.TypeDecision:
			var m wire.Decision
			if err := m.Decode(fr); err != nil {
				return err
			}
			if m.Decision != protocol.DecisionCommit {
				return nil
			}
			f.mu.Lock()
			f.commits[m.Txn]++
			f.mu.Unlock()
			if f.ack.Load() {
				return c.Send(&wire.Ack{Txn: m.Txn, From: []byte(name)})
			}
		}
		return nil
	})
	return f
}

func (f *answeringParticipant) committed(id uuid.UUID) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.commits[id]
}

// changeParticipants asks the replicas at addrs (ADDR1,ADDR2,…) for a
// participant change.
func (g *group) changeParticipants(addrs, change, arg string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var rep coordinator.ParticipantsReport
	err := client.ChangeParticipants(ctx, addrs, change, arg, nil, &rep)
	return rep.Participants, err
}

// runAt runs one transaction at replica id whose branches name
// participants (account i of a bank; any work for a fake), without
// recording it for check (which counts transfers between p1 and p2).
func (g *group) runAt(id uint64, txn uuid.UUID, i int, participants ...string) client.Result {
	g.t.Helper()
	cl, err := client.Dial(g.addrs[id], client.Options{})
	if err != nil {
		g.t.Fatal(err)
	}
	defer cl.Close()
	var bs []client.Branch
	for _, name := range participants {
		bs = append(bs, client.Branch{Participant: name, Work: bank.AppendWork(nil, uint32(i), 0)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, _ := cl.Run(ctx, txn, bs)
	return res
}

// knows waits until replica id lists participant name at addr ("": does
// not list it).
func (g *group) knows(id uint64, name, addr string) {
	g.t.Helper()
	nodetest.Eventually(g.t, "replica "+itoa(id)+" lists "+name+" at "+addr, func() bool {
		p, ok := g.coords[id].Status().Participants[name]
		if addr == "" {
			return !ok
		}
		return ok && p.Addr == addr
	})
}

// otherThan is the replica of 1, 2, 3 that is neither a nor b.
func otherThan(a, b uint64) uint64 { return 6 - a - b }

// A participant added to a replica group — the request sent to a
// follower, which names the leader — is applied by every replica; one
// that was down meanwhile learns it from a snapshot (the add's entry was
// compacted away) and knows it again when it restarts from that snapshot;
// and when the leader is lost the new leader routes transactions to it.
func TestReplicaGroupAddsParticipant(t *testing.T) {
	g := newGroup(t, func(c *coordinator.Config) { c.RaftSnapshotEvery = 10 })
	l := g.leader(5 * time.Second)
	away := l%3 + 1
	f := otherThan(l, away)
	g.stop(away)
	p3 := newAnsweringParticipant(t, "p3")

	// A follower answers "not leader", naming the leader, and changes
	// nothing; the tool follows it.
	nodetest.Eventually(t, "the follower knows the leader", func() bool { return g.coords[f].Status().Leader == g.addrs[l] })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := nodetest.Admin(t, g.addrs[f]).Call(ctx, &wire.AdminRequest{Kind: wire.AdminParticipantsAdd, Arg: []byte("p3=" + p3.Addr())}, nil)
	if !nodetest.RemoteError(err, wire.CodeNotLeader, g.addrs[l]) {
		t.Fatalf("follower %d answered %v; want not-leader naming %s", f, err, g.addrs[l])
	}
	if _, ok := g.coords[l].Status().Participants["p3"]; ok {
		t.Fatal("the follower's refusal added p3")
	}
	ps, err := g.changeParticipants(g.addrs[f], "add", "p3="+p3.Addr())
	if err != nil {
		t.Fatalf("add p3 at follower %d: %v", f, err)
	}
	if ps["p3"] != p3.Addr() || ps["p1"] != g.peers["p1"] || len(ps) != 3 {
		t.Fatalf("participants after the add: %v", ps)
	}
	// The answer came once the leader applied it: the leader knows it now.
	if st := g.coords[l].Status(); st.Participants["p3"].Addr != p3.Addr() {
		t.Fatalf("the leader's participants after the add: %+v", st.Participants)
	}
	g.knows(f, "p3", p3.Addr())
	nodetest.Eventually(t, "the leader connected to p3", func() bool {
		return g.coords[l].Status().Participants["p3"].Connected > 0
	})
	for i := range 30 {
		if res := g.runAt(l, newID(), i, "p1", "p3"); res.Outcome != client.Committed {
			t.Fatalf("txn %d through p3: %+v", i, res)
		}
	}
	// A retried add (same name, same address) is refused as a lone
	// coordinator refuses it; a different address for a known name too.
	_, err = g.changeParticipants(g.addrs[l], "add", "p3=127.0.0.1:9")
	refused(t, err, `participant "p3" is already known`)

	// The replica that was down catches up from a snapshot taken after
	// the add, then restarts from that snapshot.
	snap := g.coords[l].Status().RaftSnapshot
	g.start(away, nil)
	nodetest.Eventually(t, "the replica that was away installs a snapshot", func() bool {
		return g.coords[away].Status().RaftSnapshot >= snap
	})
	g.knows(away, "p3", p3.Addr())
	g.stop(away)
	g.start(away, nil)
	if st := g.coords[away].Status(); st.Participants["p3"].Addr != p3.Addr() {
		t.Fatalf("restarted from its snapshot, replica %d lists %+v", away, st.Participants)
	}

	// The leader goes; the new one sends p3 its prepares.
	g.crash(l)
	nl := g.leader(5 * time.Second)
	id := newID()
	nodetest.Eventually(t, "a commit through p3 at the new leader", func() bool {
		return g.runAt(nl, id, 100, "p1", "p3").Outcome == client.Committed
	})
	// The decision leaves with the client's answer, not before it.
	nodetest.Eventually(t, "p3 gets the commit from the new leader", func() bool { return p3.committed(id) > 0 })
	// The replica that crashed comes back knowing p3 from its own log.
	g.start(l, nil)
	g.knows(l, "p3", p3.Addr())
	g.check()
}

// Removing a participant from a replica group is refused while a commit
// naming it is not acknowledged — at the leader, and again at the next
// leader, which restored that commit from the log — and bad changes are
// refused with the reason; once the commit is settled the removal is
// applied everywhere, new begins naming it are rejected, and a replica
// that was down meanwhile applies it when it catches up.
func TestReplicaGroupRemovesParticipantOnceSettled(t *testing.T) {
	g := newGroup(t)
	l := g.leader(5 * time.Second)
	p3 := newAnsweringParticipant(t, "p3")
	if _, err := g.changeParticipants(g.addrs[l], "add", "p3="+p3.Addr()); err != nil {
		t.Fatal(err)
	}
	nodetest.Eventually(t, "the leader connected to p3", func() bool {
		return g.coords[l].Status().Participants["p3"].Connected > 0
	})
	p3.ack.Store(false)
	id := newID()
	if res := g.runAt(l, id, 1, "p1", "p3"); res.Outcome != client.Committed {
		t.Fatalf("%+v, want committed", res)
	}
	nodetest.Eventually(t, "one commit in doubt", func() bool { return g.coords[l].Status().InDoubt == 1 })

	all := g.addrs[1] + "," + g.addrs[2] + "," + g.addrs[3]
	_, err := g.changeParticipants(all, "remove", "p3")
	refused(t, err, "in flight or in doubt")
	for _, c := range []struct{ change, arg, want string }{
		{"add", "p1=127.0.0.1:9", `participant "p1" is already known`},
		{"add", "p4=" + g.peers["p2"], `already participant "p2"'s`},
		{"add", "p4", "malformed participant"},
		{"remove", "p9", `"p9" is not one of this coordinator's participants`},
		{"remove", "", "remove which participant"},
	} {
		_, err := g.changeParticipants(all, c.change, c.arg)
		refused(t, err, c.want)
	}
	// Still fully there: the refused removal barred nothing.
	if res := g.runAt(l, newID(), 2, "p1", "p3"); res.Outcome != client.Committed {
		t.Fatalf("after a refused removal: %+v", res)
	}

	g.crash(l)
	nl := g.leader(5 * time.Second)
	nodetest.Eventually(t, "the new leader holds the commits in doubt", func() bool { return g.coords[nl].Status().InDoubt >= 1 })
	_, err = g.changeParticipants(all, "remove", "p3")
	refused(t, err, "in flight or in doubt")

	p3.ack.Store(true)
	var ps map[string]string
	nodetest.Eventually(t, "p3 removed once its commits are acknowledged", func() bool {
		ps, err = g.changeParticipants(all, "remove", "p3")
		if err != nil {
			refused(t, err, "in flight or in doubt")
		}
		return err == nil
	})
	if _, ok := ps["p3"]; ok || len(ps) != 2 {
		t.Fatalf("participants after removing p3: %v", ps)
	}
	if p3.committed(id) == 0 {
		t.Fatal("p3 never got the commit it was in doubt about")
	}
	for rid := range g.coords {
		g.knows(rid, "p3", "")
	}
	if res := g.runAt(nl, newID(), 3, "p1", "p3"); res.Outcome != client.Rejected || !strings.Contains(res.Detail, `unknown participant "p3"`) {
		t.Fatalf("a begin naming the removed p3: %+v", res)
	}
	// The replica that crashed before the removal applies it from the log.
	g.start(l, nil)
	g.knows(l, "p3", "")
	// And p3 may come back, at another address.
	p3b := newAnsweringParticipant(t, "p3")
	if _, err := g.changeParticipants(all, "add", "p3="+p3b.Addr()); err != nil {
		t.Fatal(err)
	}
	for rid := range g.coords {
		g.knows(rid, "p3", p3b.Addr())
	}
	id = newID()
	nodetest.Eventually(t, "a commit through the re-added p3", func() bool {
		return g.runAt(g.leader(5*time.Second), id, 4, "p1", "p3").Outcome == client.Committed
	})
	g.check()
}

// Before any change each replica uses its --participant list; after one,
// the log wins over the flags on restart, whatever they say.
func TestReplicaGroupParticipantsLogWinsOverFlags(t *testing.T) {
	g := newGroup(t)
	l := g.leader(5 * time.Second)
	p3 := newAnsweringParticipant(t, "p3")
	if _, err := g.changeParticipants(g.addrs[l], "add", "p3="+p3.Addr()); err != nil {
		t.Fatal(err)
	}
	for rid := range g.coords {
		g.knows(rid, "p3", p3.Addr())
	}
	f := l%3 + 1
	g.stop(f)
	// Restarted with flags that name only p1: the log's table wins.
	g.with = append(g.with, func(c *coordinator.Config) {
		if c.ID == f {
			c.Participants = map[string]string{"p1": g.peers["p1"]}
		}
	})
	g.start(f, nil)
	st := g.coords[f].Status()
	if len(st.Participants) != 3 || st.Participants["p3"].Addr != p3.Addr() || st.Participants["p2"].Addr != g.peers["p2"] {
		t.Fatalf("restarted with other flags, replica %d lists %+v", f, st.Participants)
	}
}

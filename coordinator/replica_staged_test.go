package coordinator_test

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/participant"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/protocol"
)

// Staged decisions on a replicated coordinator (docs/ha.md, "Staged
// decisions in a group"), with real replicas, participants and sockets:
// the leader is lost at the two points where a staged transaction is
// neither committed nor aborted in anyone's eyes.

// gatedBank is a bank whose Prepare waits while the gate is held: the
// participant's vote for every transaction is held back (its pump waits in
// Prepare, and what arrives meanwhile queues behind it).
type gatedBank struct {
	*bank.Bank
	held    atomic.Bool
	open    chan struct{}
	once    sync.Once
	waiting atomic.Int32
}

func (b *gatedBank) Prepare(id protocol.TxnID, work []byte) protocol.Vote {
	if b.held.Load() {
		b.waiting.Add(1)
		<-b.open
	}
	return b.Bank.Prepare(id, work)
}

func (b *gatedBank) release() { b.once.Do(func() { close(b.open) }) }

// startStaged runs n transactions (accounts first…first+n-1) at replica
// id, each on a goroutine, and returns what waits for them all.
func (g *group) startStaged(id uint64, first, n int) *sync.WaitGroup {
	var wg sync.WaitGroup
	for i := first; i < first+n; i++ {
		wg.Go(func() { g.transfer(id, i) })
	}
	return &wg
}

// settled waits until every running replica has applied the same raft
// index for a while: what the leader proposed is committed everywhere.
func (g *group) settled(within time.Duration) {
	g.t.Helper()
	deadline := time.Now().Add(within)
	var last uint64
	stable := 0
	for stable < 10 {
		if time.Now().After(deadline) {
			g.t.Fatalf("the replicas did not settle on one applied index within %v", within)
		}
		var idx uint64
		same := true
		for _, c := range g.coords {
			a := c.Status().RaftApplied
			if idx != 0 && a != idx {
				same = false
			}
			idx = a
		}
		if same && idx == last {
			stable++
		} else {
			stable = 0
		}
		last = idx
		time.Sleep(20 * time.Millisecond)
	}
}

// inDoubt waits until neither participant holds a transaction prepared.
func (g *group) inDoubt(within time.Duration) {
	g.t.Helper()
	deadline := time.Now().Add(within)
	for {
		p1, p2 := g.parts[0].AccountsSummary().Prepared, g.parts[1].AccountsSummary().Prepared
		if p1+p2 == 0 {
			return
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("participants still in doubt after %v: %d and %d", within, p1, p2)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// outcomes counts, among accounts first…first+n-1, the transfers the banks
// hold committed and aborted. Only once check has stopped the
// participants: a bank is its participant's goroutine's.
func (g *group) outcomes(first, n int) (committed, aborted int) {
	for i := first; i < first+n; i++ {
		switch g.banks[1].Balance(uint32(i)) {
		case 1005:
			committed++
		case 1000:
			aborted++
		}
	}
	return committed, aborted
}

// staged waits until replica id counts at least n transactions begun
// staged (its shards publish their counts as their pumps turn), and
// returns the count.
func (g *group) staged(id uint64, n uint64) uint64 {
	g.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := g.coords[id].Status()
		if st.Staged >= n {
			return st.Staged
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("replica %d ran %d transactions staged, want at least %d: %+v", id, st.Staged, n, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (g *group) waitConnected() {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, p := range g.parts {
		if err := p.WaitConnected(ctx); err != nil {
			g.t.Fatal(err)
		}
	}
	for _, c := range g.coords {
		if err := c.WaitConnected(ctx); err != nil {
			g.t.Fatal(err)
		}
	}
}

// TestReplicatedStagedLeaderLostBeforeVotes: the leader dies after its
// staged records are committed in raft and before p2's votes arrive (p2
// holds them). The next leader must hold every one of those transactions
// undecided — never presume them aborted — and resolve them: p1 and p2
// prepared (p2 once let go), so each commits. Before the leader dies both
// followers restart, from a snapshot taken after staged records were
// applied: the staged records travel through snapshots too.
func TestReplicatedStagedLeaderLostBeforeVotes(t *testing.T) {
	var gate *gatedBank
	g := newGroupRes(t, 0, groupAccounts, func(name string, b *bank.Bank) participant.Inspectable {
		if name != "p2" {
			return b
		}
		gate = &gatedBank{Bank: b, open: make(chan struct{})}
		return gate
	}, func(c *coordinator.Config) { c.RaftSnapshotEvery = 1 })
	t.Cleanup(gate.release) // before the group closes: p2's pump may wait in Prepare
	l := g.leader(5 * time.Second)
	g.waitConnected()
	for i := range 5 {
		if res := g.transfer(l, i); res.Outcome != client.Committed {
			t.Fatalf("txn %d: %v", i, res)
		}
	}
	before := g.staged(l, 5)

	const first, n = 100, 10
	g.settled(5 * time.Second)
	idx0 := g.coords[l].Status().RaftApplied
	gate.held.Store(true)
	wg := g.startStaged(l, first, n)
	deadline := time.Now().Add(5 * time.Second)
	for g.coords[l].Status().Staged < before+n || gate.waiting.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the staged transactions did not begin: %+v, p2 waiting %d", g.coords[l].Status(), gate.waiting.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Every RecStaged committed on the followers, and every prepare in
	// p2's queue (loopback: long done after this wait).
	g.settled(5 * time.Second)
	time.Sleep(300 * time.Millisecond)
	if st := g.coords[l].Status(); st.Undecided < n {
		t.Fatalf("%d staged transactions undecided at the leader, want %d: %+v", st.Undecided, n, st)
	}
	for id := range maps.Clone(g.coords) {
		if id == l {
			continue
		}
		if st := g.coords[id].Status(); st.RaftSnapshot <= idx0 {
			t.Fatalf("replica %d's latest snapshot is at %d, before the staged records (after %d)", id, st.RaftSnapshot, idx0)
		}
		g.stop(id)
		g.start(id, nil)
		g.settled(5 * time.Second)
	}
	g.crash(l)
	wg.Wait() // their clients see unknown: the connection closed

	// The new leader's shards publish their counts as their pumps turn.
	nl := g.leader(5 * time.Second)
	deadline = time.Now().Add(5 * time.Second)
	for st := g.coords[nl].Status(); st.Undecided < n; st = g.coords[nl].Status() {
		if time.Now().After(deadline) {
			t.Fatalf("the new leader %d holds %d undecided staged transactions, want %d: %+v", nl, st.Undecided, n, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	gate.held.Store(false)
	gate.release()
	g.start(l, nil)
	g.inDoubt(10 * time.Second)
	g.mu.Lock()
	for i := first; i < first+n; i++ {
		if res := g.results[i]; res.Outcome != client.Unknown && res.Outcome != client.Committed {
			t.Errorf("txn %d was told %v; it commits", i, res)
		}
	}
	g.mu.Unlock()
	g.check()
	if c, a := g.outcomes(first, n); c != n {
		t.Fatalf("after the failover %d of %d staged transactions committed, %d aborted: the new leader must resolve them, and all were prepared", c, n, a)
	}
}

// stagedUnreplicated begins n staged transactions at a leader whose
// followers are stopped: their staged records stay in its log alone, the
// participants prepare and vote, and no client is told anything. Then the
// leader crashes (keeping what it synced: the staged entries). It returns
// the old leader and the followers.
func stagedUnreplicated(t *testing.T, g *group, first, n int) (old uint64, followers []uint64) {
	t.Helper()
	l := g.leader(5 * time.Second)
	g.waitConnected()
	for i := range 5 {
		if res := g.transfer(l, i); res.Outcome != client.Committed {
			t.Fatalf("txn %d: %v", i, res)
		}
	}
	g.settled(5 * time.Second)
	for id := range g.coords {
		if id != l {
			followers = append(followers, id)
		}
	}
	for _, f := range followers {
		g.stop(f)
	}
	before := g.coords[l].Status().Staged
	wg := g.startStaged(l, first, n)
	// Every vote in: both participants hold each transaction prepared,
	// and the leader cannot commit an entry (no quorum).
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := g.coords[l].Status()
		p1, p2 := g.parts[0].AccountsSummary().Prepared, g.parts[1].AccountsSummary().Prepared
		if st.Staged >= before+uint64(n) && p1 >= n && p2 >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the staged transactions were not all prepared: leader %+v, prepared %d and %d", st, p1, p2)
		}
		time.Sleep(5 * time.Millisecond)
	}
	g.mu.Lock()
	for i := first; i < first+n; i++ {
		if res, ok := g.results[i]; ok {
			t.Errorf("txn %d was answered %v before its staged record could commit", i, res)
		}
	}
	g.mu.Unlock()
	g.crash(l)
	wg.Wait()
	return l, followers
}

// TestReplicatedStagedLeaderLostBeforeStagedCommits, a: every vote is in
// but the staged records are only in the leader's log (its followers are
// down), so nobody was told. The leader crashes; the followers come back
// without those entries and elect one of them. The participants, in
// doubt, inquire: no staged record in the new leader's log, so presumed
// abort. The old leader's staged entries then turn up when it restarts —
// and raft overwrites them: every transaction stays aborted.
//
// b: the same, but the old leader comes back with one follower. Its log
// is the longer, so it leads and commits its entries in its new term: the
// staged records (and the commit records it appended as the votes came
// in, which waited for them); every participant prepared, so each
// commits, re-driven (or resolved, had a commit record not been there).
func TestReplicatedStagedLeaderLostBeforeStagedCommits(t *testing.T) {
	// A leader that has lost its followers steps down after an election
	// timeout (CheckQuorum): 1 s here, for the begins to stage first.
	slow := func(c *coordinator.Config) { c.ElectionTicks = 50 }
	const first, n = 100, 10
	t.Run("followers elect: aborted", func(t *testing.T) {
		g := newGroup(t, slow)
		old, followers := stagedUnreplicated(t, g, first, n)
		for _, f := range followers {
			g.start(f, nil)
		}
		nl := g.leader(10 * time.Second)
		if nl == old {
			t.Fatalf("the crashed leader %d leads", old)
		}
		// The participants' inquiries are answered abort (presumed).
		g.inDoubt(10 * time.Second)
		// The deposed leader's entries come back with it, and lose.
		g.start(old, nil)
		g.settled(10 * time.Second)
		// Its leadership now: nothing of the old entries may revive.
		g.stop(nl)
		g.leader(10 * time.Second)
		g.settled(10 * time.Second)
		for _, c := range g.coords {
			if st := c.Status(); st.Undecided > 0 {
				t.Fatalf("a replica holds %d undecided staged transactions: %+v", st.Undecided, st)
			}
		}
		g.check()
		if c, a := g.outcomes(first, n); a != n {
			t.Fatalf("%d committed, %d aborted: the leader elected had no staged record for them, every one must abort, and stay aborted when the old leader's entries turn up", c, a)
		}
	})
	t.Run("old leader leads again: committed", func(t *testing.T) {
		g := newGroup(t, slow)
		old, followers := stagedUnreplicated(t, g, first, n)
		g.start(followers[0], nil)
		g.start(old, nil)
		if nl := g.leader(10 * time.Second); nl != old {
			t.Fatalf("replica %d leads; only %d, whose log is the longer, can", nl, old)
		}
		g.inDoubt(10 * time.Second)
		g.start(followers[1], nil)
		g.check()
		if c, a := g.outcomes(first, n); c != n {
			t.Fatalf("%d committed, %d aborted: the old leader's log held their staged records (and, every vote in, their commit records), committed in its new term, so each commits", c, a)
		}
	})
}

// TestReplicatedStagedFlag: a group stages by default, and Classic
// (--staged=false) keeps it to classic two-phase commit.
func TestReplicatedStagedFlag(t *testing.T) {
	for _, classic := range []bool{false, true} {
		t.Run(fmt.Sprintf("classic=%v", classic), func(t *testing.T) {
			g := newGroup(t, func(c *coordinator.Config) { c.Classic = classic })
			l := g.leader(5 * time.Second)
			g.waitConnected()
			for i := range 5 {
				if res := g.transfer(l, i); res.Outcome != client.Committed {
					t.Fatalf("txn %d: %v", i, res)
				}
			}
			if classic {
				time.Sleep(100 * time.Millisecond) // the counts are published as the pumps turn
				if st := g.coords[l].Status(); st.Staged != 0 {
					t.Fatalf("%d of 5 transactions ran staged with Classic: %+v", st.Staged, st)
				}
			} else {
				g.staged(l, 5)
			}
			g.check()
		})
	}
}

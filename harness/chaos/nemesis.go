package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/commitd/commitd/coordinator"
)

// Fault is a kind of fault the nemesis injects.
type Fault uint8

// The faults.
const (
	// KillCoordinator: kill -9 the lone coordinator, restart it after a
	// pause.
	KillCoordinator Fault = iota + 1
	// KillParticipants: kill -9 one or two participants, restart them.
	KillParticipants
	// KillAll: kill -9 every process at once, restart them all.
	KillAll
	// Pause: SIGSTOP one process for longer than the prepare timeout, then
	// SIGCONT.
	Pause
	// Partition: cut one or two processes off the network (their links
	// down: packets dropped, connections kept), then heal it. Only dealt
	// when the cluster runs in a Net.
	Partition
	// KillLeader: kill -9 the replica that leads a replicated
	// coordinator (found by asking each for its status), restart it after
	// a pause.
	KillLeader
	// KillFollower: kill -9 a replica that does not lead, restart it.
	KillFollower
	// PauseLeader: SIGSTOP the leader for 0.6–4 s (often longer than an
	// election), then SIGCONT: it wakes believing it leads.
	PauseLeader
	// PartitionLeader: cut the leader off the network — from the other
	// replicas, the participants and the clients — for 1–4 s, then heal
	// it. Only dealt when the cluster runs in a Net.
	PartitionLeader
	// lostDecisions is the planted fault (LoseDecisions), never dealt.
	lostDecisions
)

// Faults lists every Fault, in report order.
var Faults = []Fault{KillCoordinator, KillParticipants, KillAll, Pause, Partition, KillLeader, KillFollower, PauseLeader, PartitionLeader}

var faultNames = [...]string{"?", "kill coordinator", "kill participants", "kill all", "pause (SIGSTOP)", "partition",
	"kill leader", "kill follower", "pause leader", "partition leader", "PLANTED lost decisions"}

func (f Fault) String() string {
	if int(f) < len(faultNames) {
		return faultNames[f]
	}
	return fmt.Sprintf("Fault(%d)", uint8(f))
}

// needsNet reports whether f is dealt only when the cluster runs in a Net.
func (f Fault) needsNet() bool { return f == Partition || f == PartitionLeader }

// leaderFault reports whether f aims at a replicated coordinator's leader.
func (f Fault) leaderFault() bool { return f == KillLeader || f == PauseLeader || f == PartitionLeader }

// Nemesis injects faults into a Cluster at random moments. Every choice —
// which fault, which process, how long to wait — comes from a generator
// seeded with Seed, so a seed replays the same sequence of choices (the
// moments they land in the load differ: processes are not deterministic).
type Nemesis struct {
	c   *Cluster
	rng *rand.Rand // owned by Run's goroutine
	log io.Writer
	// PrepareTimeout is the servers' prepare timeout: a pause lasts longer.
	prepareTimeout time.Duration
	start          time.Time

	mu struct {
		sync.Mutex
		counts map[Fault]int
		// inDoubtAtRestart sums what restarted servers held in doubt
		// when they first answered (a sample: recovery may already have
		// resolved some by then).
		inDoubtAtRestart int
		// elected holds, for each fault aimed at the leader that saw
		// another replica take over while it lasted, the time from the
		// fault to the first status that named the new leader; stayed
		// counts those that ended before another took over (a pause
		// shorter than an election, a kill restarted quickly).
		elected map[Fault][]time.Duration
		stayed  map[Fault]int
	}
}

// NewNemesis returns a nemesis for c, seeded with seed, that describes each
// fault on log.
func NewNemesis(c *Cluster, seed uint64, log io.Writer) *Nemesis {
	n := &Nemesis{
		c:              c,
		rng:            rand.New(rand.NewPCG(seed, 0x6e656d65)),
		log:            log,
		prepareTimeout: c.opts.PrepareTimeout,
		start:          time.Now(),
	}
	n.mu.counts = map[Fault]int{}
	n.mu.elected = map[Fault][]time.Duration{}
	n.mu.stayed = map[Fault]int{}
	return n
}

// Takeovers returns, for each fault aimed at the leader, how long until
// another replica was seen leading, for those during which one was, and
// how many ended with none seen.
func (n *Nemesis) Takeovers() (elected map[Fault][]time.Duration, stayed map[Fault]int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	elected, stayed = map[Fault][]time.Duration{}, map[Fault]int{}
	for k, v := range n.mu.elected {
		elected[k] = append([]time.Duration(nil), v...)
	}
	for k, v := range n.mu.stayed {
		stayed[k] = v
	}
	return elected, stayed
}

// Counts returns how many faults of each kind were injected.
func (n *Nemesis) Counts() map[Fault]int {
	n.mu.Lock()
	defer n.mu.Unlock()
	m := make(map[Fault]int, len(n.mu.counts))
	for k, v := range n.mu.counts {
		m[k] = v
	}
	return m
}

// InDoubtAtRestart is the number of transactions restarted servers held
// in doubt when they first answered.
func (n *Nemesis) InDoubtAtRestart() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.inDoubtAtRestart
}

// between returns a duration in [lo, hi) from the nemesis's generator.
func (n *Nemesis) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(n.rng.Int64N(int64(hi-lo)))
}

func (n *Nemesis) logf(format string, args ...any) {
	fmt.Fprintf(n.log, "nemesis %6.2fs  %s\n", time.Since(n.start).Seconds(), fmt.Sprintf(format, args...))
}

// Kinds returns the faults the nemesis deals. For a lone coordinator:
// kill coordinator, kill participants, kill all, pause and partition; for
// a replicated one, kill leader, kill follower, pause leader and partition
// leader in place of kill coordinator. Partitions only if the cluster runs
// in a Net (Skipped lists them otherwise).
func (n *Nemesis) Kinds() []Fault {
	var ks []Fault
	for _, f := range n.kinds() {
		if !f.needsNet() || n.c.net != nil {
			ks = append(ks, f)
		}
	}
	return ks
}

// Skipped returns the kinds this cluster would see but cannot: the
// partitions, when it does not run in a Net.
func (n *Nemesis) Skipped() []Fault {
	var ks []Fault
	for _, f := range n.kinds() {
		if f.needsNet() && n.c.net == nil {
			ks = append(ks, f)
		}
	}
	return ks
}

func (n *Nemesis) kinds() []Fault {
	if n.c.Replicated() {
		return []Fault{KillLeader, KillFollower, PauseLeader, PartitionLeader, KillParticipants, KillAll, Pause, Partition}
	}
	return []Fault{KillCoordinator, KillParticipants, KillAll, Pause, Partition}
}

// Run injects faults until ctx ends, one at a time: a random gap, then a
// fault, then whatever it broke is restored and the processes answer again.
// Faults are dealt from a shuffled deck of every kind it deals (Kinds), so
// a short run sees each kind. Run returns once everything is running and
// connected again; an error means a process would not come back.
func (n *Nemesis) Run(ctx context.Context) error {
	kinds := n.Kinds()
	var deck []Fault
	for {
		if len(deck) == 0 {
			deck = append(deck, kinds...)
			n.rng.Shuffle(len(deck), func(i, j int) { deck[i], deck[j] = deck[j], deck[i] })
		}
		f := deck[0]
		deck = deck[1:]
		gap := n.between(300*time.Millisecond, 2500*time.Millisecond)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(gap):
		}
		began := time.Now()
		if err := n.inject(f); err != nil {
			return err
		}
		if n.c.Replicated() {
			// Everything is back: the group must have a leader again
			// (an election takes 0.5–1 s; restarted replicas catch up).
			repaired := time.Now()
			l, st, err := n.c.WaitLeader(30 * time.Second)
			if err != nil {
				return fmt.Errorf("after %v: %w", f, err)
			}
			n.logf("  repaired %v after the fault began; %s leads (term %d) %v later",
				repaired.Sub(began).Round(time.Millisecond), l.Name, st.Term, time.Since(repaired).Round(time.Millisecond))
		}
	}
}

func (n *Nemesis) inject(f Fault) error {
	n.mu.Lock()
	n.mu.counts[f]++
	n.mu.Unlock()
	c := n.c
	switch f {
	case KillCoordinator:
		return n.killRestart(f, c.Coordinators, nil)
	case KillLeader, PauseLeader, PartitionLeader:
		l, st, err := c.WaitLeader(10 * time.Second)
		if err != nil {
			return fmt.Errorf("%v: %w", f, err)
		}
		switch f {
		case KillLeader:
			return n.killRestart(f, []*Proc{l}, &st)
		case PauseLeader:
			d := n.between(n.prepareTimeout+100*time.Millisecond, 4*time.Second)
			n.logf("SIGSTOP leader %s (term %d) for %v", l.Name, st.Term, d.Round(time.Millisecond))
			if err := l.Pause(); err != nil {
				return err
			}
			n.watchTakeover(f, l, st.Term, d)
			return l.Resume()
		default:
			d := n.between(time.Second, 4*time.Second)
			n.logf("partition leader %s (term %d) off the network for %v", l.Name, st.Term, d.Round(time.Millisecond))
			return n.partition(f, []*Proc{l}, d, &st)
		}
	case KillFollower:
		var followers []*Proc
		l, _, err := c.Leader(context.Background())
		for _, p := range c.Coordinators {
			if err != nil || p != l {
				followers = append(followers, p)
			}
		}
		return n.killRestart(f, followers[n.rng.IntN(len(followers)):][:1], nil)
	case KillParticipants:
		k := 1 + n.rng.IntN(2)
		perm := n.rng.Perm(len(c.Participants))
		var victims []*Proc
		for _, i := range perm[:k] {
			victims = append(victims, c.Participants[i])
		}
		return n.killRestart(f, victims, nil)
	case KillAll:
		victims := c.Procs()
		n.rng.Shuffle(len(victims), func(i, j int) { victims[i], victims[j] = victims[j], victims[i] })
		return n.killRestart(f, victims, nil)
	case Pause:
		procs := c.Procs()
		p := procs[n.rng.IntN(len(procs))]
		d := n.prepareTimeout + n.between(100*time.Millisecond, 1500*time.Millisecond)
		n.logf("SIGSTOP %s for %v", p.Name, d.Round(time.Millisecond))
		if err := p.Pause(); err != nil {
			return err
		}
		time.Sleep(d)
		return p.Resume()
	case Partition:
		procs := c.Procs()
		k := 1 + n.rng.IntN(2)
		var victims []*Proc
		var names []string
		for _, i := range n.rng.Perm(len(procs))[:k] {
			victims = append(victims, procs[i])
			names = append(names, procs[i].Name)
		}
		d := n.prepareTimeout + n.between(100*time.Millisecond, 2500*time.Millisecond)
		n.logf("partition %s off the network for %v", strings.Join(names, ","), d.Round(time.Millisecond))
		return n.partition(f, victims, d, nil)
	}
	panic(fmt.Sprintf("chaos: nemesis dealt %v", f))
}

// watchTakeover watches, for up to d, for a replica other than old to lead
// in a term after oldTerm, and notes how long that took (or that none did)
// under fault f. It returns after d whatever it saw.
func (n *Nemesis) watchTakeover(f Fault, old *Proc, oldTerm uint64, d time.Duration) {
	start := time.Now()
	deadline := start.Add(d)
	var others []*Proc
	for _, p := range n.c.Coordinators {
		if p != old {
			others = append(others, p)
		}
	}
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), max(time.Until(deadline), time.Millisecond))
		l, st, err := n.c.leaderAmong(ctx, others)
		cancel()
		if err == nil && st.Term > oldTerm {
			took := time.Since(start)
			n.logf("  %s leads (term %d) %v after the %v", l.Name, st.Term, took.Round(time.Millisecond), f)
			n.mu.Lock()
			n.mu.elected[f] = append(n.mu.elected[f], took)
			n.mu.Unlock()
			time.Sleep(time.Until(deadline))
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	n.logf("  no other replica led during the %v", f)
	n.mu.Lock()
	n.mu.stayed[f]++
	n.mu.Unlock()
}

// killRestart kills the victims, waits a random pause and starts them
// again in a random order, waiting until each answers. lead, if set, is
// the status of the victim that led (a KillLeader): the pause then
// watches for another replica to take over.
func (n *Nemesis) killRestart(f Fault, victims []*Proc, lead *coordinator.Status) error {
	pause := n.between(50*time.Millisecond, 2*time.Second)
	order := n.rng.Perm(len(victims))
	var names []string
	for _, p := range victims {
		names = append(names, p.Name)
	}
	what := strings.Join(names, ",")
	if lead != nil {
		what = fmt.Sprintf("leader %s (term %d)", what, lead.Term)
	}
	n.logf("kill -9 %s; restart after %v", what, pause.Round(time.Millisecond))
	for _, p := range victims {
		if err := p.Kill(); err != nil {
			return err
		}
	}
	if lead != nil {
		n.watchTakeover(f, victims[0], lead.Term, pause)
	} else {
		time.Sleep(pause)
	}
	for _, i := range order {
		if err := victims[i].Start(); err != nil {
			return err
		}
	}
	for _, i := range order {
		p := victims[i]
		if err := WaitReady(p, 30*time.Second); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		held := 0
		if slices.Contains(n.c.Coordinators, p) {
			if st, err := Status(ctx, p); err == nil {
				held = st.InDoubt
			}
		} else if a, err := Accounts(ctx, p); err == nil {
			held = a.Prepared
		}
		cancel()
		n.mu.Lock()
		n.mu.inDoubtAtRestart += held
		n.mu.Unlock()
	}
	return nil
}

// partition sets the victims' links down for d, then up again (all of
// them, even if setting one down failed), and waits until each answers.
// lead, if set, is the status of the one victim, which led (a
// PartitionLeader): the partition then watches for another replica to
// take over.
func (n *Nemesis) partition(f Fault, victims []*Proc, d time.Duration, lead *coordinator.Status) error {
	var errs []error
	for _, p := range victims {
		if err := n.c.net.Partition(p.Name, false); err != nil {
			errs = append(errs, err)
			break
		}
	}
	if lead != nil && len(errs) == 0 {
		n.watchTakeover(f, victims[0], lead.Term, d)
	} else {
		time.Sleep(d)
	}
	for _, p := range victims {
		if err := n.c.net.Partition(p.Name, true); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	for _, p := range victims {
		if err := WaitReady(p, 30*time.Second); err != nil {
			return err
		}
	}
	return nil
}

// LoseDecisions is a planted fault, beyond what commitd promises to
// survive: it destroys commit decisions that a participant still waits
// for, so a run with it must break atomicity or durability — the proof
// that the checker can fail on a real run, not only on a made-up history
// (checker_test.go). It works as follows:
//
//   - A replicated coordinator: kill -9 one follower (it falls behind:
//     not paused, whose kernel would keep receiving the leader's appends
//     into its sockets and hand them over on waking), then pause a
//     participant until the leader holds commit decisions that participant
//     has not acknowledged (decided after the follower died, so only the
//     leader and the other follower have them); kill -9 the leader, the
//     other follower and the participant, delete the two replicas' data
//     directories — a quorum's disks — and start everything again, the
//     follower behind too. The group's log is now the one from before
//     those decisions.
//   - A lone coordinator: the same without followers; the coordinator's
//     data directory is deleted.
//
// The restarted participant holds those transactions prepared and asks the
// coordinator, which knows none of them and answers abort (presumed
// abort), while the other participants committed them and the clients
// were told committed.
func (n *Nemesis) LoseDecisions() error {
	c := n.c
	n.mu.Lock()
	n.mu.counts[lostDecisions]++
	n.mu.Unlock()
	var leader, behind *Proc
	var wiped []*Proc
	if c.Replicated() {
		l, _, err := c.WaitLeader(10 * time.Second)
		if err != nil {
			return err
		}
		leader = l
		var followers []*Proc
		for _, p := range c.Coordinators {
			if p != l {
				followers = append(followers, p)
			}
		}
		i := n.rng.IntN(len(followers))
		behind = followers[i]
		wiped = append([]*Proc{l}, slices.Delete(followers, i, i+1)...)
		n.logf("PLANTED: kill -9 follower %s so that it falls behind", behind.Name)
		if err := behind.Kill(); err != nil {
			return err
		}
		// Long enough that the transactions in flight when it died have
		// ended (their p99 under this load and -race is a few hundred
		// ms): with staged decisions the follower's log keeps the staged
		// record of every transaction begun before it died, and a new
		// group resolves those to commit from it — they are not lost.
		time.Sleep(time.Second)
	} else {
		leader = c.Coordinators[0]
		wiped = []*Proc{leader}
	}
	// Pause a participant until the leader holds decisions it has not
	// acknowledged: 300 ms lets the others' acknowledgements arrive.
	var victim *Proc
	for try := 0; try < 10 && victim == nil; try++ {
		p := c.Participants[n.rng.IntN(len(c.Participants))]
		if err := p.Pause(); err != nil {
			return err
		}
		time.Sleep(300 * time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := Status(ctx, leader)
		cancel()
		if err == nil && st.InDoubt > 0 {
			n.logf("PLANTED: %s paused; the leader %s holds %d decisions not acknowledged", p.Name, leader.Name, st.InDoubt)
			victim = p
			break
		}
		p.Resume()
		time.Sleep(200 * time.Millisecond)
	}
	if victim == nil {
		if behind != nil {
			behind.Start()
		}
		return errors.New("chaos: planted fault: no participant left a decision unacknowledged in 10 tries")
	}
	var names []string
	for _, p := range wiped {
		names = append(names, p.Name)
	}
	n.logf("PLANTED: kill -9 %s and %s; delete the data of %s; restart", strings.Join(names, ","), victim.Name, strings.Join(names, ","))
	for _, p := range append(wiped, victim) {
		if err := p.Kill(); err != nil {
			return err
		}
	}
	for _, p := range wiped {
		if err := os.RemoveAll(p.Data); err != nil {
			return err
		}
	}
	for _, p := range wiped {
		if err := p.Start(); err != nil {
			return err
		}
	}
	if behind != nil {
		if err := behind.Start(); err != nil {
			return err
		}
		wiped = append(wiped, behind)
	}
	if err := victim.Start(); err != nil {
		return err
	}
	for _, p := range append(wiped, victim) {
		if err := WaitReady(p, 30*time.Second); err != nil {
			return err
		}
	}
	if c.Replicated() {
		if _, _, err := c.WaitLeader(30 * time.Second); err != nil {
			return err
		}
	}
	return nil
}

package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// Fault is a kind of fault the nemesis injects.
type Fault uint8

// The faults.
const (
	// KillCoordinator: kill -9 the coordinator, restart it after a pause.
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
)

// Faults lists every Fault, in report order.
var Faults = []Fault{KillCoordinator, KillParticipants, KillAll, Pause, Partition}

var faultNames = [...]string{"?", "kill coordinator", "kill participants", "kill all", "pause (SIGSTOP)", "partition"}

func (f Fault) String() string {
	if int(f) < len(faultNames) {
		return faultNames[f]
	}
	return fmt.Sprintf("Fault(%d)", uint8(f))
}

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
	return n
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

// Kinds returns the faults the nemesis deals: every kind, but Partition
// only if the cluster runs in a Net.
func (n *Nemesis) Kinds() []Fault {
	var ks []Fault
	for _, f := range Faults {
		if f != Partition || n.c.net != nil {
			ks = append(ks, f)
		}
	}
	return ks
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
		if err := n.inject(f); err != nil {
			return err
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
		return n.killRestart([]*Proc{c.Coordinator})
	case KillParticipants:
		k := 1 + n.rng.IntN(2)
		perm := n.rng.Perm(len(c.Participants))
		var victims []*Proc
		for _, i := range perm[:k] {
			victims = append(victims, c.Participants[i])
		}
		return n.killRestart(victims)
	case KillAll:
		victims := c.Procs()
		n.rng.Shuffle(len(victims), func(i, j int) { victims[i], victims[j] = victims[j], victims[i] })
		return n.killRestart(victims)
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
		return n.partition(victims, d)
	}
	panic(fmt.Sprintf("chaos: nemesis dealt %v", f))
}

// killRestart kills the victims, waits a random pause and starts them
// again in a random order, waiting until each answers.
func (n *Nemesis) killRestart(victims []*Proc) error {
	pause := n.between(50*time.Millisecond, 2*time.Second)
	order := n.rng.Perm(len(victims))
	var names []string
	for _, p := range victims {
		names = append(names, p.Name)
	}
	n.logf("kill -9 %s; restart after %v", strings.Join(names, ","), pause.Round(time.Millisecond))
	for _, p := range victims {
		if err := p.Kill(); err != nil {
			return err
		}
	}
	time.Sleep(pause)
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
		if p == n.c.Coordinator {
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
func (n *Nemesis) partition(victims []*Proc, d time.Duration) error {
	var errs []error
	for _, p := range victims {
		if err := n.c.net.Partition(p.Name, false); err != nil {
			errs = append(errs, err)
			break
		}
	}
	time.Sleep(d)
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

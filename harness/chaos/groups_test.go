package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/cluster"
	"github.com/commitd/commitd/participant/bank"
	"github.com/google/uuid"
)

// The chaos run of a cluster of coordinator groups (docs/scale.md).
const (
	// defaultGroupsDuration is the run's load in `make test`: with one
	// replica per group, about a minute in all on 2 cores.
	defaultGroupsDuration = 15 * time.Second
	// groupFaultGap is the quiet time between two faults.
	groupFaultGap = 700 * time.Millisecond
)

// TestChaosGroups runs a cluster of coordinator groups as processes —
// groups 1 and 2 and three bank participants shared by both — under
// `commitd bench --cluster` at 100 callers, while faults kill -9 and
// restart each group's leader and the participants, one process at a
// time; and a third of the way in, a group is added under load: the
// participants were started with a map that already declares group 3 with
// weight 0 (they route by the id's stamp, so they serve it before any
// client uses it), its replicas start, and the bench is given a new map
// version with group 3 weighted (SIGHUP: client.Cluster.Replace). Then
// the same checks as TestChaos over every group: atomicity, durability of
// acknowledged commits, conservation, and that everything settles and
// fresh transactions commit in every group.
//
// CHAOS_GROUP_REPLICAS sets the replicas per group: 1 (the default, in
// `make test`: 6 processes and the bench on 2 cores) or 3 (`make chaos`:
// 12). CHAOS_DURATION sets the load (default 15s), CHAOS_SEED replays the
// faults' choices. Everything runs on loopback: no partitions.
func TestChaosGroups(t *testing.T) {
	replicas := 1
	if s := os.Getenv("CHAOS_GROUP_REPLICAS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n != 1 && n != 3 && n != 5 {
			t.Fatalf("CHAOS_GROUP_REPLICAS=%q: want 1, 3 or 5 replicas per group", s)
		}
		replicas = n
	}
	cfg := chaosConfig(t)
	if cfg.run.duration == 0 {
		cfg.run.duration = defaultGroupsDuration
	}
	res := runGroupsChaos(t, cfg.run, replicas)
	for _, v := range res.Violations {
		t.Errorf("violation: %v", v)
	}
}

// TestChaosGroupsCatchesLostDecisions is TestChaosGroups's planted fault:
// no fault but Nemesis.LoseDecisions aimed at group 2 (a quorum's — or the
// lone coordinator's — data directories deleted while a participant waits
// for their decisions), half way into an 8 s load during which group 3 is
// added as usual; the checker must report atomicity or durability broken,
// and only for group 2's transactions.
// It shows that the checker, fed a cluster's ack log and ledgers, can
// fail. `make chaos` runs it (CHAOS_GROUP_REPLICAS set); `make test` runs
// TestChaosCatchesLostDecisions on one group instead, to stay short.
func TestChaosGroupsCatchesLostDecisions(t *testing.T) {
	s := os.Getenv("CHAOS_GROUP_REPLICAS")
	if s == "" {
		t.Skip("run by make chaos (CHAOS_GROUP_REPLICAS=3); make test runs TestChaosCatchesLostDecisions")
	}
	replicas, err := strconv.Atoi(s)
	if err != nil || replicas != 1 && replicas != 3 && replicas != 5 {
		t.Fatalf("CHAOS_GROUP_REPLICAS=%q: want 1, 3 or 5 replicas per group", s)
	}
	cfg := chaosConfig(t)
	cfg.run.duration, cfg.run.plant = plantedDuration, true
	res := runGroupsChaos(t, cfg.run, replicas)
	if !res.Failed(Atomicity) && !res.Failed(Durability) {
		t.Fatalf("the checker passed a run whose group 2 lost its decisions: %v", res.Violations)
	}
	for _, v := range res.Violations {
		t.Logf("caught, as it must be: %v", v)
		// Only group 2 lost anything: a transaction of another group
		// broken here would mean the groups are not independent.
		if v.Txn != (uuid.UUID{}) && cluster.GroupOf(v.Txn) != 2 {
			t.Errorf("a violation in group %d, whose decisions were kept: %v", cluster.GroupOf(v.Txn), v)
		}
	}
}

// groupsRig is a cluster of groups as processes: groups[g-1] are group
// g's replicas; c holds every started coordinator process and the
// participants, so that the single-group helpers (waitQuiet, gather,
// Reopen) see them all.
type groupsRig struct {
	c        *Cluster
	groups   [][]*Proc
	started  [3]atomic.Bool    // set as each group starts; read by the nemesis
	maps     map[string]string // a map's name → its path
	benchMap string
}

// newGroupsRig lays out groups 1–3 of replicas each, and participants
// p1..p3 (all on loopback).
func newGroupsRig(t *testing.T, bin, dir string, replicas int) *groupsRig {
	opts := Options{Bin: bin, Dir: dir, Participants: chaosParts, Accounts: chaosAccounts, Balance: 1000,
		PrepareTimeout: 500 * time.Millisecond, InquireAfter: 200 * time.Millisecond, RedeliverMin: 50 * time.Millisecond}
	r := &groupsRig{c: &Cluster{opts: opts}, maps: map[string]string{}}
	r.c.mu.leaders = map[uint64]string{}
	addr := func() string {
		a, err := freeAddr()
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	var partLines, peers []string
	for i := range chaosParts {
		name := fmt.Sprintf("p%d", i+1)
		a := addr()
		partLines = append(partLines, fmt.Sprintf("participant %s=%s", name, a))
		peers = append(peers, name+"="+a)
		r.c.Participants = append(r.c.Participants, &Proc{Name: name, Addr: a, Data: filepath.Join(dir, name), bin: bin,
			log: filepath.Join(dir, name+".log")})
	}
	groupLine := make([]string, 3)
	for g := 1; g <= 3; g++ {
		var procs []*Proc
		var raftPeers []string
		for i := range replicas {
			name := fmt.Sprintf("g%dc%d", g, i+1)
			procs = append(procs, &Proc{Name: name, Addr: addr(), Data: filepath.Join(dir, name), bin: bin,
				log: filepath.Join(dir, name+".log")})
			raftPeers = append(raftPeers, fmt.Sprintf("%d=%s", i+1, procs[i].Addr))
		}
		for i, p := range procs {
			p.args = []string{"coordinator", "--group", strconv.Itoa(g), "--listen", p.Addr, "--data", p.Data,
				"--participant", strings.Join(peers, ","),
				"--prepare-timeout", opts.PrepareTimeout.String(),
				"--redeliver-min", opts.RedeliverMin.String(), "--redeliver-max", "1s", "--log-level", logLevel()}
			if replicas > 1 {
				p.args = append(p.args, "--id", strconv.Itoa(i+1), "--peers", strings.Join(raftPeers, ","))
			}
		}
		r.groups = append(r.groups, procs)
		groupLine[g-1] = fmt.Sprintf("group %d replicas %s", g, strings.Join(raftPeers, ","))
	}
	parts := strings.Join(partLines, "\n") + "\n"
	write := func(name, text string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		r.maps[name] = path
		return path
	}
	// The participants know group 3 from the start, with no share of new
	// transactions; the bench starts with groups 1 and 2 only (a client
	// dials every group of its map), and is later given version 3.
	partMap := write("participants.map", fmt.Sprintf("version 2\n%s weight 1\n%s weight 1\n%s weight 0\n", groupLine[0], groupLine[1], groupLine[2])+parts)
	r.benchMap = write("bench.map", fmt.Sprintf("version 1\n%s weight 1\n%s weight 1\n", groupLine[0], groupLine[1])+parts)
	write("grown.map", fmt.Sprintf("version 3\n%s weight 1\n%s weight 1\n%s weight 2\n", groupLine[0], groupLine[1], groupLine[2])+parts)
	for _, p := range r.c.Participants {
		p.args = []string{"participant", "--name", p.Name, "--listen", p.Addr, "--data", p.Data, "--cluster", partMap,
			"--accounts", strconv.Itoa(opts.Accounts), "--balance", strconv.FormatInt(opts.Balance, 10),
			"--inquire-after", opts.InquireAfter.String(), "--inquire-max", "1s", "--log-level", logLevel()}
	}
	return r
}

// startGroup starts group g's replicas and waits until one leads (a lone
// coordinator: until it answers).
func (r *groupsRig) startGroup(g int) error {
	for _, p := range r.groups[g-1] {
		if err := p.Start(); err != nil {
			return err
		}
		r.c.Coordinators = append(r.c.Coordinators, p)
	}
	r.started[g-1].Store(true)
	for _, p := range r.groups[g-1] {
		if err := WaitReady(p, 20*time.Second); err != nil {
			return err
		}
	}
	_, err := r.waitLeader(g, 20*time.Second)
	return err
}

// leader returns group g's leader: its lone coordinator, or the replica
// that leads in the highest term (ErrNoLeader if none says so). Every
// replica seen leading is noted by group and term, for split brains.
func (r *groupsRig) leader(g int) (*Proc, error) {
	procs := r.groups[g-1]
	if len(procs) == 1 {
		return procs[0], nil
	}
	var addrs []string
	for _, p := range procs {
		addrs = append(addrs, p.Addr)
	}
	i, sts, err := Leader(context.Background(), addrs, 500*time.Millisecond)
	r.c.mu.Lock()
	for j, st := range sts {
		if st.Role != "leader" {
			continue
		}
		// Terms are per group: key them apart.
		key := uint64(g)<<48 | st.Term
		if prev, ok := r.c.mu.leaders[key]; ok && prev != procs[j].Name {
			r.c.mu.splitBrain = append(r.c.mu.splitBrain, fmt.Sprintf("group %d term %d led by both %s and %s", g, st.Term, prev, procs[j].Name))
		}
		r.c.mu.leaders[key] = procs[j].Name
	}
	r.c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return procs[i], nil
}

func (r *groupsRig) waitLeader(g int, timeout time.Duration) (*Proc, error) {
	deadline := time.Now().Add(timeout)
	for {
		p, err := r.leader(g)
		if err == nil || time.Now().After(deadline) {
			return p, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// groupFault is one fault of the groups' nemesis.
type groupFault struct {
	kind  string // "leader" (a group's leader killed) or "participant"
	group int    // for a leader
}

// killRestart kill -9s p, waits a little, and starts it again on its data
// directory and address, then waits until it answers.
func killRestart(p *Proc, down time.Duration) error {
	if err := p.Kill(); err != nil {
		return err
	}
	time.Sleep(down)
	if err := p.Start(); err != nil {
		return err
	}
	return WaitReady(p, 30*time.Second)
}

// groupNemesis injects faults one at a time until ctx ends: first a
// leader kill in each running group and a participant kill, then seeded
// random choices among them. It counts what it did by fault.
func (r *groupsRig) groupNemesis(ctx context.Context, t *testing.T, rng *rand.Rand, counts map[string]int) error {
	plan := []groupFault{{"leader", 1}, {"participant", 0}, {"leader", 2}}
	for i := 0; ctx.Err() == nil; i++ {
		var f groupFault
		if i < len(plan) {
			f = plan[i]
		} else if rng.IntN(3) == 0 {
			f = groupFault{kind: "participant"}
		} else {
			var live []int
			for g := range r.started {
				if r.started[g].Load() {
					live = append(live, g+1)
				}
			}
			f = groupFault{kind: "leader", group: live[rng.IntN(len(live))]}
		}
		down := time.Duration(100+rng.IntN(900)) * time.Millisecond
		var victim *Proc
		switch f.kind {
		case "participant":
			victim = r.c.Participants[rng.IntN(len(r.c.Participants))]
		default:
			p, err := r.waitLeader(f.group, 10*time.Second)
			if err != nil {
				return fmt.Errorf("group %d: %w", f.group, err)
			}
			victim = p
		}
		t.Logf("nemesis: kill -9 %s (%s), restart after %v", victim.Name, map[bool]string{true: fmt.Sprintf("group %d's leader", f.group), false: "participant"}[f.kind == "leader"], down)
		if err := killRestart(victim, down); err != nil {
			return err
		}
		key := f.kind
		if f.kind == "leader" {
			key = fmt.Sprintf("group %d leader", f.group)
			if _, err := r.waitLeader(f.group, 20*time.Second); err != nil {
				return fmt.Errorf("group %d after a leader kill: %w", f.group, err)
			}
		}
		counts[key]++
		select {
		case <-ctx.Done():
		case <-time.After(groupFaultGap):
		}
	}
	return nil
}

// runGroupsChaos runs the cluster under load and faults (or, with
// cr.plant, the planted fault alone), checks it, prints the summary and
// returns what the checker found; everything else that goes wrong fails t
// here.
func runGroupsChaos(t *testing.T, cr chaosRun, replicas int) Result {
	t.Logf("chaos: seed %d (replay with CHAOS_SEED=%d), 2 groups of %d replica(s) and a third added under load, load %v at %d callers, on loopback (no partitions)",
		cr.seed, cr.seed, replicas, cr.duration, chaosCallers)
	dir, err := os.MkdirTemp("", "commitd-chaos-groups-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("CHAOS_KEEP") == "1" {
			t.Logf("chaos: data directories, logs and the ack log kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	setupStart := time.Now()
	r := newGroupsRig(t, cr.bin, dir, replicas)
	t.Cleanup(func() {
		for _, g := range r.groups {
			for _, p := range g {
				p.Kill()
			}
		}
		for _, p := range r.c.Participants {
			p.Kill()
		}
	})
	for _, p := range r.c.Participants {
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
	}
	for g := 1; g <= 2; g++ {
		if err := r.startGroup(g); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range r.c.Participants {
		if err := WaitReady(p, 20*time.Second); err != nil {
			t.Fatal(err)
		}
	}

	t.Logf("chaos: processes up in %.1fs", time.Since(setupStart).Seconds())
	ackPath := filepath.Join(dir, "acks.log")
	benchLog, err := os.Create(filepath.Join(dir, "bench.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer benchLog.Close()
	bench := exec.Command(cr.bin, "bench", "--cluster", r.benchMap,
		"--concurrency", strconv.Itoa(chaosCallers), "--duration", cr.duration.String(), "--ack-log", ackPath,
		"--accounts", strconv.Itoa(chaosAccounts), "--per-txn", "2", "--read-only", "0",
		"--seed", strconv.FormatUint(cr.seed, 10), "--call-timeout", callTimeout.String())
	bench.Stdout, bench.Stderr = benchLog, benchLog
	if err := bench.Start(); err != nil {
		t.Fatal(err)
	}
	benchDone := make(chan error, 1)
	go func() { benchDone <- bench.Wait() }()
	loadStart := time.Now()

	ctx, cancel := context.WithTimeout(context.Background(), cr.duration)
	defer cancel()
	counts := map[string]int{}
	nemDone := make(chan error, 1)
	go func() {
		if !cr.plant {
			nemDone <- r.groupNemesis(ctx, t, rand.New(rand.NewPCG(cr.seed, 0x67726f75)), counts)
			return
		}
		// Group 2 alone, as a one-group Cluster for the nemesis.
		g2 := &Cluster{opts: r.c.opts, Coordinators: r.groups[1], Participants: r.c.Participants}
		g2.mu.leaders = map[uint64]string{}
		time.Sleep(cr.duration / 2)
		err := NewNemesis(g2, cr.seed, logWriter{t}).LoseDecisions()
		counts["planted: group 2 lost its decisions"]++
		<-ctx.Done()
		nemDone <- err
	}()
	// A third in: group 3 joins. The nemesis aims at it too once it is
	// started.
	time.Sleep(cr.duration / 3)
	added := time.Now()
	if err := r.startGroup(3); err != nil {
		t.Fatal(err)
	}
	grown, err := os.ReadFile(r.maps["grown.map"])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(r.benchMap, grown, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := bench.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	t.Logf("chaos: group 3 started and the bench given map version 3, %.1fs into the load (%v to start it)",
		time.Since(loadStart).Seconds(), time.Since(added).Round(time.Millisecond))
	if err := <-nemDone; err != nil {
		bench.Process.Kill()
		<-benchDone
		t.Fatalf("nemesis: %v", err)
	}
	repaired := time.Now()
	recovered := waitQuiet(t, r.c, recoverBound)
	recoverTime := time.Since(repaired)
	select {
	case err := <-benchDone:
		t.Logf("chaos: bench ended after %.1fs (exit: %v)", time.Since(loadStart).Seconds(), err)
	case <-time.After(cr.duration + benchGrace):
		bench.Process.Kill()
		<-benchDone
		t.Fatalf("bench still running %v after its load ended", benchGrace)
	}
	benchOut, _ := os.ReadFile(benchLog.Name())
	for _, line := range strings.Split(strings.TrimSpace(string(benchOut)), "\n") {
		if i := strings.LastIndexByte(line, '\r'); i >= 0 {
			line = line[i+1:]
		}
		if strings.TrimSpace(line) != "" {
			t.Logf("bench: %s", line)
		}
	}
	if !strings.Contains(string(benchOut), "cluster map version 3 in use") {
		t.Errorf("the bench did not take map version 3: group 3 was never used")
	}
	if !waitQuiet(t, r.c, recoverBound) {
		recovered = false
	}

	t.Logf("chaos: quiet %.1fs after the load began", time.Since(loadStart).Seconds())
	h := &History{EveryBranchWrites: true, StartTotal: r.c.StartTotal()}
	perGroup := map[uint16]int{}
	h.ProbesRun, h.ProbesCommitted, h.Acks = r.probeGroups(t, cr.seed, perGroup)
	t.Logf("chaos: probes done %.1fs after the load began", time.Since(loadStart).Seconds())
	waitQuiet(t, r.c, recoverBound)
	gather(t, r.c, h)
	for g := 1; g <= 3; g++ {
		r.leader(g) // one last look for a split brain
	}
	for _, p := range r.c.Procs() {
		if err := p.Terminate(terminateBound); err != nil {
			t.Errorf("stopping %s: %v", p.Name, err)
		}
	}
	// Each participant recovered from its data directory alone: the
	// process started again (every coordinator is stopped), its balances
	// read, and stopped. Not Cluster.Reopen in this process: under the
	// race detector that recovery takes over half a minute a participant
	// on 2 cores, the binary's a second.
	h.RecoveredTotals = map[string]int64{}
	for _, p := range r.c.Participants {
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		if err := WaitReady(p, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		a, err := Accounts(ctx, p)
		cancel()
		if err != nil {
			t.Fatalf("recovering %s from disk: %v", p.Name, err)
		}
		h.RecoveredTotals[p.Name] = a.Total
		if a.Prepared != 0 {
			t.Errorf("%s holds %d prepared transactions after its recovery, none before", p.Name, a.Prepared)
		}
		if err := p.Terminate(terminateBound); err != nil {
			t.Errorf("stopping %s: %v", p.Name, err)
		}
	}
	t.Logf("chaos: checks gathered %.1fs after the load began", time.Since(loadStart).Seconds())
	f, err := os.Open(ackPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h.AckLog = f
	res, err := Check(h)
	if err != nil {
		t.Fatal(err)
	}
	// How many acknowledged transactions each group ran, from the ack
	// log's ids.
	byGroup := map[uint16]int{}
	if _, err := f.Seek(0, 0); err == nil {
		EachAck(f, func(a Ack) error {
			byGroup[cluster.GroupOf(a.Txn)]++
			return nil
		})
	}

	t.Logf("SUMMARY seed %d, 2 groups × %d replica(s) + group 3 added at %v, load %v, %d callers, %d participants",
		cr.seed, replicas, (cr.duration / 3).Round(time.Second), cr.duration, chaosCallers, len(r.c.Participants))
	var faults []string
	total := 0
	for _, k := range []string{"group 1 leader", "group 2 leader", "group 3 leader", "participant"} {
		faults = append(faults, fmt.Sprintf("%s %d", k, counts[k]))
		total += counts[k]
	}
	t.Logf("  faults injected      %d kill -9 and restart: %s", total, strings.Join(faults, ", "))
	if cr.plant {
		t.Logf("  planted fault        %d (group 2's decisions deleted)", counts["planted: group 2 lost its decisions"])
	}
	t.Logf("  acknowledged         %d: committed %d, aborted %d, unknown %d, rejected %d (probes included: %d)",
		res.Told[ToldCommitted]+res.Told[ToldAborted]+res.Told[ToldUnknown]+res.Told[ToldRejected], res.Told[ToldCommitted],
		res.Told[ToldAborted], res.Told[ToldUnknown], res.Told[ToldRejected], h.ProbesRun)
	t.Logf("  by group (ack log)   group 1: %d, group 2: %d, group 3: %d; probes committed by group: %v", byGroup[1], byGroup[2], byGroup[3], perGroup)
	t.Logf("  unknown outcomes     resolved by recovery: %d committed everywhere, %d committed nowhere", res.UnknownCommitted, res.UnknownAborted)
	t.Logf("  time to recover      %v from the last repair to nothing in doubt (bound %v)", recoverTime.Round(time.Millisecond), recoverBound)
	t.Logf("  split brain          %d", len(r.c.SplitBrain()))
	for _, k := range Kinds {
		verdict := "PASS"
		if res.Failed(k) {
			verdict = "FAIL"
		}
		t.Logf("  %-20s %s", k, verdict)
	}
	if !recovered {
		t.Errorf("still in doubt %v after the load", recoverBound)
	}
	for _, sb := range r.c.SplitBrain() {
		if cr.plant {
			// Deleting a quorum's logs deletes the terms they voted in.
			t.Logf("split brain after the planted fault: %s", sb)
			continue
		}
		t.Errorf("split brain: %s", sb)
	}
	for _, p := range r.c.Procs() {
		for _, u := range p.Unexpected() {
			t.Errorf("%s", u)
		}
	}
	if res.Unacknowledged > 0 {
		t.Errorf("%d transactions in ledgers that no client ran", res.Unacknowledged)
	}
	if !cr.plant && (counts["group 1 leader"] == 0 || counts["group 2 leader"] == 0 || counts["participant"] == 0) {
		t.Errorf("the nemesis did not kill both groups' leaders and a participant: %v", counts)
	}
	if byGroup[3] == 0 {
		t.Errorf("the added group ran no transaction of the bench")
	}
	for g := uint16(1); g <= 3; g++ {
		if perGroup[g] == 0 {
			t.Errorf("no fresh transaction committed in group %d after recovery", g)
		}
	}
	if t.Failed() || !res.OK() && !cr.plant {
		for _, p := range r.c.Procs() {
			t.Logf("--- %s log tail:\n%s", p.Name, p.LogTail(30))
		}
	}
	return res
}

// probeGroups runs fresh transfers through the cluster client with the
// grown map, chaosProbes per group, each id stamped for its group, and
// counts those that commit by group (a transfer refused for an empty
// account is retried with others, as probe does).
func (r *groupsRig) probeGroups(t *testing.T, seed uint64, committed map[uint16]int) (run, ok int, acks []Ack) {
	m, err := cluster.Load(r.maps["grown.map"])
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.DialCluster(m, client.Options{DialTimeout: 10 * time.Second})
	if err != nil {
		t.Errorf("probe: %v", err)
		return 0, 0, nil
	}
	defer cl.Close()
	rng := rand.New(rand.NewPCG(seed, 0x70726f62))
	names := r.c.Names()
	for g := uint16(1); g <= 3; g++ {
		for range chaosProbes {
			run++
			for try := 0; try < 5; try++ {
				i := rng.IntN(len(names))
				j := (i + 1 + rng.IntN(len(names)-1)) % len(names)
				acct := uint32(rng.IntN(chaosAccounts))
				id := cluster.Stamp(uuid.Must(uuid.NewV7()), g)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				res, err := cl.Run(ctx, id, []client.Branch{
					{Participant: names[i], Work: bank.AppendWork(nil, acct, -1)},
					{Participant: names[j], Work: bank.AppendWork(nil, acct, 1)},
				})
				cancel()
				told := map[client.Outcome]Told{client.Committed: ToldCommitted, client.Aborted: ToldAborted,
					client.Unknown: ToldUnknown, client.Rejected: ToldRejected}[res.Outcome]
				acks = append(acks, Ack{Txn: id, Told: told, Participants: names[i] + "," + names[j]})
				if res.Outcome == client.Committed {
					ok++
					committed[g]++
					break
				}
				t.Logf("probe %v (group %d): %v (%v)", id, g, res, err)
				if res.Outcome != client.Aborted || err != nil {
					break
				}
				time.Sleep(250 * time.Millisecond << try)
			}
		}
	}
	return run, ok, acks
}

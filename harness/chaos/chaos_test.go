package chaos

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/participant/bank"
	gomysql "github.com/go-sql-driver/mysql"
	"github.com/google/uuid"
)

// Bounds on the phases after the load, so a run always ends.
const (
	benchGrace      = 90 * time.Second // the bench's own end-of-run checks
	recoverBound    = 60 * time.Second // until nothing is in doubt
	terminateBound  = 15 * time.Second // a graceful stop
	chaosCallers    = 100
	chaosAccounts   = 1000
	chaosProbes     = 10
	chaosParts      = 3
	defaultDuration = 30 * time.Second
	// defaultReplicatedDuration is the replicated run's load in `make
	// test`: six processes and the same checks, about 50 s in all under
	// the race detector on 2 cores (docs/testing.md).
	defaultReplicatedDuration = 20 * time.Second
	// plantedDuration is TestChaosCatchesLostDecisions's load.
	plantedDuration = 8 * time.Second
	// callTimeout bounds each transaction of the replicated run's load
	// (bench --call-timeout): longer than a failover with the default
	// election settings (0.5–1 s), shorter than the leader's longest pause.
	callTimeout = 2 * time.Second
	// partitionsFrom is the shortest load that runs partitions unless
	// CHAOS_PARTITIONS says otherwise: `make chaos`, not `make test`'s
	// 30 s (docs/testing.md says why).
	partitionsFrom = 2 * time.Minute
)

// logWriter turns writes into test log lines.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestChaos runs a coordinator and three bank participants as processes,
// drives `commitd bench` at 100 callers while a nemesis kills and pauses
// them, and then checks the ack log and the participants' ledgers and
// balances for atomicity, durability, conservation and liveness. It does
// so twice: with a lone coordinator (subtest "single") and with a
// replicated coordinator of three replicas ("replicated"), whose leader
// and followers the nemesis kills, pauses and cuts off.
//
// CHAOS_REPLICAS picks the runs: "1" (single), "3" or "5" (replicated), or
// a list ("1,3", the default). CHAOS_DURATION sets the length of each
// run's load (default 30s single, 20s replicated; `make chaos` runs 5m);
// CHAOS_SEED replays a run's choices. Loads of 2m or more also partition
// the network, where network namespaces can be made (root, iproute2): each
// process then runs in its own namespace. CHAOS_PARTITIONS =1 or =0 turns
// partitions on or off whatever the load. CHAOS_KEEP=1 keeps the data
// directories, logs and ack log of a run that passed (a failed one's are
// always kept).
func TestChaos(t *testing.T) {
	cfg := chaosConfig(t)
	for _, replicas := range cfg.replicas {
		t.Run(runName(replicas), func(t *testing.T) {
			cr := cfg.run
			cr.replicas = replicas
			if cr.duration == 0 {
				cr.duration = defaultDuration
				if replicas > 1 {
					cr.duration = defaultReplicatedDuration
				}
			}
			r := runChaos(t, cr)
			for _, v := range r.Violations {
				t.Errorf("violation: %v", v)
			}
		})
	}
}

// TestChaosCatchesLostDecisions shows that the checker fails a real run
// whose coordinator lost decisions: a short load with no fault but the
// planted one (Nemesis.LoseDecisions: a quorum's data directories deleted
// while a participant waits for their decisions), after which atomicity
// or durability must be reported broken. Without it a checker that never
// fails would pass every chaos run. It runs for each of CHAOS_REPLICAS
// (unset: the replicated run only, to keep `make test` short; `make chaos`
// runs both), with 8 s of load: CHAOS_DURATION is not for it.
func TestChaosCatchesLostDecisions(t *testing.T) {
	cfg := chaosConfig(t)
	if os.Getenv("CHAOS_REPLICAS") == "" {
		cfg.replicas = []int{3}
	}
	for _, replicas := range cfg.replicas {
		t.Run(runName(replicas), func(t *testing.T) {
			cr := cfg.run
			cr.replicas, cr.plant, cr.duration = replicas, true, plantedDuration
			r := runChaos(t, cr)
			if !r.Failed(Atomicity) && !r.Failed(Durability) {
				t.Fatalf("the checker passed a run whose decisions were deleted: %v", r.Violations)
			}
			for _, v := range r.Violations {
				t.Logf("caught, as it must be: %v", v)
			}
		})
	}
}

func runName(replicas int) string {
	if replicas > 1 {
		return "replicated"
	}
	return "single"
}

// chaosSettings is what the environment asks of the chaos tests.
type chaosSettings struct {
	replicas []int
	run      chaosRun // bin, seed and duration (0: each test's default)
}

// chaosConfig reads CHAOS_REPLICAS, CHAOS_DURATION and CHAOS_SEED and
// builds the commitd binary.
func chaosConfig(t *testing.T) chaosSettings {
	var cfg chaosSettings
	reps := os.Getenv("CHAOS_REPLICAS")
	if reps == "" {
		reps = "1,3"
	}
	for _, f := range strings.Split(reps, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 1 && n%2 == 0 || n > 7 || slices.Contains(cfg.replicas, n) {
			t.Fatalf("CHAOS_REPLICAS=%q: want 1 (a lone coordinator), 3 or 5 (a replicated group), or a list like 1,3", reps)
		}
		cfg.replicas = append(cfg.replicas, n)
	}
	if s := os.Getenv("CHAOS_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			t.Fatalf("CHAOS_DURATION=%q: want a positive duration like 30s or 5m", s)
		}
		cfg.run.duration = d
	}
	cfg.run.seed = uint64(time.Now().UnixNano())
	if s := os.Getenv("CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CHAOS_SEED=%q: want an unsigned integer", s)
		}
		cfg.run.seed = v
	}
	dir := t.TempDir()
	bin, err := Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg.run.bin = bin
	return cfg
}

// chaosRun is one run of the chaos test.
type chaosRun struct {
	bin      string
	replicas int
	duration time.Duration
	seed     uint64
	// plant injects the planted fault (LoseDecisions) a third into the
	// load, and no other.
	plant bool
}

// runChaos runs one cluster under load and faults, checks it, prints the
// summary and returns what the checker found. Everything but the
// checker's verdict — a process exiting by itself, a bound passed, a
// nemesis that cannot restore what it broke, a split brain — fails t here.
func runChaos(t *testing.T, cr chaosRun) Result {
	what := "a lone coordinator"
	if cr.replicas > 1 {
		what = fmt.Sprintf("a replicated coordinator of %d replicas", cr.replicas)
	}
	t.Logf("chaos: seed %d (replay with CHAOS_SEED=%d), %s, load %v at %d callers", cr.seed, cr.seed, what, cr.duration, chaosCallers)

	dir, err := os.MkdirTemp("", "commitd-chaos-")
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
	var cnet *Net
	netNote := "partitions off for the planted fault's run"
	if !cr.plant {
		cnet, netNote = chaosNet(t, cr.duration, cr.bin, ProcNames(cr.replicas, chaosParts))
	}
	opts := Options{Bin: cr.bin, Dir: dir, Participants: chaosParts, Accounts: chaosAccounts, Replicas: cr.replicas, Net: cnet}
	dbNote := mysqlParticipant(t, &opts)
	if cnet != nil && dbNote != "" {
		// A participant in a namespace of its own cannot reach the
		// database server on the host's loopback.
		opts.Net, netNote = nil, "partitions off with a MariaDB participant (its server is on the host's loopback)"
	}
	c, err := NewCluster(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close) // before cnet's cleanup: a namespace lives while a process is in it
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("chaos: network faults: %s", netNote)
	if dbNote != "" {
		t.Logf("chaos: %s", dbNote)
	}

	// The load.
	ackPath := filepath.Join(dir, "acks.log")
	benchLog, err := os.Create(filepath.Join(dir, "bench.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer benchLog.Close()
	args := []string{"bench", "--coordinator", c.CoordinatorList(), "--participants", c.ParticipantList(),
		"--concurrency", strconv.Itoa(chaosCallers), "--duration", cr.duration.String(), "--ack-log", ackPath,
		"--accounts", strconv.Itoa(chaosAccounts), "--per-txn", "2", "--read-only", "0", // every branch writes: EveryBranchWrites
		"--seed", strconv.FormatUint(cr.seed, 10)}
	if c.Replicated() {
		// A caller behind a paused or cut-off leader gives up (unknown)
		// and its next transaction goes to another replica, so the load
		// follows the failover instead of waiting out the fault.
		args = append(args, "--call-timeout", callTimeout.String())
	}
	bench := exec.Command(cr.bin, args...)
	bench.Stdout, bench.Stderr = benchLog, benchLog
	if err := bench.Start(); err != nil {
		t.Fatal(err)
	}
	benchDone := make(chan error, 1)
	go func() { benchDone <- bench.Wait() }()
	loadStart := time.Now()

	nem := NewNemesis(c, cr.seed, logWriter{t})
	ctx, cancel := context.WithTimeout(context.Background(), cr.duration)
	var nemErr error
	if cr.plant {
		time.Sleep(cr.duration / 3)
		nemErr = nem.LoseDecisions()
		<-ctx.Done()
	} else {
		nemErr = nem.Run(ctx)
	}
	cancel()
	if nemErr != nil {
		bench.Process.Kill()
		<-benchDone
		t.Fatalf("nemesis: %v", nemErr)
	}
	// Recovery: from the moment the last fault is repaired, wait until
	// nothing is in doubt. The bench's last moments of load (it ends a
	// little after the nemesis) count in this time.
	repaired := time.Now()
	inDoubtAtEnd := inDoubt(t, c)
	recovered := waitQuiet(t, c, recoverBound)
	recoverTime := time.Since(repaired)
	stagedNote := ""
	{
		// Counted since the coordinator's last start (replicated: since
		// the leader's reign began).
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var st coordinator.Status
		var err error
		since := "the coordinator's last start"
		if c.Replicated() {
			_, st, err = c.Leader(ctx)
			since = "the leader's reign began"
		} else {
			st, err = Status(ctx, c.Coordinators[0])
		}
		if err == nil {
			stagedNote = fmt.Sprintf("%d transactions staged, %d resolved, %d undecided (since %s)", st.Staged, st.Resolutions, st.Undecided, since)
		}
		cancel()
	}
	select {
	case err := <-benchDone:
		// The bench's own end check (balances 500ms after the load) may
		// fail while recovery is still finishing; the checks below decide.
		t.Logf("chaos: bench ended after %.1fs (exit: %v)", time.Since(loadStart).Seconds(), err)
	case <-time.After(cr.duration + benchGrace):
		bench.Process.Kill()
		<-benchDone
		t.Fatalf("bench still running %v after its load ended", benchGrace)
	}
	if out, err := os.ReadFile(benchLog.Name()); err == nil {
		// Its report, without the progress lines (carriage returns).
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		for _, line := range lines[max(0, len(lines)-8):] {
			if i := strings.LastIndexByte(line, '\r'); i >= 0 {
				line = line[i+1:]
			}
			t.Logf("bench: %s", line)
		}
	}
	if !waitQuiet(t, c, recoverBound) {
		recovered = false
	}

	h := &History{EveryBranchWrites: true, StartTotal: c.StartTotal()}
	// Liveness: fresh transactions still commit.
	h.ProbesRun, h.ProbesCommitted, h.Acks = probe(t, c, cr.seed, h.Acks)
	waitQuiet(t, c, recoverBound)

	gather(t, c, h)
	if c.Replicated() {
		c.Leader(context.Background()) // one last look for a split brain
	}

	// A graceful stop, then each participant recovered from its data
	// directory alone: its balances must be what it reported running.
	for _, p := range c.Procs() {
		if err := p.Terminate(terminateBound); err != nil {
			t.Errorf("stopping %s: %v", p.Name, err)
		}
	}
	// At once: recovery reads every log segment, which under the race
	// detector takes seconds a participant. The planted fault's run skips
	// it: what it must show is in the ledgers, and `make test` runs it
	// under the race detector.
	if !cr.plant {
		h.RecoveredTotals, h.MinBalance = map[string]int64{}, map[string]int64{}
		type reopened struct {
			total, low int64
			err        error
		}
		rs := make([]reopened, len(c.Participants))
		var wg sync.WaitGroup
		for i, p := range c.Participants {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rs[i].total, rs[i].low, rs[i].err = c.Reopen(p)
			}()
		}
		wg.Wait()
		for i, p := range c.Participants {
			if rs[i].err != nil {
				t.Fatalf("recovering %s from disk: %v", p.Name, rs[i].err)
			}
			h.RecoveredTotals[p.Name], h.MinBalance[p.Name] = rs[i].total, rs[i].low
		}
	}

	// The ack log is streamed: while the coordinator is down, bench's
	// callers fail at once ("not sent") and log hundreds of thousands of
	// aborts a second.
	f, err := os.Open(ackPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h.AckLog = f
	r, err := Check(h)
	if err != nil {
		t.Fatal(err)
	}
	var unexpected []string
	for _, p := range c.Procs() {
		unexpected = append(unexpected, p.Unexpected()...)
	}

	// The summary.
	counts := nem.Counts()
	var faults []string
	total := 0
	kinds := nem.Kinds()
	if cr.plant {
		kinds = []Fault{lostDecisions}
	}
	for _, k := range kinds {
		faults = append(faults, fmt.Sprintf("%v %d", k, counts[k]))
		total += counts[k]
	}
	t.Logf("SUMMARY seed %d, %s, load %v, %d callers, %d participants", cr.seed, what, cr.duration, chaosCallers, len(c.Participants))
	t.Logf("  faults injected      %d: %s", total, strings.Join(faults, ", "))
	if sk := nem.Skipped(); len(sk) > 0 && !cr.plant {
		var names []string
		for _, k := range sk {
			names = append(names, k.String())
		}
		t.Logf("  faults skipped       %s (why: the next line)", strings.Join(names, ", "))
	}
	t.Logf("  network faults       %s", netNote)
	if c.Replicated() {
		elected, stayed := nem.Takeovers()
		for _, k := range kinds {
			if !k.leaderFault() {
				continue
			}
			ds := elected[k]
			line := fmt.Sprintf("  %-20s another replica led during %d of %d", k, len(ds), len(ds)+stayed[k])
			if len(ds) > 0 {
				slices.Sort(ds)
				line += fmt.Sprintf(", after median %v, max %v (as seen by polling admin status)",
					ds[len(ds)/2].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond))
			}
			t.Logf("%s", line)
		}
		t.Logf("  reigns               %d terms seen with a leader; split brain (two leaders in one term): %d", c.Terms(), len(c.SplitBrain()))
	}
	t.Logf("  acknowledged         %d: committed %d, aborted %d, unknown %d, rejected %d (probes included: %d)",
		r.Told[ToldCommitted]+r.Told[ToldAborted]+r.Told[ToldUnknown]+r.Told[ToldRejected], r.Told[ToldCommitted], r.Told[ToldAborted], r.Told[ToldUnknown], r.Told[ToldRejected], h.ProbesRun)
	t.Logf("  in doubt             %d as the last fault was repaired; %d held by servers as they came back from a kill",
		inDoubtAtEnd, nem.InDoubtAtRestart())
	t.Logf("  unknown outcomes     resolved by recovery: %d committed everywhere, %d committed nowhere",
		r.UnknownCommitted, r.UnknownAborted)
	t.Logf("  time to recover      %v from the last repair to nothing in doubt (bound %v)", recoverTime.Round(time.Millisecond), recoverBound)
	if stagedNote != "" {
		t.Logf("  staged decisions     %s", stagedNote)
	}
	for _, k := range Kinds {
		verdict := "PASS"
		if r.Failed(k) {
			verdict = "FAIL"
		}
		t.Logf("  %-20s %s", k, verdict)
	}
	if !recovered {
		t.Errorf("still in doubt %v after the load", recoverBound)
	}
	for _, sb := range c.SplitBrain() {
		if cr.plant {
			// Deleting a quorum's logs deletes the terms they voted in
			// too: raft's promise is gone, and the run is failed anyway.
			t.Logf("split brain after the planted fault: %s", sb)
			continue
		}
		t.Errorf("split brain: %s", sb)
	}
	for _, u := range unexpected {
		t.Errorf("%s", u)
	}
	if r.Unacknowledged > 0 {
		t.Errorf("%d transactions in ledgers that no client ran", r.Unacknowledged)
	}
	if total == 0 {
		t.Errorf("the nemesis injected no fault")
	}
	if t.Failed() || !r.OK() && !cr.plant {
		for _, p := range c.Procs() {
			t.Logf("--- %s log tail:\n%s", p.Name, p.LogTail(30))
		}
	}
	return r
}

// chaosNet decides whether this run partitions the network and, if so,
// builds the namespaces (removed when the test ends). It returns nil, and
// says why, when partitions are off or cannot be had here: the rest of the
// test then runs on loopback as before, and does not fail for it.
func chaosNet(t *testing.T, duration time.Duration, bin string, names []string) (*Net, string) {
	const never = "delay and loss are never injected (no netem on this kernel)"
	switch v := os.Getenv("CHAOS_PARTITIONS"); v {
	case "0":
		return nil, "partitions off (CHAOS_PARTITIONS=0); " + never
	case "1":
	case "":
		if duration < partitionsFrom {
			return nil, fmt.Sprintf("partitions off for loads under %v (CHAOS_PARTITIONS=1 turns them on); %s", partitionsFrom, never)
		}
	default:
		t.Fatalf("CHAOS_PARTITIONS=%q: want 1 (on), 0 (off) or nothing (on for loads of %v or more)", v, partitionsFrom)
	}
	n, err := NewNet(names)
	if err == nil {
		if err = n.Check(bin); err != nil {
			n.Close()
		}
	}
	if err != nil {
		return nil, fmt.Sprintf("partitions skipped, network namespaces unavailable (%v); the rest runs on loopback; %s", err, never)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Logf("chaos: removing the network namespaces: %v", err)
		}
	})
	return n, fmt.Sprintf("partitions on: each process in its own namespace (%s-*, %s, via a bridge); %s", n.Name(), n.Subnet(), never)
}

// mysqlParticipant makes p3 a MariaDB participant (`--backend mysql`,
// in a fresh database) when CHAOS_MYSQL_DSN names a server (a
// go-sql-driver DSN without a database: `make chaos-mysql` sets it), and
// returns what it did ("" when it did nothing). Its balances after the
// run are read from the database instead of recovered from its data
// directory.
func mysqlParticipant(t *testing.T, opts *Options) string {
	server := os.Getenv("CHAOS_MYSQL_DSN")
	if server == "" {
		return ""
	}
	admin, err := sql.Open("mysql", server)
	if err != nil {
		t.Fatalf("CHAOS_MYSQL_DSN: %v", err)
	}
	t.Cleanup(func() { admin.Close() })
	name := fmt.Sprintf("commitd_chaos_%d", time.Now().UnixNano())
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatalf("CHAOS_MYSQL_DSN: %v (make mysql-up starts a server)", err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			admin.Exec("DROP DATABASE " + name)
		}
	})
	cfg, err := gomysql.ParseDSN(server)
	if err != nil {
		t.Fatalf("CHAOS_MYSQL_DSN: %v", err)
	}
	cfg.DBName = name
	dsn := cfg.FormatDSN()
	const p = "p3"
	opts.ParticipantArgs = map[string][]string{p: {"--backend", "mysql", "--dsn", dsn}}
	opts.Inspect = map[string]func() (int64, int64, error){p: func() (total, low int64, err error) {
		db, err := sql.Open("mysql", dsn)
		if err != nil {
			return 0, 0, err
		}
		defer db.Close()
		var n int
		err = db.QueryRow("SELECT count(*), CAST(coalesce(sum(balance), 0) AS SIGNED), coalesce(min(balance), 0) FROM commitd_accounts").Scan(&n, &total, &low)
		if err == nil && n != chaosAccounts {
			err = fmt.Errorf("%s has %d accounts, want %d", name, n, chaosAccounts)
		}
		return total, low, err
	}}
	return fmt.Sprintf("participant %s is a MariaDB participant (database %s on %s)", p, name, cfg.Addr)
}

// inDoubt counts what is in doubt now: commit decisions the coordinator
// has not delivered everywhere, and transactions participants hold
// prepared.
func inDoubt(t *testing.T, c *Cluster) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, _, err := c.CoordinatorLoad(ctx)
	if err != nil {
		t.Logf("coordinator: %v", err)
	}
	for _, p := range c.Participants {
		if a, err := Accounts(ctx, p); err == nil {
			n += a.Prepared
		} else {
			t.Logf("%s accounts: %v", p.Name, err)
		}
	}
	return n
}

// waitQuiet waits until the coordinator has nothing in flight or
// undelivered and no participant holds a prepared transaction, or bound
// passes.
func waitQuiet(t *testing.T, c *Cluster, bound time.Duration) bool {
	start := time.Now()
	deadline := start.Add(bound)
	nextReport := start.Add(5 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		var waiting []string // what is not quiet, for the report every 5 s
		for _, p := range c.Coordinators {
			if st, err := Status(ctx, p); err != nil {
				waiting = append(waiting, fmt.Sprintf("%s: %v", p.Name, err))
			} else if st.InDoubt > 0 || st.InFlight > 0 {
				waiting = append(waiting, fmt.Sprintf("%s %s term %d: %d undelivered, %d in flight", p.Name, st.Role, st.Term, st.InDoubt, st.InFlight))
			}
		}
		for _, p := range c.Participants {
			if a, err := Accounts(ctx, p); err != nil {
				waiting = append(waiting, fmt.Sprintf("%s: %v", p.Name, err))
			} else if a.Prepared > 0 {
				waiting = append(waiting, fmt.Sprintf("%s: %d prepared", p.Name, a.Prepared))
			}
		}
		cancel()
		if len(waiting) == 0 {
			return true
		}
		if time.Now().After(deadline) {
			t.Logf("chaos: not quiet after %v: %s", bound, strings.Join(waiting, "; "))
			dumpStuck(t, c)
			return false
		}
		if time.Now().After(nextReport) {
			t.Logf("chaos: still waiting after %v: %s", time.Since(start).Round(time.Second), strings.Join(waiting, "; "))
			nextReport = nextReport.Add(5 * time.Second)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dumpStuck logs what every process says it holds when the cluster does
// not go quiet: each coordinator's status and undelivered commits (with
// the participants that have not acknowledged) and each participant's
// undecided transactions — the first thing to read when a chaos run
// fails liveness.
func dumpStuck(t *testing.T, c *Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, p := range c.Procs() {
		for _, kind := range []string{"status", "in-doubt"} {
			var raw json.RawMessage
			if err := client.Admin(ctx, p.Addr, kind, nil, &raw); err != nil {
				t.Logf("stuck: %s %s: %v", p.Name, kind, err)
				continue
			}
			const most = 4 << 10
			t.Logf("stuck: %s %s: %s", p.Name, kind, raw[:min(len(raw), most)])
			if kind != "in-doubt" {
				continue
			}
			// What each participant's ledger says of the first few
			// undelivered commits.
			var rep struct {
				Txns []struct {
					Txn uuid.UUID `json:"txn"`
				} `json:"txns"`
			}
			if json.Unmarshal(raw, &rep) != nil || len(rep.Txns) == 0 {
				continue
			}
			for _, q := range c.Participants {
				l, err := Ledger(ctx, q)
				if err != nil {
					t.Logf("stuck: %s ledger: %v", q.Name, err)
					continue
				}
				var says []string
				for _, x := range rep.Txns[:min(len(rep.Txns), 5)] {
					says = append(says, fmt.Sprintf("%v %v", x.Txn, l[x.Txn]))
				}
				t.Logf("stuck: %s's ledger of %s's first undelivered: %s", q.Name, p.Name, strings.Join(says, ", "))
			}
		}
	}
}

// probe runs fresh transfers of 1 between random accounts and counts those
// that commit. A transfer refused because its debit account is empty is
// retried with other accounts; that is the bank's rule, not a fault.
func probe(t *testing.T, c *Cluster, seed uint64, acks []Ack) (run, committed int, _ []Ack) {
	cl, err := client.Dial(c.CoordinatorList(), client.Options{DialTimeout: 10 * time.Second})
	if err != nil {
		t.Errorf("probe: %v", err)
		return 0, 0, acks
	}
	defer cl.Close()
	rng := rand.New(rand.NewPCG(seed, 0x70726f62))
	names := c.Names()
	for range chaosProbes {
		run++
		for try := 0; try < 5; try++ {
			i := rng.IntN(len(names))
			j := (i + 1 + rng.IntN(len(names)-1)) % len(names)
			acct := uint32(rng.IntN(chaosAccounts))
			br := []client.Branch{
				{Participant: names[i], Work: bank.AppendWork(nil, acct, -1)},
				{Participant: names[j], Work: bank.AppendWork(nil, acct, 1)},
			}
			id := uuid.Must(uuid.NewV7())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			res, err := cl.Run(ctx, id, br)
			cancel()
			told := map[client.Outcome]Told{client.Committed: ToldCommitted, client.Aborted: ToldAborted,
				client.Unknown: ToldUnknown, client.Rejected: ToldRejected}[res.Outcome]
			acks = append(acks, Ack{Txn: id, Told: told, Participants: names[i] + "," + names[j]})
			if res.Outcome == client.Committed {
				committed++
				break
			}
			t.Logf("probe %v: %v (%v)", id, res, err)
			if res.Outcome != client.Aborted || err != nil {
				break
			}
			// An abort such as "unreachable at p1" right after the last
			// repair: the coordinator's connection to a participant that
			// just restarted may still be in its reconnect backoff. Give
			// it time rather than spending the tries in milliseconds.
			time.Sleep(250 * time.Millisecond << try)
		}
	}
	return run, committed, acks
}

// gather reads every participant's ledger and summary and the
// coordinator's status into h.
func gather(t *testing.T, c *Cluster, h *History) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	h.Ledgers, h.Totals, h.Prepared = map[string]map[uuid.UUID]State{}, map[string]int64{}, map[string]int{}
	for _, p := range c.Participants {
		l, err := Ledger(ctx, p)
		if err != nil {
			t.Fatalf("%s outcomes: %v", p.Name, err)
		}
		h.Ledgers[p.Name] = l
		a, err := Accounts(ctx, p)
		if err != nil {
			t.Fatalf("%s accounts: %v", p.Name, err)
		}
		h.Totals[p.Name], h.Prepared[p.Name] = a.Total, a.Prepared
	}
	var err error
	h.CoordinatorInDoubt, h.CoordinatorInFlight, err = c.CoordinatorLoad(ctx)
	if err != nil {
		t.Fatalf("coordinator: %v", err)
	}
}

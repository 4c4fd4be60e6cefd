package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"

	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/commitd/commitd/bench"
	"github.com/commitd/commitd/client"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "matrix: %v\n", err)
		os.Exit(1)
	}
}

type options struct {
	bin, out, plot, dir string
	duration, warmup    time.Duration
	quick, noBuild      bool
	only                *regexp.Regexp
	accounts            int
	soak                time.Duration
	// profileDir, if set, receives a pprof CPU profile of every server
	// process of every cell, taken over the measured part of the run.
	profileDir string
	fsyncN     int // fsyncs of the disk probe before and after the cells
	// openRate, if set, adds the cell "open loop at N/s, 2 per txn": CPU
	// per transaction depends on the throughput a closed-loop round
	// happens to get (bigger batches cost less per transaction), so two
	// binaries are compared fairly at one fixed rate.
	openRate float64
	// against, if set, is a second binary: the selected cells run for
	// each binary in turn, rounds times, alternating which goes first,
	// and a paired summary with medians is printed (see pairs.go).
	against string
	rounds  int
}

// cell is one benchmark run.
type cell struct {
	group        string // table it belongs to
	name         string
	participants int // participant processes
	perTxn       int
	callers      int     // closed loop
	rateFrac     float64 // open loop: this fraction of the measured saturation
	flags        []string
	duration     time.Duration // overrides -duration (the soak)
	base         int           // ablation: index of the default run paired with it
	memLogs      bool          // data directories on tmpfs (groupMemory)
	// replicas > 1: the coordinator is a raft group of this many
	// replicas (--id/--peers), all on this machine (groupReplicated).
	replicas int
	// results
	rate float64
	rep  result
	cpu  cpuUse
	// calls is each server's read and write system calls per committed
	// transaction (/proc/PID/io), participants first; nil when unreadable.
	calls []ioCalls
	load  [2]float64 // 1-minute load average before and after
	// liveHeap (soak only): the coordinator's heap right after a forced
	// collection, every 10 s of the measured run.
	liveHeap []heapSample
	err      error
	ok       bool
}

type result struct {
	bench.Report
	Conserved bool `json:"conserved"`
}

// maxSoakGrowth is how much the coordinator's live heap may grow from 30 s
// into the soak to its end: the remembered transactions fill up in the
// first seconds (--remember, 5 s by default, kept for one to two periods),
// and after that nothing should grow.
const maxSoakGrowth = 0.10

// heapGrowth compares the soak's live heap at 30 s (or the first sample
// after it) with its last sample.
func heapGrowth(c *cell) (mid, end heapSample, growth float64, ok bool) {
	for _, h := range c.liveHeap {
		if h.t >= 29 {
			mid, ok = h, true
			break
		}
	}
	if !ok || len(c.liveHeap) < 2 {
		return mid, end, 0, false
	}
	end = c.liveHeap[len(c.liveHeap)-1]
	if end.t-mid.t < 20 {
		return mid, end, 0, false
	}
	return mid, end, float64(end.bytes)/float64(max(mid.bytes, 1)) - 1, true
}

// heapSample is the coordinator's live heap t seconds into the measured run.
type heapSample struct {
	t     float64
	bytes uint64
}

// ioCalls is one server's read and write system calls per committed
// transaction during a cell's measured run.
type ioCalls struct {
	name          string
	reads, writes float64
}

// cpuUse is the CPU time the servers used during the run, per committed
// transaction, in microseconds.
type cpuUse struct {
	coordinator, participants float64
}

func run() error {
	var o options
	var only string
	flag.StringVar(&o.bin, "bin", "bin/commitd", "the commitd binary (built first unless -no-build)")
	flag.StringVar(&o.out, "out", "docs/benchmarks.md", "the document to write the cluster section into")
	flag.StringVar(&o.plot, "plot", "docs/benchmarks-cluster.svg", "the plot to draw")
	flag.StringVar(&o.dir, "dir", "", "where data directories go (default: a new temporary directory)")
	flag.DurationVar(&o.duration, "duration", 6*time.Second, "length of each cell (after the warmup)")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "load run before each cell's measured part and left out of it (fresh servers are still preparing log segments)")
	flag.BoolVar(&o.quick, "quick", false, "fewer, shorter cells (2s): for iterating")
	flag.BoolVar(&o.noBuild, "no-build", false, "use -bin as it is")
	flag.StringVar(&only, "only", "", "run only the cells whose name matches this regular expression (the document is not written)")
	flag.IntVar(&o.accounts, "accounts", 100000, "accounts per participant: enough that no-wait locking rarely aborts")
	flag.DurationVar(&o.soak, "soak", time.Minute, "length of the soak cell (1,000 callers; its coordinator's live heap is read every 10 s)")
	flag.IntVar(&o.fsyncN, "fsync", 500, "measure the disk before and after the cells: this many 4 KiB pwrite + fdatasync into written blocks of a file in -dir (0: not at all)")
	flag.Float64Var(&o.openRate, "open-rate", 0, "add the cell \"open loop at N/s, 2 per txn\" (transactions started per second): to compare binaries' CPU per transaction at one throughput")
	flag.StringVar(&o.profileDir, "cpuprofile", "", "write a pprof CPU profile of every server process of every cell into this directory (cellNN-NAME.pprof; each process gets --http)")
	flag.StringVar(&o.against, "against", "", "a second commitd binary to compare -bin with: the -only cells run for both, alternated, -rounds times, and a paired summary (medians, per-pair ratios) is printed")
	flag.IntVar(&o.rounds, "rounds", 3, "with -against: how many rounds of (both binaries) to run")
	flag.Parse()
	if only != "" {
		var err error
		if o.only, err = regexp.Compile(only); err != nil {
			return err
		}
	}
	if o.openRate < 0 || math.IsNaN(o.openRate) || math.IsInf(o.openRate, 0) {
		return fmt.Errorf("-open-rate %v: want transactions per second, more than 0 (or 0 for no such cell)", o.openRate)
	}
	if o.against != "" {
		if err := checkPairs(&o); err != nil {
			return err
		}
	}
	if o.profileDir != "" {
		if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
			return err
		}
	}
	if o.quick && o.duration == 6*time.Second {
		o.duration = 2 * time.Second
	}
	if !o.noBuild {
		fmt.Fprintf(os.Stderr, "building %s\n", o.bin)
		cmd := exec.Command("go", "build", "-o", o.bin, "./cmd/commitd")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build: %w", err)
		}
	}
	if o.dir == "" {
		d, err := os.MkdirTemp("", "commitd-matrix-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		o.dir = d
	}
	// The disk, measured where the logs go, before and after the cells.
	probe := func(when string) {
		if o.fsyncN <= 0 {
			return
		}
		// One log alone, then three at once (a coordinator and two
		// participants on this one disk).
		for _, files := range []int{1, 3} {
			if p, err := probeFsyncParallel(o.dir, o.fsyncN, files); err != nil {
				fmt.Fprintf(os.Stderr, "disk %s: %v\n", when, err)
			} else {
				fmt.Fprintf(os.Stderr, "disk %s: %v\n", when, p)
			}
		}
	}
	probe("before")
	defer probe("after")
	if o.against != "" {
		return runPairs(&o)
	}
	started := time.Now()
	cells := runCells(&o)
	if o.only != nil {
		// No document; but a soak that ran is judged (make soak).
		for i := range cells {
			if c := &cells[i]; c.group == groupSoak && (c.ok || c.err != nil) {
				if c.err != nil {
					return fmt.Errorf("soak failed: %w", c.err)
				}
				mid, end, growth, ok := heapGrowth(c)
				if !ok {
					return fmt.Errorf("soak: too few live-heap samples (%d) to judge", len(c.liveHeap))
				}
				fmt.Fprintf(os.Stderr, "soak: live heap %.1f MiB at %.0f s, %.1f MiB at %.0f s (%+.1f%%), money conserved\n",
					mibf(mid.bytes), mid.t, mibf(end.bytes), end.t, 100*growth)
				if growth > maxSoakGrowth {
					return fmt.Errorf("soak: the coordinator's live heap grew %.1f%% after %.0f s (limit %.0f%%)", 100*growth, mid.t, 100*maxSoakGrowth)
				}
			}
		}
		return nil
	}
	doc := render(&o, cells, started)
	if err := writeSection(o.out, doc); err != nil {
		return err
	}
	if err := drawPlot(o.plot, cells); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "\nwrote %s and %s\n", o.out, o.plot)
	for _, c := range cells {
		if c.err != nil {
			return fmt.Errorf("cell %s failed: %w", c.name, c.err)
		}
	}
	return nil
}

// allCells is the matrix's cells for o, the -open-rate cell included.
func allCells(o *options) []cell {
	cells := matrix(o.quick, o.soak)
	if o.openRate > 0 {
		cells = append(cells, cell{group: groupOpen, name: fmt.Sprintf("open loop at %.0f/s, 2 per txn", o.openRate),
			participants: 2, perTxn: 2, rate: o.openRate})
	}
	return cells
}

// runCells runs every cell -only selects, with o.bin, and returns them all
// with their results (a cell not run has neither ok nor err set).
func runCells(o *options) []cell {
	cells := allCells(o)
	var saturation float64
	var memDir string // made for the first groupMemory cell
	for i := range cells {
		c := &cells[i]
		if o.only != nil && !o.only.MatchString(c.name) {
			continue
		}
		if c.rateFrac > 0 {
			if saturation == 0 {
				saturation = 20000 // no closed-loop cell ran (-only)
			}
			c.rate = c.rateFrac * saturation
		}
		fmt.Fprintf(os.Stderr, "\n== %s\n", c.name)
		dir := filepath.Join(o.dir, fmt.Sprintf("cell%02d", i))
		if c.memLogs {
			if memDir == "" {
				d, err := memTempDir()
				if err != nil {
					c.err = err
					fmt.Fprintf(os.Stderr, "   FAILED: %v\n", c.err)
					continue
				}
				defer os.RemoveAll(d)
				memDir = d
			}
			dir = filepath.Join(memDir, fmt.Sprintf("cell%02d", i))
		}
		c.err = runCell(o, c, dir, fmt.Sprintf("cell%02d", i))
		if c.err != nil {
			fmt.Fprintf(os.Stderr, "   FAILED: %v\n", c.err)
			continue
		}
		fmt.Fprintf(os.Stderr, "   %.0f committed/s, p50 %.2f ms, p99 %.2f ms, aborted %d; CPU µs/txn: coordinator %.1f, participants %.1f\n",
			c.rep.CommittedPerS, c.rep.P50ms, c.rep.P99ms, c.rep.Aborted, c.cpu.coordinator, c.cpu.participants)
		if len(c.calls) > 0 {
			fmt.Fprintf(os.Stderr, "   system calls/txn (reads, writes):")
			for _, x := range c.calls {
				fmt.Fprintf(os.Stderr, " %s %.3f, %.3f;", x.name, x.reads, x.writes)
			}
			fmt.Fprintln(os.Stderr)
		}
		if len(c.liveHeap) > 0 {
			fmt.Fprintf(os.Stderr, "   coordinator live heap after a forced collection:")
			for _, h := range c.liveHeap {
				fmt.Fprintf(os.Stderr, " %.0fs %.1f MiB", h.t, mibf(h.bytes))
			}
			fmt.Fprintln(os.Stderr)
		}
		if c.group == groupClosed && c.perTxn == 2 && c.rep.CommittedPerS > saturation {
			saturation = c.rep.CommittedPerS
		}
	}
	return cells
}

const (
	groupClosed  = "closed"
	groupOpen    = "open"
	groupAblated = "ablation"
	groupSoak    = "soak"
	groupPaired  = "paired" // the default run just before an ablation
	// groupMemory: closed-loop cells again with every log on tmpfs, where
	// an fdatasync costs nothing — not durable, and labelled so; they
	// split each durable cell's time between the disk and the rest (CPU,
	// loopback) with ratios measured in the same run.
	groupMemory = "memory"
	// groupReplicated: a 3-replica coordinator group, each cell right
	// after a one-coordinator run of its own (base), as the ablations are.
	groupReplicated = "replicated"
	// groupClassic: classic two-phase commit (--staged=false), each cell
	// right after a default (staged) run of its own, as the ablations.
	groupClassic = "classic"
)

// stagedAt are the callers at which the matrix runs classic two-phase
// commit beside the default, staged decisions (issue 16).
var stagedAt = []int{1, 100}

// replicatedAt are the callers at which the matrix runs a 3-replica
// coordinator group beside one coordinator.
var replicatedAt = []int{1, 100, 1000}

// ablations are the optimizations the matrix switches off one at a time,
// with the server flags that do it.
var ablations = []struct{ name, what string }{
	{"--group-commit=false", "one write + fdatasync per log record instead of one per batch"},
	{"--coalesce=false", "one write system call per frame instead of one per queued batch"},
	{"--batch=false", "the pump steps and flushes one input at a time instead of a whole inbox batch"},
	{"--shards=2", "two coordinator shards (two pump goroutines) instead of one per core the coordinator may use (GOMAXPROCS, 1 here)"},
	{"GOMAXPROCS=cores", "every process may use every core (Go's default, GOMAXPROCS = cores) instead of the cores split between the processes"},
}

// gomaxprocs is the GOMAXPROCS every process of a cell runs with: the
// cores split between the servers and the bench (at least 1 each), as a
// deployment gives co-located processes their own cores. With Go's
// default each of four processes on two cores runs two Ps, whose idle Ms
// spin looking for work and wake each other: that costs more CPU per
// transaction than the second P gains (the GOMAXPROCS=cores ablation
// shows how much). A cell whose flags include "GOMAXPROCS=cores" runs
// with the default.
func gomaxprocs(c *cell) string {
	for _, f := range c.flags {
		if f == "GOMAXPROCS=cores" {
			return strconv.Itoa(numCPU())
		}
	}
	return strconv.Itoa(max(1, numCPU()/(c.participants+max(1, c.replicas)+1)))
}

func matrix(quick bool, soak time.Duration) []cell {
	var cs []cell
	callers := []int{1, 10, 100, 1000, 4096}
	ablateAt := []int{100, 1000}
	if quick {
		callers = []int{1, 100, 1000}
		ablateAt = []int{100}
	}
	for _, n := range callers {
		cs = append(cs, cell{group: groupClosed, name: fmt.Sprintf("closed %d callers, 2 per txn", n), participants: 2, perTxn: 2, callers: n})
	}
	cs = append(cs, cell{group: groupClosed, name: "closed 100 callers, 10 per txn", participants: 10, perTxn: 10, callers: 100})
	if !quick {
		cs = append(cs, cell{group: groupClosed, name: "closed 1000 callers, 10 per txn", participants: 10, perTxn: 10, callers: 1000})
	}
	cs = append(cs, cell{group: groupOpen, name: "open loop at 80% of saturation, 2 per txn", participants: 2, perTxn: 2, rateFrac: 0.8})
	// Each ablation runs right after a default run of its own, so that the
	// ratio compares two runs seconds apart: on a shared machine the load
	// from other jobs drifts over minutes.
	for _, n := range ablateAt {
		for _, a := range ablations {
			cs = append(cs, cell{group: groupPaired, name: fmt.Sprintf("closed %d callers, 2 per txn, default (paired with %s)", n, a.name),
				participants: 2, perTxn: 2, callers: n})
			cs = append(cs, cell{group: groupAblated, name: fmt.Sprintf("closed %d callers, 2 per txn, %s", n, a.name),
				participants: 2, perTxn: 2, callers: n, flags: []string{a.name}, base: len(cs) - 1})
		}
	}
	repAt := replicatedAt
	if quick {
		repAt = []int{100}
	}
	for _, n := range repAt {
		cs = append(cs, cell{group: groupPaired, name: fmt.Sprintf("closed %d callers, 2 per txn, default (paired with 3 replicas)", n),
			participants: 2, perTxn: 2, callers: n})
		cs = append(cs, cell{group: groupReplicated, name: fmt.Sprintf("closed %d callers, 2 per txn, 3 replicas", n),
			participants: 2, perTxn: 2, callers: n, replicas: 3, base: len(cs) - 1})
	}
	for _, n := range stagedAt {
		cs = append(cs, cell{group: groupPaired, name: fmt.Sprintf("closed %d callers, 2 per txn, default (paired with --staged=false)", n),
			participants: 2, perTxn: 2, callers: n})
		cs = append(cs, cell{group: groupClassic, name: fmt.Sprintf("closed %d callers, 2 per txn, --staged=false", n),
			participants: 2, perTxn: 2, callers: n, flags: []string{"--staged=false"}, base: len(cs) - 1})
	}
	memAt := []struct{ callers, perTxn int }{{1, 2}, {100, 2}, {1000, 2}, {100, 10}}
	if quick {
		memAt = memAt[1:2]
	}
	for _, m := range memAt {
		cs = append(cs, cell{group: groupMemory, name: fmt.Sprintf("closed %d callers, %d per txn, logs in memory (tmpfs, not durable)", m.callers, m.perTxn),
			participants: m.perTxn, perTxn: m.perTxn, callers: m.callers, memLogs: true})
	}
	if !quick {
		cs = append(cs, cell{group: groupSoak, name: fmt.Sprintf("soak: closed 1000 callers, 2 per txn, %s", soak), participants: 2, perTxn: 2, callers: 1000, duration: soak})
	}
	return cs
}

// memTempDir makes a temporary directory on /dev/shm, if that is a tmpfs:
// the in-memory cells' data directories.
func memTempDir() (string, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs("/dev/shm", &st); err != nil {
		return "", fmt.Errorf("logs in memory need a tmpfs at /dev/shm: %w", err)
	}
	const tmpfsMagic = 0x01021994
	if st.Type != tmpfsMagic {
		return "", fmt.Errorf("logs in memory need a tmpfs at /dev/shm; it is a file system of type %#x", st.Type)
	}
	return os.MkdirTemp("/dev/shm", "commitd-matrix-")
}

// sampleLiveHeap reads the coordinator's live heap every 10 s for d: the
// heap right after a collection it forces (/debug/pprof/heap?gc=1, whose
// text form ends with runtime.MemStats; HeapAlloc is the live heap then).
// The heap the bench reports (bytes in heap objects, runtime/metrics)
// includes garbage not yet collected: with a few allocations per second a
// collection comes minutes apart, and that figure climbs in between
// without any leak. The forced collections cost a few milliseconds each.
func sampleLiveHeap(addr string, d time.Duration) []heapSample {
	var out []heapSample
	hc := &http.Client{Timeout: 5 * time.Second}
	start := time.Now()
	for t := 10 * time.Second; t <= d; t += 10 * time.Second {
		time.Sleep(time.Until(start.Add(t)))
		resp, err := hc.Get("http://" + addr + "/debug/pprof/heap?debug=1&gc=1")
		if err != nil {
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			continue
		}
		if m := heapAllocRE.FindSubmatch(body); m != nil {
			if n, err := strconv.ParseUint(string(m[1]), 10, 64); err == nil {
				out = append(out, heapSample{t: time.Since(start).Seconds(), bytes: n})
			}
		}
	}
	return out
}

// profileAll starts a CPU profile of every process in addrs (name → its
// --http address) over the next d less half a second, written to
// dir/id-NAME.pprof; the function it returns waits for them all, saves
// each process's /metrics (its log's fsyncs and batch sizes) as
// dir/id-NAME.metrics and reports the first failure. With dir empty it
// does nothing.
func profileAll(dir, id string, addrs map[string]string, d time.Duration) func() error {
	if dir == "" {
		return func() error { return nil }
	}
	secs := max(1, int((d-500*time.Millisecond)/time.Second))
	errs := make(chan error, len(addrs))
	for name, addr := range addrs {
		go func() {
			err := fetchProfile(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, secs),
				filepath.Join(dir, id+"-"+name+".pprof"), time.Duration(secs+10)*time.Second)
			if err == nil {
				err = fetchProfile("http://"+addr+"/metrics", filepath.Join(dir, id+"-"+name+".metrics"), 5*time.Second)
			}
			errs <- err
		}()
	}
	return func() error {
		var first error
		for range addrs {
			if err := <-errs; err != nil && first == nil {
				first = err
			}
		}
		return first
	}
}

func fetchProfile(url, path string, timeout time.Duration) error {
	hc := &http.Client{Timeout: timeout}
	resp, err := hc.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

var heapAllocRE = regexp.MustCompile(`(?m)^# HeapAlloc = (\d+)$`)

// freePorts finds n free loopback ports (by listening and closing: racy in
// principle, fine on a benchmark machine).
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func runCell(o *options, c *cell, dir, id string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	nCoord := max(1, c.replicas)
	// The last nCoord+participants: each process's HTTP (the soak's
	// coordinator, or -cpuprofile).
	ports, err := freePorts(2 * (c.participants + nCoord))
	if err != nil {
		return err
	}
	httpPort := ports[c.participants+nCoord:]
	httpAddr := fmt.Sprintf("127.0.0.1:%d", httpPort[c.participants])
	profiled := map[string]string{} // process name → its HTTP address
	var coordAddrs, peers []string
	for i := range nCoord {
		coordAddrs = append(coordAddrs, fmt.Sprintf("127.0.0.1:%d", ports[c.participants+i]))
		peers = append(peers, fmt.Sprintf("%d=%s", i+1, coordAddrs[i]))
	}
	coordAddr := strings.Join(coordAddrs, ",")
	var parts []string
	for i := 1; i <= c.participants; i++ {
		parts = append(parts, fmt.Sprintf("p%d=127.0.0.1:%d", i, ports[i-1]))
	}
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			stop(p)
		}
	}()
	start := func(log string, args ...string) error {
		f, err := os.Create(filepath.Join(dir, log))
		if err != nil {
			return err
		}
		defer f.Close()
		cmd := exec.Command(o.bin, args...)
		cmd.Env = append(os.Environ(), "GOMAXPROCS="+gomaxprocs(c))
		cmd.Stdout, cmd.Stderr = f, f
		if err := cmd.Start(); err != nil {
			return err
		}
		procs = append(procs, cmd)
		return nil
	}
	for i := 1; i <= c.participants; i++ {
		args := []string{"participant", "--name", fmt.Sprintf("p%d", i), "--listen", fmt.Sprintf("127.0.0.1:%d", ports[i-1]),
			"--data", filepath.Join(dir, fmt.Sprintf("p%d", i)), "--coordinator", coordAddr,
			"--accounts", strconv.Itoa(o.accounts), "--log-level", "warn"}
		args = append(args, serverFlags(c.flags, false)...)
		if o.profileDir != "" {
			a := fmt.Sprintf("127.0.0.1:%d", httpPort[i-1])
			args = append(args, "--http", a)
			profiled[fmt.Sprintf("p%d", i)] = a
		}
		if err := start(fmt.Sprintf("p%d.log", i), args...); err != nil {
			return err
		}
	}
	// The coordinators are started last: procs[c.participants:].
	for i, a := range coordAddrs {
		args := []string{"coordinator", "--listen", a, "--data", filepath.Join(dir, fmt.Sprintf("coordinator%d", i+1)),
			"--participant", strings.Join(parts, ","), "--log-level", "warn"}
		if c.replicas > 1 {
			args = append(args, "--id", strconv.Itoa(i+1), "--peers", strings.Join(peers, ","))
		}
		args = append(args, serverFlags(c.flags, true)...)
		switch {
		case c.group == groupSoak && i == 0:
			args = append(args, "--http", httpAddr)
		case o.profileDir != "":
			a := fmt.Sprintf("127.0.0.1:%d", httpPort[c.participants+i])
			args = append(args, "--http", a)
			profiled[fmt.Sprintf("coordinator%d", i+1)] = a
		}
		if err := start(fmt.Sprintf("coordinator%d.log", i+1), args...); err != nil {
			return err
		}
	}
	if err := waitUp(coordAddrs, parts); err != nil {
		return err
	}
	waitIdle(procs)
	d := o.duration
	if c.duration > 0 {
		d = c.duration
	}
	jsonPath := filepath.Join(dir, "report.json")
	bargs := []string{"bench", "--coordinator", coordAddr, "--participants", strings.Join(parts, ","),
		"--per-txn", strconv.Itoa(c.perTxn), "--accounts", strconv.Itoa(o.accounts),
		"--duration", d.String(), "--warmup", o.warmup.String(), "--json", jsonPath, "--seed", "1"}
	if c.rate > 0 {
		bargs = append(bargs, "--rate", strconv.FormatFloat(c.rate, 'f', 0, 64))
	} else {
		bargs = append(bargs, "--concurrency", strconv.Itoa(c.callers))
	}
	c.load[0] = loadavg()
	cmd := exec.Command(o.bin, bargs...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS="+gomaxprocs(c))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return err
	}
	// The servers' CPU counts from the end of the warmup, as the
	// transactions it is divided by do.
	time.Sleep(o.warmup)
	before := make([]float64, len(procs))
	type rw struct {
		r, w uint64
		ok   bool
	}
	callsBefore := make([]rw, len(procs))
	for i, p := range procs {
		before[i] = bench.ProcessCPUSeconds(p.Process.Pid)
		callsBefore[i].r, callsBefore[i].w, callsBefore[i].ok = bench.ProcessIOCalls(p.Process.Pid)
	}
	profiles := profileAll(o.profileDir, id, profiled, d)
	var sampled chan []heapSample
	if c.group == groupSoak {
		sampled = make(chan []heapSample, 1)
		go func() { sampled <- sampleLiveHeap(httpAddr, d) }()
	}
	err = cmd.Wait()
	if sampled != nil {
		c.liveHeap = <-sampled
	}
	c.load[1] = loadavg()
	if perr := profiles(); perr != nil {
		fmt.Fprintf(os.Stderr, "   profile: %v\n", perr)
	}
	after := make([]float64, len(procs))
	callsAfter := make([]rw, len(procs))
	for i, p := range procs {
		after[i] = bench.ProcessCPUSeconds(p.Process.Pid)
		callsAfter[i].r, callsAfter[i].w, callsAfter[i].ok = bench.ProcessIOCalls(p.Process.Pid)
	}
	b, rerr := os.ReadFile(jsonPath)
	if rerr != nil {
		return fmt.Errorf("bench: %v\n%s", err, tail(out.String()))
	}
	if err := json.Unmarshal(b, &c.rep); err != nil {
		return err
	}
	if err != nil {
		return fmt.Errorf("bench: %v\n%s", err, tail(out.String()))
	}
	n := float64(max(1, c.rep.Committed))
	// The coordinators (every replica of a group) were started last.
	c.calls = nil
	for i := range procs {
		use := (after[i] - before[i]) * 1e6 / n
		name := fmt.Sprintf("p%d", i+1)
		if i >= c.participants {
			c.cpu.coordinator += use
			name = fmt.Sprintf("coordinator%d", i-c.participants+1)
		} else {
			c.cpu.participants += use
		}
		if b, a := callsBefore[i], callsAfter[i]; b.ok && a.ok {
			c.calls = append(c.calls, ioCalls{name: name,
				reads: float64(a.r-b.r) / n, writes: float64(a.w-b.w) / n})
		}
	}
	c.ok = true
	return nil
}

// serverFlags picks the flags that apply to a coordinator or a
// participant: --shards and --staged are the coordinator's only.
func serverFlags(flags []string, coordinator bool) []string {
	var out []string
	for _, f := range flags {
		coordOnly := strings.HasPrefix(f, "--shards") || strings.HasPrefix(f, "--staged")
		if coordOnly && !coordinator || !strings.HasPrefix(f, "--") {
			continue // GOMAXPROCS=cores is no flag
		}
		out = append(out, f)
	}
	return out
}

// waitUp waits until every coordinator and participant answers admin
// queries and, for a replicated group, one replica says it leads; then a
// little longer for the servers to dial each other.
func waitUp(coords, parts []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	addrs := append([]string(nil), coords...)
	for _, p := range parts {
		addrs = append(addrs, p[strings.IndexByte(p, '=')+1:])
	}
	for _, a := range addrs {
		for {
			var v json.RawMessage
			err := client.Admin(ctx, a, "status", nil, &v)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return fmt.Errorf("%s did not come up: %w", a, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for len(coords) > 1 {
		led := false
		for _, a := range coords {
			var st struct {
				Role string `json:"role"`
			}
			if client.Admin(ctx, a, "status", nil, &st) == nil && st.Role == "leader" {
				led = true
			}
		}
		if led {
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("no replica of %s became leader", strings.Join(coords, ","))
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	return nil
}

// waitIdle waits (up to 15 s) until the servers have finished starting:
// until they used less than 2% of a core over half a second. A new log
// writes its first segments out in full in the background; a cell that
// started meanwhile would be charged for it.
func waitIdle(procs []*exec.Cmd) {
	total := func() float64 {
		t := 0.0
		for _, p := range procs {
			t += bench.ProcessCPUSeconds(p.Process.Pid)
		}
		return t
	}
	deadline := time.Now().Add(15 * time.Second)
	last := total()
	for time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		now := total()
		if now-last <= 0.01 {
			return
		}
		last = now
	}
}

// stop ends a server with SIGTERM (a graceful close), then SIGKILL after 5s.
func stop(cmd *exec.Cmd) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func loadavg() float64 {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

func tail(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > 10 {
		lines = lines[len(lines)-10:]
	}
	return strings.Join(lines, "\n")
}

// machine describes where the matrix ran.
func machine() []string {
	var out []string
	out = append(out, fmt.Sprintf("CPU: %d cores (%s)", runtime.NumCPU(), cpuModel()))
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "MemTotal:") {
				kb, _ := strconv.ParseFloat(strings.Fields(l)[1], 64)
				out = append(out, fmt.Sprintf("memory: %.1f GiB", kb/(1<<20)))
			}
		}
	}
	out = append(out, "disk: "+disk())
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		out = append(out, "kernel: Linux "+strings.TrimSpace(string(b)))
	}
	out = append(out, "Go: "+runtime.Version())
	return out
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "model name") {
			return strings.TrimSpace(l[strings.IndexByte(l, ':')+1:])
		}
	}
	return "unknown model"
}

// disk names the file system and block device under the temporary
// directory, where the data directories live.
func disk() string {
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return "unknown"
	}
	tmp, _ := filepath.EvalSymlinks(os.TempDir())
	best, dev, fs, opts := "", "", "", ""
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 4 || !strings.HasPrefix(tmp, f[1]) || len(f[1]) < len(best) {
			continue
		}
		best, dev, fs, opts = f[1], f[0], f[2], f[3]
	}
	desc := fmt.Sprintf("%s on %s (mounted at %s", fs, dev, best)
	if strings.Contains(opts, "discard") {
		desc += ", discard"
	}
	desc += ")"
	name := filepath.Base(dev)
	if rot, err := os.ReadFile("/sys/block/" + name + "/queue/rotational"); err == nil {
		kind := "reports itself non-rotational"
		if strings.TrimSpace(string(rot)) == "1" {
			kind = "reports itself rotational"
		}
		if strings.HasPrefix(name, "vd") {
			kind = "a virtio block device, which " + kind + " (the host's storage is not visible)"
		}
		desc += ", " + kind
	}
	return desc
}

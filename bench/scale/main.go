// Command scale is the scaling measurement of a cluster of coordinator
// groups (docs/scale.md, `make scale`): in one run on one machine, one
// coordinator group against two at the same total cores — the one group's
// coordinator with GOMAXPROCS=N, each of the two groups' with N/2 — with
// the same participants (two bank participants, GOMAXPROCS unchanged) and
// the same callers (`commitd bench --cluster`), alternating the two
// setups for -rounds rounds so that a drift of the shared machine falls
// on both. It prints, per run, total committed/s and each process's CPU µs
// per transaction, and the disk's 4 KiB write + fdatasync measured before
// and after in the same run.
//
// The question it answers is whether a second group adds a per-transaction
// cost (the target: coordinator CPU µs/txn within 10 %); one machine
// cannot show what more cores give, which docs/scale.md projects from
// these figures.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/commitd/commitd/bench"
	"github.com/commitd/commitd/client"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "scale: %v\n", err)
		os.Exit(1)
	}
}

type options struct {
	bin              string
	duration, warmup time.Duration
	callers, rounds  int
	double           bool // also both at twice the callers
	half             bool // also one group with half the GOMAXPROCS
	accounts         int
	procs            int // GOMAXPROCS of the one group's coordinator; each of two gets half
}

// proc is a server process of a run.
type proc struct {
	name  string
	group uint16 // a coordinator's group; 0 for a participant
	cmd   *exec.Cmd
	http  string // its /metrics address
	cpu0  float64
	sync0 float64 // fdatasyncs of its logs (commitd_wal_fsync_seconds_count)
}

// setup is one kind of run: groups of one replica each, under callers.
type setup struct {
	name            string
	groups, callers int
	// halfProcs gives a lone group's coordinator the GOMAXPROCS each of
	// two groups' gets (-half): what one P per process costs, apart from
	// what a second group costs.
	halfProcs bool
}

// result is one run's figures.
type result struct {
	setup
	committedPerS float64
	p50, p99      float64
	answered      int64
	// usPerTxn is each process's CPU µs per transaction of the run;
	// ownUsPerTxn, for a coordinator, per transaction of its own group.
	usPerTxn    map[string]float64
	ownUsPerTxn map[string]float64
	// syncsPerKTxn is each process's fdatasyncs per 1,000 transactions:
	// how well group commit amortizes them.
	syncsPerKTxn map[string]float64
	benchUs      float64 // the bench process (the callers) per transaction
	names        []string
}

func run() error {
	var o options
	flag.StringVar(&o.bin, "bin", "bin/commitd", "the commitd binary")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measured load per run")
	flag.DurationVar(&o.warmup, "warmup", 3*time.Second, "load run first in each cluster, not measured (log segments are prepared, connections warm)")
	flag.IntVar(&o.callers, "callers", 200, "closed-loop callers (the same in every run)")
	flag.IntVar(&o.rounds, "rounds", 2, "rounds of (one group, two groups)")
	flag.BoolVar(&o.double, "double", true, "each round also runs one group and two at twice the callers: the comparison at a second load, where each of two groups carries what one group did at -callers")
	flag.IntVar(&o.accounts, "accounts", 1000, "accounts per participant")
	flag.BoolVar(&o.half, "half", false, "each round also runs one group whose coordinator has half the GOMAXPROCS (what each of two groups' has), at -callers: separates the cost of fewer Ps per process from that of a second group")
	flag.IntVar(&o.procs, "procs", runtime.NumCPU(), "GOMAXPROCS of the one group's coordinator (each of two groups': half, at least 1)")
	flag.Parse()
	if o.procs < 2 {
		return fmt.Errorf("-procs %d: want at least 2, to split between two groups", o.procs)
	}
	if _, err := os.Stat(o.bin); err != nil {
		return fmt.Errorf("%v (make scale builds it)", err)
	}
	dir, err := os.MkdirTemp("", "commitd-scale-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	fmt.Printf("scale: %s, %d cores, load %s; %d callers, %v measured after %v warmup, %d rounds; GOMAXPROCS: one group's coordinator %d, each of two groups' %d; participants unchanged\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), loadavg(), o.callers, o.duration, o.warmup, o.rounds, o.procs, o.procs/2)
	diskBefore, err := diskUs(dir)
	if err != nil {
		return err
	}
	var results []result
	for r := range o.rounds {
		for i, su := range setups(o) {
			res, err := runCluster(o, filepath.Join(dir, fmt.Sprintf("r%d-s%d", r, i)), su)
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", r+1, su.name, err)
			}
			results = append(results, res)
			printResult(r+1, res)
		}
	}
	diskAfter, err := diskUs(dir)
	if err != nil {
		return err
	}
	fmt.Printf("scale: disk: 4 KiB write + fdatasync into a written file, median of 200: %.0f µs before, %.0f µs after\n", diskBefore, diskAfter)
	summarize(setups(o), results)
	fmt.Printf("scale: load after %s\n", loadavg())
	return nil
}

// runCluster starts two bank participants and groups coordinator groups
// of one replica each, warms up, measures one bench run, and stops them.
func runCluster(o options, dir string, su setup) (result, error) {
	groups := su.groups
	res := result{setup: su, usPerTxn: map[string]float64{}, ownUsPerTxn: map[string]float64{}, syncsPerKTxn: map[string]float64{}}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	addrs, err := freeAddrs(2 * (groups + 2))
	if err != nil {
		return res, err
	}
	httpAddrs := addrs[groups+2:]
	addrs = addrs[:groups+2]
	caddrs, paddrs := addrs[:groups], addrs[groups:]
	var m strings.Builder
	fmt.Fprintf(&m, "version 1\n")
	for g, a := range caddrs {
		fmt.Fprintf(&m, "group %d replicas 1=%s weight 1\n", g+1, a)
	}
	var parts []string
	for i, a := range paddrs {
		fmt.Fprintf(&m, "participant p%d=%s\n", i+1, a)
		parts = append(parts, fmt.Sprintf("p%d=%s", i+1, a))
	}
	mapPath := filepath.Join(dir, "cluster.map")
	if err := os.WriteFile(mapPath, []byte(m.String()), 0o644); err != nil {
		return res, err
	}
	var procs []*proc
	defer func() {
		for _, p := range procs {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			_ = p.cmd.Wait()
		}
	}()
	start := func(name string, group uint16, env []string, args ...string) error {
		log, err := os.Create(filepath.Join(dir, name+".log"))
		if err != nil {
			return err
		}
		defer log.Close()
		metrics := httpAddrs[len(procs)]
		cmd := exec.Command(o.bin, append(args, "--log-level", "warn", "--http", metrics)...)
		cmd.Env = append(os.Environ(), env...)
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			return err
		}
		procs = append(procs, &proc{name: name, group: group, cmd: cmd, http: metrics})
		return nil
	}
	for i, a := range paddrs {
		name := fmt.Sprintf("p%d", i+1)
		if err := start(name, 0, nil, "participant", "--name", name, "--listen", a, "--data", filepath.Join(dir, name),
			"--cluster", mapPath, "--accounts", strconv.Itoa(o.accounts)); err != nil {
			return res, err
		}
	}
	gomaxprocs := o.procs / groups
	if su.halfProcs {
		gomaxprocs = o.procs / 2
	}
	for g, a := range caddrs {
		name := fmt.Sprintf("coordinator g%d", g+1)
		if err := start(name, uint16(g+1), []string{"GOMAXPROCS=" + strconv.Itoa(gomaxprocs)}, "coordinator", "--group", strconv.Itoa(g+1),
			"--listen", a, "--data", filepath.Join(dir, fmt.Sprintf("c%d", g+1)), "--participant", strings.Join(parts, ",")); err != nil {
			return res, err
		}
	}
	for _, a := range addrs {
		if err := waitAnswering(a, 20*time.Second); err != nil {
			return res, err
		}
	}
	benchArgs := func(d time.Duration, extra ...string) []string {
		return append([]string{"bench", "--cluster", mapPath, "--concurrency", strconv.Itoa(su.callers),
			"--duration", d.String(), "--accounts", strconv.Itoa(o.accounts), "--seed", "1"}, extra...)
	}
	// The warmup's own verdict does not matter (its first transactions
	// may meet connections still coming up); the measured run's does.
	_ = exec.Command(o.bin, benchArgs(o.warmup)...).Run()
	for _, p := range procs {
		p.cpu0 = bench.ProcessCPUSeconds(p.cmd.Process.Pid)
		p.sync0 = fsyncs(p.http)
	}
	jsonPath := filepath.Join(dir, "report.json")
	b := exec.Command(o.bin, benchArgs(o.duration, "--json", jsonPath)...)
	if out, err := b.CombinedOutput(); err != nil {
		return res, fmt.Errorf("bench: %v\n%s", err, out)
	}
	for _, p := range procs {
		p.cpu0 = bench.ProcessCPUSeconds(p.cmd.Process.Pid) - p.cpu0
		p.sync0 = fsyncs(p.http) - p.sync0
	}
	raw, err := os.ReadFile(jsonPath)
	if err != nil {
		return res, err
	}
	var rep bench.Report
	if err := json.Unmarshal(raw, &rep); err != nil {
		return res, err
	}
	res.committedPerS, res.p50, res.p99, res.answered = rep.CommittedPerS, rep.P50ms, rep.P99ms, rep.Answered()
	n := float64(max(1, res.answered))
	for _, p := range procs {
		res.names = append(res.names, p.name)
		res.usPerTxn[p.name] = p.cpu0 * 1e6 / n
		res.syncsPerKTxn[p.name] = p.sync0 * 1000 / n
		for _, g := range rep.Groups {
			if g.Group == p.group {
				own := float64(max(1, g.Committed+g.Aborted+g.Unknown+g.Rejected+g.Errors))
				res.ownUsPerTxn[p.name] = p.cpu0 * 1e6 / own
			}
		}
	}
	st := b.ProcessState
	res.benchUs = (st.UserTime() + st.SystemTime()).Seconds() * 1e6 / n
	return res, nil
}

// setups are the runs of each round, in pairs of one group and two at
// the same callers: at -callers, and with -double at twice as many.
func setups(o options) []setup {
	sus := []setup{{"1 group", 1, o.callers, false}, {"2 groups", 2, o.callers, false}}
	if o.double {
		sus = append(sus, setup{"1 group, 2× callers", 1, 2 * o.callers, false}, setup{"2 groups, 2× callers", 2, 2 * o.callers, false})
	}
	if o.half {
		// Last, and alone: summarize pairs the setups before it.
		sus = append(sus, setup{fmt.Sprintf("1 group, GOMAXPROCS %d", o.procs/2), 1, o.callers, true})
	}
	return sus
}

func printResult(round int, r result) {
	var per []string
	coord, parts := 0.0, 0.0
	for _, name := range r.names {
		us := r.usPerTxn[name]
		if strings.HasPrefix(name, "coordinator") {
			coord += us
			per = append(per, fmt.Sprintf("%s %.1f (%.1f per own txn; %.0f fdatasyncs per 1000 txns)", name, us, r.ownUsPerTxn[name], r.syncsPerKTxn[name]))
		} else {
			parts += us
			per = append(per, fmt.Sprintf("%s %.1f (%.0f fdatasyncs per 1000 txns)", name, us, r.syncsPerKTxn[name]))
		}
	}
	fmt.Printf("scale: round %d, %s (%d callers): %.0f committed/s, p50 %.2f ms, p99 %.2f ms, %d answered; CPU µs/txn: coordinators %.1f, participants %.1f, bench %.1f; %s\n",
		round, r.name, r.callers, r.committedPerS, r.p50, r.p99, r.answered, coord, parts, r.benchUs, strings.Join(per, ", "))
}

// summarize prints the medians of each setup and the verdict on the
// target: coordinator CPU µs per transaction of two groups within 10 % of
// one group's.
func summarize(sus []setup, results []result) {
	type agg struct{ rate, coord, parts, bench []float64 }
	by := map[string]*agg{}
	for _, su := range sus {
		by[su.name] = &agg{}
	}
	for _, r := range results {
		a := by[r.name]
		a.rate = append(a.rate, r.committedPerS)
		c, p := 0.0, 0.0
		for name, us := range r.usPerTxn {
			if strings.HasPrefix(name, "coordinator") {
				c += us
			} else {
				p += us
			}
		}
		a.coord = append(a.coord, c)
		a.parts = append(a.parts, p)
		a.bench = append(a.bench, r.benchUs)
	}
	fmt.Println("scale: | setup | callers | committed/s | coordinators µs/txn | participants µs/txn | bench µs/txn | all µs/txn |")
	fmt.Println("scale: |---|---|---|---|---|---|---|")
	for _, su := range sus {
		a := by[su.name]
		fmt.Printf("scale: | %s | %d | %.0f | %.1f | %.1f | %.1f | %.1f |\n", su.name, su.callers, median(a.rate), median(a.coord), median(a.parts), median(a.bench),
			median(a.coord)+median(a.parts)+median(a.bench))
	}
	pairs := sus
	if o := sus[len(sus)-1]; o.halfProcs {
		pairs = sus[:len(sus)-1]
		h, one, two := by[o.name], by[sus[0].name], by[sus[1].name]
		fmt.Printf("scale: %s ÷ 1 group, coordinator CPU per transaction: %.3f; 2 groups ÷ %s: %.3f (%d callers)\n",
			o.name, median(h.coord)/median(one.coord), o.name, median(two.coord)/median(h.coord), o.callers)
	}
	for i := 0; i+1 < len(pairs); i += 2 {
		one, two := by[sus[i].name], by[sus[i+1].name]
		ratio := median(two.coord) / median(one.coord)
		verdict := "MET"
		if ratio > 1.10 {
			verdict = "MISSED"
		}
		fmt.Printf("scale: %d callers: coordinator CPU per transaction, two groups ÷ one: %.3f (target ≤ 1.10: %s); all processes: %.3f; committed/s two ÷ one: %.3f (medians of %d rounds)\n",
			sus[i].callers, ratio, verdict, (median(two.coord)+median(two.parts)+median(two.bench))/(median(one.coord)+median(one.parts)+median(one.bench)),
			median(two.rate)/median(one.rate), len(one.rate))
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// freeAddrs returns n loopback addresses nobody listens on now.
func freeAddrs(n int) ([]string, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var out []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().String())
	}
	return out, nil
}

// waitAnswering waits until the server at addr answers admin status.
func waitAnswering(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		var v json.RawMessage
		err := client.Admin(ctx, addr, "status", nil, &v)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not answer after %v: %w", addr, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// diskUs measures a 4 KiB pwrite + fdatasync into blocks already written
// (what a recycled log segment costs), in dir: the median of 200, in µs.
func diskUs(dir string) (float64, error) {
	f, err := os.OpenFile(filepath.Join(dir, "disk-probe"), os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o644)
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	const n = 200
	if _, err := f.Write(make([]byte, n*len(buf))); err != nil {
		return 0, err
	}
	if err := syscall.Fdatasync(int(f.Fd())); err != nil {
		return 0, err
	}
	us := make([]float64, n)
	for i := range n {
		t := time.Now()
		if _, err := f.WriteAt(buf, int64(i*len(buf))); err != nil {
			return 0, err
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return 0, err
		}
		us[i] = float64(time.Since(t).Microseconds())
	}
	return median(us), nil
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// fsyncs reads the number of log fdatasyncs a server has made, summed
// over its logs, from its /metrics; 0 when it cannot be read.
func fsyncs(addr string) float64 {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "commitd_wal_fsync_seconds_count") {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

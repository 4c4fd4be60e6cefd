package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/signal"
	"runtime/pprof"
	"sort"
	"syscall"
	"time"

	"github.com/commitd/commitd/bench"
	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/cluster"
	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/participant"
)

// runBench is the bench command: load against a running cluster, a report,
// and a check that the participants' money still adds up.
func runBench(args []string) error {
	fs := newFlags("bench")
	var coord string
	parts := participantList{}
	var tf tlsFlags
	var w bench.Workload
	concurrency := fs.Int("concurrency", 100, "concurrent callers (closed loop)")
	rate := fs.Float64("rate", 0, "open loop: start this many transactions per second, latency measured from each one's scheduled start (overrides --concurrency)")
	maxInFlight := fs.Int("max-in-flight", 10000, "open loop: bound on transactions in flight")
	duration := fs.Duration("duration", 10*time.Second, "how long to run (after --warmup)")
	warmup := fs.Duration("warmup", 0, "run the load this long first without measuring it (servers that just started are still preparing log segments)")
	txns := fs.Int64("txns", 0, "stop after this many transactions (0: run for --duration)")
	callTimeout := fs.Duration("call-timeout", 0, "give up on a transaction without an answer after this long: it counts as unknown and the caller starts its next one (0: wait as long as the run lasts; with a replicated coordinator the client then moves on to another replica)")
	conns := fs.Int("conns", 2, "connections to the coordinator")
	jsonPath := fs.String("json", "", "write the report (every figure) as JSON to this file")
	plotPath := fs.String("plot", "", "draw throughput over time and the latency spectrum into this SVG file")
	ackPath := fs.String("ack-log", "", "write one line per transaction to this file, <uuid> <outcome> <participant>,...: the outcome the caller was told. "+
		"Each line is in the kernel within one write round of its outcome (one write(2) per round, no user-space buffer across rounds), "+
		"so a kill -9 loses at most the lines queued since the last round began and may cut the last line short")
	cpuProfile := fs.String("cpuprofile", "", "write this process's CPU profile to this file")
	seed := fs.Uint64("seed", uint64(time.Now().UnixNano()), "workload seed")
	traceRatio := fs.Float64("trace-sample", 0, "send this share (0 to 1) of transactions with a sampled trace context of their own, for a coordinator that traces (--otlp-endpoint) to trace: what tracing costs under load")
	fs.StringVar(&coord, "coordinator", "", "the coordinator's address, or every replica's as ADDR1,ADDR2,ADDR3 (required, unless --cluster)")
	clusterFile := fs.String("cluster", "", "instead of --coordinator, a cluster map (docs/scale.md): drive every group, each new id stamped with a group by the map's weights, and report per group and in total; SIGHUP re-reads the file (a new map version: a group added, weights changed)")
	fs.Var(parts, "participants", "participants as NAME=ADDR,NAME=ADDR,... (required, unless the --cluster map lists them)")
	fs.IntVar(&w.Accounts, "accounts", 1000, "accounts per participant to spread transfers over (at most what the participants have)")
	fs.IntVar(&w.PerTxn, "per-txn", 2, "participants per transaction (1 to 10)")
	fs.Float64Var(&w.HotAccounts, "hot-accounts", 0, "confine traffic to this fraction of accounts (contention)")
	fs.StringVar(&w.Statement, "statement", "", "run this operator's statement in each branch instead of the bank's work, with (amount, account) as its two int arguments; the participants need a --statements file defining it (docs/mysql.md)")
	fs.Float64Var(&w.ReadOnly, "read-only", 0, "fraction of credit branches that only read (never the last: with 0, every branch writes)")
	tf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	var cmap *cluster.Map
	if *clusterFile != "" {
		if coord != "" {
			return usageError{errors.New("give --coordinator or --cluster, not both")}
		}
		var err error
		if cmap, err = cluster.Load(*clusterFile); err != nil {
			return fmt.Errorf("--cluster: %w", err)
		}
		if len(parts) == 0 {
			for _, p := range cmap.Participants {
				parts[p.Name] = p.Addr
			}
		}
		if len(parts) == 0 {
			return usageError{fmt.Errorf("--cluster %s lists no participant: give --participants", *clusterFile)}
		}
	} else if coord == "" || len(parts) == 0 {
		return usageError{errors.New("--coordinator (or --cluster) and --participants are required")}
	}
	if err := checkBenchFlags(benchFlags{
		concurrency: *concurrency, rate: *rate, maxInFlight: *maxInFlight, duration: *duration, warmup: *warmup,
		txns: *txns, conns: *conns, participants: len(parts), work: w, callTimeout: *callTimeout,
	}); err != nil {
		return usageError{err}
	}
	if *traceRatio < 0 || *traceRatio > 1 {
		return usageError{fmt.Errorf("--trace-sample %v: want a ratio from 0 to 1", *traceRatio)}
	}
	for n := range parts {
		w.Names = append(w.Names, n)
	}
	sort.Strings(w.Names)
	tlsCfg, err := tf.config()
	if err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// total sums the participants' balances; -1 if one cannot count (an
	// HTTP participant's data is its service's; a PostgreSQL database
	// that cannot be read): then conservation is not checked.
	total := func() (int64, error) {
		var sum int64
		for n, addr := range parts {
			var a participant.Accounts
			if err := client.Admin(ctx, addr, "accounts", tlsCfg, &a); err != nil {
				return 0, fmt.Errorf("participant %s: %w", n, err)
			}
			if a.Total < 0 {
				return -1, nil
			}
			sum += a.Total
		}
		return sum, nil
	}
	if err := checkAccounts(ctx, parts, tlsCfg, w.Accounts); err != nil {
		return err
	}
	before, err := total()
	if err != nil {
		return err
	}
	cfg := bench.Config{
		Work: w, Concurrency: *concurrency, Rate: *rate, MaxInFlight: *maxInFlight,
		Duration: *duration, Warmup: *warmup, Txns: *txns, CallTimeout: *callTimeout, Seed: *seed, TraceRatio: *traceRatio, Progress: os.Stderr,
		Sample: func(ctx context.Context) (bench.ServerSample, error) {
			var st coordinator.Status
			err := client.Admin(ctx, coord, "status", tlsCfg, &st)
			return bench.ServerSample{Mallocs: st.Mallocs, HeapBytes: st.HeapBytes, CPUSeconds: st.CPUSeconds}, err
		},
	}
	if cmap != nil {
		cc, err := client.DialCluster(cmap, client.Options{Conns: *conns, TLS: tlsCfg})
		if err != nil {
			return err
		}
		defer cc.Close()
		cfg.Cluster = cc
		cfg.SampleGroup = func(ctx context.Context, g uint16) (bench.ServerSample, error) {
			return sampleGroup(ctx, cc.Map(), g, tlsCfg)
		}
		cfg.Sample = func(ctx context.Context) (bench.ServerSample, error) {
			return sampleCluster(ctx, cc.Map(), tlsCfg)
		}
		stopReload := reloadOnHangup(*clusterFile, cc)
		defer stopReload()
	} else {
		cl, err := client.Dial(coord, client.Options{Conns: *conns, TLS: tlsCfg})
		if err != nil {
			return err
		}
		defer cl.Close()
		cfg.Client = cl
	}
	if *txns > 0 {
		cfg.Duration = 0
	}
	if *ackPath != "" {
		// The file itself, unbuffered: bench.Run writes it in rounds (see
		// bench.Config.AckLog).
		f, err := os.Create(*ackPath)
		if err != nil {
			return err
		}
		defer f.Close()
		cfg.AckLog = f
	}
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Println(rep.Summary())
	// Let the last decisions land: wait until no participant holds a
	// prepared transaction (or 10 s), then compare the totals.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		held := 0
		for _, addr := range parts {
			var a participant.Accounts
			if client.Admin(ctx, addr, "accounts", tlsCfg, &a) == nil {
				held += a.Prepared
			}
		}
		if held == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	after, err := total()
	if err != nil {
		return err
	}
	checked := before >= 0 && after >= 0
	conserved := !checked || after == before
	if !checked {
		fmt.Println("conservation  not checked: a participant cannot count its data (an HTTP service's is its own)")
	} else {
		fmt.Printf("conservation  total before %d, after %d: %v\n", before, after, map[bool]string{true: "OK", false: "FAILED"}[conserved])
	}
	if *jsonPath != "" {
		out := struct {
			bench.Report
			Conserved bool `json:"conserved"`
			Checked   bool `json:"conservation_checked"`
		}{rep, conserved, checked}
		b, _ := json.MarshalIndent(out, "", "  ")
		if err := os.WriteFile(*jsonPath, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if *plotPath != "" {
		f, err := os.Create(*plotPath)
		if err != nil {
			return err
		}
		err = rep.Plot(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	if !conserved {
		return fmt.Errorf("money was created or lost: %d before, %d after", before, after)
	}
	if err := verdict(rep); err != nil {
		return err
	}
	if n := rep.Answered(); n > 0 && 2*(n-rep.Committed) > n {
		fmt.Fprintf(os.Stderr, "commitd bench: warning: %.1f%% of transactions did not commit (causes above)\n", 100*float64(n-rep.Committed)/float64(n))
	}
	return nil
}

// benchFlags are bench's numbers, checked together by checkBenchFlags.
type benchFlags struct {
	concurrency, maxInFlight, conns, participants int
	rate                                          float64
	duration, warmup, callTimeout                 time.Duration
	txns                                          int64
	work                                          bench.Workload
}

// checkBenchFlags rejects every number bench cannot run with, naming the
// flag: a zero or negative count is a mistake, never a request for a
// default.
func checkBenchFlags(f benchFlags) error {
	switch {
	case f.concurrency < 1:
		return fmt.Errorf("--concurrency %d: want at least 1 caller", f.concurrency)
	case math.IsNaN(f.rate) || math.IsInf(f.rate, 0) || f.rate < 0:
		return fmt.Errorf("--rate %v: want a number of transactions per second, 0 for a closed loop", f.rate)
	case f.maxInFlight < 1:
		return fmt.Errorf("--max-in-flight %d: want at least 1", f.maxInFlight)
	case f.txns < 0:
		return fmt.Errorf("--txns %d: want a positive count, or 0 to run for --duration", f.txns)
	case f.duration < 0 || f.duration == 0 && f.txns == 0:
		return fmt.Errorf("--duration %v: want a positive duration (or set --txns)", f.duration)
	case f.warmup < 0:
		return fmt.Errorf("--warmup %v: must not be negative", f.warmup)
	case f.callTimeout < 0:
		return fmt.Errorf("--call-timeout %v: must not be negative", f.callTimeout)
	case f.warmup > 0 && f.txns > 0:
		return errors.New("--warmup needs --duration, not --txns")
	case f.conns < 1 || f.conns > maxConns:
		return fmt.Errorf("--conns %d: want 1 to %d connections", f.conns, maxConns)
	case f.work.Accounts < 1 || f.work.Accounts > maxAccounts:
		return fmt.Errorf("--accounts %d: want 1 to %d (at most what each participant has)", f.work.Accounts, maxAccounts)
	case f.work.PerTxn < 1 || f.work.PerTxn > 10 || f.work.PerTxn > f.participants:
		return fmt.Errorf("--per-txn %d: want 1 to %d (the participants named)", f.work.PerTxn, min(10, f.participants))
	case !(f.work.HotAccounts >= 0 && f.work.HotAccounts <= 1):
		return fmt.Errorf("--hot-accounts %v: want a fraction from 0 to 1", f.work.HotAccounts)
	case !(f.work.ReadOnly >= 0 && f.work.ReadOnly <= 1):
		return fmt.Errorf("--read-only %v: want a fraction from 0 to 1", f.work.ReadOnly)
	}
	if err := f.work.CheckStatement(); err != nil {
		return fmt.Errorf("--statement %q: %w", f.work.Statement, err)
	}
	return nil
}

// Bounds of bench's flags: connections to the coordinator, and accounts
// (the bank's work names an account in 32 bits).
const (
	maxConns    = 1024
	maxAccounts = math.MaxUint32
)

// checkAccounts asks each participant how many accounts it has and fails,
// naming it, if the workload would address accounts it lacks: every such
// transfer would be voted down. A participant that cannot say (a
// PostgreSQL participant whose database cannot be read reports a total of
// -1) is left unchecked, with a warning.
func checkAccounts(ctx context.Context, parts participantList, tlsCfg *tls.Config, want int) error {
	names := make([]string, 0, len(parts))
	for n := range parts {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		var a participant.Accounts
		if err := client.Admin(ctx, parts[n], "accounts", tlsCfg, &a); err != nil {
			return fmt.Errorf("participant %s: %w", n, err)
		}
		if a.Total < 0 {
			fmt.Fprintf(os.Stderr, "commitd bench: warning: participant %s cannot count its accounts; --accounts %d is not checked\n", n, want)
			continue
		}
		if a.Accounts < want {
			return usageError{fmt.Errorf("--accounts %d: participant %s has %d accounts", want, n, a.Accounts)}
		}
	}
	return nil
}

// verdict fails a run that measured nothing useful: no transaction
// committed, or every one was rejected. The summary above it lists the
// causes; the error repeats the first.
func verdict(rep bench.Report) error {
	n := rep.Answered()
	why := ""
	if len(rep.Causes) > 0 {
		c := rep.Causes[0]
		why = fmt.Sprintf("; most (%d of %d): %s", c.Count, n, c)
	}
	switch {
	case n == 0:
		return errors.New("no transaction was answered")
	case rep.Rejected == n:
		return fmt.Errorf("every transaction was rejected%s", why)
	case rep.Committed == 0:
		return fmt.Errorf("no transaction committed%s", why)
	}
	return nil
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"sort"
	"syscall"
	"time"

	"github.com/commitd/commitd/bench"
	"github.com/commitd/commitd/client"
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
	conns := fs.Int("conns", 2, "connections to the coordinator")
	jsonPath := fs.String("json", "", "write the report (every figure) as JSON to this file")
	plotPath := fs.String("plot", "", "draw throughput over time and the latency spectrum into this SVG file")
	ackPath := fs.String("ack-log", "", "write one line per transaction to this file, <uuid> <outcome> <participant>,...: the outcome the caller was told. "+
		"Each line is in the kernel within one write round of its outcome (one write(2) per round, no user-space buffer across rounds), "+
		"so a kill -9 loses at most the lines queued since the last round began and may cut the last line short")
	cpuProfile := fs.String("cpuprofile", "", "write this process's CPU profile to this file")
	seed := fs.Uint64("seed", uint64(time.Now().UnixNano()), "workload seed")
	fs.StringVar(&coord, "coordinator", "", "the coordinator's address (required)")
	fs.Var(parts, "participants", "participants as NAME=ADDR,NAME=ADDR,... (required)")
	fs.IntVar(&w.Accounts, "accounts", 1000, "accounts per participant to spread transfers over (at most what the participants have)")
	fs.IntVar(&w.PerTxn, "per-txn", 2, "participants per transaction (1 to 10)")
	fs.Float64Var(&w.HotAccounts, "hot-accounts", 0, "confine traffic to this fraction of accounts (contention)")
	fs.Float64Var(&w.ReadOnly, "read-only", 0, "fraction of credit branches that only read (never the last: with 0, every branch writes)")
	tf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if coord == "" || len(parts) == 0 {
		return errors.New("--coordinator and --participants are required")
	}
	if w.PerTxn < 1 || w.PerTxn > 10 || w.PerTxn > len(parts) {
		return fmt.Errorf("--per-txn %d: want 1 to %d (the participants named)", w.PerTxn, min(10, len(parts)))
	}
	if *rate < 0 {
		return fmt.Errorf("--rate %v: must not be negative", *rate)
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
	total := func() (int64, error) {
		var sum int64
		for n, addr := range parts {
			var a participant.Accounts
			if err := client.Admin(ctx, addr, "accounts", tlsCfg, &a); err != nil {
				return 0, fmt.Errorf("participant %s: %w", n, err)
			}
			sum += a.Total
		}
		return sum, nil
	}
	before, err := total()
	if err != nil {
		return err
	}
	cl, err := client.Dial(coord, client.Options{Conns: *conns, TLS: tlsCfg})
	if err != nil {
		return err
	}
	defer cl.Close()
	cfg := bench.Config{
		Client: cl, Work: w, Concurrency: *concurrency, Rate: *rate, MaxInFlight: *maxInFlight,
		Duration: *duration, Warmup: *warmup, Txns: *txns, Seed: *seed, Progress: os.Stderr,
		Sample: func(ctx context.Context) (bench.ServerSample, error) {
			var st coordinator.Status
			err := client.Admin(ctx, coord, "status", tlsCfg, &st)
			return bench.ServerSample{Mallocs: st.Mallocs, HeapBytes: st.HeapBytes, CPUSeconds: st.CPUSeconds}, err
		},
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
	conserved := after == before
	fmt.Printf("conservation  total before %d, after %d: %v\n", before, after, map[bool]string{true: "OK", false: "FAILED"}[conserved])
	if *jsonPath != "" {
		out := struct {
			bench.Report
			Conserved bool `json:"conserved"`
		}{rep, conserved}
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
	return nil
}

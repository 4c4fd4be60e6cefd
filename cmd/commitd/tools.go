package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/commitd/commitd/bench"
	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/harness/cluster"
	"github.com/commitd/commitd/participant"
)

// adminUsage is what "commitd admin --help" prints.
const adminUsage = `usage of commitd admin: a report from a running server, as JSON (outcomes: one line each)

  commitd admin status   --coordinator ADDR | --participant ADDR   counters and state
  commitd admin accounts --participant ADDR                        accounts, total balance, prepared
  commitd admin outcomes --participant ADDR                        every decision in the ledger
  commitd admin replicas --coordinator ADDRS                       a replica group's members
  commitd admin replicas add ID=ADDR --coordinator ADDRS           add a replica (started with --join)
  commitd admin replicas remove ID   --coordinator ADDRS           remove a replica (a dead one, or any)

A change goes to the group's leader (a follower's "not leader, try X" is followed): add makes the
new replica a learner, waits until it has caught up, then makes it a voter; remove refuses to leave
no quorum possible, and hands leadership over first when it removes the leader.

Run "commitd admin REPORT -h" for a report's flags (--timeout, TLS).
`

func runAdmin(args []string) error {
	if len(args) < 1 {
		fmt.Fprint(os.Stderr, adminUsage)
		fmt.Fprintln(os.Stderr, "commitd admin: name a report: status, accounts, outcomes or replicas")
		return errUsage
	}
	kind := args[0]
	switch kind {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(os.Stderr, adminUsage)
		return flag.ErrHelp
	}
	args = args[1:]
	var change, changeArg string
	if kind == "replicas" && len(args) > 0 && (args[0] == "add" || args[0] == "remove") {
		change = args[0]
		if len(args) < 2 || strings.HasPrefix(args[1], "-") {
			want := "ID=ADDR"
			if change == "remove" {
				want = "ID"
			}
			fmt.Fprint(os.Stderr, adminUsage)
			return usageError{fmt.Errorf("admin replicas %s: name the replica: %s", change, want)}
		}
		changeArg, args = args[1], args[2:]
	}
	name := "admin " + kind
	defTimeout := 30 * time.Second
	if kind == "replicas" {
		// An add waits until the new replica has caught up (at most 30 s
		// at the leader) and may follow a leader change on the way.
		name, defTimeout = "admin replicas [add ID=ADDR | remove ID]", 90*time.Second
	}
	fs := newFlags(name)
	var coord, part string
	var tf tlsFlags
	timeout := fs.Duration("timeout", defTimeout, "give up after this long")
	switch kind {
	case "replicas":
		fs.StringVar(&coord, "coordinator", "", "the group's replicas, ADDR1,ADDR2,... (required; changes go to the leader)")
	case "status":
		fs.StringVar(&coord, "coordinator", "", "the coordinator's address, or replicas' ADDR1,ADDR2,... (the first that answers; or use --participant)")
		fs.StringVar(&part, "participant", "", "a participant's address")
	case "accounts", "outcomes":
		fs.StringVar(&part, "participant", "", "the participant's address (required)")
	default:
		fmt.Fprintf(os.Stderr, "commitd admin: unknown report %q (want status, accounts, outcomes or replicas)\n", kind)
		return errUsage
	}
	tf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if kind == "replicas" && coord == "" {
		return usageError{errors.New("admin replicas: name the group with --coordinator ADDR1,ADDR2")}
	}
	addr := coord
	if addr == "" {
		addr = part
	}
	if addr == "" {
		return errors.New("name a server: --coordinator or --participant ADDR")
	}
	tlsCfg, err := tf.config()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if kind == "outcomes" {
		var outs []participant.Outcome
		if err := client.Admin(ctx, addr, kind, tlsCfg, &outs); err != nil {
			return err
		}
		var b strings.Builder
		for _, o := range outs {
			fmt.Fprintf(&b, "%s %s\n", o.Txn, o.Outcome)
		}
		_, err := io.WriteString(os.Stdout, b.String())
		return err
	}
	var v json.RawMessage
	if change != "" {
		err = client.ChangeReplicas(ctx, addr, change, changeArg, tlsCfg, &v)
	} else {
		err = client.Admin(ctx, addr, kind, tlsCfg, &v)
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(os.Stdout, "%s\n", v)
	return err
}

// runDemo starts a coordinator and two bank participants in this process,
// on loopback with fresh data directories, moves money between them for a
// few seconds, and checks that none was created or lost.
func runDemo(args []string) error {
	fs := newFlags("demo")
	duration := fs.Duration("duration", 5*time.Second, "how long to run transfers")
	concurrency := fs.Int("concurrency", 100, "concurrent callers")
	keep := fs.Bool("keep", false, "keep the data directories")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *duration <= 0 {
		return usageError{fmt.Errorf("--duration %v: want a positive duration", *duration)}
	}
	if *concurrency < 1 {
		return usageError{fmt.Errorf("--concurrency %d: want at least 1 caller", *concurrency)}
	}
	dir, err := os.MkdirTemp("", "commitd-demo-")
	if err != nil {
		return err
	}
	if !*keep {
		defer os.RemoveAll(dir)
	}
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	fmt.Printf("commitd demo: a coordinator and two bank participants on loopback, every log durable (fdatasync)\n")
	fmt.Printf("data in %s\n", dir)
	c, err := cluster.Start(cluster.Options{Dir: dir, Participants: 2, Accounts: 10000, Balance: 1000, Logger: quiet})
	if err != nil {
		return err
	}
	defer c.Close()
	before := c.Total()
	cl, err := client.Dial(c.CoordinatorAddr, client.Options{Conns: 2})
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	fmt.Printf("coordinator %s, participants %s; %d callers for %v\n\n", c.CoordinatorAddr, strings.Join(c.Addrs, ", "), *concurrency, *duration)
	rep, err := bench.Run(ctx, bench.Config{
		Client:      cl,
		Work:        bench.Workload{Names: c.Names, Accounts: 10000, PerTxn: 2},
		Concurrency: *concurrency,
		Duration:    *duration,
		Seed:        uint64(time.Now().UnixNano()),
		Progress:    os.Stdout,
	})
	if err != nil {
		return err
	}
	fmt.Println()
	fmt.Println(rep.Summary())
	// Wait for the last decisions to reach the participants.
	settled := c.WaitSettled(10 * time.Second)
	after := c.Total()
	if after != before || settled != nil {
		return fmt.Errorf("conservation check FAILED: total before %d, after %d, %d still prepared", before, after, c.Prepared())
	}
	fmt.Printf("conservation  total before %d, after %d: OK\n", before, after)
	return nil
}

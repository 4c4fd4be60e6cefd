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
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/commitd/commitd/bench"
	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/harness/cluster"
	"github.com/commitd/commitd/participant"
	"github.com/commitd/commitd/protocol"
)

// adminUsage is what "commitd admin --help" prints.
const adminUsage = `usage of commitd admin: ask a running server, answered as JSON (outcomes: one line each)

  commitd admin status   --coordinator ADDR | --participant ADDR   counters and state
  commitd admin status   --cluster FILE [--json]                   every group of a cluster: per group and in total
  commitd admin accounts --participant ADDR                        accounts, total balance, prepared
  commitd admin outcomes --participant ADDR                        every decision in the ledger
  commitd admin txn ID   --coordinator ADDR                        where one transaction stands
  commitd admin txn ID   --participant ADDR                        its state there, and operators' resolves of it
  commitd admin txn ID   --coordinator ADDR --participant ADDR,...   the coordinator's answer with the participants' resolves
  commitd admin in-doubt --coordinator ADDR                        commits not yet acknowledged, oldest first
  commitd admin in-doubt --participant ADDR                        transactions prepared and undecided there
  commitd admin retry ID|PARTICIPANT --coordinator ADDR            redeliver those commit decisions now
  commitd admin retry ID|NAME --participant ADDR                   inquire now (NAME: the participant's own, for all)
  commitd admin resolve ID --commit|--abort --reason TEXT --participant ADDR [--coordinator ADDR] [--check ADDR,...]
                                                                   decide by hand what the protocol cannot settle
  commitd admin replicas --coordinator ADDRS                       a replica group's members
  commitd admin replicas add ID=ADDR --coordinator ADDRS           add a replica (started with --join)
  commitd admin replicas remove ID   --coordinator ADDRS           remove a replica (a dead one, or any)
  commitd admin participants add NAME=ADDR --coordinator ADDRS     dial a new participant, admit begins naming it
  commitd admin participants remove NAME   --coordinator ADDRS     forget one (refused while a transaction names it)
  commitd admin cluster reload --coordinator ADDRS | --participant ADDRS
                                                                   re-read the --cluster map file, as SIGHUP (each process listed)

A change goes to the group's leader (a follower's "not leader, try X" is followed): add makes the
new replica a learner, waits until it has caught up, then makes it a voter; remove refuses to leave
no quorum possible, and hands leadership over first when it removes the leader.

participants add|remove changes a running coordinator's participants without a restart. The change
is persisted in its data directory (<data>/participants) before it is acknowledged, and from then on
that list wins over --participant, which is only the initial one. remove is refused while any
transaction in flight or in doubt names the participant (settle them first: admin in-doubt, retry).
A replicated coordinator (ADDRS: its replicas, ADDR1,ADDR2,...) makes the change an entry of its
raft log, goes to the leader as replicas changes do, answers once the leader applied it, and from
then on every replica takes its participants from the log, not from --participant (docs/ha.md).

txn answers committed, aborted (with the cause), unknown (a one-phase
transaction whose participant did not answer), in-flight (with each
participant's state), not-found (no record: it did not commit through this
coordinator) or expired (older than the outcome index keeps, --outcome-
retention, 24 h by default). ADDR may list a replicated coordinator's
replicas as ADDR1,ADDR2,...

resolve is an operator's override (a heuristic decision, as XA's) for a
transaction prepared at a participant that cannot reach its coordinator
(a lost coordinator): it is refused, and the refusal recorded in the
participant's audit log, when the coordinator (--coordinator) or another
participant (--check) knows a decision or answers for it, when the
participant is connected to its coordinator, or when the transaction is
not prepared there. Read docs/operations.md before using it.

Exit status: 0 answered; 1 the server could not be asked or refused (the
message says why: an unknown participant, nothing to retry); 2 a bad
command line (a malformed or non-UUIDv7 id); 3 txn found no record
(not-found or expired).

Run "commitd admin REQUEST -h" for a request's flags (--timeout, TLS).
`

func runAdmin(args []string) error {
	if len(args) < 1 {
		fmt.Fprint(os.Stderr, adminUsage)
		fmt.Fprintln(os.Stderr, "commitd admin: name a request: status, accounts, outcomes, txn, in-doubt, retry, resolve, replicas, participants or cluster")
		return errUsage
	}
	kind := args[0]
	args = args[1:]
	switch kind {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(os.Stderr, adminUsage)
		return flag.ErrHelp
	case "cluster":
		return runClusterReload(args)
	}
	// txn and retry take their argument first (commitd admin txn ID
	// --coordinator ADDR); flags may also come before it.
	var arg string
	if (kind == "txn" || kind == "retry" || kind == "resolve") && !slices.ContainsFunc(args, isHelp) {
		rest, a, err := takeArg(args)
		if err != nil {
			return usageError{fmt.Errorf("%s: %w", kind, err)}
		}
		args, arg = rest, a
		if kind == "txn" || kind == "resolve" {
			if _, err := coordinator.ParseTxnID(arg); err != nil {
				return usageError{fmt.Errorf("%s: %w", kind, err)}
			}
		}
	}
	var change, changeArg string
	if kind == "participants" && slices.ContainsFunc(args, isHelp) {
		args = []string{"-h"} // the flags' help, whatever came before
	} else if kind == "participants" {
		if len(args) == 0 || (args[0] != "add" && args[0] != "remove") {
			fmt.Fprint(os.Stderr, adminUsage)
			return usageError{errors.New("admin participants: say add NAME=ADDR or remove NAME")}
		}
		change = args[0]
		if len(args) < 2 || strings.HasPrefix(args[1], "-") {
			want := "NAME=ADDR"
			if change == "remove" {
				want = "NAME"
			}
			return usageError{fmt.Errorf("admin participants %s: name the participant: %s", change, want)}
		}
		changeArg, args = args[1], args[2:]
		if change == "add" {
			if _, _, err := coordinator.ParseParticipant(changeArg); err != nil {
				return usageError{fmt.Errorf("admin participants add: %w", err)}
			}
		}
	}
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
	if kind == "participants" {
		name = "admin participants [add NAME=ADDR | remove NAME]"
	}
	fs := newFlags(name)
	if kind == "resolve" {
		return runResolve(fs, arg, args)
	}
	var coord, part, clusterFile string
	var tf tlsFlags
	var asJSON *bool
	timeout := fs.Duration("timeout", defTimeout, "give up after this long")
	switch kind {
	case "participants":
		fs.StringVar(&coord, "coordinator", "", "the coordinator's address, or a group's replicas ADDR1,ADDR2,... (required; changes go to the leader)")
	case "replicas":
		fs.StringVar(&coord, "coordinator", "", "the group's replicas, ADDR1,ADDR2,... (required; changes go to the leader)")
	case "status":
		fs.StringVar(&coord, "coordinator", "", "the coordinator's address, or replicas' ADDR1,ADDR2,... (the first that answers; or use --participant)")
		fs.StringVar(&part, "participant", "", "a participant's address")
		fs.StringVar(&clusterFile, "cluster", "", "a cluster map (docs/scale.md): ask every replica of every group, and report each group by its leader's view, and the total")
		asJSON = fs.Bool("json", false, "with --cluster: the report as JSON")
	case "accounts", "outcomes":
		fs.StringVar(&part, "participant", "", "the participant's address (required)")
	case "txn":
		fs.StringVar(&coord, "coordinator", "", "the coordinator's address, or replicas' ADDR1,ADDR2,... (or use --participant: its own view and the resolves in its audit log)")
		fs.StringVar(&part, "participant", "", "a participant's address; with --coordinator, participants' ADDR1,ADDR2,... whose audit logs' resolves are added to the coordinator's answer")
	case "in-doubt", "retry":
		fs.StringVar(&coord, "coordinator", "", "the coordinator's address, or replicas' ADDR1,ADDR2,... (or use --participant)")
		fs.StringVar(&part, "participant", "", "a participant's address")
	default:
		fmt.Fprintf(os.Stderr, "commitd admin: unknown request %q (want status, accounts, outcomes, txn, in-doubt, retry, resolve, replicas, participants or cluster)\n", kind)
		return errUsage
	}
	tf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if kind == "participants" && coord == "" {
		return usageError{errors.New("admin participants: name the coordinator with --coordinator ADDR")}
	}
	if kind == "replicas" && coord == "" {
		return usageError{errors.New("admin replicas: name the group with --coordinator ADDR1,ADDR2")}
	}
	if clusterFile != "" {
		if coord != "" || part != "" {
			return usageError{errors.New("status: give --cluster, or --coordinator or --participant, not both")}
		}
		tlsCfg, err := tf.config()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		defer cancel()
		return runClusterStatus(ctx, os.Stdout, clusterFile, *asJSON, tlsCfg)
	}
	if asJSON != nil && *asJSON {
		return usageError{errors.New("status: --json goes with --cluster (a server's status is JSON already)")}
	}
	addr := coord
	if addr == "" {
		addr = part
	}
	if addr == "" {
		return errors.New("name a server: --coordinator or --participant ADDR")
	}
	if coord != "" && part != "" && kind != "txn" {
		return usageError{fmt.Errorf("%s: give --coordinator or --participant, not both", kind)}
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
	if kind == "txn" {
		var st protocol.TxnStatus
		if err := client.AdminArg(ctx, addr, kind, arg, tlsCfg, &st); err != nil {
			return adminError(err)
		}
		if coord != "" && part != "" {
			// The coordinator's answer, with the operators' resolves in
			// each named participant's audit log.
			for _, a := range strings.Split(part, ",") {
				var ps protocol.TxnStatus
				if err := client.AdminArg(ctx, a, kind, arg, tlsCfg, &ps); err != nil {
					return fmt.Errorf("participant %s: %w", a, adminError(err))
				}
				st.Resolves = append(st.Resolves, ps.Resolves...)
			}
		}
		b, err := json.MarshalIndent(st, "", "  ")
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(os.Stdout, "%s\n", b); err != nil {
			return err
		}
		if st.State == protocol.TxnNotFound || st.State == protocol.TxnExpired {
			return errNoRecord
		}
		return nil
	}
	var v json.RawMessage
	if kind == "participants" {
		err = client.ChangeParticipants(ctx, addr, change, changeArg, tlsCfg, &v)
	} else if change != "" {
		err = client.ChangeReplicas(ctx, addr, change, changeArg, tlsCfg, &v)
	} else {
		err = client.AdminArg(ctx, addr, kind, arg, tlsCfg, &v)
	}
	if err != nil {
		return adminError(err)
	}
	_, err = fmt.Fprintf(os.Stdout, "%s\n", v)
	return err
}

// errNoRecord is admin txn's answer "no record" (not-found or expired),
// already printed: exit status 3.
var errNoRecord = errors.New("no record of the transaction")

// adminError says a server's refusal in its own words, without the
// layers' prefixes (errors.Join's, for a list of replicas).
func adminError(err error) error {
	var re *client.RefusedError
	if errors.As(err, &re) {
		return re
	}
	return err
}

func isHelp(a string) bool { return a == "-h" || a == "-help" || a == "--help" }

// boolFlags are the admin flags that take no value.
var boolFlags = map[string]bool{"commit": true, "abort": true}

// takeArg takes the one argument that is not a flag out of args: the
// first that does not start with "-" and is not a flag's value. Every
// admin flag but boolFlags takes a value, given as --flag=V or --flag V.
func takeArg(args []string) (rest []string, arg string, err error) {
	found := -1
	for i := 0; i < len(args); i++ {
		a := args[i]
		if strings.HasPrefix(a, "-") {
			if !strings.Contains(a, "=") && !boolFlags[strings.TrimLeft(a, "-")] {
				i++ // its value
			}
			continue
		}
		if found >= 0 {
			return nil, "", fmt.Errorf("unexpected argument %q", a)
		}
		found = i
	}
	if found < 0 {
		return args, "", errors.New("give a transaction id (or, for retry, a participant's name)")
	}
	rest = append(append([]string{}, args[:found]...), args[found+1:]...)
	return rest, args[found], nil
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

// runResolve is `commitd admin resolve ID --commit|--abort --reason TEXT
// --participant ADDR [--coordinator ADDR] [--check ADDR,...]`: it looks for
// a decision wherever it is told to, and hands what it found to the
// participant, which refuses if there is one (and on its own checks), and
// records the request, applied or refused, in its audit log.
func runResolve(fs *flag.FlagSet, arg string, args []string) error {
	var tf tlsFlags
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	commit := fs.Bool("commit", false, "decide commit")
	abort := fs.Bool("abort", false, "decide abort")
	reason := fs.String("reason", "", "why, for the audit log (required)")
	part := fs.String("participant", "", "the participant holding the transaction prepared (required)")
	coord := fs.String("coordinator", "", "the coordinator, or replicas' ADDR1,ADDR2,...: asked for the decision first (refused if it answers)")
	check := fs.String("check", "", "other participants' addresses, ADDR1,ADDR2,...: refused if any has decided the transaction")
	tf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *commit == *abort:
		return usageError{errors.New("resolve: give exactly one of --commit and --abort")}
	case strings.TrimSpace(*reason) == "":
		return usageError{errors.New("resolve: --reason is required: it goes into the audit log")}
	case len(*reason) > participant.MaxReasonLen:
		return usageError{fmt.Errorf("resolve: --reason of %d bytes; at most %d", len(*reason), participant.MaxReasonLen)}
	case *part == "":
		return usageError{errors.New("resolve: --participant ADDR is required")}
	}
	tlsCfg, err := tf.config()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	id, _ := coordinator.ParseTxnID(arg) // checked by runAdmin
	req := participant.ResolveRequest{Txn: id, Decision: "abort", Reason: *reason}
	if *commit {
		req.Decision = "commit"
	}
	// Ask everyone named, briefly each: an unreachable coordinator is the
	// case resolve is for.
	ask := func(where, addr string) {
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		defer acancel()
		var st protocol.TxnStatus
		err := client.AdminArg(actx, addr, "txn", id.String(), tlsCfg, &st)
		switch {
		case err != nil:
			req.Unreached = append(req.Unreached, fmt.Sprintf("%s %s: %v", where, addr, adminError(err)))
		case where == "coordinator":
			// Any answer: the coordinator answers for it — a decision,
			// in flight, or presumed abort for an id it has no record of.
			req.Seen = append(req.Seen, fmt.Sprintf("the coordinator at %s answers %s (%s)", addr, st.State, st.Detail))
		case st.State == protocol.TxnCommitted || st.State == protocol.TxnAborted:
			req.Seen = append(req.Seen, fmt.Sprintf("participant at %s has %s it", addr, st.State))
		}
	}
	if *coord != "" {
		ask("coordinator", *coord)
	} else {
		req.Unreached = append(req.Unreached, "coordinator: not asked (no --coordinator)")
	}
	if *check != "" {
		for _, a := range strings.Split(*check, ",") {
			ask("participant", a)
		}
	}
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if len(b) > 1024 {
		// The wire's bound on an admin argument: keep the first findings.
		req.Seen, req.Unreached = trimList(req.Seen), trimList(req.Unreached)
		if b, err = json.Marshal(req); err != nil {
			return err
		}
	}
	var v json.RawMessage
	if err := client.AdminArg(ctx, *part, "resolve", string(b), tlsCfg, &v); err != nil {
		return adminError(err)
	}
	_, err = fmt.Fprintf(os.Stdout, "%s\n", v)
	return err
}

// trimList keeps the first entry of l, shortened, and says how many more.
func trimList(l []string) []string {
	if len(l) == 0 {
		return l
	}
	first := l[0]
	if len(first) > 200 {
		first = first[:200] + "..."
	}
	if len(l) > 1 {
		return []string{first, fmt.Sprintf("and %d more", len(l)-1)}
	}
	return []string{first}
}

package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/commitd/commitd/internal/node/nodetest"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/participant"
	"github.com/commitd/commitd/participant/bank"
	"github.com/google/uuid"
)

// Build compiles the commitd command into dir and returns the binary's
// path. It runs from the module, wherever the test runs.
func Build(dir string) (string, error) {
	bin := filepath.Join(dir, "commitd")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/commitd/commitd/cmd/commitd")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("chaos: go build: %v\n%s", err, out)
	}
	return bin, nil
}

// Proc is one commitd server process, which can be killed, paused and
// started again with the same arguments (same data directory and address).
type Proc struct {
	Name string // "coordinator", a replica's "c1".."cN", or the participant's name
	Addr string // where it listens
	Data string // its data directory
	bin  string
	args []string
	log  string // stdout and stderr are appended here
	// netns is the network namespace it runs in (`ip netns exec`), or ""
	// for the test's own.
	netns string

	mu struct {
		sync.Mutex
		cmd    *exec.Cmd
		exited chan struct{} // closed when cmd has been waited for
		// expected is set before a signal that ends the process, so its
		// exit is not reported as unexpected.
		expected bool
		paused   bool
		starts   int
		// unexpected records exits nobody asked for (a crash).
		unexpected []string
	}
}

// Start starts the process. It must not be running.
func (p *Proc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.cmd != nil {
		return fmt.Errorf("chaos: %s is already running", p.Name)
	}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "=== start %d at %s\n", p.mu.starts+1, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, p.args...)
	if p.netns != "" {
		// ip execs the command in place (no fork), so the process
		// signalled below is commitd itself.
		cmd = exec.Command("ip", append([]string{"netns", "exec", p.netns, p.bin}, p.args...)...)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("chaos: starting %s: %w", p.Name, err)
	}
	p.mu.starts++
	p.mu.cmd, p.mu.expected, p.mu.paused = cmd, false, false
	exited := make(chan struct{})
	p.mu.exited = exited
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		if !p.mu.expected {
			p.mu.unexpected = append(p.mu.unexpected, fmt.Sprintf("%s exited by itself: %v", p.Name, err))
		}
		if p.mu.cmd == cmd {
			p.mu.cmd = nil
		}
		p.mu.Unlock()
		close(exited)
	}()
	return nil
}

// signal sends sig; ending says the signal ends the process, and waits for
// it to go. Signalling a process that is not running does nothing.
func (p *Proc) signal(sig syscall.Signal, ending bool, timeout time.Duration) error {
	p.mu.Lock()
	cmd, exited := p.mu.cmd, p.mu.exited
	if cmd == nil {
		p.mu.Unlock()
		return nil
	}
	if ending {
		p.mu.expected = true
	}
	switch sig {
	case syscall.SIGSTOP:
		p.mu.paused = true
	case syscall.SIGCONT:
		p.mu.paused = false
	}
	err := cmd.Process.Signal(sig)
	p.mu.Unlock()
	if err != nil || !ending {
		return err
	}
	select {
	case <-exited:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("chaos: %s did not exit within %v of %v", p.Name, timeout, sig)
	}
}

// Kill is kill -9: the process dies at once, without syncing anything
// (the page cache survives: see FACTS.md, rule 6).
func (p *Proc) Kill() error { return p.signal(syscall.SIGKILL, true, 10*time.Second) }

// Pause stops the process (SIGSTOP): its sockets stay open, nothing is
// read or answered.
func (p *Proc) Pause() error { return p.signal(syscall.SIGSTOP, false, 0) }

// Resume continues a paused process (SIGCONT).
func (p *Proc) Resume() error { return p.signal(syscall.SIGCONT, false, 0) }

// Terminate asks the process to stop gracefully (SIGTERM) and waits for it;
// it is killed if it has not gone within timeout.
func (p *Proc) Terminate(timeout time.Duration) error {
	p.Resume()
	if err := p.signal(syscall.SIGTERM, true, timeout); err != nil {
		return errors.Join(err, p.Kill())
	}
	return nil
}

// Running reports whether the process is running (paused counts).
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mu.cmd != nil
}

// Unexpected returns the exits nobody asked for.
func (p *Proc) Unexpected() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.mu.unexpected...)
}

// LogTail returns the last n lines of the process's output.
func (p *Proc) LogTail(n int) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// Options describe a process cluster.
type Options struct {
	Bin          string // the commitd binary (Build)
	Dir          string // data directories and logs go below it
	Participants int    // bank participants, named p1, p2, ... (default 3)
	Accounts     int    // accounts per participant (default 1000)
	Balance      int64  // starting balance of each account (default 1000)
	// PrepareTimeout, InquireAfter and RedeliverMin are short so that
	// recovery after a fault is quick (defaults 500ms, 200ms, 50ms).
	PrepareTimeout, InquireAfter, RedeliverMin time.Duration
	// Replicas is the number of coordinator processes: 0 or 1 runs a lone
	// coordinator (named "coordinator"), more a replicated coordinator
	// group (docs/ha.md) of replicas c1..cN started with --id and --peers,
	// whose every address the participants and clients are given.
	Replicas int
	// Net, if set, runs each process in its own namespace of Net (built
	// for ProcNames(Replicas, Participants)), on its own address; otherwise
	// all run on loopback.
	Net *Net
	// ParticipantArgs adds flags to the named participants' command
	// lines: a database backend, say (--backend mysql --dsn DSN).
	ParticipantArgs map[string][]string
	// Inspect, for a participant whose balances are not in its data
	// directory (a database backend), reads its total and lowest balance
	// in place of Reopen's recovery from disk.
	Inspect map[string]func() (total, minBalance int64, err error)
}

// ProcNames returns the names of a cluster's processes: the coordinator's
// ("coordinator", or c1..cN for a group of replicas > 1) and participants
// p1..pN.
func ProcNames(replicas, participants int) []string {
	names := []string{"coordinator"}
	if replicas > 1 {
		names = names[:0]
		for i := range replicas {
			names = append(names, fmt.Sprintf("c%d", i+1))
		}
	}
	for i := range participants {
		names = append(names, fmt.Sprintf("p%d", i+1))
	}
	return names
}

// Cluster is a coordinator (or a replicated coordinator group) and bank
// participants, each a separate commitd process on loopback (or in its
// namespace of Options.Net) with its own data directory.
type Cluster struct {
	opts Options
	net  *Net // nil on loopback
	// Coordinators are the coordinator's processes: the lone
	// "coordinator", or the replicas c1..cN in id order (replica i+1 is
	// Coordinators[i]).
	Coordinators []*Proc
	Participants []*Proc

	mu struct {
		sync.Mutex
		// leaders maps each raft term in which a replica was seen leading
		// to that replica: two in one term is a split brain (splitBrain).
		leaders    map[uint64]string
		splitBrain []string
	}
}

// freeAddr returns a loopback address with a port nobody listens on now,
// below the ephemeral range (nodetest.FreeLoopbackAddr says why).
func freeAddr() (string, error) { return nodetest.FreeLoopbackAddr() }

// NewCluster lays out a cluster (addresses, data directories, arguments);
// Start starts it.
func NewCluster(opts Options) (*Cluster, error) {
	if opts.Participants <= 0 {
		opts.Participants = 3
	}
	if opts.Accounts <= 0 {
		opts.Accounts = 1000
	}
	if opts.Balance <= 0 {
		opts.Balance = 1000
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&opts.PrepareTimeout, 500*time.Millisecond)
	def(&opts.InquireAfter, 200*time.Millisecond)
	def(&opts.RedeliverMin, 50*time.Millisecond)
	if opts.Replicas <= 0 {
		opts.Replicas = 1
	}
	c := &Cluster{opts: opts, net: opts.Net}
	c.mu.leaders = map[uint64]string{}
	addrOf := func(name string) (string, error) {
		if c.net != nil {
			if c.net.Namespace(name) == "" {
				return "", fmt.Errorf("chaos: the network has no namespace for %s", name)
			}
			return c.net.Addr(name), nil
		}
		return freeAddr()
	}
	nsOf := func(name string) string {
		if c.net != nil {
			return c.net.Namespace(name)
		}
		return ""
	}
	names := ProcNames(opts.Replicas, opts.Participants)
	coordNames, partNames := names[:len(names)-opts.Participants], names[len(names)-opts.Participants:]
	var coordAddrs, raftPeers []string
	for i, name := range coordNames {
		addr, err := addrOf(name)
		if err != nil {
			return nil, err
		}
		coordAddrs = append(coordAddrs, addr)
		raftPeers = append(raftPeers, fmt.Sprintf("%d=%s", i+1, addr))
	}
	var peers []string
	for _, name := range partNames {
		addr, err := addrOf(name)
		if err != nil {
			return nil, err
		}
		peers = append(peers, name+"="+addr)
		data := filepath.Join(opts.Dir, name)
		c.Participants = append(c.Participants, &Proc{
			Name: name, Addr: addr, Data: data, bin: opts.Bin, netns: nsOf(name),
			log: filepath.Join(opts.Dir, name+".log"),
			args: []string{"participant", "--name", name, "--listen", addr,
				"--data", data, "--coordinator", strings.Join(coordAddrs, ","),
				"--accounts", fmt.Sprint(opts.Accounts), "--balance", fmt.Sprint(opts.Balance),
				"--inquire-after", opts.InquireAfter.String(), "--inquire-max", "1s",
				"--log-level", logLevel()},
		})
		last := c.Participants[len(c.Participants)-1]
		last.args = append(last.args, opts.ParticipantArgs[name]...)
	}
	for i, name := range coordNames {
		data := filepath.Join(opts.Dir, name)
		args := []string{"coordinator", "--listen", coordAddrs[i], "--data", data,
			"--participant", strings.Join(peers, ","),
			"--prepare-timeout", opts.PrepareTimeout.String(),
			"--redeliver-min", opts.RedeliverMin.String(), "--redeliver-max", "1s",
			"--log-level", logLevel()}
		if opts.Replicas > 1 {
			args = append(args, "--id", fmt.Sprint(i+1), "--peers", strings.Join(raftPeers, ","))
		}
		c.Coordinators = append(c.Coordinators, &Proc{
			Name: name, Addr: coordAddrs[i], Data: data, bin: opts.Bin, netns: nsOf(name),
			log: filepath.Join(opts.Dir, name+".log"), args: args,
		})
	}
	return c, nil
}

// Replicated reports whether the coordinator is a group of replicas.
func (c *Cluster) Replicated() bool { return len(c.Coordinators) > 1 }

// CoordinatorList is the coordinator's address, or every replica's as
// ADDR1,ADDR2,...: what clients and participants are given.
func (c *Cluster) CoordinatorList() string {
	var as []string
	for _, p := range c.Coordinators {
		as = append(as, p.Addr)
	}
	return strings.Join(as, ",")
}

// Procs returns every process, the coordinator's first.
func (c *Cluster) Procs() []*Proc {
	return append(append([]*Proc(nil), c.Coordinators...), c.Participants...)
}

// Names returns the participants' names.
func (c *Cluster) Names() []string {
	var ns []string
	for _, p := range c.Participants {
		ns = append(ns, p.Name)
	}
	return ns
}

// ParticipantList is the participants as NAME=ADDR,NAME=ADDR.
func (c *Cluster) ParticipantList() string {
	var ps []string
	for _, p := range c.Participants {
		ps = append(ps, p.Name+"="+p.Addr)
	}
	return strings.Join(ps, ",")
}

// StartTotal is what every balance sums to before and after any run.
func (c *Cluster) StartTotal() int64 {
	return int64(c.opts.Participants) * int64(c.opts.Accounts) * c.opts.Balance
}

// Start starts every process and waits until each answers admin queries.
func (c *Cluster) Start() error {
	for _, p := range c.Procs() {
		if err := p.Start(); err != nil {
			return err
		}
	}
	for _, p := range c.Procs() {
		if err := WaitReady(p, 15*time.Second); err != nil {
			return err
		}
	}
	if c.Replicated() {
		if _, _, err := c.WaitLeader(15 * time.Second); err != nil {
			return err
		}
	}
	return nil
}

// Close kills whatever is still running.
func (c *Cluster) Close() {
	for _, p := range c.Procs() {
		p.Kill()
	}
}

// WaitReady waits until p answers an admin status query.
func WaitReady(p *Proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		var v json.RawMessage
		err := client.Admin(ctx, p.Addr, "status", nil, &v)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("chaos: %s not ready after %v: %w\n%s", p.Name, timeout, err, p.LogTail(20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ErrNoLeader is Leader's answer when no replica says it leads.
var ErrNoLeader = errors.New("chaos: no coordinator replica leads")

// Leader asks every replica at addrs for its status (at once, each within
// perReplica: a paused replica answers nothing) and returns the index of
// the one that leads and its status. Of several that say so, the highest
// term wins: a deposed leader that has not yet heard of the next term
// still says leader. statuses holds every replica's status (zero where it
// did not answer). The error is ErrNoLeader when none says it leads.
func Leader(ctx context.Context, addrs []string, perReplica time.Duration) (leader int, statuses []coordinator.Status, err error) {
	statuses = make([]coordinator.Status, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, perReplica)
			defer cancel()
			var st coordinator.Status
			if client.Admin(ctx, a, "status", nil, &st) == nil {
				statuses[i] = st
			}
		}()
	}
	wg.Wait()
	leader = -1
	for i, st := range statuses {
		if st.Role == "leader" && (leader < 0 || st.Term > statuses[leader].Term) {
			leader = i
		}
	}
	if leader < 0 {
		return -1, statuses, ErrNoLeader
	}
	return leader, statuses, nil
}

// Leader returns the replica that leads now and its status (ErrNoLeader
// if none). Every replica seen leading is noted by term: two in one term
// would be a split brain, which raft rules out (SplitBrain).
func (c *Cluster) Leader(ctx context.Context) (*Proc, coordinator.Status, error) {
	return c.leaderAmong(ctx, c.Coordinators)
}

// leaderAmong is Leader asking only the replicas reps: a caller that knows
// one replica is paused or cut off leaves it out rather than wait for its
// silence.
func (c *Cluster) leaderAmong(ctx context.Context, reps []*Proc) (*Proc, coordinator.Status, error) {
	var addrs []string
	for _, p := range reps {
		addrs = append(addrs, p.Addr)
	}
	i, sts, err := Leader(ctx, addrs, 500*time.Millisecond)
	c.mu.Lock()
	for j, st := range sts {
		if st.Role != "leader" {
			continue
		}
		name := reps[j].Name
		if prev, ok := c.mu.leaders[st.Term]; ok && prev != name {
			c.mu.splitBrain = append(c.mu.splitBrain, fmt.Sprintf("term %d led by both %s and %s", st.Term, prev, name))
		}
		c.mu.leaders[st.Term] = name
	}
	c.mu.Unlock()
	if err != nil {
		return nil, coordinator.Status{}, err
	}
	return reps[i], sts[i], nil
}

// WaitLeader waits up to timeout for a replica to lead and returns it.
func (c *Cluster) WaitLeader(timeout time.Duration) (*Proc, coordinator.Status, error) {
	deadline := time.Now().Add(timeout)
	for {
		p, st, err := c.Leader(context.Background())
		if err == nil {
			return p, st, nil
		}
		if time.Now().After(deadline) {
			var tails []string
			for _, p := range c.Coordinators {
				tails = append(tails, fmt.Sprintf("--- %s:\n%s", p.Name, p.LogTail(10)))
			}
			return nil, st, fmt.Errorf("chaos: no replica leads after %v\n%s", timeout, strings.Join(tails, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Terms returns how many raft terms a replica was seen leading in (every
// Leader call notes them): the number of reigns the run observed.
func (c *Cluster) Terms() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.mu.leaders)
}

// SplitBrain returns every term seen led by two replicas.
func (c *Cluster) SplitBrain() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.mu.splitBrain...)
}

// CoordinatorLoad sums what the coordinator's processes hold: commit
// decisions not yet acknowledged by every participant (in doubt) and
// transactions begun and not answered (in flight). A follower holds none;
// a replica that does not answer is an error.
func (c *Cluster) CoordinatorLoad(ctx context.Context) (inDoubt, inFlight int, err error) {
	for _, p := range c.Coordinators {
		st, err := Status(ctx, p)
		if err != nil {
			return 0, 0, fmt.Errorf("%s status: %w", p.Name, err)
		}
		inDoubt += st.InDoubt
		inFlight += st.InFlight
	}
	return inDoubt, inFlight, nil
}

// Accounts asks participant p for its summary.
func Accounts(ctx context.Context, p *Proc) (participant.Accounts, error) {
	var a participant.Accounts
	err := client.Admin(ctx, p.Addr, "accounts", nil, &a)
	return a, err
}

// Status asks the coordinator for its summary.
func Status(ctx context.Context, p *Proc) (coordinator.Status, error) {
	var s coordinator.Status
	err := client.Admin(ctx, p.Addr, "status", nil, &s)
	return s, err
}

// Ledger asks participant p for every transaction it decided or holds
// prepared.
func Ledger(ctx context.Context, p *Proc) (map[uuid.UUID]State, error) {
	var outs []participant.Outcome
	if err := client.Admin(ctx, p.Addr, "outcomes", nil, &outs); err != nil {
		return nil, err
	}
	l := make(map[uuid.UUID]State, len(outs))
	for _, o := range outs {
		s, err := ParseState(o.Outcome)
		if err != nil {
			return nil, err
		}
		l[o.Txn] = s
	}
	return l, nil
}

// Reopen starts participant p in this process on its data directory, once
// its process has stopped, and returns what its bank holds after recovery
// from disk alone: the total and the lowest balance. Nothing connects to
// it; its coordinator address leads nowhere.
func (c *Cluster) Reopen(p *Proc) (total, minBalance int64, err error) {
	if p.Running() {
		return 0, 0, fmt.Errorf("chaos: %s is still running", p.Name)
	}
	if inspect := c.opts.Inspect[p.Name]; inspect != nil {
		return inspect()
	}
	b := bank.New(c.opts.Accounts, c.opts.Balance)
	s, err := participant.Start(participant.Config{
		Name:        p.Name,
		Listen:      "127.0.0.1:0",
		DataDir:     filepath.Join(c.opts.Dir, p.Name),
		Coordinator: "127.0.0.1:1",
		Resource:    b,
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return 0, 0, err
	}
	if err := s.Close(); err != nil {
		return 0, 0, err
	}
	minBalance = b.Balance(0)
	for i := range b.Accounts() {
		minBalance = min(minBalance, b.Balance(uint32(i)))
	}
	return b.Total(), minBalance, nil
}

// logLevel is the servers' --log-level: warn, or CHAOS_LOG_LEVEL (info
// shows every change of leader and every restart's recovery, to read a
// failed run by).
func logLevel() string {
	if l := os.Getenv("CHAOS_LOG_LEVEL"); l != "" {
		return l
	}
	return "warn"
}

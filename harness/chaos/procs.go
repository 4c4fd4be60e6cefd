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
	Name string // "coordinator" or the participant's name
	Addr string // where it listens
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
	// Net, if set, runs each process in its own namespace of Net (built
	// for ProcNames(Participants)), on its own address; otherwise all run on
	// loopback.
	Net *Net
	// ParticipantArgs adds flags to the named participants' command
	// lines: a database backend, say (--backend mysql --dsn DSN).
	ParticipantArgs map[string][]string
	// Inspect, for a participant whose balances are not in its data
	// directory (a database backend), reads its total and lowest balance
	// in place of Reopen's recovery from disk.
	Inspect map[string]func() (total, minBalance int64, err error)
}

// ProcNames returns the names of a cluster's processes: "coordinator" and
// participants p1..pN.
func ProcNames(participants int) []string {
	names := []string{"coordinator"}
	for i := range participants {
		names = append(names, fmt.Sprintf("p%d", i+1))
	}
	return names
}

// Cluster is a coordinator and bank participants, each a separate commitd
// process on loopback (or in its namespace of Options.Net) with its own
// data directory.
type Cluster struct {
	opts         Options
	net          *Net // nil on loopback
	Coordinator  *Proc
	Participants []*Proc
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
	c := &Cluster{opts: opts, net: opts.Net}
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
	coordAddr, err := addrOf("coordinator")
	if err != nil {
		return nil, err
	}
	var peers []string
	for _, name := range ProcNames(opts.Participants)[1:] {
		addr, err := addrOf(name)
		if err != nil {
			return nil, err
		}
		peers = append(peers, name+"="+addr)
		c.Participants = append(c.Participants, &Proc{
			Name: name, Addr: addr, bin: opts.Bin, netns: nsOf(name),
			log: filepath.Join(opts.Dir, name+".log"),
			args: []string{"participant", "--name", name, "--listen", addr,
				"--data", filepath.Join(opts.Dir, name), "--coordinator", coordAddr,
				"--accounts", fmt.Sprint(opts.Accounts), "--balance", fmt.Sprint(opts.Balance),
				"--inquire-after", opts.InquireAfter.String(), "--inquire-max", "1s",
				"--log-level", "warn"},
		})
		last := c.Participants[len(c.Participants)-1]
		last.args = append(last.args, opts.ParticipantArgs[name]...)
	}
	c.Coordinator = &Proc{
		Name: "coordinator", Addr: coordAddr, bin: opts.Bin, netns: nsOf("coordinator"),
		log: filepath.Join(opts.Dir, "coordinator.log"),
		args: []string{"coordinator", "--listen", coordAddr, "--data", filepath.Join(opts.Dir, "coordinator"),
			"--participant", strings.Join(peers, ","),
			"--prepare-timeout", opts.PrepareTimeout.String(),
			"--redeliver-min", opts.RedeliverMin.String(), "--redeliver-max", "1s",
			"--log-level", "warn"},
	}
	return c, nil
}

// Procs returns every process, the coordinator first.
func (c *Cluster) Procs() []*Proc { return append([]*Proc{c.Coordinator}, c.Participants...) }

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

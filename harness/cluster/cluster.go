package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/participant"
	"github.com/commitd/commitd/participant/bank"
	"go.opentelemetry.io/otel/trace"
)

// Options describe a cluster. Zero values take the defaults noted.
type Options struct {
	Dir          string // data directories go below it; required
	Participants int    // bank participants (default 2), named p1, p2, ...
	Accounts     int    // accounts per participant (default 1000)
	Balance      int64  // starting balance of each account (default 1000)
	Shards       int    // coordinator shards (default GOMAXPROCS)
	// PrepareTimeout and InquireAfter tune the protocol's timers (defaults
	// of the servers when zero).
	PrepareTimeout time.Duration
	InquireAfter   time.Duration
	// Remember is how long the coordinator remembers a finished
	// transaction (its default when zero); it also bounds the age of the
	// transaction ids it accepts.
	Remember time.Duration
	// CheckpointEvery sets the participants' checkpoint interval.
	CheckpointEvery int
	// SegmentBytes is every log's segment size (default 4 MiB: segments are
	// written out ahead of need, and a test cluster has seven logs).
	SegmentBytes int64
	// TLS, if set, makes every connection mutual TLS.
	TLS *tls.Config
	// TracerProvider, if set, turns tracing on in every server
	// (docs/tracing.md).
	TracerProvider trace.TracerProvider
	Logger         *slog.Logger
}

// Cluster is a running cluster.
type Cluster struct {
	opts         Options
	Coordinator  *coordinator.Server
	Participants []*participant.Server
	// Names and Addrs of the participants, in order.
	Names []string
	Addrs []string
	// CoordinatorAddr is where clients connect.
	CoordinatorAddr string
}

// Start starts the participants and the coordinator. On error everything
// started is stopped.
func Start(opts Options) (*Cluster, error) {
	if opts.Dir == "" {
		return nil, errors.New("cluster: Dir is required")
	}
	if opts.Participants <= 0 {
		opts.Participants = 2
	}
	if opts.Accounts <= 0 {
		opts.Accounts = 1000
	}
	if opts.Balance <= 0 {
		opts.Balance = 1000
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = 4 << 20
	}
	c := &Cluster{opts: opts}
	// Listen first, so that every server knows every address at start.
	coordLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	c.CoordinatorAddr = coordLn.Addr().String()
	lns := make([]net.Listener, opts.Participants)
	for i := range lns {
		if lns[i], err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			coordLn.Close()
			for _, l := range lns[:i] {
				l.Close()
			}
			return nil, fmt.Errorf("cluster: %w", err)
		}
		c.Names = append(c.Names, fmt.Sprintf("p%d", i+1))
		c.Addrs = append(c.Addrs, lns[i].Addr().String())
	}
	for i := range lns {
		p, err := c.startParticipant(i, lns[i])
		if err != nil {
			for _, l := range lns[i+1:] {
				l.Close()
			}
			coordLn.Close()
			c.Close()
			return nil, err
		}
		c.Participants = append(c.Participants, p)
	}
	c.Coordinator, err = c.startCoordinator(coordLn)
	if err != nil {
		c.Close()
		return nil, err
	}
	if err := c.WaitConnected(10 * time.Second); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// WaitConnected waits until every server is connected to every peer it
// sends to, so that the first transactions do not time out in prepare.
func (c *Cluster) WaitConnected(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := c.Coordinator.WaitConnected(ctx); err != nil {
		return err
	}
	for _, p := range c.Participants {
		if err := p.WaitConnected(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) startParticipant(i int, ln net.Listener) (*participant.Server, error) {
	return participant.Start(participant.Config{
		Name:            c.Names[i],
		Listener:        ln,
		DataDir:         filepath.Join(c.opts.Dir, c.Names[i]),
		Coordinator:     c.CoordinatorAddr,
		Resource:        bank.New(c.opts.Accounts, c.opts.Balance),
		InquireAfter:    c.opts.InquireAfter,
		CheckpointEvery: c.opts.CheckpointEvery,
		SegmentBytes:    c.opts.SegmentBytes,
		TLS:             c.opts.TLS,
		TracerProvider:  c.opts.TracerProvider,
		Logger:          c.opts.Logger,
	})
}

func (c *Cluster) startCoordinator(ln net.Listener) (*coordinator.Server, error) {
	parts := make(map[string]string, len(c.Names))
	for i, n := range c.Names {
		parts[n] = c.Addrs[i]
	}
	return coordinator.Start(coordinator.Config{
		Listener:       ln,
		DataDir:        filepath.Join(c.opts.Dir, "coordinator"),
		Participants:   parts,
		Shards:         c.opts.Shards,
		PrepareTimeout: c.opts.PrepareTimeout,
		Remember:       c.opts.Remember,
		SegmentBytes:   c.opts.SegmentBytes,
		TLS:            c.opts.TLS,
		TracerProvider: c.opts.TracerProvider,
		Logger:         c.opts.Logger,
	})
}

// RestartParticipant stops participant i gracefully and starts it again
// from its data directory, on the same address.
func (c *Cluster) RestartParticipant(i int) error {
	if err := c.Participants[i].Close(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.Addrs[i])
	if err != nil {
		return fmt.Errorf("cluster: relisten %s: %w", c.Addrs[i], err)
	}
	p, err := c.startParticipant(i, ln)
	if err != nil {
		return err
	}
	c.Participants[i] = p
	return c.WaitConnected(10 * time.Second)
}

// RestartCoordinator stops the coordinator gracefully and starts it again
// from its data directory, on the same address.
func (c *Cluster) RestartCoordinator() error {
	if err := c.Coordinator.Close(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.CoordinatorAddr)
	if err != nil {
		return fmt.Errorf("cluster: relisten %s: %w", c.CoordinatorAddr, err)
	}
	co, err := c.startCoordinator(ln)
	if err != nil {
		return err
	}
	c.Coordinator = co
	return c.WaitConnected(10 * time.Second)
}

// Prepared is the number of transactions the participants hold prepared.
func (c *Cluster) Prepared() int {
	n := 0
	for _, p := range c.Participants {
		n += p.AccountsSummary().Prepared
	}
	return n
}

// WaitSettled waits until no participant holds a prepared transaction: the
// last decisions of a load have reached everyone.
func (c *Cluster) WaitSettled(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		n := c.Prepared()
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster: %d transactions still prepared after %v", n, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Total is the sum of every participant's balances.
func (c *Cluster) Total() int64 {
	var t int64
	for _, p := range c.Participants {
		t += p.AccountsSummary().Total
	}
	return t
}

// InitialTotal is what Total must always come back to.
func (c *Cluster) InitialTotal() int64 {
	return int64(c.opts.Participants) * int64(c.opts.Accounts) * c.opts.Balance
}

// Close stops every server.
func (c *Cluster) Close() error {
	var errs []error
	if c.Coordinator != nil {
		errs = append(errs, c.Coordinator.Close())
	}
	for _, p := range c.Participants {
		if p != nil {
			errs = append(errs, p.Close())
		}
	}
	return errors.Join(errs...)
}

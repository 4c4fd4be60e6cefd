package mux

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commitd/commitd/net/wire"
)

// Peer defaults.
const (
	DefaultBackoffMin  = 50 * time.Millisecond
	DefaultBackoffMax  = 5 * time.Second
	DefaultDialTimeout = 5 * time.Second
)

// resetAfter is how long a connection must have lived for the next
// reconnection to start again from BackoffMin. A peer that accepts and at
// once drops connections (full, or failing) is thus retried with growing
// delays, while a restarted server is found again quickly.
const resetAfter = time.Second

// PeerOptions configure a Peer.
type PeerOptions struct {
	// Conn configures every connection. HelloTimeout must stay zero: the
	// dialing side sends the Hello, it does not expect one.
	Conn Options
	// Hello is sent as the first frame on every new connection.
	Hello wire.Hello
	// Refresh, if set, fills in the fields of Hello that change while the
	// process runs (the cluster map version) before each new
	// connection's Hello is sent: a Hello is fixed once sent, so a
	// change is seen by the peer on the next connection.
	Refresh func(h *wire.Hello)
	// Check, if set, makes the Peer ask for the accepting side's Hello
	// (wire.Hello.Answer) and use a connection only once that answer has
	// come within DefaultHelloTimeout and Check has accepted it. A
	// connection the peer refuses — or that Check refuses — is thus never
	// used: no message is sent on it to be lost. The refusal is kept in
	// Stats.LastError and logged, at most once a second.
	Check func(answer wire.Hello) error
	// Dial opens a connection to addr. The default dials TCP with
	// DefaultDialTimeout. Plug TLS in here (tls.Dialer.DialContext).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Conns is the number of connections kept to the address (default 1).
	// Sends and calls go round-robin over the live ones.
	Conns int
	// BackoffMin and BackoffMax bound the delay between connection
	// attempts, which doubles after each failure, with jitter.
	BackoffMin, BackoffMax time.Duration
}

// PeerStats counts a Peer's connections and losses.
type PeerStats struct {
	Connected   int    // live connections now
	Dials       uint64 // connection attempts
	DialErrors  uint64 // attempts that failed
	Connections uint64 // connections established
	Dropped     uint64 // one-way frames dropped for want of a connection
	// LastError is why the last connection failed or the last dial did
	// not connect ("" if none has), at LastErrorAt: a peer that refuses
	// our Hello (a wrong name, a certificate it does not accept) says why
	// here, and in the log at most once a second.
	LastError   string
	LastErrorAt time.Time
}

// peerError is a Peer's last connection failure.
type peerError struct {
	err string
	at  time.Time
}

// Peer keeps Conns connections to one address, redialling each with capped
// exponential backoff when it fails.
//
// One-way frames sent while no connection is up are dropped and counted,
// not queued: the protocol tolerates loss (prepares time out, decisions and
// inquiries are repeated until acknowledged), and a queue would only
// deliver stale messages late. Calls made while disconnected fail at once
// with ErrNotConnected, and calls in flight on a connection that fails fail
// with its error: whether such a request took effect is unknown, which the
// caller must report as such.
type Peer struct {
	// Immutable after NewPeer.
	addr   string
	opts   PeerOptions
	ctx    context.Context // cancelled by Close: stops the dialers
	cancel context.CancelFunc
	conns  []atomic.Pointer[Conn] // slot i is written only by dialer i
	wg     sync.WaitGroup         // the dialers

	next                                    atomic.Uint64 // round-robin cursor
	dials, dialErrors, connections, dropped atomic.Uint64
	lastErr                                 atomic.Pointer[peerError]
	logs                                    limiter // the connections' failures
	connectedMu                             sync.Mutex
	connectedCh                             chan struct{} // closed and replaced when a connection comes up; guarded by connectedMu
}

// NewPeer starts keeping connections to addr.
func NewPeer(addr string, opts PeerOptions) *Peer {
	if opts.Conns <= 0 {
		opts.Conns = 1
	}
	if opts.BackoffMin <= 0 {
		opts.BackoffMin = DefaultBackoffMin
	}
	if opts.BackoffMax < opts.BackoffMin {
		opts.BackoffMax = max(DefaultBackoffMax, opts.BackoffMin)
	}
	if opts.Dial == nil {
		d := &net.Dialer{Timeout: DefaultDialTimeout}
		opts.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}
	}
	if opts.Conn.HelloTimeout != 0 {
		panic("mux: PeerOptions.Conn.HelloTimeout must be zero: the dialing side sends the Hello")
	}
	p := &Peer{
		addr:        addr,
		opts:        opts,
		conns:       make([]atomic.Pointer[Conn], opts.Conns),
		connectedCh: make(chan struct{}),
		logs:        limiter{every: logEvery},
	}
	p.opts.Conn.logs = &p.logs
	p.ctx, p.cancel = context.WithCancel(context.Background())
	for i := range p.conns {
		p.wg.Add(1)
		go p.dialLoop(i)
	}
	return p
}

// dialLoop keeps slot i connected until Close.
func (p *Peer) dialLoop(i int) {
	defer p.wg.Done()
	backoff := p.opts.BackoffMin
	for p.ctx.Err() == nil {
		if c := p.connect(); c != nil {
			up := time.Now()
			p.conns[i].Store(c)
			p.signalConnected()
			select {
			case <-c.Done():
				p.setErr(c.Err())
			case <-p.ctx.Done():
				c.Close()
				<-c.Done()
			}
			p.conns[i].Store(nil)
			if time.Since(up) >= resetAfter {
				backoff = p.opts.BackoffMin
			}
		}
		// Sleep between backoff/2 and backoff, so that many peers cut off
		// together do not redial together.
		d := backoff/2 + rand.N(backoff/2+1)
		backoff = min(2*backoff, p.opts.BackoffMax)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-p.ctx.Done():
			t.Stop()
		}
	}
}

// connect dials once and sends the Hello; it returns nil on failure.
func (p *Peer) connect() *Conn {
	p.dials.Add(1)
	nc, err := p.opts.Dial(p.ctx, p.addr)
	if err != nil {
		p.dialErrors.Add(1)
		if p.ctx.Err() == nil {
			p.setErr(err)
			p.opts.Conn.withDefaults().Logger.Debug("mux: dial failed", "addr", p.addr, "err", err)
		}
		return nil
	}
	opts := p.opts.Conn
	hello := p.opts.Hello
	if p.opts.Refresh != nil {
		p.opts.Refresh(&hello)
	}
	if p.opts.Check != nil {
		opts.awaitAnswer, hello.Answer = true, true
	}
	c := NewConn(nc, opts)
	// Queued before the connection is published, so it is the first frame.
	if err := c.Send(&hello); err != nil {
		c.Close()
		<-c.Done()
		p.dialErrors.Add(1)
		return nil
	}
	if p.opts.Check != nil {
		if err := p.awaitAnswer(c); err != nil {
			c.fail(err)
			<-c.Done()
			p.dialErrors.Add(1)
			p.setErr(c.Err())
			return nil
		}
	}
	p.connections.Add(1)
	return c
}

// awaitAnswer waits for the accepting side's Hello on c and checks it.
func (p *Peer) awaitAnswer(c *Conn) error {
	t := time.NewTimer(DefaultHelloTimeout)
	defer t.Stop()
	select {
	case <-c.answered:
	case <-c.Done():
		return c.Err()
	case <-t.C:
		return fmt.Errorf("%w: no answer to our hello within %v", ErrNoHello, DefaultHelloTimeout)
	case <-p.ctx.Done():
		return ErrClosed
	}
	role, name := c.Hello()
	if err := p.opts.Check(wire.Hello{Role: role, Name: []byte(name), Prevent: c.peerPrevent.Load()}); err != nil {
		return fmt.Errorf("mux: %s answered as %v %q: %w", p.addr, role, name, err)
	}
	return nil
}

func (p *Peer) setErr(err error) {
	if err != nil {
		p.lastErr.Store(&peerError{err: err.Error(), at: time.Now()})
	}
}

func (p *Peer) signalConnected() {
	p.connectedMu.Lock()
	close(p.connectedCh)
	p.connectedCh = make(chan struct{})
	p.connectedMu.Unlock()
}

// Conn returns a live connection, round-robin, or nil if none is up.
func (p *Peer) Conn() *Conn {
	n := uint64(len(p.conns))
	start := p.next.Add(1)
	for j := range n {
		if c := p.conns[(start+j)%n].Load(); c != nil && c.Err() == nil {
			return c
		}
	}
	return nil
}

// Send sends a one-way frame over a live connection. With none up, m is
// dropped, counted in Stats.Dropped, and ErrNotConnected returned. An
// error wrapping wire.ErrMalformed means m breaks a wire limit.
func (p *Peer) Send(m wire.Message) error {
	for range len(p.conns) {
		c := p.Conn()
		if c == nil {
			break
		}
		err := c.Send(m)
		if err == nil || c.Err() == nil {
			return err // sent, or a message error
		}
		// That connection died under us: try another.
	}
	p.dropped.Add(1)
	return ErrNotConnected
}

// SendVia is Send over connection slot%Conns when that one is live, else
// over another. A sender that emits frames in bursts (a pump flushing a
// batch) keeps them on one connection this way, so they are coalesced into
// one write and read by one reader, where round-robin would spread each
// burst over every connection and wake every writer. Frames sent with one
// slot stay in order as long as its connection lives.
func (p *Peer) SendVia(slot int, m wire.Message) error {
	if c := p.conns[uint(slot)%uint(len(p.conns))].Load(); c != nil {
		err := c.Send(m)
		if err == nil || c.Err() == nil {
			return err // sent, or a message error
		}
	}
	return p.Send(m)
}

// Call makes a call over a live connection (see Conn.Call); with none up it
// fails at once with ErrNotConnected.
func (p *Peer) Call(ctx context.Context, req wire.Message, buf []byte) (wire.Frame, error) {
	c := p.Conn()
	if c == nil {
		return wire.Frame{}, ErrNotConnected
	}
	return c.Call(ctx, req, buf)
}

// Stream makes a streaming call over a live connection (see Conn.Stream);
// with none up it fails at once with ErrNotConnected.
func (p *Peer) Stream(ctx context.Context, req wire.Message, fn func(wire.Frame) error) error {
	c := p.Conn()
	if c == nil {
		return ErrNotConnected
	}
	return c.Stream(ctx, req, fn)
}

// WaitConnected blocks until at least one connection is up, or ctx ends.
func (p *Peer) WaitConnected(ctx context.Context) error {
	for {
		p.connectedMu.Lock()
		ch := p.connectedCh
		p.connectedMu.Unlock()
		if p.Conn() != nil {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-p.ctx.Done():
			return ErrClosed
		}
	}
}

// Close closes every connection and stops redialling; it returns once all
// of the Peer's goroutines have.
func (p *Peer) Close() error {
	p.cancel()
	p.wg.Wait()
	return nil
}

// Stats returns the Peer's counters.
func (p *Peer) Stats() PeerStats {
	s := PeerStats{
		Dials:       p.dials.Load(),
		DialErrors:  p.dialErrors.Load(),
		Connections: p.connections.Load(),
		Dropped:     p.dropped.Load(),
	}
	for i := range p.conns {
		if c := p.conns[i].Load(); c != nil && c.Err() == nil {
			s.Connected++
		}
	}
	if e := p.lastErr.Load(); e != nil {
		s.LastError, s.LastErrorAt = e.err, e.at
	}
	return s
}

// ConnStats sums the traffic counters of the Peer's live connections (a
// connection that failed takes its counts with it).
func (p *Peer) ConnStats() Stats {
	var s Stats
	for i := range p.conns {
		c := p.conns[i].Load()
		if c == nil {
			continue
		}
		s.Add(c.Stats())
	}
	return s
}

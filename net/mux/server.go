package mux

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commitd/commitd/net/wire"
)

// Defaults for zero ServerOptions fields.
const (
	// DefaultMaxConns bounds a Server's client connections.
	DefaultMaxConns = 10000
	// DefaultReservedConns is how many connections a Server keeps beyond
	// MaxConns for the roles that run and watch the system (coordinator,
	// participant, replica, admin), so that a full house of clients cannot lock
	// them out.
	DefaultReservedConns = 64
)

// maxRefusers bounds the goroutines that tell connections beyond the hard
// bound why they are refused; past it they are closed bare (and counted),
// so a flood cannot make the refusals themselves unbounded.
const maxRefusers = 16

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("mux: server closed")

// ServerOptions configure a Server.
type ServerOptions struct {
	// Conn configures every accepted connection. Its HelloTimeout defaults
	// to DefaultHelloTimeout here: every accepted connection must start
	// with a Hello. OnClose is called after the Server has forgotten the
	// connection.
	Conn Options
	// MaxConns bounds the connections whose Hello says client
	// (DefaultMaxConns). A client beyond it is refused after its Hello
	// with an Error frame (CodeRefused) and counted in Rejected.
	MaxConns int
	// ReservedConns is how many connections beyond MaxConns are kept for
	// the other roles (DefaultReservedConns). MaxConns+ReservedConns bounds
	// every open connection, including those that have not said Hello
	// yet; one accepted beyond that is refused at once, with the same
	// Error frame, and counted in Rejected. Refusals are logged at most
	// once a second.
	ReservedConns int
}

// ServerStats counts a Server's connections.
type ServerStats struct {
	Open     int    // connections open now
	Clients  int    // of which said Hello as clients
	Accepted uint64 // connections accepted and served
	Rejected uint64 // connections refused: a bound was reached
}

// Server accepts connections and runs a Conn for each. To use TLS, pass a
// listener from crypto/tls.NewListener: the handshake then happens in the
// connection's reader, within the Hello timeout.
type Server struct {
	opts ServerOptions // immutable after NewServer
	wg   sync.WaitGroup

	logs     limiter       // refusals and connection failures, shared by every connection
	refusers chan struct{} // one token per goroutine refusing a connection beyond the bound

	mu struct {
		sync.Mutex
		closed    bool
		listeners map[net.Listener]struct{}
		conns     map[*Conn]bool // → counted as a client
		clients   int            // conns counted as clients
	}

	accepted, rejected atomic.Uint64
}

// NewServer returns a Server; Serve starts it on a listener.
func NewServer(opts ServerOptions) *Server {
	if opts.Conn.HelloTimeout <= 0 {
		opts.Conn.HelloTimeout = DefaultHelloTimeout
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = DefaultMaxConns
	}
	if opts.ReservedConns <= 0 {
		opts.ReservedConns = DefaultReservedConns
	}
	opts.Conn = opts.Conn.withDefaults()
	s := &Server{opts: opts, logs: limiter{every: logEvery}, refusers: make(chan struct{}, maxRefusers)}
	s.opts.Conn.logs = &s.logs
	s.opts.Conn.admit = s.admit
	s.mu.listeners = make(map[net.Listener]struct{})
	s.mu.conns = make(map[*Conn]bool)
	return s
}

// Serve accepts connections on ln until Close, then returns
// ErrServerClosed. If ln is closed by someone else it returns that error;
// other Accept errors (out of file descriptors...) are logged and retried
// with backoff. Serve closes ln when it returns.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.mu.listeners[ln] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.mu.listeners, ln)
		s.mu.Unlock()
		ln.Close()
	}()

	var backoff time.Duration // for temporary accept errors, as net/http does
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of file descriptors and the like: wait and retry
			// rather than stop serving.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.opts.Conn.Logger.Warn("mux: accept failed; retrying", "err", err, "delay", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		s.start(nc)
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.closed
}

// start runs a Conn for nc, or refuses nc if the server is full or closed.
func (s *Server) start(nc net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		nc.Close()
		return
	}
	if n := len(s.mu.conns); n >= s.opts.MaxConns+s.opts.ReservedConns {
		s.refuse(nc, fmt.Sprintf("server full: %d connections open", n))
		return
	}
	s.accepted.Add(1)
	opts := s.opts.Conn
	userOnClose := opts.OnClose
	opts.OnClose = func(c *Conn, err error) {
		s.mu.Lock()
		if s.mu.conns[c] {
			s.mu.clients--
		}
		delete(s.mu.conns, c)
		s.mu.Unlock()
		if userOnClose != nil {
			userOnClose(c, err)
		}
	}
	opts.exited = s.wg.Done
	s.wg.Add(1)
	c := NewConn(nc, opts)
	s.mu.conns[c] = false
}

// admit counts a client connection once its Hello says what it is, or
// refuses it when MaxConns clients are connected. The other roles were
// counted against MaxConns+ReservedConns when accepted, which is all the
// room they need.
func (s *Server) admit(c *Conn, h *wire.Hello) error {
	if h.Role != wire.RoleClient {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.clients >= s.opts.MaxConns {
		s.rejected.Add(1)
		return Refuse("server full: %d client connections open", s.mu.clients)
	}
	if _, ok := s.mu.conns[c]; ok {
		s.mu.conns[c] = true
		s.mu.clients++
	}
	return nil
}

// refuse tells nc, accepted beyond the hard bound, why it is closed: an
// Error frame, written by a goroutine of its own (a TLS handshake may
// come first) within the linger time, then nc is closed. With maxRefusers
// such goroutines busy, nc is closed bare. Either way it is counted and
// logged (rate-limited).
func (s *Server) refuse(nc net.Conn, why string) {
	s.rejected.Add(1)
	s.logs.log(s.opts.Conn.Logger, "mux: connection refused", "remote", nc.RemoteAddr(), "err", why)
	select {
	case s.refusers <- struct{}{}:
	default:
		nc.Close()
		return
	}
	frame, _ := wire.AppendFrame(nil, 0, &wire.Error{Code: wire.CodeRefused, Message: []byte(why)})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() { <-s.refusers }()
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(lingerTimeout))
		if _, err := nc.Write(frame); err != nil {
			return
		}
		if cw, ok := nc.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		// Read what the peer sent (its Hello) so that closing does not
		// reset the connection before the peer reads the frame.
		var buf [512]byte
		for {
			if _, err := nc.Read(buf[:]); err != nil {
				return
			}
		}
	}()
}

// Close stops every Serve loop and closes every connection, then waits
// until all of their goroutines have returned.
func (s *Server) Close() error {
	s.mu.Lock()
	s.mu.closed = true
	for ln := range s.mu.listeners {
		ln.Close()
	}
	conns := make([]*Conn, 0, len(s.mu.conns))
	for c := range s.mu.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	s.wg.Wait()
	return nil
}

// Stats returns the server's counters.
func (s *Server) Stats() ServerStats {
	s.mu.Lock()
	open, clients := len(s.mu.conns), s.mu.clients
	s.mu.Unlock()
	return ServerStats{Open: open, Clients: clients, Accepted: s.accepted.Load(), Rejected: s.rejected.Load()}
}

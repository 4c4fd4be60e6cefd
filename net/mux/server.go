package mux

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxConns bounds a Server's connections when ServerOptions.MaxConns
// is zero.
const DefaultMaxConns = 10000

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("mux: server closed")

// ServerOptions configure a Server.
type ServerOptions struct {
	// Conn configures every accepted connection. Its HelloTimeout defaults
	// to DefaultHelloTimeout here: every accepted connection must start
	// with a Hello. OnClose is called after the Server has forgotten the
	// connection.
	Conn Options
	// MaxConns bounds the open connections (DefaultMaxConns). A connection
	// accepted beyond it is closed at once and counted in Rejected.
	MaxConns int
}

// ServerStats counts a Server's connections.
type ServerStats struct {
	Open     int    // connections open now
	Accepted uint64 // connections accepted and served
	Rejected uint64 // connections closed at once: MaxConns reached
}

// Server accepts connections and runs a Conn for each. To use TLS, pass a
// listener from crypto/tls.NewListener: the handshake then happens in the
// connection's reader, within the Hello timeout.
type Server struct {
	opts ServerOptions // immutable after NewServer
	wg   sync.WaitGroup

	mu struct {
		sync.Mutex
		closed    bool
		listeners map[net.Listener]struct{}
		conns     map[*Conn]struct{}
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
	s := &Server{opts: opts}
	s.mu.listeners = make(map[net.Listener]struct{})
	s.mu.conns = make(map[*Conn]struct{})
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
			s.opts.Conn.withDefaults().Logger.Warn("mux: accept failed; retrying", "err", err, "delay", backoff)
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

// start runs a Conn for nc, or closes nc if the server is full or closed.
func (s *Server) start(nc net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed || len(s.mu.conns) >= s.opts.MaxConns {
		s.rejected.Add(1)
		nc.Close()
		return
	}
	s.accepted.Add(1)
	opts := s.opts.Conn
	userOnClose := opts.OnClose
	opts.OnClose = func(c *Conn, err error) {
		s.mu.Lock()
		delete(s.mu.conns, c)
		s.mu.Unlock()
		if userOnClose != nil {
			userOnClose(c, err)
		}
	}
	opts.exited = s.wg.Done
	s.wg.Add(1)
	c := NewConn(nc, opts)
	s.mu.conns[c] = struct{}{}
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
	open := len(s.mu.conns)
	s.mu.Unlock()
	return ServerStats{Open: open, Accepted: s.accepted.Load(), Rejected: s.rejected.Load()}
}

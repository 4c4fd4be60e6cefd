package mux

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commitd/commitd/net/wire"
)

// Defaults for zero Options fields.
const (
	DefaultMaxPendingBytes = 4 << 20
	DefaultMaxInFlight     = 4096
	DefaultWriteTimeout    = 10 * time.Second
	DefaultHelloTimeout    = 5 * time.Second
	DefaultFrameTimeout    = 10 * time.Second
	DefaultIdleTimeout     = 5 * time.Minute
)

// lingerTimeout bounds how long a connection that is closing with an
// Error frame (a refusal, an idle cut) keeps reading and discarding what
// the peer still sends, so that its close does not reset the connection
// and destroy the Error frame in the peer's receive buffer before the
// peer has read it.
const lingerTimeout = 250 * time.Millisecond

// keepBuffer is the largest output buffer the writer keeps for reuse after
// a burst; a larger one is dropped so that one burst does not pin memory
// for the life of the connection.
const keepBuffer = 1 << 20

// Errors a connection fails with. A connection that failed reports why in
// Err, and every Send, Reply, Call and Stream on it returns that error.
var (
	// ErrClosed: Close was called on this side.
	ErrClosed = errors.New("mux: connection closed")
	// ErrSlowPeer: the peer did not read fast enough: more than
	// Options.MaxPendingBytes bytes were queued, or one write blocked for
	// Options.WriteTimeout. The connection is cut off rather than buffered
	// without limit.
	ErrSlowPeer = errors.New("mux: slow peer cut off")
	// ErrNoHello: an accepted connection did not start with a Hello frame
	// within Options.HelloTimeout.
	ErrNoHello = errors.New("mux: no hello")
	// ErrNotConnected: a Peer has no live connection; a one-way message
	// was dropped (and counted), a call was not sent.
	ErrNotConnected = errors.New("mux: not connected")
	// ErrRefused: the peer closed the connection with an Error frame
	// (request id 0) that says why: it refused our hello, a message our
	// role may not send, or a connection beyond its bound; or we were
	// idle too long. The error's text carries the peer's code and reason.
	ErrRefused = errors.New("mux: closed by the peer")
	// ErrIdle: an accepted client or admin connection sent no frame for
	// Options.IdleTimeout.
	ErrIdle = errors.New("mux: idle connection closed")
	// ErrStalledFrame: a frame was begun and not finished within
	// Options.FrameTimeout.
	ErrStalledFrame = errors.New("mux: frame not finished in time")
)

// ClosedError is how a connection fails when the peer closed it with an
// Error frame (request id 0) that says why. It wraps ErrRefused.
type ClosedError struct {
	Code   wire.ErrorCode
	Reason string
}

func (e *ClosedError) Error() string {
	return fmt.Sprintf("%v (%v): %s", ErrRefused, e.Code, e.Reason)
}

// Unwrap makes errors.Is(err, ErrRefused) true.
func (e *ClosedError) Unwrap() error { return ErrRefused }

// Refusal is the error a Handler returns to refuse a peer: the connection
// then sends the peer an Error frame (request id 0, CodeRefused, Reason)
// before it closes, instead of leaving it a bare EOF, and logs the reason.
// The frame that caused it, and everything after it, is not handled.
type Refusal struct {
	Reason string
}

// Refuse returns a *Refusal with a formatted reason.
func Refuse(format string, args ...any) error {
	return &Refusal{Reason: fmt.Sprintf(format, args...)}
}

func (r *Refusal) Error() string { return "mux: refused: " + r.Reason }

// RemoteError is a request error: the peer answered the request with a
// wire.Error frame. Only that request failed; the connection is fine.
type RemoteError struct {
	Code    wire.ErrorCode
	Message string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("mux: remote error (%v): %s", e.Code, e.Message)
}

// Handler receives the frames that are not replies to this side's calls:
// the Hello, requests and one-way messages.
type Handler interface {
	// HandleFrame is called on the connection's reader goroutine, one
	// frame at a time, in arrival order. The frame has passed wire.Check
	// (for a Decoder: it has been decoded into Target's message), so
	// decoding it succeeds; its memory is valid only during the call.
	// It must not block for long: the connection reads nothing meanwhile
	// (so in particular it must not wait for a Call on c, whose reply only
	// this goroutine could read).
	// Answer a request with c.Reply(f.ReqID, ...), now or later from any
	// goroutine. A non-nil error is a connection error: it closes c and is
	// logged.
	HandleFrame(c *Conn, f wire.Frame) error
}

// Decoder is a Handler that decodes the frames it handles into messages of
// its own. The mux checks every frame before it routes it, by decoding it
// (wire.Check); for a Decoder it decodes the frame into the message Target
// returns instead of into scratch space, so that HandleFrame finds the
// frame's message decoded there and the same bytes are not decoded twice
// per frame. The check is the same Decode at the same point (before the
// sender's role is checked and the frame routed), so a malformed frame
// fails the connection exactly as it does for any Handler.
type Decoder interface {
	Handler
	// Target returns the message that a frame of type t arriving on c is
	// to be decoded into (a pointer of the message type t names), or nil
	// for the mux's own scratch. It is called on c's reader goroutine,
	// just before the frame is checked. HandleFrame is called next for
	// that frame only if it decoded and is routed to the Handler; the
	// message is then valid, like the frame, only during that call.
	Target(c *Conn, t wire.Type) wire.Message
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(c *Conn, f wire.Frame) error

// HandleFrame calls h(c, f).
func (h HandlerFunc) HandleFrame(c *Conn, f wire.Frame) error { return h(c, f) }

// Options configure a Conn. The zero value works: zero fields take the
// defaults named.
type Options struct {
	// Handler receives the Hello, requests and one-way frames. If nil,
	// requests are answered with an Error{CodeInvalid} and one-way frames
	// are counted in Stats.Ignored and dropped.
	Handler Handler
	// Logger receives the reason a connection failed (once per
	// connection). Nil means slog.Default().
	Logger *slog.Logger
	// MaxPendingBytes bounds the bytes queued for the writer (DefaultMaxPendingBytes).
	// A Send that would go past it cuts the connection off with ErrSlowPeer.
	// The writer may hold as much again while a write is in progress.
	MaxPendingBytes int
	// MaxInFlight bounds the calls awaiting a reply (DefaultMaxInFlight).
	// Call and Stream block, until their context ends, while it is reached.
	MaxInFlight int
	// WriteTimeout bounds one write (DefaultWriteTimeout; negative means
	// none). A peer that does not read for that long is cut off with
	// ErrSlowPeer.
	WriteTimeout time.Duration
	// HelloTimeout, if positive, makes the connection an accepting one:
	// the first frame must be a Hello and must arrive within HelloTimeout,
	// else the connection is closed (ErrNoHello), so half-open connections
	// cannot pile up. If zero, a Hello frame is a protocol violation.
	//
	// On an accepting connection every request and one-way frame must
	// come from the role wire.Sender names for its type, the role of the
	// peer's Hello; any other is refused (see Refusal) before the Handler
	// sees it.
	HelloTimeout time.Duration
	// FrameTimeout bounds the time from a frame's first bytes to its last
	// (DefaultFrameTimeout; negative means none): a peer that sends half a
	// frame and stops is cut off (ErrStalledFrame) instead of holding the
	// connection forever. The deadline is re-armed lazily, so a frame may
	// be cut off after 7/8 of it.
	FrameTimeout time.Duration
	// IdleTimeout closes an accepting connection whose peer said it is a
	// client or an admin tool and sent no frame for this long
	// (DefaultIdleTimeout; negative means none), with an Error frame
	// (CodeUnavailable) that says so (ErrIdle). Coordinator, participant
	// and replica connections are exempt: they are few, authenticated by
	// their hello, and idle whenever there is no traffic — cutting them
	// would only lose the next prepare. Measured between 7/8 and all of
	// IdleTimeout after the last frame.
	IdleTimeout time.Duration
	// Answer is, on an accepting connection, this side's own Hello: the
	// answer to a peer whose Hello asks for one (wire.Hello.Answer), sent
	// once the Handler has accepted the peer's Hello. A peer that asks
	// while Answer has no role is refused.
	Answer wire.Hello
	// NoCoalesce makes the writer write each frame with its own write, for
	// comparison with the default of one write per batch.
	NoCoalesce bool
	// ReadBufferBytes is the size of the connection's own read buffer
	// (wire.DefaultReadBuffer); while frames and reads ask for more it
	// reads into a wire.MaxFrameSize buffer from a shared pool instead
	// (see wire.Reader).
	ReadBufferBytes int
	// OnClose, if set, is called once when the connection has failed and
	// its goroutines are done, with the reason (see Conn.Err).
	OnClose func(c *Conn, err error)

	// exited, if set, is called last on the reader goroutine, after done
	// is closed: a Server waits for its connections with it.
	exited func()
	// admit, if set, judges the peer's Hello before the Handler sees it;
	// a *Refusal refuses the connection. A Server bounds client
	// connections with it.
	admit func(c *Conn, h *wire.Hello) error
	// logs, if set, rate-limits the connection's failure logs, shared by
	// every connection of a Server or a Peer.
	logs *limiter
	// awaitAnswer makes a dialing connection expect the accepting side's
	// Hello as the first frame (a Peer whose Hello asked for one).
	awaitAnswer bool
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxPendingBytes <= 0 {
		o.MaxPendingBytes = DefaultMaxPendingBytes
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.FrameTimeout == 0 {
		o.FrameTimeout = DefaultFrameTimeout
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.logs == nil {
		o.logs = &limiter{every: 0} // a lone connection logs every failure
	}
	return o
}

// Stats counts a connection's traffic. Frames and bytes are counted when
// written (sent) or read (received).
type Stats struct {
	Writes         uint64 // write calls on the net.Conn
	FramesSent     uint64 // frames written
	BytesSent      uint64 // bytes written
	FramesReceived uint64 // frames read, every type
	BytesReceived  uint64 // bytes of the frames read
	InFlight       int    // calls awaiting a reply now
	UnknownReplies uint64 // replies for no pending call (late, cancelled or bogus): ignored
	Ignored        uint64 // one-way frames dropped for want of a Handler
}

// Add adds x's counters to s, for summing over connections (InFlight,
// a gauge, is summed too).
func (s *Stats) Add(x Stats) {
	s.Writes += x.Writes
	s.FramesSent += x.FramesSent
	s.BytesSent += x.BytesSent
	s.FramesReceived += x.FramesReceived
	s.BytesReceived += x.BytesReceived
	s.InFlight += x.InFlight
	s.UnknownReplies += x.UnknownReplies
	s.Ignored += x.Ignored
}

// Conn is one multiplexed connection: any number of goroutines may Send
// one-way frames and make Calls over it at once.
//
// It runs two goroutines. The writer takes everything queued since its last
// write and writes it with a single write call (nats-server's
// flushOutbound); senders only append to the queue under a short mutex and
// never wait for I/O. The reader decodes frames into one reused buffer,
// hands replies to the calls waiting for them (net/rpc's pending table)
// and everything else to the Handler.
type Conn struct {
	// Immutable after NewConn.
	nc          net.Conn
	opts        Options
	wake        chan struct{} // cap 1: "the queue is no longer empty"
	closing     chan struct{} // closed when the connection starts failing
	writerDone  chan struct{} // closed when the writer has returned
	done        chan struct{} // closed when both goroutines have returned
	answered    chan struct{} // with awaitAnswer: closed when the peer's Hello has come
	slots       chan struct{} // one token per call in flight
	failOnce    sync.Once
	peerRole    atomic.Uint32 // the Hello's role; written by the reader before the handler sees the Hello
	peerPrevent atomic.Bool   // a dialing connection: the answering Hello's Prevent (wire.Hello.Prevent)
	peerName    atomic.Pointer[string]
	spareWriter []byte // owned by the writer goroutine: the buffer it swaps in
	// decoder is opts.Handler as a Decoder, or nil: immutable.
	decoder Decoder
	// state is the Handler's own value for this connection (State),
	// owned by the reader goroutine.
	state any

	mu struct {
		sync.Mutex
		out    []byte // frames queued for the writer
		frames int    // number of frames in out
		err    error  // why the connection failed; nil while it is up
		ending error  // set when a closing Error frame is queued: nothing more is, and the writer stops once it is out
	}

	calls struct {
		sync.Mutex
		nextID  uint64
		pending map[uint64]*call
		err     error // set with mu.err; no call is registered after it
	}

	stats struct {
		writes, framesSent, bytesSent atomic.Uint64
		framesReceived, bytesReceived atomic.Uint64
		unknownReplies, ignored       atomic.Uint64
	}
}

// NewConn takes ownership of nc and starts the connection's reader and
// writer goroutines. TLS, if wanted, is the caller's: wrap nc first.
func NewConn(nc net.Conn, opts Options) *Conn {
	opts = opts.withDefaults()
	c := &Conn{
		nc:         nc,
		opts:       opts,
		wake:       make(chan struct{}, 1),
		closing:    make(chan struct{}),
		writerDone: make(chan struct{}),
		done:       make(chan struct{}),
		slots:      make(chan struct{}, opts.MaxInFlight),
		answered:   make(chan struct{}),
	}
	c.calls.pending = make(map[uint64]*call)
	c.decoder, _ = opts.Handler.(Decoder)
	go c.writeLoop()
	go c.readLoop()
	return c
}

// Send queues a one-way frame. It returns once m is encoded into the
// queue: it never waits for the network. It does not retain m, and it does
// not allocate unless the queue must grow (m may live on the caller's
// stack).
//
// An error wrapping wire.ErrMalformed means m breaks a wire limit and was
// not queued; the connection is fine. Any other error is the connection's
// (Err): the frame was not queued, or it was and the connection failed
// before writing it — one-way frames are never acknowledged.
func (c *Conn) Send(m wire.Message) error { return c.queue(0, m, nil) }

// Reply queues the reply m (an Outcome, AdminResponse or Error) to the
// request with id reqID, like Send.
func (c *Conn) Reply(reqID uint64, m wire.Message) error {
	if reqID == 0 {
		panic("mux: Reply with request id 0")
	}
	return c.queue(reqID, m, nil)
}

// queue appends one frame to the writer's queue and wakes the writer if
// the queue was empty (a non-empty queue means a wake-up is pending). If
// end is not nil the frame is the last: later ones fail with end, and the
// writer stops once it has written it.
func (c *Conn) queue(reqID uint64, m wire.Message, end error) error {
	c.mu.Lock()
	if err := cmp.Or(c.mu.err, c.mu.ending); err != nil {
		c.mu.Unlock()
		return err
	}
	was := len(c.mu.out)
	out, err := wire.AppendFrame(c.mu.out, reqID, m)
	if err != nil {
		c.mu.Unlock()
		return err
	}
	if len(out) > c.opts.MaxPendingBytes {
		c.mu.out = out[:was]
		c.mu.Unlock()
		err := fmt.Errorf("%w: %d bytes queued, limit %d", ErrSlowPeer, len(out), c.opts.MaxPendingBytes)
		c.fail(err)
		return c.Err()
	}
	c.mu.out = out
	c.mu.frames++
	c.mu.ending = end
	c.mu.Unlock()
	if was == 0 {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// writeLoop is the writer goroutine.
func (c *Conn) writeLoop() {
	defer close(c.writerDone)
	for {
		select {
		case <-c.wake:
		case <-c.closing:
			return
		}
		if !c.opts.NoCoalesce {
			// Yield once before taking the queue: goroutines that are
			// runnable now (callers, a pump delivering a batch, a reader
			// answering) get to add their frames first, so one write
			// carries more of them — and a loopback write costs about as
			// much CPU for one frame as for a hundred. With nothing else
			// runnable Gosched returns at once, so a lone caller pays
			// nothing for it.
			runtime.Gosched()
		}
		c.mu.Lock()
		if c.mu.err != nil {
			c.mu.Unlock()
			return
		}
		buf, frames := c.mu.out, c.mu.frames
		c.mu.out, c.mu.frames = c.spareWriter[:0], 0
		c.mu.Unlock()
		if len(buf) == 0 {
			c.spareWriter = buf
			continue
		}
		err := c.write(buf, frames)
		if cap(buf) > keepBuffer {
			buf = nil
		}
		c.spareWriter = buf[:0]
		if err != nil {
			c.fail(err)
			return
		}
		c.mu.Lock()
		last := c.mu.ending != nil && len(c.mu.out) == 0
		c.mu.Unlock()
		if last {
			return // the closing Error frame is out: see closeWith
		}
	}
}

// write writes one batch of frames: in one write, or frame by frame with
// NoCoalesce.
func (c *Conn) write(buf []byte, frames int) error {
	if c.opts.WriteTimeout > 0 {
		if err := c.nc.SetWriteDeadline(time.Now().Add(c.opts.WriteTimeout)); err != nil {
			return err
		}
	}
	var err error
	if c.opts.NoCoalesce {
		for len(buf) > 0 && err == nil {
			n, _ := wire.FrameLen(buf) // the queue holds whole frames only
			_, err = c.nc.Write(buf[:n])
			buf = buf[n:]
			c.stats.writes.Add(1)
			c.stats.bytesSent.Add(uint64(n))
		}
	} else {
		_, err = c.nc.Write(buf)
		c.stats.writes.Add(1)
		c.stats.bytesSent.Add(uint64(len(buf)))
	}
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("%w: a write blocked for %v", ErrSlowPeer, c.opts.WriteTimeout)
		}
		return err
	}
	c.stats.framesSent.Add(uint64(frames))
	return nil
}

// readLoop is the reader goroutine; it also finishes the connection.
func (c *Conn) readLoop() {
	err := c.read()
	var ref *Refusal
	switch {
	case errors.As(err, &ref):
		c.closeWith(wire.CodeRefused, ref.Reason, err)
	case errors.Is(err, ErrIdle):
		c.closeWith(wire.CodeUnavailable, err.Error(), err)
	}
	c.fail(err)
	<-c.writerDone
	if c.opts.OnClose != nil {
		c.opts.OnClose(c, c.Err())
	}
	close(c.done)
	if c.opts.exited != nil {
		c.opts.exited()
	}
}

// closeWith tells the peer why the connection closes, in an Error frame
// with request id 0, before the reader fails it: it queues the frame last
// (nothing is queued after it), waits for the writer to write it out, closes
// the sending half, and reads and drops what the peer still sends for a
// moment, so that closing with unread bytes does not reset the connection
// and destroy the frame before the peer reads it.
func (c *Conn) closeWith(code wire.ErrorCode, why string, err error) {
	msg := []byte(why)
	if len(msg) > wire.MaxDetailLen {
		msg = msg[:wire.MaxDetailLen]
	}
	if c.queue(0, &wire.Error{Code: code, Message: msg}, err) != nil {
		return // the connection failed already
	}
	// The writer wakes for the frame (queue woke it if it was idle), writes
	// everything up to it, and returns; WriteTimeout bounds the write.
	t := time.NewTimer(lingerTimeout + max(c.opts.WriteTimeout, 0))
	defer t.Stop()
	select {
	case <-c.writerDone:
	case <-t.C:
		return
	}
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(lingerTimeout))
	_, _ = io.Copy(io.Discard, io.LimitReader(c.nc, wire.MaxFrameSize))
}

func (c *Conn) read() error {
	dr := &deadlineReader{c: c, mode: modeHello}
	r := wire.NewReader(dr, c.opts.ReadBufferBytes)
	// No frame of r's is used after read returns (handlers copy what they
	// keep), so its large buffer can serve the next busy connection.
	defer r.Release()
	dr.r = r
	if c.opts.HelloTimeout > 0 {
		if err := c.readHello(r); err != nil {
			return err
		}
		if role, _ := c.Hello(); role == wire.RoleClient || role == wire.RoleAdmin {
			dr.idle = c.opts.IdleTimeout
		}
	}
	dr.mode = modeUnset
	if c.opts.awaitAnswer {
		if err := c.readAnswer(r); err != nil {
			return err
		}
	}
	for {
		f, err := r.Next()
		if err != nil {
			return err
		}
		if err := c.dispatch(f); err != nil {
			return err
		}
	}
}

// readHello reads and dispatches the first frame of an accepted connection,
// which must be a Hello that arrives within HelloTimeout.
func (c *Conn) readHello(r *wire.Reader) error {
	if err := c.nc.SetReadDeadline(time.Now().Add(c.opts.HelloTimeout)); err != nil {
		return err
	}
	f, err := r.Next()
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%w within %v", ErrNoHello, c.opts.HelloTimeout)
	}
	if err != nil {
		return err
	}
	if f.Type != wire.TypeHello {
		return fmt.Errorf("%w: first frame is %v", ErrNoHello, f.Type)
	}
	var h wire.Hello
	if err := h.Decode(f); err != nil {
		return err
	}
	name := string(h.Name)
	c.peerName.Store(&name)
	c.peerRole.Store(uint32(h.Role))
	// An error here means the peer has already gone (net.Pipe reports
	// that); the next read reports it properly, after the frames buffered.
	_ = c.nc.SetReadDeadline(time.Time{})
	c.countReceived(f)
	if c.opts.admit != nil {
		if err := c.opts.admit(c, &h); err != nil {
			return err
		}
	}
	if err := c.handle(f); err != nil {
		return err
	}
	if h.Answer {
		if c.opts.Answer.Role == 0 {
			return Refuse("this server does not answer hellos")
		}
		return c.Send(&c.opts.Answer)
	}
	return nil
}

// readAnswer reads the first frame on a dialing connection whose Hello
// asked for an answer: the accepting side's Hello, or the Error frame it
// refused ours with.
func (c *Conn) readAnswer(r *wire.Reader) error {
	f, err := r.Next()
	if err != nil {
		return err
	}
	c.countReceived(f)
	if err := wire.Check(f); err != nil {
		return err
	}
	if f.Type != wire.TypeHello {
		return c.dispatchFirst(f)
	}
	var h wire.Hello
	_ = h.Decode(f) // checked above
	name := string(h.Name)
	c.peerName.Store(&name)
	c.peerRole.Store(uint32(h.Role))
	c.peerPrevent.Store(h.Prevent)
	close(c.answered)
	return nil
}

// dispatchFirst handles a first frame that is not the awaited Hello: a
// refusal fails the connection with the peer's reason; anything else is a
// protocol violation.
func (c *Conn) dispatchFirst(f wire.Frame) error {
	if f.Type == wire.TypeError && f.ReqID == 0 {
		return c.dispatch(f)
	}
	return fmt.Errorf("%w: first frame is %v, want the peer's hello", wire.ErrMalformed, f.Type)
}

// Read modes of a deadlineReader: what the next read is waiting for.
const (
	modeUnset   = iota // no deadline armed yet
	modeHello          // readHello's own deadline is armed
	modeNone           // no deadline: a protocol connection between frames
	modeIdle           // between frames, IdleTimeout armed
	modePartial        // inside a frame, FrameTimeout armed
)

// deadlineReader arms the read deadline for what the wire.Reader is waiting
// for: the rest of a frame it has begun (FrameTimeout), or the next frame
// on a connection that may idle only so long (IdleTimeout). It re-arms only
// when the mode changes or the deadline is 1/8 used, so a busy connection
// does not pay a deadline update per read.
type deadlineReader struct {
	c     *Conn
	r     *wire.Reader  // whose Buffered says whether a frame is begun
	idle  time.Duration // IdleTimeout for this connection's role, or 0
	mode  int
	armed time.Time // when the deadline was last set
	limit time.Duration
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	if d.mode != modeHello {
		mode, limit := modeNone, time.Duration(0)
		switch {
		case d.r.Buffered() > 0 && d.c.opts.FrameTimeout > 0:
			mode, limit = modePartial, d.c.opts.FrameTimeout
		case d.r.Buffered() == 0 && d.idle > 0:
			mode, limit = modeIdle, d.idle
		}
		now := time.Now()
		if mode != d.mode || (limit > 0 && now.Sub(d.armed) > limit/8) {
			var at time.Time
			if limit > 0 {
				at = now.Add(limit)
			}
			if err := d.c.nc.SetReadDeadline(at); err != nil {
				return 0, err
			}
			d.mode, d.armed, d.limit = mode, now, limit
		}
	}
	n, err := d.c.nc.Read(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		switch d.mode {
		case modePartial:
			err = fmt.Errorf("%w: %d bytes of a frame in %v", ErrStalledFrame, d.r.Buffered()+n, d.limit)
		case modeIdle:
			err = fmt.Errorf("%w: no frame for %v", ErrIdle, d.limit)
		}
	}
	return n, err
}

func (c *Conn) countReceived(f wire.Frame) {
	c.stats.framesReceived.Add(1)
	c.stats.bytesReceived.Add(uint64(f.Size()))
}

// State returns the value the Handler keeps for this connection
// (SetState), or nil before it set one. Only the connection's reader
// goroutine — the Handler's calls — may use it: it is a Handler's
// per-connection scratch found without a shared map's lookup per frame.
func (c *Conn) State() any { return c.state }

// SetState sets the value State returns; on the reader goroutine only.
func (c *Conn) SetState(v any) { c.state = v }

// check checks one frame by decoding it: into the Decoder's message if the
// Handler is one and has one for the frame's type, else as wire.Check does.
func (c *Conn) check(f wire.Frame) error {
	if c.decoder != nil {
		if m := c.decoder.Target(c, f.Type); m != nil {
			if m.Type() != f.Type {
				panic(fmt.Sprintf("mux: Decoder.Target gave a %v message for a %v frame", m.Type(), f.Type))
			}
			return m.Decode(f)
		}
	}
	return wire.Check(f)
}

// dispatch checks one frame and routes it. An error is a connection error.
func (c *Conn) dispatch(f wire.Frame) error {
	c.countReceived(f)
	if err := c.check(f); err != nil {
		return err
	}
	if f.Type == wire.TypeError && f.ReqID == 0 {
		var e wire.Error
		_ = e.Decode(f) // checked above
		return &ClosedError{Code: e.Code, Reason: string(e.Message)}
	}
	if f.Type == wire.TypeHello && !c.opts.awaitAnswer && c.opts.HelloTimeout == 0 && c.stats.framesReceived.Load() == 1 {
		// The answer to a Hello that asked for one, on a connection made
		// without a Peer: kept, and not an error.
		var h wire.Hello
		_ = h.Decode(f)
		name := string(h.Name)
		c.peerName.Store(&name)
		c.peerRole.Store(uint32(h.Role))
		return nil
	}
	if c.opts.HelloTimeout > 0 {
		// The authorization table (wire.Sender): each message has one
		// sending role, and the accepting side knows the peer's.
		if want := wire.Sender(f.Type); want != 0 {
			if role, name := c.Hello(); role != want {
				return Refuse("a %v connection (%q) may not send %v: only a %v does", role, name, f.Type, want)
			}
		}
	}
	switch {
	case f.Type.IsReply():
		c.deliver(f)
		return nil
	case f.Type == wire.TypeHello:
		return fmt.Errorf("%w: unexpected hello", wire.ErrMalformed)
	}
	return c.handle(f)
}

func (c *Conn) handle(f wire.Frame) error {
	h := c.opts.Handler
	if h == nil {
		if f.Type.IsRequest() {
			return c.Reply(f.ReqID, &wire.Error{Code: wire.CodeInvalid, Message: []byte("no handler for requests")})
		}
		c.stats.ignored.Add(1)
		return nil
	}
	if err := h.HandleFrame(c, f); err != nil {
		return fmt.Errorf("mux: handling %v: %w", f.Type, err)
	}
	return nil
}

// fail closes the connection for reason err, once: later Sends and Calls
// fail with err, pending calls fail with err, and both goroutines stop.
func (c *Conn) fail(err error) {
	c.failOnce.Do(func() {
		c.mu.Lock()
		c.mu.err = err
		c.mu.out = nil
		c.mu.Unlock()
		close(c.closing)
		_ = c.nc.Close() // unblocks the reader and a blocked writer
		c.failCalls(err)
		var closed *ClosedError
		switch {
		case errors.Is(err, ErrClosed), errors.Is(err, io.EOF):
		case errors.Is(err, ErrIdle), errors.As(err, &closed) && closed.Code == wire.CodeUnavailable:
			// Routine: an idle connection cut (on either side), or a
			// server going away; the client redials when it has work.
			c.opts.Logger.Debug("mux: connection closed", "remote", c.nc.RemoteAddr(), "err", err)
		default:
			args := []any{"remote", c.nc.RemoteAddr(), "err", err}
			if role, name := c.Hello(); role != 0 {
				args = append(args, "role", role, "name", name)
			}
			c.opts.logs.log(c.opts.Logger, "mux: connection failed", args...)
		}
	})
}

// Close closes the connection. Frames still queued are dropped; pending
// calls fail with ErrClosed. Close does not wait for the goroutines (it may
// be called from a Handler); Done does.
func (c *Conn) Close() error {
	c.fail(ErrClosed)
	return nil
}

// Done is closed when the connection has failed and both of its
// goroutines have returned.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the connection failed, or nil while it is up: ErrClosed
// after Close, io.EOF if the peer closed it, ErrSlowPeer, ErrNoHello, a
// wire error for a malformed frame, a Handler's error or a network error.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.err
}

// Hello returns the role and name from the peer's Hello on an accepting
// connection (Options.HelloTimeout > 0), or from its answer to ours, or
// zero values before it came.
func (c *Conn) Hello() (wire.Role, string) {
	role := wire.Role(c.peerRole.Load())
	if p := c.peerName.Load(); p != nil {
		return role, *p
	}
	return role, ""
}

// TLS returns the connection's TLS state, or false if it is not over TLS.
// On an accepting connection the handshake is done by the time the Hello
// is handled: the peer's verified certificate is in PeerCertificates.
func (c *Conn) TLS() (tls.ConnectionState, bool) {
	if tc, ok := c.nc.(*tls.Conn); ok {
		return tc.ConnectionState(), true
	}
	return tls.ConnectionState{}, false
}

// RemoteAddr returns the peer's network address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// Stats returns the connection's counters.
func (c *Conn) Stats() Stats {
	c.calls.Lock()
	inFlight := len(c.calls.pending)
	c.calls.Unlock()
	return Stats{
		Writes:         c.stats.writes.Load(),
		FramesSent:     c.stats.framesSent.Load(),
		BytesSent:      c.stats.bytesSent.Load(),
		FramesReceived: c.stats.framesReceived.Load(),
		BytesReceived:  c.stats.bytesReceived.Load(),
		InFlight:       inFlight,
		UnknownReplies: c.stats.unknownReplies.Load(),
		Ignored:        c.stats.ignored.Load(),
	}
}

// waitSlot takes an in-flight token, blocking while MaxInFlight calls are
// in flight.
func (c *Conn) waitSlot(ctx context.Context) error {
	select {
	case c.slots <- struct{}{}:
		return nil
	default:
	}
	select {
	case c.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.closing:
		return c.Err()
	}
}

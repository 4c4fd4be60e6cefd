package mux

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/protocol"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// logBuffer is an io.Writer safe for the concurrent writes of a logger.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func txnOf(i int) protocol.TxnID {
	var id protocol.TxnID
	binary.BigEndian.PutUint64(id[8:], uint64(i))
	return id
}

var vote = wire.Vote{Txn: txnOf(1), From: []byte("bank-1"), Vote: protocol.VoteYes}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func closeConn(c *Conn) {
	c.Close()
	<-c.Done()
}

// echo is a Handler that answers every Begin with Outcome{Committed} for
// the same transaction and counts the frames it sees by type.
type echo struct {
	mu     sync.Mutex
	seen   map[wire.Type]int
	hellos []string
	hold   bool     // if set, Begins are recorded in held instead of answered
	held   []uint64 // request ids of held Begins
}

func newEcho() *echo { return &echo{seen: map[wire.Type]int{}} }

func (e *echo) HandleFrame(c *Conn, f wire.Frame) error {
	e.mu.Lock()
	e.seen[f.Type]++
	if f.Type == wire.TypeHello {
		var h wire.Hello
		if err := h.Decode(f); err != nil {
			e.mu.Unlock()
			return err
		}
		e.hellos = append(e.hellos, string(h.Name))
	}
	hold := e.hold
	if hold && f.Type == wire.TypeBegin {
		e.held = append(e.held, f.ReqID)
	}
	e.mu.Unlock()
	if f.Type != wire.TypeBegin || hold {
		return nil
	}
	var b wire.Begin
	if err := b.Decode(f); err != nil {
		return err
	}
	if b.Txn[0] == 0xee {
		return c.Reply(f.ReqID, &wire.Error{Code: wire.CodeUnavailable, Message: []byte("try later")})
	}
	return c.Reply(f.ReqID, &wire.Outcome{Txn: b.Txn, Outcome: protocol.OutcomeCommitted})
}

func (e *echo) count(t wire.Type) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.seen[t]
}

// loopback starts a Server with handler h on a loopback port and returns it
// with a client Conn that has sent its Hello.
func loopback(t testing.TB, h Handler, srvOpts ServerOptions, cliOpts Options) (*Server, *Conn, string) {
	t.Helper()
	return loopbackAs(t, wire.RoleClient, h, srvOpts, cliOpts)
}

// loopbackAs is loopback with a Conn that says Hello as role: the server
// takes from it only the messages that role sends (wire.Sender).
func loopbackAs(t testing.TB, role wire.Role, h Handler, srvOpts ServerOptions, cliOpts Options) (*Server, *Conn, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srvOpts.Conn.Handler = h
	if srvOpts.Conn.Logger == nil {
		srvOpts.Conn.Logger = quiet
	}
	srv := NewServer(srvOpts)
	go srv.Serve(ln)
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if cliOpts.Logger == nil {
		cliOpts.Logger = quiet
	}
	c := NewConn(nc, cliOpts)
	if err := c.Send(&wire.Hello{Role: role, Name: []byte("test")}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		closeConn(c)
		srv.Close()
	})
	return srv, c, ln.Addr().String()
}

// readFrames reads n frames from r and returns them (payloads copied).
func readFrames(t *testing.T, r io.Reader, n int) []wire.Frame {
	t.Helper()
	rd := wire.NewReader(r, 0)
	var out []wire.Frame
	for range n {
		f, err := rd.Next()
		if err != nil {
			t.Fatalf("after %d frames: %v", len(out), err)
		}
		f.Payload = bytes.Clone(f.Payload)
		out = append(out, f)
	}
	return out
}

// TestCoalescing: while the peer is not reading, the writer is blocked in
// its first write and every later Send queues; once the peer reads, the
// whole queue goes out in one write.
func TestCoalescing(t *testing.T) {
	const n = 1000
	for _, noCoalesce := range []bool{false, true} {
		a, b := net.Pipe()
		c := NewConn(a, Options{Logger: quiet, NoCoalesce: noCoalesce})
		for i := range n {
			v := vote
			v.Txn = txnOf(i)
			if err := c.Send(&v); err != nil {
				t.Fatal(err)
			}
		}
		frames := readFrames(t, b, n)
		for i, f := range frames {
			var v wire.Vote
			if err := v.Decode(f); err != nil || v.Txn != txnOf(i) {
				t.Fatalf("frame %d: %v, txn %x", i, err, v.Txn)
			}
		}
		waitFor(t, "stats", func() bool { return c.Stats().FramesSent == n })
		st := c.Stats()
		if noCoalesce && st.Writes != n {
			t.Errorf("NoCoalesce: %d writes for %d frames", st.Writes, n)
		}
		if !noCoalesce && st.Writes > 3 {
			t.Errorf("coalescing: %d writes for %d frames", st.Writes, n)
		}
		if want := uint64(n * frames[0].Size()); st.BytesSent != want {
			t.Errorf("BytesSent = %d, want %d", st.BytesSent, want)
		}
		closeConn(c)
		b.Close()
	}
}

// TestSlowPeerCutOff: a peer that never reads is cut off once MaxPendingBytes
// bytes are queued, not buffered without limit.
func TestSlowPeerCutOff(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	const maxPending = 64 << 10
	c := NewConn(a, Options{Logger: quiet, MaxPendingBytes: maxPending})
	frameSize := len(mustFrame(t, &vote))
	sent := 0
	var err error
	for ; sent < 100000; sent++ {
		if err = c.Send(&vote); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrSlowPeer) {
		t.Fatalf("after %d sends: %v, want ErrSlowPeer", sent, err)
	}
	// The queue holds at most maxPending bytes, and the blocked writer one
	// earlier batch of at most as much.
	if limit := 2*maxPending/frameSize + 1; sent > limit {
		t.Errorf("%d frames accepted, limit %d", sent, limit)
	}
	<-c.Done()
	if !errors.Is(c.Err(), ErrSlowPeer) {
		t.Errorf("Err = %v", c.Err())
	}
	if err := c.Send(&vote); !errors.Is(err, ErrSlowPeer) {
		t.Errorf("Send after cut-off: %v", err)
	}
}

func mustFrame(t testing.TB, m wire.Message) []byte {
	b, err := wire.AppendFrame(nil, 0, m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSlowPeerWriteTimeout: a single write that blocks past WriteTimeout
// cuts the peer off even if little is queued.
func TestSlowPeerWriteTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := net.Pipe()
		defer b.Close()
		c := NewConn(a, Options{Logger: quiet, WriteTimeout: 2 * time.Second})
		if err := c.Send(&vote); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if err := c.Err(); err != nil {
			t.Fatalf("cut off early: %v", err)
		}
		time.Sleep(2 * time.Second)
		<-c.Done()
		if !errors.Is(c.Err(), ErrSlowPeer) {
			t.Fatalf("Err = %v, want ErrSlowPeer", c.Err())
		}
	})
}

func TestHelloRequired(t *testing.T) {
	t.Run("timeout", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			a, b := net.Pipe()
			defer b.Close()
			c := NewConn(a, Options{Logger: quiet, HelloTimeout: 5 * time.Second})
			time.Sleep(4 * time.Second)
			synctest.Wait()
			if c.Err() != nil {
				t.Fatalf("closed early: %v", c.Err())
			}
			time.Sleep(2 * time.Second)
			<-c.Done()
			if !errors.Is(c.Err(), ErrNoHello) {
				t.Fatalf("Err = %v, want ErrNoHello", c.Err())
			}
		})
	})
	t.Run("wrong-first-frame", func(t *testing.T) {
		a, b := net.Pipe()
		defer b.Close()
		h := newEcho()
		c := NewConn(a, Options{Logger: quiet, HelloTimeout: time.Minute, Handler: h})
		go b.Write(mustFrame(t, &vote))
		<-c.Done()
		if !errors.Is(c.Err(), ErrNoHello) || h.count(wire.TypeVote) != 0 {
			t.Fatalf("Err = %v, votes handled %d", c.Err(), h.count(wire.TypeVote))
		}
	})
	t.Run("hello-then-frames", func(t *testing.T) {
		a, b := net.Pipe()
		h := newEcho()
		c := NewConn(a, Options{Logger: quiet, HelloTimeout: time.Minute, Handler: h})
		var in []byte
		in = append(in, mustFrame(t, &wire.Hello{Role: wire.RoleParticipant, Name: []byte("bank-7")})...)
		in = append(in, mustFrame(t, &vote)...)
		in = append(in, mustFrame(t, &wire.Hello{Role: wire.RoleParticipant, Name: []byte("again")})...)
		go func() { b.Write(in); b.Close() }()
		<-c.Done()
		if role, name := c.Hello(); role != wire.RoleParticipant || name != "bank-7" {
			t.Errorf("Hello() = %v, %q", role, name)
		}
		if h.count(wire.TypeHello) != 1 || h.count(wire.TypeVote) != 1 {
			t.Errorf("handled %v", h.seen)
		}
		// A second Hello is a protocol violation.
		if !errors.Is(c.Err(), wire.ErrMalformed) {
			t.Errorf("Err = %v, want ErrMalformed", c.Err())
		}
	})
}

// TestPendingCallsFailOnClose: every call in flight fails with the
// connection's error, whichever side closes.
func TestPendingCallsFailOnClose(t *testing.T) {
	for _, side := range []string{"remote", "local"} {
		a, b := net.Pipe()
		h := newEcho()
		h.hold = true
		srv := NewConn(b, Options{Logger: quiet, Handler: h})
		c := NewConn(a, Options{Logger: quiet})
		const n = 10
		errs := make(chan error, n)
		for i := range n {
			go func() {
				_, err := c.Call(context.Background(), &wire.Begin{Txn: txnOf(i)}, nil)
				errs <- err
			}()
		}
		waitFor(t, "calls in flight", func() bool { return h.count(wire.TypeBegin) == n })
		if got := c.Stats().InFlight; got != n {
			t.Fatalf("InFlight = %d", got)
		}
		want := io.EOF
		if side == "remote" {
			srv.Close()
		} else {
			c.Close()
			want = ErrClosed
		}
		for range n {
			if err := <-errs; !errors.Is(err, want) {
				t.Errorf("%s close: call err %v, want %v", side, err, want)
			}
		}
		<-c.Done()
		if _, err := c.Call(context.Background(), &wire.Begin{Txn: txnOf(1)}, nil); !errors.Is(err, want) {
			t.Errorf("call after close: %v", err)
		}
		if c.Stats().InFlight != 0 {
			t.Errorf("InFlight after close = %d", c.Stats().InFlight)
		}
		closeConn(srv)
		closeConn(c)
	}
}

// TestConcurrentCalls: 1,000 callers over one connection each get their
// own reply, and the replies go out coalesced.
func TestConcurrentCalls(t *testing.T) {
	h := newEcho()
	srv, c, _ := loopback(t, h, ServerOptions{}, Options{})
	const n = 1000
	var wg sync.WaitGroup
	var failed atomic.Int32
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			f, err := c.Call(context.Background(), &wire.Begin{Txn: txnOf(i), Branches: []wire.Branch{{Participant: []byte("p")}}}, nil)
			var o wire.Outcome
			if err == nil {
				err = o.Decode(f)
			}
			if err != nil || o.Txn != txnOf(i) || o.Outcome != protocol.OutcomeCommitted {
				failed.Add(1)
				t.Errorf("call %d: %v, outcome %+v", i, err, o)
			}
		})
	}
	close(start)
	wg.Wait()
	if failed.Load() != 0 {
		return
	}
	st := c.Stats()
	if st.FramesReceived != n || st.InFlight != 0 || st.UnknownReplies != 0 {
		t.Errorf("client stats %+v", st)
	}
	if st.Writes >= st.FramesSent {
		t.Logf("no coalescing observed: %d writes for %d frames", st.Writes, st.FramesSent)
	}
	if srv.Stats().Open != 1 {
		t.Errorf("server stats %+v", srv.Stats())
	}
}

// TestInFlightBound: with MaxInFlight calls waiting, the next call blocks
// until its context ends; the held calls complete when answered; a reply
// for no pending call is counted and ignored.
func TestInFlightBound(t *testing.T) {
	a, b := net.Pipe()
	h := newEcho()
	h.hold = true
	srv := NewConn(b, Options{Logger: quiet, Handler: h})
	c := NewConn(a, Options{Logger: quiet, MaxInFlight: 4})
	defer closeConn(srv)
	defer closeConn(c)
	errs := make(chan error, 4)
	for i := range 4 {
		go func() {
			_, err := c.Call(context.Background(), &wire.Begin{Txn: txnOf(i)}, nil)
			errs <- err
		}()
	}
	waitFor(t, "held calls", func() bool { return h.count(wire.TypeBegin) == 4 })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, err := c.Call(ctx, &wire.Begin{Txn: txnOf(5)}, nil)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || h.count(wire.TypeBegin) != 4 {
		t.Fatalf("fifth call: %v, server saw %d begins", err, h.count(wire.TypeBegin))
	}
	if err := srv.Reply(999, &wire.Outcome{Outcome: protocol.OutcomeAborted}); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	held := append([]uint64(nil), h.held...)
	h.mu.Unlock()
	for _, id := range held {
		if err := srv.Reply(id, &wire.Outcome{Outcome: protocol.OutcomeCommitted}); err != nil {
			t.Fatal(err)
		}
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Errorf("held call: %v", err)
		}
	}
	waitFor(t, "unknown reply counted", func() bool { return c.Stats().UnknownReplies == 1 })
	if c.Err() != nil {
		t.Fatalf("connection failed: %v", c.Err())
	}
}

// TestCancelledCallReplyIgnored: a call whose context ends returns at
// once; its late reply is counted as unknown and the connection survives.
func TestCancelledCallReplyIgnored(t *testing.T) {
	a, b := net.Pipe()
	h := newEcho()
	h.hold = true
	srv := NewConn(b, Options{Logger: quiet, Handler: h})
	c := NewConn(a, Options{Logger: quiet})
	defer closeConn(srv)
	defer closeConn(c)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := c.Call(ctx, &wire.Begin{Txn: txnOf(1)}, nil)
		done <- err
	}()
	waitFor(t, "begin", func() bool { return h.count(wire.TypeBegin) == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if err := srv.Reply(h.held[0], &wire.Outcome{Outcome: protocol.OutcomeCommitted}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "unknown reply", func() bool { return c.Stats().UnknownReplies == 1 })
	h.mu.Lock()
	h.hold = false
	h.mu.Unlock()
	if _, err := c.Call(context.Background(), &wire.Begin{Txn: txnOf(2)}, nil); err != nil {
		t.Fatalf("next call: %v", err)
	}
}

// TestRequestErrorFailsOnlyThatRequest: an Error reply is a *RemoteError
// for its call alone.
func TestRequestErrorFailsOnlyThatRequest(t *testing.T) {
	_, c, _ := loopback(t, newEcho(), ServerOptions{}, Options{})
	bad := txnOf(1)
	bad[0] = 0xee
	_, err := c.Call(context.Background(), &wire.Begin{Txn: bad}, nil)
	var re *RemoteError
	if !errors.As(err, &re) || re.Code != wire.CodeUnavailable || re.Message != "try later" {
		t.Fatalf("err = %v, want RemoteError unavailable", err)
	}
	buf := make([]byte, 0, 128)
	f, err := c.Call(context.Background(), &wire.Begin{Txn: txnOf(2)}, buf)
	if err != nil || f.Type != wire.TypeOutcome {
		t.Fatalf("next call: %v %v", f.Type, err)
	}
	if &f.Payload[:1][0] != &buf[:1][0] {
		t.Errorf("reply not copied into the caller's buffer")
	}
	// A request that breaks a wire limit is refused locally; the
	// connection is unaffected.
	_, err = c.Call(context.Background(), &wire.Begin{Txn: txnOf(3), Branches: make([]wire.Branch, 11)}, nil)
	if !errors.Is(err, wire.ErrMalformed) || c.Err() != nil || c.Stats().InFlight != 0 {
		t.Fatalf("11 branches: %v; conn %v", err, c.Err())
	}
}

// TestMalformedFrameClosesConnection: a frame that fails wire.Check closes
// the connection, and the reason is logged.
func TestMalformedFrameClosesConnection(t *testing.T) {
	badVote := mustFrame(t, &vote)
	badVote[wire.HeaderSize+16] = 9 // vote 9: the header is fine, the payload not
	oversized := binary.BigEndian.AppendUint32(nil, 1<<30)
	wrongVersion := mustFrame(t, &vote)
	wrongVersion[4] = 2
	cases := map[string][]byte{
		"payload":   badVote,
		"oversized": append(oversized, make([]byte, 12)...),
		"version":   wrongVersion,
		"garbage":   []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
	}
	for name, bad := range cases {
		var logs logBuffer
		h := newEcho()
		_, _, addr := loopback(t, h, ServerOptions{Conn: Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))}}, Options{})
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		hello := mustFrame(t, &wire.Hello{Role: wire.RoleParticipant, Name: []byte("evil")})
		if _, err := nc.Write(append(hello, bad...)); err != nil {
			t.Fatal(err)
		}
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := nc.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("%s: read %d, %v; want EOF", name, n, err)
		}
		nc.Close()
		waitFor(t, "log", func() bool { return strings.Contains(logs.String(), "connection failed") })
		if !strings.Contains(logs.String(), "wire:") || h.count(wire.TypeVote) != 0 {
			t.Errorf("%s: log %q, votes %d", name, logs.String(), h.count(wire.TypeVote))
		}
	}
}

// TestStream: a reply in several frames reaches Stream chunk by chunk;
// Call refuses it.
func TestStream(t *testing.T) {
	h := HandlerFunc(func(c *Conn, f wire.Frame) error {
		if f.Type != wire.TypeAdminRequest {
			return nil
		}
		for i, chunk := range []string{`[1,`, `2,`, `3]`} {
			if err := c.Reply(f.ReqID, &wire.AdminResponse{More: i < 2, JSON: []byte(chunk)}); err != nil {
				return err
			}
		}
		return nil
	})
	_, c, _ := loopbackAs(t, wire.RoleAdmin, h, ServerOptions{}, Options{})
	var got []byte
	err := c.Stream(context.Background(), &wire.AdminRequest{Kind: wire.AdminOutcomes}, func(f wire.Frame) error {
		var r wire.AdminResponse
		if err := r.Decode(f); err != nil {
			return err
		}
		got = append(got, r.JSON...)
		return nil
	})
	if err != nil || string(got) != "[1,2,3]" {
		t.Fatalf("Stream: %q, %v", got, err)
	}
	if _, err := c.Call(context.Background(), &wire.AdminRequest{Kind: wire.AdminOutcomes}, nil); err == nil || !strings.Contains(err.Error(), "use Stream") {
		t.Fatalf("Call of a streamed reply: %v", err)
	}
	waitFor(t, "left-over chunks", func() bool { return c.Stats().UnknownReplies == 2 })
	if c.Err() != nil {
		t.Fatal(c.Err())
	}
}

func TestNoHandlerAnswersRequests(t *testing.T) {
	a, b := net.Pipe()
	srv := NewConn(b, Options{Logger: quiet})
	c := NewConn(a, Options{Logger: quiet})
	defer closeConn(srv)
	defer closeConn(c)
	_, err := c.Call(context.Background(), &wire.AdminRequest{Kind: wire.AdminStatus}, nil)
	var re *RemoteError
	if !errors.As(err, &re) || re.Code != wire.CodeInvalid {
		t.Fatalf("err = %v", err)
	}
	if err := c.Send(&vote); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ignored", func() bool { return srv.Stats().Ignored == 1 })
}

// TestServerMaxConns: past MaxConns clients, a client is refused after its
// Hello, with an Error frame that says why, while an admin still gets one
// of the reserved connections; past MaxConns+ReservedConns every new
// connection is refused at once, again with an Error frame, not a bare EOF.
func TestServerMaxConns(t *testing.T) {
	h := newEcho()
	var logs syncBuffer
	srv, _, addr := loopback(t, h, ServerOptions{MaxConns: 1, ReservedConns: 1,
		Conn: Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))}}, Options{})
	refused := func(hello wire.Role) string {
		t.Helper()
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		b, _ := wire.AppendFrame(nil, 0, &wire.Hello{Role: hello})
		if _, err := nc.Write(b); err != nil {
			t.Fatal(err)
		}
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		f, err := wire.NewReader(nc, 0).Next()
		var e wire.Error
		if err != nil || f.Type != wire.TypeError || f.ReqID != 0 || e.Decode(f) != nil || e.Code != wire.CodeRefused {
			t.Fatalf("a %v beyond the bound: %v %v, want a refusal", hello, f.Type, err)
		}
		return string(e.Message)
	}
	waitFor(t, "the first client's hello", func() bool { return srv.Stats().Clients == 1 })
	if why := refused(wire.RoleClient); !strings.Contains(why, "1 client connections") {
		t.Fatalf("second client refused with %q", why)
	}
	// A refused connection holds its slot until it has lingered.
	waitFor(t, "the refused client gone", func() bool { return srv.Stats().Open == 1 })
	admin, _ := nodeConn(t, addr, wire.RoleAdmin)
	waitFor(t, "the admin's connection", func() bool { return srv.Stats().Open == 2 })
	if admin.Err() != nil {
		t.Fatal(admin.Err())
	}
	if why := refused(wire.RoleAdmin); !strings.Contains(why, "2 connections open") {
		t.Fatalf("a connection beyond every bound refused with %q", why)
	}
	if st := srv.Stats(); st.Rejected != 2 || st.Open != 2 || st.Clients != 1 {
		t.Fatalf("stats %+v", st)
	}
	waitFor(t, "the refusals logged", func() bool { return strings.Contains(logs.String(), "server full") })
}

// nodeConn dials addr and says Hello as role.
func nodeConn(t testing.TB, addr string, role wire.Role) (*Conn, net.Conn) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := NewConn(nc, Options{Logger: quiet})
	t.Cleanup(func() { closeConn(c) })
	if err := c.Send(&wire.Hello{Role: role}); err != nil {
		t.Fatal(err)
	}
	return c, nc
}

// syncBuffer is a bytes.Buffer for a logger that goroutines share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestPeerReconnects: a Peer finds a restarted server again, says Hello
// first on each connection, and drops (and counts) sends in between.
func TestPeerReconnects(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	h1 := newEcho()
	s1 := NewServer(ServerOptions{Conn: Options{Handler: h1, Logger: quiet}})
	go s1.Serve(ln)

	p := NewPeer(addr, PeerOptions{
		Conn:       Options{Logger: quiet},
		Hello:      wire.Hello{Role: wire.RoleParticipant, Name: []byte("bank-1")},
		Conns:      2,
		BackoffMin: 5 * time.Millisecond,
		BackoffMax: 50 * time.Millisecond,
	})
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	waitFor(t, "two connections", func() bool { return p.Stats().Connected == 2 })
	for range 10 {
		if err := p.Send(&vote); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "votes at s1", func() bool { return h1.count(wire.TypeVote) == 10 })
	if h1.count(wire.TypeHello) != 2 || h1.hellos[0] != "bank-1" {
		t.Fatalf("hellos %v", h1.hellos)
	}

	s1.Close()
	waitFor(t, "disconnect", func() bool { return p.Stats().Connected == 0 })
	if err := p.Send(&vote); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("send while down: %v", err)
	}
	if _, err := p.Call(ctx, &wire.Begin{Txn: txnOf(1)}, nil); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("call while down: %v", err)
	}
	if p.Stats().Dropped != 1 {
		t.Fatalf("stats %+v", p.Stats())
	}

	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	h2 := newEcho()
	s2 := NewServer(ServerOptions{Conn: Options{Handler: h2, Logger: quiet}})
	defer s2.Close()
	go s2.Serve(ln2)
	if err := p.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Send(&vote); err != nil {
		t.Fatalf("send after restart: %v", err)
	}
	waitFor(t, "a vote at s2", func() bool { return h2.count(wire.TypeVote) == 1 })
	if h2.count(wire.TypeHello) < 1 || h2.hellos[0] != "bank-1" {
		t.Fatalf("no hello on the new connection: %v", h2.hellos)
	}
	if st := p.Stats(); st.Connections < 3 {
		t.Fatalf("stats %+v", st)
	}
}

// TestPeerSendVia: frames sent via one slot all go over one connection
// (a burst is coalesced), another slot uses the other connection, and a
// slot with no live connection falls back to one that is.
func TestPeerSendVia(t *testing.T) {
	h := newEcho()
	srv := NewServer(ServerOptions{Conn: Options{Handler: h, Logger: quiet}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	p := NewPeer(ln.Addr().String(), PeerOptions{Conn: Options{Logger: quiet}, Conns: 2,
		Hello: wire.Hello{Role: wire.RoleParticipant, Name: []byte("bank-1")}})
	defer p.Close()
	waitFor(t, "two connections", func() bool { return p.Stats().Connected == 2 })
	for range 20 {
		if err := p.SendVia(1, &vote); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.SendVia(2, &vote); err != nil { // slot 2 is slot 0
		t.Fatal(err)
	}
	waitFor(t, "votes", func() bool { return h.count(wire.TypeVote) == 21 })
	c0, c1 := p.conns[0].Load(), p.conns[1].Load()
	if s0, s1 := c0.Stats().FramesSent, c1.Stats().FramesSent; s0 != 2 || s1 != 21 {
		t.Fatalf("frames sent per connection: %d and %d, want 2 and 21 (hello included)", s0, s1)
	}
	c1.Close()
	<-c1.Done()
	for p.conns[1].Load() == c1 {
		time.Sleep(time.Millisecond)
	}
	if err := p.SendVia(1, &vote); err != nil && p.Stats().Connected > 0 {
		t.Fatalf("fallback: %v", err)
	}
}

// TestSendDoesNotAllocate: the one-way send path allocates nothing, with
// the message built on the stack each time.
func TestSendDoesNotAllocate(t *testing.T) {
	h := newEcho()
	_, c, _ := loopbackAs(t, wire.RoleParticipant, h, ServerOptions{}, Options{})
	from := []byte("bank-1")
	i := 0
	allocs := testing.AllocsPerRun(10000, func() {
		i++
		v := wire.Vote{Txn: txnOf(i), From: from, Vote: protocol.VoteYes}
		if err := c.Send(&v); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Send: %v allocs per call", allocs)
	}
	waitFor(t, "votes delivered", func() bool { return h.count(wire.TypeVote) == 10001 })
}

// TestCallAllocations: a Call that reuses its reply buffer allocates at
// most once (the request id's map entry may grow the table).
func TestCallAllocations(t *testing.T) {
	_, c, _ := loopback(t, newEcho(), ServerOptions{}, Options{})
	buf := make([]byte, 0, 256)
	ctx := context.Background()
	allocs := testing.AllocsPerRun(2000, func() {
		b := wire.Begin{Txn: txnOf(1)}
		f, err := c.Call(ctx, &b, buf)
		if err != nil {
			t.Fatal(err)
		}
		buf = f.Payload[:0]
	})
	t.Logf("Call: %v allocs per round trip (client, server and both connections' goroutines)", allocs)
	if allocs > 1 {
		t.Errorf("Call: %v allocs per round trip", allocs)
	}
}

// window bounds the frames BenchmarkSend keeps in flight.
const window = 20000

// BenchmarkSend measures one-way messages per second over loopback TCP,
// with and without coalescing (-coalesce=false in the bench tool).
func BenchmarkSend(b *testing.B) {
	for _, mode := range []struct {
		name       string
		noCoalesce bool
	}{{"coalesce", false}, {"no-coalesce", true}} {
		b.Run(mode.name, func(b *testing.B) {
			var got atomic.Int64
			h := HandlerFunc(func(c *Conn, f wire.Frame) error { got.Add(1); return nil })
			_, c, _ := loopbackAs(b, wire.RoleParticipant, h, ServerOptions{}, Options{NoCoalesce: mode.noCoalesce})
			got.Store(-1) // the Hello
			b.ReportAllocs()
			b.ResetTimer()
			var n int64
			for b.Loop() {
				if err := c.Send(&vote); err != nil {
					b.Fatal(err)
				}
				n++
				// Send never blocks, and a writer that falls MaxPendingBytes
				// behind is cut off: keep at most a window of frames
				// unreceived, as a real sender's in-flight bound does.
				if n%1024 == 0 {
					for n-got.Load() > window {
						time.Sleep(20 * time.Microsecond)
					}
				}
			}
			for got.Load() < n {
				time.Sleep(50 * time.Microsecond)
			}
			b.StopTimer()
			st := c.Stats()
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
			b.ReportMetric(float64(st.FramesSent)/float64(max(st.Writes, 1)), "frames/write")
		})
	}
}

// BenchmarkCall measures request/response round trips per second over one
// loopback connection with many concurrent callers.
func BenchmarkCall(b *testing.B) {
	_, c, _ := loopback(b, newEcho(), ServerOptions{}, Options{})
	b.SetParallelism(64)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 0, 128)
		for pb.Next() {
			req := wire.Begin{Txn: txnOf(1)}
			f, err := c.Call(context.Background(), &req, buf)
			if err != nil {
				b.Fatal(err)
			}
			buf = f.Payload[:0]
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
	st := c.Stats()
	b.ReportMetric(float64(st.FramesSent)/float64(max(st.Writes, 1)), "frames/write")
}

// readRefusal reads from nc until the connection-level Error frame that
// the server closes with, and returns it; it fails the test if the
// connection ends without one, or nothing comes within 10 s.
func readRefusal(t *testing.T, nc net.Conn) wire.Error {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := wire.NewReader(nc, 0)
	for {
		f, err := r.Next()
		if err != nil {
			t.Fatalf("connection ended without an error frame: %v", err)
		}
		if f.Type == wire.TypeError && f.ReqID == 0 {
			var e wire.Error
			if err := e.Decode(f); err != nil {
				t.Fatal(err)
			}
			e.Message = bytes.Clone(e.Message)
			if _, err := r.Next(); err != io.EOF {
				t.Fatalf("after the error frame: %v, want the connection closed", err)
			}
			return e
		}
	}
}

// TestRoleTable: on an accepted connection each request and one-way
// message is taken only from the role that sends it (wire.Sender); from any
// other role it is refused — an Error frame (refused), the connection
// closed, the refusal logged — and the handler never sees it.
func TestRoleTable(t *testing.T) {
	msgs := []struct {
		reqID uint64
		m     wire.Message
	}{
		{1, &wire.Begin{Txn: txnOf(1)}},
		{0, &wire.Prepare{Txn: txnOf(1), OnePhase: true, Work: []byte("+1000000")}},
		{0, &wire.Decision{Txn: txnOf(1), Decision: protocol.DecisionCommit}},
		{0, &vote},
		{0, &wire.Ack{Txn: txnOf(1), From: []byte("bank-1")}},
		{0, &wire.Inquire{Txn: txnOf(1), From: []byte("bank-1")}},
		{1, &wire.AdminRequest{Kind: wire.AdminStatus}},
	}
	var logs syncBuffer
	h := newEcho()
	srv := NewServer(ServerOptions{Conn: Options{Handler: h, Logger: slog.New(slog.NewTextHandler(&logs, nil))}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	for role := wire.RoleClient; role <= wire.RoleAdmin; role++ {
		for _, m := range msgs {
			if wire.Sender(m.m.Type()) == role {
				continue
			}
			t.Run(fmt.Sprintf("%v-sends-%v", role, m.m.Type()), func(t *testing.T) {
				nc, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer nc.Close()
				b, _ := wire.AppendFrame(nil, 0, &wire.Hello{Role: role, Name: []byte("x")})
				b, _ = wire.AppendFrame(b, m.reqID, m.m)
				if _, err := nc.Write(b); err != nil {
					t.Fatal(err)
				}
				e := readRefusal(t, nc)
				if e.Code != wire.CodeRefused || !strings.Contains(string(e.Message), "may not send "+m.m.Type().String()) {
					t.Fatalf("refusal %v %q", e.Code, e.Message)
				}
				if n := h.count(m.m.Type()); n != 0 {
					t.Fatalf("the handler saw %d %v frames", n, m.m.Type())
				}
			})
		}
	}
	if !strings.Contains(logs.String(), "may not send") {
		t.Fatalf("no refusal logged:\n%s", logs.String())
	}
}

// TestHalfFrameIsCutOff: a peer that says Hello and then sends half a
// frame is cut off after FrameTimeout instead of holding its connection
// (and its slot) forever.
func TestHalfFrameIsCutOff(t *testing.T) {
	const timeout = 200 * time.Millisecond
	srv, _, addr := loopback(t, newEcho(), ServerOptions{Conn: Options{FrameTimeout: timeout}}, Options{})
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	b, _ := wire.AppendFrame(nil, 0, &wire.Hello{Role: wire.RoleClient})
	begin, _ := wire.AppendFrame(nil, 1, &wire.Begin{Txn: txnOf(1)})
	start := time.Now()
	if _, err := nc.Write(append(b, begin[:len(begin)/2]...)); err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, nc); err != nil {
		t.Fatalf("the half-frame connection: %v, want it closed", err)
	}
	if d := time.Since(start); d < timeout*7/8 || d > 5*time.Second {
		t.Fatalf("closed after %v, want about %v", d, timeout)
	}
	waitFor(t, "the connection forgotten", func() bool { return srv.Stats().Open == 1 })
}

// TestIdleTimeoutSparesProtocolConnections: an accepted client connection
// that sends nothing for IdleTimeout is closed with an Error frame that says
// so; a participant's connection, idle as long, is not.
func TestIdleTimeoutSparesProtocolConnections(t *testing.T) {
	const idle = 150 * time.Millisecond
	h := newEcho()
	srv, _, addr := loopback(t, h, ServerOptions{Conn: Options{IdleTimeout: idle}}, Options{})
	part, _ := nodeConn(t, addr, wire.RoleParticipant)
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	b, _ := wire.AppendFrame(nil, 0, &wire.Hello{Role: wire.RoleClient})
	if _, err := nc.Write(b); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	e := readRefusal(t, nc)
	if e.Code != wire.CodeUnavailable || !strings.Contains(string(e.Message), "idle") {
		t.Fatalf("idle client closed with %v %q", e.Code, e.Message)
	}
	if d := time.Since(start); d < idle*7/8 {
		t.Fatalf("closed after %v, before the idle timeout %v", d, idle)
	}
	time.Sleep(2 * idle)
	if err := part.Err(); err != nil {
		t.Fatalf("the participant's idle connection failed: %v", err)
	}
	if err := part.Send(&vote); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the participant's vote", func() bool { return h.count(wire.TypeVote) == 1 })
	_ = srv
}

// TestPeerUsesOnlyAnsweredConnections: a Peer with a Check asks for the
// far side's Hello and publishes a connection only once it has come and
// passed the Check. A server that refuses the Peer's Hello, or answers as
// someone the Check does not want, never gets a message on it, and the
// Peer says why in Stats.LastError.
func TestPeerUsesOnlyAnsweredConnections(t *testing.T) {
	start := func(answer wire.Hello, h Handler) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := NewServer(ServerOptions{Conn: Options{Handler: h, Logger: quiet, Answer: answer}})
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		return ln.Addr().String()
	}
	want := wire.Hello{Role: wire.RoleParticipant, Name: []byte("bank-1")}
	check := func(h wire.Hello) error {
		if h.Role != want.Role || string(h.Name) != string(want.Name) {
			return errors.New("not bank-1")
		}
		return nil
	}
	refusing := HandlerFunc(func(c *Conn, f wire.Frame) error {
		if f.Type == wire.TypeHello {
			return Refuse("this is bank-2")
		}
		return nil
	})
	for _, tc := range []struct {
		name string
		addr string
		err  string
	}{
		{"refused", start(want, refusing), "this is bank-2"},
		{"answered by another", start(wire.Hello{Role: wire.RoleParticipant, Name: []byte("bank-2")}, newEcho()), `answered as participant "bank-2": not bank-1`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := NewPeer(tc.addr, PeerOptions{Conn: Options{Logger: quiet}, Check: check, BackoffMin: 5 * time.Millisecond,
				Hello: wire.Hello{Role: wire.RoleCoordinator, Name: []byte("bank-1")}})
			defer p.Close()
			waitFor(t, "a failed attempt", func() bool { return strings.Contains(p.Stats().LastError, tc.err) })
			if st := p.Stats(); st.Connected != 0 || st.Connections != 0 {
				t.Fatalf("stats %+v, want no connection used", st)
			}
			if err := p.Send(&vote); !errors.Is(err, ErrNotConnected) {
				t.Fatalf("send: %v, want ErrNotConnected", err)
			}
		})
	}
	h := newEcho()
	p := NewPeer(start(want, h), PeerOptions{Conn: Options{Logger: quiet}, Check: check,
		Hello: wire.Hello{Role: wire.RoleCoordinator, Name: []byte("bank-1")}})
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Send(&wire.Decision{Txn: txnOf(1), Decision: protocol.DecisionAbort}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the decision", func() bool { return h.count(wire.TypeDecision) == 1 })
}

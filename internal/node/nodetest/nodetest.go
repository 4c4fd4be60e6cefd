package nodetest

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/net/wire"
)

// Quiet is a logger that drops everything: a test's servers log every
// connection they lose, which is noise when the test closes them on purpose.
func Quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// Peer is the far side of the server under test: it accepts the server's
// connections and hands every frame on them to its handler, and keeps a
// connection of its own to the server (Connect), on which Send sends.
type Peer struct {
	ln    net.Listener // immutable
	srv   *mux.Server  // immutable
	hello wire.Hello   // immutable: sent first on every connection it dials

	mu  sync.Mutex
	out *mux.Peer // to the server; replaced by Connect, guarded by mu
}

// Listen starts a Peer on a loopback port; handler runs on the reader
// goroutine of each accepted connection (see mux.Handler). hello is what
// the Peer's own connections introduce themselves with. Test cleanup closes
// the Peer.
func Listen(t testing.TB, hello wire.Hello, handler mux.HandlerFunc) *Peer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Peer{ln: ln, hello: hello}
	p.srv = mux.NewServer(mux.ServerOptions{Conn: mux.Options{Handler: handler, Logger: Quiet(), Answer: hello}})
	go p.srv.Serve(ln)
	t.Cleanup(func() {
		p.srv.Close()
		p.mu.Lock()
		if p.out != nil {
			p.out.Close()
		}
		p.mu.Unlock()
	})
	return p
}

// Addr is where the Peer accepts the server's connections.
func (p *Peer) Addr() string { return p.ln.Addr().String() }

// Connect points the Peer's own connection at the server at addr (a
// restarted server may listen elsewhere) and waits until it is up.
func (p *Peer) Connect(t testing.TB, addr string) {
	t.Helper()
	out := mux.NewPeer(addr, mux.PeerOptions{Conn: mux.Options{Logger: Quiet()}, Hello: p.hello})
	p.mu.Lock()
	old := p.out
	p.out = out
	p.mu.Unlock()
	if old != nil {
		old.Close()
	}
	waitConnected(t, out)
}

// Send sends m to the server on the Peer's own connection. Like a real
// node, it drops m (and says so) when that connection is down or was never
// made: the protocol copes with lost messages.
func (p *Peer) Send(m wire.Message) error {
	p.mu.Lock()
	out := p.out
	p.mu.Unlock()
	if out == nil {
		return mux.ErrNotConnected
	}
	return out.Send(m)
}

// Admin dials addr as an admin tool (a raw connection, for requests the
// client package would not send) and closes it at test cleanup.
func Admin(t testing.TB, addr string) *mux.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := mux.NewConn(nc, mux.Options{Logger: Quiet()})
	t.Cleanup(func() { c.Close() })
	if err := c.Send(&wire.Hello{Role: wire.RoleAdmin}); err != nil {
		t.Fatal(err)
	}
	return c
}

// Eventually polls cond every few milliseconds and fails the test if it is
// not true within 10 s; what says what was awaited.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	EventuallyWithin(t, 10*time.Second, what, cond)
}

// EventuallyWithin is Eventually with a deadline of d, for a condition
// that waits on something slower than a round trip (a redial's backoff).
func EventuallyWithin(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Logs is a logger's output kept for a test to read: servers log
// refusals, and a test checks that they did.
type Logs struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Logger returns a logger that writes into l at every level.
func (l *Logs) Logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Write implements io.Writer for the logger.
func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything logged so far.
func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Refused dials addr, sends hello and then each of msgs (a request with
// request id 1), and returns the Error frame with request id 0 that the
// server must close the connection with. It fails the test if the
// connection ends without one, stays open after it, or nothing comes
// within 10 s — so a test of a refusal fails, not hangs, on a server that
// obeys instead.
func Refused(t testing.TB, addr string, hello wire.Hello, msgs ...wire.Message) wire.Error {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return RefusedOn(t, nc, hello, msgs...)
}

// RefusedOn is Refused on a connection the test has made (over TLS, say);
// it closes nc.
func RefusedOn(t testing.TB, nc net.Conn, hello wire.Hello, msgs ...wire.Message) wire.Error {
	t.Helper()
	defer nc.Close()
	b, err := wire.AppendFrame(nil, 0, &hello)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		var id uint64
		if m.Type().IsRequest() {
			id = 1
		}
		if b, err = wire.AppendFrame(b, id, m); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := nc.Write(b); err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := wire.NewReader(nc, 0)
	for {
		f, err := r.Next()
		if err != nil {
			t.Fatalf("hello %v %q: the connection ended without an error frame: %v", hello.Role, hello.Name, err)
		}
		if f.Type != wire.TypeError || f.ReqID != 0 {
			continue
		}
		var e wire.Error
		if err := e.Decode(f); err != nil {
			t.Fatal(err)
		}
		e.Message = bytes.Clone(e.Message)
		if _, err := r.Next(); err != io.EOF {
			t.Fatalf("hello %v %q: after the error frame %q: %v, want the connection closed", hello.Role, hello.Name, e.Message, err)
		}
		return e
	}
}

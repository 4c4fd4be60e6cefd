package nodetest

import (
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
	p.srv = mux.NewServer(mux.ServerOptions{Conn: mux.Options{Handler: handler, Logger: Quiet()}})
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
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

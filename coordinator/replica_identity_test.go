package coordinator_test

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/commitd/commitd/net/wire"
)

// TestReplicaIdentity: with ReplicaIdentity (--replica-identity) a
// replica admits another only with a certificate valid for that identity
// — one valid merely for the host of its --peers address, which the
// default accepts, is refused — and dials the other replicas only when
// their certificates carry it: a stranger at a peer's address with a
// certificate for that address gets no Hello.
func TestReplicaIdentity(t *testing.T) {
	ca := nodetest.NewCA(t)
	const identity = "replica.test"
	addrs := map[uint64]string{1: nodetest.FreeAddr(t), 2: nodetest.FreeAddr(t), 3: nodetest.FreeAddr(t)}
	// Replica 1 alone: the others are a stranger and a true replica
	// played by the test.
	stranger := tlsListen(t, addrs[2], ca.Config(t, "stranger"))
	peer := tlsListen(t, addrs[3], ca.Config(t, "r3", identity))
	c, err := coordinator.Start(coordinator.Config{
		ID: 1, Peers: addrs, Listen: addrs[1], DataDir: filepath.Join(t.TempDir(), "c1"),
		Participants: map[string]string{"p1": "127.0.0.1:1"}, SegmentBytes: 1 << 20,
		TLS: ca.Config(t, "r1", identity), ReplicaIdentity: identity, Logger: nodetest.Quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })

	heartbeat, err := proto.Marshal(&pb.Message{Type: pb.MsgHeartbeat.Enum(), From: proto.Uint64(2), To: proto.Uint64(1), Term: proto.Uint64(1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("dialing in", func(t *testing.T) {
		nc, err := tls.Dial("tcp", addrs[1], ca.Config(t, "r2"))
		if err != nil {
			t.Fatal(err)
		}
		e := nodetest.RefusedOn(t, nc, wire.Hello{Role: wire.RoleReplica, Name: []byte("2")}, &wire.Raft{Msg: heartbeat})
		if want := "replica 2 not accepted: certificate for r2, 127.0.0.1; want one for " + identity; e.Code != wire.CodeRefused || string(e.Message) != want {
			t.Errorf("a replica with a certificate for its address only: refused with %v %q, want %q", e.Code, e.Message, want)
		}
		nc, err = tls.Dial("tcp", addrs[1], ca.Config(t, "r2", identity))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		b, _ := wire.AppendFrame(nil, 0, &wire.Hello{Role: wire.RoleReplica, Name: []byte("2"), Answer: true})
		if _, err := nc.Write(b); err != nil {
			t.Fatal(err)
		}
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		f, err := wire.NewReader(nc, 0).Next()
		var h wire.Hello
		if err != nil || f.Type != wire.TypeHello || h.Decode(f) != nil || h.Role != wire.RoleCoordinator || string(h.Name) != "1" {
			t.Fatalf("a replica with the identity: %v %v, want replica 1's answering hello", f.Type, err)
		}
	})
	t.Run("dialing out", func(t *testing.T) {
		// The stranger completes the handshake and then hears nothing:
		// replica 1 closes the connection before its Hello.
		if n, err := stranger.firstRead(); n != 0 || !errors.Is(err, io.EOF) {
			t.Errorf("the stranger at replica 2's address read %d bytes (%v), want none before the close", n, err)
		}
		f, err := peer.firstFrame()
		var h wire.Hello
		// A replica's Hello names it as ID/GROUP (members.go).
		if err != nil || f.Type != wire.TypeHello || h.Decode(f) != nil || h.Role != wire.RoleReplica || !strings.HasPrefix(string(h.Name), "1/") {
			t.Fatalf("replica 3 with the identity: %v %v, want replica 1's hello", f.Type, err)
		}
	})
}

// tlsPeer is a TLS listener standing in for a replica: it takes the first
// connection that completes a handshake.
type tlsPeer struct {
	t     *testing.T
	conns chan net.Conn
}

func tlsListen(t *testing.T, addr string, cfg *tls.Config) *tlsPeer {
	ln, err := tls.Listen("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := &tlsPeer{t: t, conns: make(chan net.Conn, 1)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			if nc.(*tls.Conn).Handshake() != nil {
				nc.Close()
				continue
			}
			select {
			case p.conns <- nc:
			default:
				nc.Close()
			}
		}
	}()
	return p
}

func (p *tlsPeer) conn() net.Conn {
	select {
	case nc := <-p.conns:
		p.t.Cleanup(func() { nc.Close() })
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		return nc
	case <-time.After(10 * time.Second):
		p.t.Fatal("replica 1 did not dial within 10 s")
		return nil
	}
}

// firstRead reads what the first connection sends before it closes.
func (p *tlsPeer) firstRead() (int, error) {
	b := make([]byte, 64)
	n, err := p.conn().Read(b)
	if err != nil && strings.Contains(err.Error(), "timeout") {
		p.t.Fatal("the connection stayed open, silent, for 10 s")
	}
	return n, err
}

func (p *tlsPeer) firstFrame() (wire.Frame, error) { return wire.NewReader(p.conn(), 0).Next() }

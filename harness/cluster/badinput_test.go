package cluster_test

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"github.com/commitd/commitd/internal/node/nodetest"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/harness/cluster"
	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/protocol"
	"github.com/google/uuid"
)

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func startCluster(t *testing.T, opts cluster.Options) (*cluster.Cluster, *client.Client) {
	t.Helper()
	opts.Dir = t.TempDir()
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	c, err := cluster.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	cl, err := client.Dial(c.CoordinatorAddr, client.Options{TLS: opts.TLS})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return c, cl
}

// nextAccount spreads test transfers over distinct accounts: with no-wait
// locking, a transfer that reuses an account whose previous commit has not
// yet been applied at the participant votes no, rightly.
var nextAccount atomic.Uint32

func transferOf(from, to string, amount int64) []client.Branch {
	a := nextAccount.Add(1) % 1000
	return []client.Branch{
		{Participant: from, Work: bank.AppendWork(nil, a, -amount)},
		{Participant: to, Work: bank.AppendWork(nil, a, amount)},
	}
}

// mustCommit runs a transfer and fails the test unless it commits: the
// cluster is still serving well-behaved clients.
func mustCommit(t *testing.T, cl *client.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := cl.Run(ctx, uuid.Must(uuid.NewV7()), transferOf("p1", "p2", 1))
	if err != nil || res.Outcome != client.Committed {
		t.Fatalf("a well-formed transfer did not commit: %v %v", res, err)
	}
}

func TestRejectedRequests(t *testing.T) {
	_, cl := startCluster(t, cluster.Options{})
	ctx := context.Background()
	eleven := make([]client.Branch, 11)
	for i := range eleven {
		eleven[i] = client.Branch{Participant: "p1", Work: bank.AppendWork(nil, uint32(i), 0)}
	}
	dupID := uuid.Must(uuid.NewV7())
	if res, err := cl.Run(ctx, dupID, transferOf("p1", "p2", 1)); err != nil || res.Outcome != client.Committed {
		t.Fatalf("first use of the id: %v %v", res, err)
	}
	cases := []struct {
		name     string
		id       uuid.UUID
		branches []client.Branch
		want     string // in Detail
	}{
		{"unknown participant", uuid.Must(uuid.NewV7()), transferOf("p1", "nobody", 1), "unknown participant"},
		{"more than 10 branches", uuid.Must(uuid.NewV7()), eleven, "at most 10"},
		{"no branches", uuid.Must(uuid.NewV7()), nil, ""},
		{"one participant twice", uuid.Must(uuid.NewV7()), transferOf("p1", "p1", 1), ""},
		{"id already in use", dupID, transferOf("p1", "p2", 1), ""},
		{"zero id", uuid.UUID{}, transferOf("p1", "p2", 1), ""},
	}
	for _, tc := range cases {
		res, err := cl.Run(ctx, tc.id, tc.branches)
		if err != nil {
			t.Errorf("%s: error %v", tc.name, err)
			continue
		}
		if res.Outcome != client.Rejected || !strings.Contains(res.Detail, tc.want) || res.Detail == "" {
			t.Errorf("%s: got %v (detail %q), want rejected mentioning %q", tc.name, res.Outcome, res.Detail, tc.want)
		}
	}
	mustCommit(t, cl)
}

// rawConn dials addr and returns the connection, having sent a Hello.
func rawConn(t *testing.T, addr string, hello bool) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	if hello {
		b, err := wire.AppendFrame(nil, 0, &wire.Hello{Role: wire.RoleClient})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := nc.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	return nc
}

// closedByPeer reports whether the server closes nc within a few seconds.
func closedByPeer(nc net.Conn) bool {
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, nc)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return true // EOF or reset: closed
}

func header(length uint32, version, typ uint8) []byte {
	b := make([]byte, wire.HeaderSize)
	binary.BigEndian.PutUint32(b[0:], length)
	b[4] = version
	b[5] = typ
	return b
}

// TestBadFramesAtTheFrontDoor sends garbage, truncated, oversized and
// wrong-version frames to the coordinator and to a participant: each such
// connection is closed, and the cluster keeps committing.
func TestBadFramesAtTheFrontDoor(t *testing.T) {
	c, cl := startCluster(t, cluster.Options{})
	valid, err := wire.AppendFrame(nil, 1, &wire.Begin{Txn: uuid.Must(uuid.NewV7()),
		Branches: []wire.Branch{{Participant: []byte("p1"), Work: bank.AppendWork(nil, 1, 0)}}})
	if err != nil {
		t.Fatal(err)
	}
	eleven := append([]byte(nil), valid...)
	cases := []struct {
		name  string
		hello bool
		bytes []byte
		close bool // after the bytes, half-close our side (a truncated frame)
	}{
		{"garbage", false, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), false},
		{"garbage after hello", true, []byte("\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6\xf5\xf4\xf3\xf2\xf1\xf0"), false},
		{"oversized length prefix", true, header(1<<31, wire.Version, uint8(wire.TypeBegin)), false},
		{"wrong version", true, header(wire.HeaderSize, 99, uint8(wire.TypeBegin)), false},
		{"truncated frame", true, valid[:len(valid)-3], true},
		{"no hello", false, valid, false},
		{"malformed begin (branch count lies)", true, corruptBranchCount(eleven), false},
	}
	for _, addr := range []string{c.CoordinatorAddr, c.Addrs[0]} {
		for _, tc := range cases {
			nc := rawConn(t, addr, tc.hello)
			if _, err := nc.Write(tc.bytes); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if tc.close {
				nc.(*net.TCPConn).CloseWrite()
			}
			if !closedByPeer(nc) {
				t.Errorf("%s to %s: connection left open", tc.name, addr)
			}
		}
	}
	mustCommit(t, cl)
}

// corruptBranchCount rewrites a valid Begin frame so that its branch count
// says 11, which the wire refuses.
func corruptBranchCount(frame []byte) []byte {
	// Begin payload: txn (16) then the branch count byte.
	frame[wire.HeaderSize+16] = 11
	return frame
}

// TestHalfOpenFlood opens many connections that never say hello: the
// servers close them after the hello timeout and keep serving others.
func TestHalfOpenFlood(t *testing.T) {
	c, cl := startCluster(t, cluster.Options{})
	var conns []net.Conn
	for range 200 {
		nc, err := net.Dial("tcp", c.CoordinatorAddr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, nc)
	}
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	mustCommit(t, cl)
}

// TestUnknownTransactionMessages sends votes, acks and inquiries for
// transactions nobody began, as a participant would: the coordinator drops
// or answers them and its state is unchanged.
func TestUnknownTransactionMessages(t *testing.T) {
	c, cl := startCluster(t, cluster.Options{})
	nc := rawConn(t, c.CoordinatorAddr, false)
	var b []byte
	b, _ = wire.AppendFrame(b, 0, &wire.Hello{Role: wire.RoleParticipant, Name: []byte("p1")})
	for range 100 {
		id := uuid.Must(uuid.NewV7())
		b, _ = wire.AppendFrame(b, 0, &wire.Vote{Txn: id, From: []byte("p1"), Vote: protocol.VoteYes})
		b, _ = wire.AppendFrame(b, 0, &wire.Ack{Txn: id, From: []byte("p1")})
		b, _ = wire.AppendFrame(b, 0, &wire.Inquire{Txn: id, From: []byte("p2")})
		b, _ = wire.AppendFrame(b, 0, &wire.Vote{Txn: id, From: []byte("stranger"), Vote: protocol.VoteYes})
	}
	if _, err := nc.Write(b); err != nil {
		t.Fatal(err)
	}
	mustCommit(t, cl)
	// The caller has its answer; the shard publishes its figures after the
	// round that sent it, so status is read once it has settled.
	var st coordinator.Status
	nodetest.Eventually(t, "the commit counted", func() bool {
		st = coordinator.Status{}
		if err := client.Admin(context.Background(), c.CoordinatorAddr, "status", nil, &st); err != nil {
			t.Fatal(err)
		}
		return st.InFlight == 0 && st.Committed+st.Aborted+st.Unknown > 0
	})
	if st.InFlight != 0 || st.Committed != 1 {
		t.Errorf("status after junk: %+v, want 1 committed and nothing in flight", st)
	}
}

// TestMutualTLS runs a transfer over mutual TLS and checks that clients
// without a certificate from the cluster's CA (a foreign one, or plain TCP)
// cannot run transactions.
func TestMutualTLS(t *testing.T) {
	serverCfg, strangerCfg := testCerts(t)
	c, cl := startCluster(t, cluster.Options{TLS: serverCfg})
	mustCommit(t, cl)
	for _, tc := range []struct {
		name string
		cfg  *tls.Config
	}{{"foreign certificate", strangerCfg}, {"plain TCP", nil}} {
		// With TLS 1.3 the client may finish its handshake before the server
		// rejects its certificate, so Dial can succeed; the call must not.
		bad, err := client.Dial(c.CoordinatorAddr, client.Options{TLS: tc.cfg, DialTimeout: 2 * time.Second})
		if err != nil {
			continue // refused outright
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		res, err := bad.Run(ctx, uuid.Must(uuid.NewV7()), transferOf("p1", "p2", 1))
		cancel()
		bad.Close()
		if err == nil || res.Outcome == client.Committed {
			t.Errorf("%s: a transaction ran: %v %v", tc.name, res, err)
		}
	}
	mustCommit(t, cl)
}

// testCerts makes a CA and a certificate it signs for 127.0.0.1 (used by
// every server and the good client), and a stranger's certificate from a
// second CA.
func testCerts(t *testing.T) (good, stranger *tls.Config) {
	t.Helper()
	good = nodetest.NewCA(t).Config(t, "commitd node")
	stranger = nodetest.NewCA(t).Config(t, "commitd node")
	// The stranger trusts the real CA (so it would accept the server) but
	// presents a certificate the cluster does not trust.
	stranger.RootCAs = good.RootCAs
	return good, stranger
}

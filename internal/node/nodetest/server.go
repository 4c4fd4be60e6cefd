package nodetest

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/net/wire"
)

// Server is what the helpers use of a running server:
// *coordinator.Server and *participant.Server are both one.
type Server interface {
	Addr() net.Addr
	WaitConnected(ctx context.Context) error
	Done() <-chan struct{}
	Err() error
	Close() error
}

// Start starts a server with start(cfg) (coordinator.Start or
// participant.Start), closes it at test cleanup and waits until it is
// connected to its far side. It fails the test if the server does not
// start or does not connect within 5 s.
func Start[C any, S Server](t testing.TB, start func(C) (S, error), cfg C) S {
	t.Helper()
	s, err := start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	waitConnected(t, s)
	return s
}

// waitConnected waits up to 5 s for w (a server, or a Peer's own
// connection) to be connected, and fails the test if it is not.
func waitConnected(t testing.TB, w interface{ WaitConnected(context.Context) error }) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
}

// WaitFailed waits up to 10 s for s to stop by itself after a fatal error,
// and checks what Err says: it begins with name (the server's role, as
// every error it reports does) and wraps every one of causes.
func WaitFailed(t testing.TB, s Server, name string, causes ...error) {
	t.Helper()
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("the %s kept running after a fatal error", name)
	}
	err := s.Err()
	if err == nil || !strings.HasPrefix(err.Error(), name) {
		t.Fatalf("Err() = %v, want the %s's error", err, name)
	}
	for _, c := range causes {
		if !errors.Is(err, c) {
			t.Fatalf("Err() = %v, want one that wraps %v", err, c)
		}
	}
}

// Report asks the server at addr for the admin report kind ("status",
// "accounts" or "outcomes", as `commitd admin` does) and decodes it into v.
// It fails the test if the report does not arrive within 10 s.
func Report(t testing.TB, addr, kind string, v any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := client.Admin(ctx, addr, kind, nil, v); err != nil {
		t.Fatal(err)
	}
}

// RemoteError reports whether err is an error reply from the far side with
// code whose message contains text.
func RemoteError(err error, code wire.ErrorCode, text string) bool {
	var re *mux.RemoteError
	return errors.As(err, &re) && re.Code == code && strings.Contains(re.Message, text)
}

// FreeAddr returns a loopback address that nothing listens on: it was free
// a moment ago. For what a server must be told before it starts (its
// metrics address), must fail to reach, or is restarted on.
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := FreeLoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// FreeLoopbackAddr is FreeAddr for code without a testing.TB. Its port is
// drawn below Linux's ephemeral range (32768–60999): a port from that
// range, found free and let go, can be taken by any outgoing connection
// before the server binds it, and the tests running alongside open
// thousands ("bind: address already in use" in TestDiskFaults under CI).
// Ports 25430–25439 are left to the PostgreSQL test servers.
func FreeLoopbackAddr() (string, error) {
	for range 200 {
		port := 20000 + rand.IntN(12000)
		if port >= 25430 && port < 25440 {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue // taken: draw again
		}
		addr := ln.Addr().String()
		ln.Close()
		if !reservePort(port) {
			continue // handed out lately, perhaps to another test process
		}
		return addr, nil
	}
	return "", errors.New("nodetest: no free loopback port in 20000–31999 after 200 draws")
}

// portReservations is where FreeLoopbackAddr marks the ports it hands out,
// shared by every test process of the machine.
var portReservations = filepath.Join(os.TempDir(), "commitd-test-ports")

// portReservedFor is how long a port handed out stays reserved: long enough
// for the server it was drawn for to start and bind it, even a race-built
// process on a loaded machine.
const portReservedFor = 2 * time.Minute

// reservePort marks port as handed out, and reports false if another draw
// (of this process or of another test process) handed it out less than
// portReservedFor ago. Without it, two test binaries running side by side
// (go test runs packages in parallel, and CI runs them all) could each find
// the same port free and let go of it before their servers bind it: one
// server then fails to start while its test talks to the other binary's
// server of the same name at that port — a stranger that answers as its
// participant (seen: a "stopped" participant whose transactions committed).
func reservePort(port int) bool {
	if err := os.MkdirAll(portReservations, 0o777); err != nil {
		return true // no reservations possible: the draw alone
	}
	name := filepath.Join(portReservations, strconv.Itoa(port))
	for range 2 {
		f, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o666)
		if err == nil {
			f.Close()
			return true
		}
		if fi, err := os.Stat(name); err == nil {
			if time.Since(fi.ModTime()) < portReservedFor {
				return false
			}
			os.Remove(name) // stale: take it over
		}
	}
	return false
}

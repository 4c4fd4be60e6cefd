package chaos

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/participant/bank"
	"github.com/google/uuid"
)

// Bounds for TestBadInputUnderLoad.
const (
	floodConns     = 500              // half-open connections per round
	heapBound      = 512 << 20        // HeapInuse never above this
	goroutineSlack = 64               // goroutines above the baseline after the attack
	attackRounds   = 4                // rounds of every kind of bad input
	settleBound    = 15 * time.Second // for goroutines to return to the baseline
	closeBound     = 5 * time.Second  // for a server to close a bad connection
	roundBound     = 20 * time.Second // for the good clients to commit during a round
	goodCallers    = 8                // well-behaved callers
	frontAccounts  = 1000             // accounts per participant
	memSample      = 20 * time.Millisecond
)

// frameHeader returns a frame header announcing length bytes of the given
// version and type.
func frameHeader(length uint32, version, typ uint8) []byte {
	b := make([]byte, wire.HeaderSize)
	binary.BigEndian.PutUint32(b[0:], length)
	b[4] = version
	b[5] = typ
	return b
}

// helloFrame is a client's Hello.
func helloFrame(t *testing.T) []byte {
	b, err := wire.AppendFrame(nil, 0, &wire.Hello{Role: wire.RoleClient})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// badInputs returns each kind of bad input, as the bytes a connection
// sends; halfClose marks a truncated frame (the sender then stops sending).
func badInputs(t *testing.T) []struct {
	name      string
	bytes     []byte
	halfClose bool
} {
	hello := helloFrame(t)
	begin, err := wire.AppendFrame(nil, 1, &wire.Begin{Txn: uuid.Must(uuid.NewV7()),
		Branches: []wire.Branch{
			{Participant: []byte("p1"), Work: bank.AppendWork(nil, 1, -1)},
			{Participant: []byte("p2"), Work: bank.AppendWork(nil, 1, 1)},
		}})
	if err != nil {
		t.Fatal(err)
	}
	// Eleven branches: the Begin's branch count byte (after the 16-byte
	// txn) says 11, one more than the wire allows.
	eleven := append([]byte(nil), begin...)
	eleven[wire.HeaderSize+16] = 11
	cat := func(bs ...[]byte) []byte {
		var out []byte
		for _, b := range bs {
			out = append(out, b...)
		}
		return out
	}
	return []struct {
		name      string
		bytes     []byte
		halfClose bool
	}{
		{"garbage", []byte("GET / HTTP/1.1\r\nHost: commitd\r\n\r\n"), false},
		{"garbage after hello", cat(hello, []byte("\xde\xad\xbe\xef\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b")), false},
		{"truncated frame", cat(hello, begin[:len(begin)-5]), true},
		{"oversized length prefix", cat(hello, frameHeader(1<<31, wire.Version, uint8(wire.TypeBegin))), false},
		{"wrong version", cat(hello, frameHeader(wire.HeaderSize, wire.Version+1, uint8(wire.TypeBegin))), false},
		{"more than 10 branches", cat(hello, eleven), false},
	}
}

// closedByPeer reports whether the server closes nc within closeBound.
func closedByPeer(nc net.Conn) bool {
	nc.SetReadDeadline(time.Now().Add(closeBound))
	_, err := io.Copy(io.Discard, nc)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// TestBadInputUnderLoad runs well-behaved transfers continuously while
// raw connections to the coordinator and to a participant send garbage,
// truncated frames, oversized length prefixes, frames of the wrong version,
// Begins with more than 10 branches, and floods of connections that never
// say hello. Every bad connection must be closed, the servers must stay
// up, the good transfers must keep committing in every round, the heap must
// stay bounded, and once the attackers are gone the goroutine count must
// come back to where it was.
func TestBadInputUnderLoad(t *testing.T) {
	m := newMemCluster(t, 2, frontAccounts)
	l := startLoad(t, m.coordAdr, m.names, frontAccounts, goodCallers, 7)
	waitCommits(t, l, 100, roundBound)
	runtime.GC()
	baseline := runtime.NumGoroutine()

	// Sample the heap throughout.
	var peakHeap uint64
	stopSampling := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		tick := time.NewTicker(memSample)
		defer tick.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peakHeap = max(peakHeap, ms.HeapInuse)
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
		}
	}()

	targets := map[string]string{"coordinator": m.coordAdr, "participant p1": m.addrs[0]}
	inputs := badInputs(t)
	for round := range attackRounds {
		before := l.committed.Load()
		var flood []net.Conn
		for range floodConns {
			for _, addr := range targets {
				nc, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatalf("round %d: half-open flood: %v", round, err)
				}
				flood = append(flood, nc)
			}
		}
		var wg sync.WaitGroup
		for name, addr := range targets {
			for _, in := range inputs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					nc, err := net.Dial("tcp", addr)
					if err != nil {
						t.Errorf("round %d: %s to %s: %v", round, in.name, name, err)
						return
					}
					defer nc.Close()
					if _, err := nc.Write(in.bytes); err != nil {
						return // the server already closed it: fine
					}
					if in.halfClose {
						nc.(*net.TCPConn).CloseWrite()
					}
					if !closedByPeer(nc) {
						t.Errorf("round %d: %s to %s: connection left open", round, in.name, name)
					}
				}()
			}
		}
		wg.Wait()
		// The good clients commit while the flood is open.
		waitCommits(t, l, before+50, roundBound)
		for _, nc := range flood {
			nc.Close()
		}
		if err := m.coord.Err(); err != nil {
			t.Fatalf("round %d: the coordinator stopped: %v", round, err)
		}
		for i, p := range m.parts {
			if err := p.Err(); err != nil {
				t.Fatalf("round %d: participant %d stopped: %v", round, i+1, err)
			}
		}
		t.Logf("round %d: %d commits during the attack", round, l.committed.Load()-before)
	}

	// The attackers are gone: goroutines come back to the baseline.
	deadline := time.Now().Add(settleBound)
	for {
		runtime.GC()
		n := runtime.NumGoroutine()
		if n <= baseline+goroutineSlack {
			t.Logf("goroutines: %d at the start, %d after the attack", baseline, n)
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("goroutines: %d at the start, still %d %v after the attack", baseline, n, settleBound)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(stopSampling)
	sampler.Wait()
	t.Logf("peak HeapInuse %d MiB (bound %d MiB)", peakHeap>>20, heapBound>>20)
	if peakHeap > heapBound {
		t.Errorf("peak HeapInuse %d MiB over the bound of %d MiB", peakHeap>>20, heapBound>>20)
	}

	acks := l.end()
	if !m.waitQuiet(30 * time.Second) {
		t.Error("still in doubt 30s after the load")
	}
	probes := 5
	ok := probeCommits(t, m.coordAdr, m.names, frontAccounts, probes)
	m.waitQuiet(10 * time.Second)
	checkHistory(t, m.history(acks, probes, ok))
}

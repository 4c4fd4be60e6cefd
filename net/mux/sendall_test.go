package mux

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/protocol"
)

// sendAllBatch is a pump round's worth of frames for one participant:
// prepares and decisions, as the coordinator sends them.
func sendAllBatch() []wire.Message {
	ms := make([]wire.Message, 0, 8)
	for i := range 4 {
		ms = append(ms, &wire.Prepare{Txn: txnOf(i + 1), Work: []byte("transfer 1 -> 2: 50")})
	}
	for i := range 4 {
		ms = append(ms, &wire.Decision{Txn: txnOf(i + 1), Decision: protocol.DecisionCommit})
	}
	return ms
}

// readAll reads what c writes to the far end of a pipe until want bytes
// have come, or fails the test after 5 s.
func readAll(t *testing.T, far net.Conn, want int) []byte {
	t.Helper()
	far.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, want)
	if _, err := io.ReadFull(far, got); err != nil {
		t.Fatalf("reading %d bytes: %v", want, err)
	}
	return got
}

// TestSendAllIsSendInOrder: SendAll writes exactly the bytes that Send
// writes for the same frames one by one, in the same order, and counts
// them as frames sent.
func TestSendAllIsSendInOrder(t *testing.T) {
	ms := sendAllBatch()
	var want []byte
	for _, m := range ms {
		want = append(want, mustFrame(t, m)...)
	}
	for _, all := range []bool{false, true} {
		a, b := net.Pipe()
		c := NewConn(a, Options{Logger: quiet})
		if all {
			if n, err := c.SendAll(ms); n != len(ms) || err != nil {
				t.Fatalf("SendAll: %d, %v; want %d, nil", n, err, len(ms))
			}
		} else {
			for _, m := range ms {
				if err := c.Send(m); err != nil {
					t.Fatal(err)
				}
			}
		}
		if got := readAll(t, b, len(want)); !bytes.Equal(got, want) {
			t.Errorf("SendAll %v: the bytes differ from the frames in order", all)
		}
		waitFor(t, "frames counted", func() bool { return c.Stats().FramesSent == uint64(len(ms)) })
		closeConn(c)
		b.Close()
	}
}

// TestSendAllStopsAtABadFrame: a frame that breaks a wire limit stops
// SendAll at its index with wire.ErrMalformed, the frames before it are
// queued and written, and the connection is fine for the rest.
func TestSendAllStopsAtABadFrame(t *testing.T) {
	ms := sendAllBatch()
	bad := &wire.Prepare{Txn: txnOf(9), Work: make([]byte, wire.MaxFrameSize)}
	ms = append(ms[:3:3], append([]wire.Message{bad}, ms[3:]...)...)
	a, b := net.Pipe()
	defer b.Close()
	c := NewConn(a, Options{Logger: quiet})
	defer closeConn(c)
	n, err := c.SendAll(ms)
	if n != 3 || !errors.Is(err, wire.ErrMalformed) || c.Err() != nil {
		t.Fatalf("SendAll with a bad 4th frame: %d, %v (connection %v); want 3, ErrMalformed, a live connection", n, err, c.Err())
	}
	if n, err := c.SendAll(ms[4:]); n != len(ms)-4 || err != nil {
		t.Fatalf("SendAll of the rest: %d, %v", n, err)
	}
	var want []byte
	for i, m := range ms {
		if i != 3 {
			want = append(want, mustFrame(t, m)...)
		}
	}
	if got := readAll(t, b, len(want)); !bytes.Equal(got, want) {
		t.Errorf("the frames around the bad one differ from Send's")
	}
}

// TestSendAllCutsASlowPeerOff: SendAll keeps MaxPendingBytes exactly as
// Send does: the frame that would go past it is not queued, and the
// connection fails with ErrSlowPeer; frames after it are refused.
func TestSendAllCutsASlowPeerOff(t *testing.T) {
	ms := sendAllBatch()
	size := len(mustFrame(t, ms[0]))
	a, b := net.Pipe() // never read: the writer blocks on its first write
	defer b.Close()
	// Room for the writer's first frame, which it takes and blocks on,
	// and 2 more prepares queued behind it, not 3.
	c := NewConn(a, Options{Logger: quiet, MaxPendingBytes: 3*size - 1})
	if err := c.Send(ms[0]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the writer takes the first frame", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.mu.out) == 0
	})
	n, err := c.SendAll(ms[1:])
	if n != 2 || !errors.Is(err, ErrSlowPeer) {
		t.Fatalf("SendAll past the bound: %d, %v; want 2, ErrSlowPeer", n, err)
	}
	if !errors.Is(c.Err(), ErrSlowPeer) {
		t.Errorf("Err = %v, want ErrSlowPeer", c.Err())
	}
	if n, err := c.SendAll(ms); n != 0 || !errors.Is(err, ErrSlowPeer) {
		t.Errorf("SendAll after the cut: %d, %v", n, err)
	}
}

// TestSendAllDoesNotAllocate: queueing a round's frames allocates nothing.
func TestSendAllDoesNotAllocate(t *testing.T) {
	h := newEcho()
	_, c, _ := loopbackAs(t, wire.RoleCoordinator, h, ServerOptions{}, Options{})
	ms := sendAllBatch()
	runs := 0
	allocs := testing.AllocsPerRun(2000, func() {
		runs++
		if n, err := c.SendAll(ms); n != len(ms) || err != nil {
			t.Fatal(n, err)
		}
	})
	if allocs != 0 {
		t.Errorf("SendAll: %v allocs per call", allocs)
	}
	want := (runs) * len(ms) / 2
	waitFor(t, "frames delivered", func() bool {
		return h.count(wire.TypePrepare) == want && h.count(wire.TypeDecision) == want
	})
}

// BenchmarkQueue compares queueing a round's 8 frames for one connection
// with Send (a lock per frame) and with SendAll (one lock): the frames
// are queued and the queue emptied each time, so the benchmark measures
// the sender's cost, not the network's.
func BenchmarkQueue(b *testing.B) {
	ms := sendAllBatch()
	for _, mode := range []string{"send", "sendall"} {
		b.Run(mode, func(b *testing.B) {
			a, far := net.Pipe()
			defer far.Close()
			c := NewConn(a, Options{Logger: quiet})
			defer closeConn(c)
			// Park the writer: a pipe nobody reads blocks its first write.
			if err := c.Send(ms[0]); err != nil {
				b.Fatal(err)
			}
			for {
				c.mu.Lock()
				empty := len(c.mu.out) == 0
				c.mu.Unlock()
				if empty {
					break
				}
				time.Sleep(time.Millisecond)
			}
			b.ReportAllocs()
			for b.Loop() {
				if mode == "send" {
					for _, m := range ms {
						if err := c.Send(m); err != nil {
							b.Fatal(err)
						}
					}
				} else if _, err := c.SendAll(ms); err != nil {
					b.Fatal(err)
				}
				c.mu.Lock()
				c.mu.out, c.mu.frames = c.mu.out[:0], 0
				c.mu.Unlock()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ms)), "ns/frame")
		})
	}
}

// TestPeerSendViaAll: each frame gets what SendVia would have returned
// for it — a malformed one its error, the others nil — and the good ones
// all go over the slot's connection; with that connection dead the rest
// go over the other; with none up every frame is dropped and counted.
func TestPeerSendViaAll(t *testing.T) {
	h := newEcho()
	srv := NewServer(ServerOptions{Conn: Options{Handler: h, Logger: quiet}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	p := NewPeer(ln.Addr().String(), PeerOptions{Conn: Options{Logger: quiet}, Conns: 2,
		Hello: wire.Hello{Role: wire.RoleParticipant, Name: []byte("bank-1")}})
	defer p.Close()
	waitFor(t, "two connections", func() bool { return p.Stats().Connected == 2 })
	bad := &wire.Vote{Txn: txnOf(2), From: make([]byte, wire.MaxFrameSize), Vote: protocol.VoteYes}
	ms := []wire.Message{&vote, bad, &vote, &vote}
	errs := make([]error, len(ms))
	p.SendViaAll(1, ms, errs)
	for i, err := range errs {
		if (i == 1) != errors.Is(err, wire.ErrMalformed) || (i != 1 && err != nil) {
			t.Errorf("frame %d: %v", i, err)
		}
	}
	waitFor(t, "votes", func() bool { return h.count(wire.TypeVote) == 3 })
	c0, c1 := p.conns[0].Load(), p.conns[1].Load()
	if s0, s1 := c0.Stats().FramesSent, c1.Stats().FramesSent; s0 != 1 || s1 != 4 {
		t.Fatalf("frames sent per connection: %d and %d, want 1 and 4 (hello included)", s0, s1)
	}

	// Slot 1's connection dead (still in its slot or not): the other one.
	c1.Close()
	<-c1.Done()
	ms = []wire.Message{&vote, &vote}
	p.SendViaAll(1, ms, errs)
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("with slot 1's connection dead: %v", errs[:2])
	}
	waitFor(t, "votes over the other connection", func() bool { return h.count(wire.TypeVote) == 5 })

	// None up: every frame dropped, and counted so.
	srv.Close()
	ln.Close()
	waitFor(t, "no connection", func() bool { return p.Stats().Connected == 0 })
	dropped := p.Stats().Dropped
	p.SendViaAll(0, ms, errs)
	if !errors.Is(errs[0], ErrNotConnected) || !errors.Is(errs[1], ErrNotConnected) || p.Stats().Dropped != dropped+2 {
		t.Fatalf("with no connection: %v, dropped %d, want ErrNotConnected twice and %d", errs[:2], p.Stats().Dropped, dropped+2)
	}
}

package mux

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/protocol"
)

// voteDecoder is a Decoder that keeps a scratch Vote per connection
// (Conn.State) and records, for each vote it handles, what the scratch
// held — without decoding the frame itself.
type voteDecoder struct {
	mu      sync.Mutex
	targets int      // Target calls for votes
	got     []string // "txn-byte/vote/from" of each vote handled
	states  int      // scratches made
}

type voteScratch struct{ vote wire.Vote }

func (d *voteDecoder) scratch(c *Conn) *voteScratch {
	if s, ok := c.State().(*voteScratch); ok {
		return s
	}
	d.mu.Lock()
	d.states++
	d.mu.Unlock()
	s := &voteScratch{}
	c.SetState(s)
	return s
}

func (d *voteDecoder) Target(c *Conn, t wire.Type) wire.Message {
	if t != wire.TypeVote {
		return nil
	}
	d.mu.Lock()
	d.targets++
	d.mu.Unlock()
	return &d.scratch(c).vote
}

func (d *voteDecoder) HandleFrame(c *Conn, f wire.Frame) error {
	if f.Type != wire.TypeVote {
		return nil
	}
	v := &d.scratch(c).vote
	d.mu.Lock()
	d.got = append(d.got, string([]byte{v.Txn[15], '/', byte('0' + v.Vote), '/'})+string(v.From))
	d.mu.Unlock()
	return nil
}

func (d *voteDecoder) snapshot() (targets, states int, got []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.targets, d.states, append([]string(nil), d.got...)
}

// A Decoder's frames are decoded once, by the mux's check, into the
// message its Target gives: HandleFrame finds each vote there, in order,
// and the connection's State is made once and kept.
func TestDecoderGetsFramesDecoded(t *testing.T) {
	d := &voteDecoder{}
	_, c, _ := loopbackAs(t, wire.RoleParticipant, d, ServerOptions{}, Options{})
	var want []string
	for i := range 50 {
		v := wire.Vote{Txn: txnOf(i), From: []byte("bank-" + string(rune('a'+i%3))), Vote: protocol.Vote(1 + i%2)}
		if err := c.Send(&v); err != nil {
			t.Fatal(err)
		}
		want = append(want, string([]byte{byte(i), '/', byte('0' + v.Vote), '/'})+string(v.From))
	}
	waitFor(t, "votes", func() bool { _, _, got := d.snapshot(); return len(got) == len(want) })
	targets, states, got := d.snapshot()
	if targets != 50 || states != 1 || strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("targets %d, states %d, handled %q; want 50, 1, %q", targets, states, got, want)
	}
}

// A frame a Decoder's check refuses closes the connection as any
// malformed frame does, and never reaches HandleFrame; a vote from a role
// that may not send one is refused before HandleFrame too (wire.Sender),
// though it was decoded into the Target first, as wire.Check would.
func TestDecoderMalformedAndRefused(t *testing.T) {
	badVote := mustFrame(t, &vote)
	badVote[wire.HeaderSize+16] = 9 // vote 9: the header is fine, the payload not
	for _, tc := range []struct {
		name string
		role wire.Role
		bad  []byte
		want string
	}{
		{"malformed", wire.RoleParticipant, badVote, "wire: malformed frame"},
		{"wrong role", wire.RoleClient, mustFrame(t, &vote), "may not send vote"},
	} {
		var logs logBuffer
		d := &voteDecoder{}
		_, _, addr := loopback(t, d, ServerOptions{Conn: Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))}}, Options{})
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		hello := mustFrame(t, &wire.Hello{Role: tc.role, Name: []byte("x")})
		if _, err := nc.Write(append(hello, tc.bad...)); err != nil {
			t.Fatal(err)
		}
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.Copy(io.Discard, nc) // until the server closes it
		nc.Close()
		waitFor(t, "log", func() bool { return strings.Contains(logs.String(), "connection failed") })
		targets, _, got := d.snapshot()
		if !strings.Contains(logs.String(), tc.want) || targets != 1 || len(got) != 0 {
			t.Errorf("%s: log %q, targets %d, handled %q", tc.name, logs.String(), targets, got)
		}
	}
}

// A Target of the wrong message type is a programmer error: it panics
// rather than blaming the peer for a frame that does not decode.
func TestDecoderWrongTargetPanics(t *testing.T) {
	c := &Conn{opts: Options{}.withDefaults()}
	c.decoder = wrongTarget{}
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), "gave a ack message for a vote frame") {
			t.Fatalf("recovered %v", r)
		}
	}()
	f, _, err := wire.ParseFrame(mustFrame(t, &vote))
	if err != nil {
		t.Fatal(err)
	}
	_ = c.check(f)
}

type wrongTarget struct{}

func (wrongTarget) Target(*Conn, wire.Type) wire.Message    { return &wire.Ack{} }
func (wrongTarget) HandleFrame(c *Conn, f wire.Frame) error { return nil }

// checkingHandler is what a Handler that is not a Decoder does with a
// vote: decode it again, after the mux's wire.Check.
type checkingHandler struct{ v wire.Vote }

func (h *checkingHandler) HandleFrame(c *Conn, f wire.Frame) error { return h.v.Decode(f) }

// decodedHandler is the same as a Decoder: the mux decodes into its vote.
type decodedHandler struct{ v wire.Vote }

func (h *decodedHandler) Target(c *Conn, t wire.Type) wire.Message {
	if t == wire.TypeVote {
		return &h.v
	}
	return nil
}
func (h *decodedHandler) HandleFrame(c *Conn, f wire.Frame) error { return nil }

// BenchmarkDispatchVote is the reader's work per vote frame once it is
// parsed: the check, routing and handling, with a Handler that decodes
// the vote again (every Handler before Decoder) and with a Decoder.
func BenchmarkDispatchVote(b *testing.B) {
	buf := mustFrame(b, &vote)
	f, _, err := wire.ParseFrame(buf)
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		h    Handler
	}{{"decode-twice", &checkingHandler{}}, {"decoder", &decodedHandler{}}} {
		b.Run(tc.name, func(b *testing.B) {
			c := &Conn{opts: Options{Handler: tc.h}.withDefaults()}
			c.decoder, _ = tc.h.(Decoder)
			b.ReportAllocs()
			for b.Loop() {
				if err := c.dispatch(f); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// State is nil on a new connection and keeps what SetState put.
func TestConnState(t *testing.T) {
	c := &Conn{}
	if c.State() != nil {
		t.Fatal("a new connection has a state")
	}
	s := &bytes.Buffer{}
	c.SetState(s)
	if got, ok := c.State().(*bytes.Buffer); !ok || got != s {
		t.Fatalf("State() = %v", c.State())
	}
}

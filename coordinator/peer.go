package coordinator

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/commitd/commitd/net/link"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/net/wire"
)

// peer is the coordinator's connections to one participant. Prepares and
// decisions go out on them; votes, acks and inquiries come back on the
// connections the participant dials to the coordinator's listener — and,
// for a replica of a group, also on these connections: a participant
// given several replicas answers on the connection a prepare or decision
// came on, and inquires on the one that last carried one (docs/ha.md,
// "How participants find the leader"; replies.go).
type peer struct {
	name, addr string
	mux        *mux.Peer
	// prevent: the participant's last answering Hello said it can
	// prevent (wire.Hello.Prevent), so the front door may stage the
	// transactions that name it. Until it has answered, it cannot.
	prevent atomic.Bool
}

func newPeer(s *Server, name, addr string) *peer {
	cfg := &s.cfg
	opts := mux.Options{
		Logger:     cfg.Logger,
		NoCoalesce: cfg.NoCoalesce,
	}
	if len(cfg.Peers) > 0 {
		d := &replyDoor{s: s, name: name}
		opts.Handler, opts.OnClose = d, d.closed
	}
	p := &peer{name: name, addr: addr}
	p.mux = mux.NewPeer(addr, mux.PeerOptions{
		Conn: opts,
		// The participant we expect to reach at addr: it refuses a
		// coordinator that asks for another name, so a --participant
		// NAME that differs from the participant's --name fails loudly
		// on both sides instead of losing every vote.
		Hello: wire.Hello{Role: wire.RoleCoordinator, Name: []byte(name)},
		// The map version as it is when each connection is made (none
		// without a map: the Hello is then as before the flag existed).
		Refresh: func(h *wire.Hello) { h.MapVersion = s.ClusterVersion() },
		// Used only once the participant has answered as itself: a
		// prepare never goes out on a connection it refuses, so a
		// participant that will not have us is "unreachable" at once,
		// not a lost prepare that times out.
		Check: func(h wire.Hello) error {
			if h.Role != wire.RoleParticipant || string(h.Name) != name {
				return fmt.Errorf("want participant %q", name)
			}
			p.prevent.Store(h.Prevent)
			return nil
		},
		Dial:  link.Dialer(cfg.TLS),
		Conns: cfg.ConnsPerParticipant,
	})
	return p
}

// send queues m for the shard that emitted it: each shard keeps to one
// connection (mux.Peer.SendVia), so a pump's batch for this participant
// goes out in one write. A participant that is not connected misses it:
// the protocol does not rely on any single message (a missing vote times
// out, decisions are redelivered, prepared participants inquire). send
// reports false when m was dropped before it was queued on any connection
// (mux.ErrNotConnected): then it certainly never reached the participant.
func (p *peer) send(shard int, m wire.Message) bool {
	return !errors.Is(p.mux.SendVia(shard, m), mux.ErrNotConnected)
}

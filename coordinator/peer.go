package coordinator

import (
	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/internal/link"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/net/wire"
)

// peer is the coordinator's connections to one participant. Prepares and
// decisions go out on them; votes, acks and inquiries come back on the
// connections the participant dials to the coordinator's listener.
type peer struct {
	name string
	mux  *mux.Peer
}

func newPeer(name, addr string, cfg *Config) *peer {
	return &peer{name: name, mux: mux.NewPeer(addr, mux.PeerOptions{
		Conn: mux.Options{
			Logger:     cfg.Logger,
			NoCoalesce: !cfg.Coalesce,
		},
		Hello: wire.Hello{Role: wire.RoleCoordinator, Name: []byte("coordinator")},
		Dial:  link.Dialer(cfg.TLS),
		Conns: cfg.ConnsPerParticipant,
	})}
}

// send queues m. A participant that is not connected misses it: the
// protocol does not rely on any single message (a missing vote times out,
// decisions are redelivered, prepared participants inquire).
func (p *peer) send(_ engine.TxnID, m wire.Message) {
	_ = p.mux.Send(m)
}

func (p *peer) close() { p.mux.Close() }

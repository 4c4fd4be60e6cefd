package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/net/wire"
)

// group is a client's view of a replicated coordinator: a connection to
// every replica and which one it believes leads.
type group struct {
	opts  Options
	addrs []string // as given; immutable
	mu    sync.Mutex
	peers map[string]*mux.Peer // by address; guarded by mu
	lead  string               // the replica Begins go to; guarded by mu
}

// followFor bounds how long one Begin is sent on from replica to replica
// while none takes it: longer than an election with the default settings
// (0.5–1 s).
const followFor = 3 * time.Second

func dialGroup(addrs []string, opts Options) (*Client, error) {
	g := &group{opts: opts, addrs: addrs, peers: make(map[string]*mux.Peer)}
	for _, a := range addrs {
		if a == "" {
			return nil, errors.New("commitd client: an empty address in the coordinator list")
		}
		g.peers[a] = newPeer(a, opts)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.DialTimeout)
	defer cancel()
	for g.lead == "" {
		for _, a := range addrs {
			if g.peers[a].Conn() != nil {
				g.lead = a
				break
			}
		}
		if g.lead != "" {
			break
		}
		select {
		case <-ctx.Done():
			g.close()
			return nil, fmt.Errorf("commitd client: cannot reach any coordinator replica of %v: %w", addrs, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	c := &Client{group: g}
	c.pool.New = func() any { return new(scratch) }
	return c, nil
}

func (g *group) close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, p := range g.peers {
		p.Close()
	}
	return nil
}

// current returns the replica believed to lead.
func (g *group) current() (string, *mux.Peer) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.lead, g.peers[g.lead]
}

// follow moves on from the replica at from (if it is still the current
// one): to the address a not-leader answer named, or else to the next
// replica in the list.
func (g *group) follow(from, named string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.lead != from {
		return // another call moved on already
	}
	if named != "" {
		if g.peers[named] == nil {
			g.peers[named] = newPeer(named, g.opts)
		}
		g.lead = named
		return
	}
	for i, a := range g.addrs {
		if a == from {
			g.lead = g.addrs[(i+1)%len(g.addrs)]
			return
		}
	}
	g.lead = g.addrs[0]
}

// call sends the Begin to the replica believed to lead, and on to another
// while the answer says that nothing was started there (not the leader,
// shutting down, or not connected), with a short pause once every replica was tried
// (an election takes a few hundred milliseconds).
func (g *group) call(ctx context.Context, m *wire.Begin, buf []byte) (wire.Frame, error) {
	var err error
	start := time.Now()
	for hop := 0; ; hop++ {
		from, p := g.current()
		var f wire.Frame
		f, err = p.Call(ctx, m, buf)
		var re *mux.RemoteError
		switch {
		case err == nil:
			return f, nil
		case errors.As(err, &re) && re.Code == wire.CodeNotLeader:
			named := re.Message
			if named == from {
				named = ""
			}
			g.follow(from, named)
		case errors.Is(err, mux.ErrNotConnected),
			errors.As(err, &re) && re.Code == wire.CodeUnavailable:
			// Not sent, or refused before anything started (this
			// replica is shutting down): another may take it.
			g.follow(from, "")
		case errors.Is(err, context.DeadlineExceeded):
			// Sent, no answer in time: unknown. The replica may be
			// paused or cut off; later calls try another, which names
			// the leader it knows.
			g.follow(from, "")
			return f, err
		default:
			return f, err // sent, answer lost: unknown
		}
		if time.Since(start) > followFor {
			return wire.Frame{}, err
		}
		if (hop+1)%len(g.addrs) == 0 {
			select {
			case <-ctx.Done():
				return wire.Frame{}, err
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

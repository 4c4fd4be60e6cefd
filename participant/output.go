// This file holds what becomes of the machine's output: messages to the
// coordinator, decisions into the ledger, and the forgetting (and scanning)
// a Durable resource is driven through.

package participant

import (
	"context"
	"fmt"
	"time"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/net/wire"
)

// output sends what the machine produced: votes, acks and inquiries to the
// coordinator; applied decisions into the ledger.
type output struct {
	s       *Server
	name    []byte // the participant's name, for From fields
	vote    wire.Vote
	ack     wire.Ack
	inquire wire.Inquire
}

func (o *output) Deliver(rd *engine.Ready) {
	s := o.s
	tr := s.tr
	if tr != nil && tr.idle() {
		tr = nil // nothing traced: no lookups
	}
	for i := range rd.Applied {
		s.ledger.record(rd.Applied[i])
		if tr != nil {
			tr.applied(rd.Applied[i].Txn, rd.Applied[i].Decision)
		}
	}
	if s.durable != nil && len(rd.Applied) > 0 {
		s.forgetMu.Lock()
		for i := range rd.Applied {
			s.forget = append(s.forget, rd.Applied[i].Txn)
		}
		s.forgetMu.Unlock()
	}
	name := o.name
	var nowNs int64 // when the votes leave: read once, at the first (metrics.voteSent)
	for i := range rd.Messages {
		m := &rd.Messages[i]
		var wm wire.Message
		switch m.Type {
		case engine.MsgVote:
			if s.metrics != nil {
				s.metrics.voteSent(m.Txn, &nowNs)
			}
			o.vote = wire.Vote{Txn: m.Txn, From: name, Vote: m.Vote}
			wm = &o.vote
			if tr != nil {
				tr.vote(m.Txn, m.Vote)
			}
		case engine.MsgAck:
			o.ack = wire.Ack{Txn: m.Txn, From: name}
			wm = &o.ack
		case engine.MsgInquire:
			o.inquire = wire.Inquire{Txn: m.Txn, From: name}
			wm = &o.inquire
		default:
			panic(fmt.Sprintf("participant: machine emitted a %v message", m.Type))
		}
		if s.route != nil && s.route.send(m, wm) || s.sendToGroup(m, wm) {
			continue
		}
		// Not connected: dropped. The coordinator times the vote out, or
		// redelivers the decision; inquiries repeat.
		_ = s.coord.SendVia(0, wm) // one connection: a batch goes out in one write
		for _, p := range s.replicas {
			_ = p.SendVia(0, wm) // a replicated coordinator: only its leader takes it
		}
	}
}

// send sends a message for a replicated coordinator where the router
// says (a vote or ack back on the connection its prepare or decision came
// on, an inquiry on the leader's), and reports false when it knows no such
// connection or that one has closed: then the message goes to every
// replica.
func (r *router) send(m *engine.Message, wm wire.Message) bool {
	var c *mux.Conn
	if m.Type != engine.MsgInquire {
		c = r.take(m.Txn)
	}
	if c == nil {
		c = r.leading()
	}
	return c != nil && c.Send(wm) == nil
}

// durableLoop scans a Durable resource for prepared transactions every
// ScanEvery (the machine inquires for the ones it does not know and rolls
// back orphans), and once a second lets the resource forget the
// decisions the ledger has made durable.
func (s *Server) durableLoop() {
	forgetT := time.NewTicker(time.Second)
	defer forgetT.Stop()
	scanT := time.NewTicker(s.cfg.ScanEvery)
	defer scanT.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.life.Stopping():
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		select {
		case <-s.life.Stopping():
			return
		case <-scanT.C:
			ids, err := s.durable.InDoubt(ctx)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				// The server may be restarting: the next scan will do.
				s.cfg.Logger.Warn("participant: scanning the resource", "name", s.cfg.Name, "err", err)
				continue
			}
			for _, id := range ids {
				s.pump.Inject(&engine.Message{Type: engine.MsgResInDoubt, Txn: id, To: s.cfg.Name})
			}
		case <-forgetT.C:
			s.forgetMu.Lock()
			ids := s.forget
			s.forget = nil
			s.forgetMu.Unlock()
			if len(ids) == 0 {
				continue
			}
			if err := s.ledger.sync(); err != nil {
				s.life.Fail(err)
				return
			}
			if err := s.durable.Forget(ctx, ids); err != nil {
				// Kept a while longer; the next start forgets them.
				s.cfg.Logger.Warn("participant: resource forgetting decisions", "name", s.cfg.Name, "err", err)
			}
		}
	}
}

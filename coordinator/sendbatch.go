package coordinator

import (
	"errors"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/net/wire"
)

// maxSendGroups bounds the participants whose frames a Deliver gathers:
// finding a message's group is a scan, and a round that names more
// participants than this sends the others' frames one by one, as before.
const maxSendGroups = 16

// sendBatch gathers a Ready's prepares, decisions and resolves per
// participant, so that each participant's frames are queued on its
// connection under one lock (mux.Peer.SendViaAll) instead of one lock per
// frame. A participant's frames keep their order; only frames to
// different participants, which go over different connections and were
// never ordered, change order. Owned by one shard's pump goroutine; its
// slices are kept from round to round, so it does not allocate once they
// have grown.
type sendBatch struct {
	frames []batchFrame
	groups []sendGroup
	n      int // groups in use
	errs   []error
}

// batchFrame is one message's frame, and the message's index in the Ready.
type batchFrame struct {
	msg     int
	prepare wire.Prepare
	dec     wire.Decision
	resolve wire.Resolve
}

// sendGroup is one participant's frames in a round.
type sendGroup struct {
	p      *peer
	frames []int // indexes into sendBatch.frames, in the Ready's order
	ms     []wire.Message
}

// add returns a frame to fill for rd.Messages[msg], to p, or nil when p is
// beyond maxSendGroups: then the caller sends it at once.
func (b *sendBatch) add(p *peer, msg int) *batchFrame {
	g := b.group(p)
	if g == nil {
		return nil
	}
	g.frames = append(g.frames, len(b.frames))
	b.frames = append(b.frames, batchFrame{msg: msg})
	return &b.frames[len(b.frames)-1]
}

func (b *sendBatch) group(p *peer) *sendGroup {
	for i := range b.groups[:b.n] {
		if b.groups[i].p == p {
			return &b.groups[i]
		}
	}
	if b.n == maxSendGroups {
		return nil
	}
	if b.n == len(b.groups) {
		b.groups = append(b.groups, sendGroup{})
	}
	g := &b.groups[b.n]
	b.n++
	g.p, g.frames = p, g.frames[:0]
	return g
}

// send queues every gathered frame, a participant at a time, and tells o
// of each prepare that reached no connection (mux.ErrNotConnected, what
// peer.send reports as false). It empties the batch.
func (b *sendBatch) send(o *shardOutput, rd *engine.Ready) {
	for i := range b.groups[:b.n] {
		g := &b.groups[i]
		g.ms = g.ms[:0]
		for _, f := range g.frames {
			bf := &b.frames[f]
			switch rd.Messages[bf.msg].Type {
			case engine.MsgPrepare:
				g.ms = append(g.ms, &bf.prepare)
			case engine.MsgDecision:
				g.ms = append(g.ms, &bf.dec)
			default:
				g.ms = append(g.ms, &bf.resolve)
			}
		}
		if cap(b.errs) < len(g.ms) {
			b.errs = make([]error, len(g.ms))
		}
		errs := b.errs[:len(g.ms)]
		g.p.mux.SendViaAll(o.shard, g.ms, errs)
		for k, err := range errs {
			if m := &rd.Messages[b.frames[g.frames[k]].msg]; m.Type == engine.MsgPrepare && errors.Is(err, mux.ErrNotConnected) {
				o.prepareNotSent(m)
			}
		}
		g.p = nil
	}
	// The frames' slices (a prepare's Work) are the Ready's, which the
	// engine reuses: kept until overwritten, they hold nothing extra.
	b.n, b.frames = 0, b.frames[:0]
}

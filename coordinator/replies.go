package coordinator

import (
	"fmt"
	"sync"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/protocol"
)

// replyDoor takes what a participant sends back on a connection a replica
// of a group dialed to it: a participant given several replicas sends a
// vote or an ack on the connection its prepare or decision came on — the
// replica that holds the transaction — and an inquiry on the one that
// last brought it a prepare or decision, the replica that leads as far as
// it knows (docs/ha.md, "How participants find the leader"). A lone
// coordinator sets no handler on these connections: its participants
// answer on the connections they dial, as before.
//
// The dialing side of a connection does not enforce wire.Sender (only an
// accepting one does), so replyDoor does: the connection is used only once
// the participant answered as itself (newPeer's Check), and it takes only
// a participant's messages, each from that participant's name.
type replyDoor struct {
	s     *Server
	name  string   // the participant at the far end; immutable
	conns sync.Map // *mux.Conn → *replyState, owned by that connection's reader
}

// replyState is the scratch of one connection's reader goroutine.
type replyState struct {
	vote    wire.Vote
	ack     wire.Ack
	inquire wire.Inquire
	msg     engine.Message
}

// HandleFrame implements mux.Handler.
func (d *replyDoor) HandleFrame(c *mux.Conn, f wire.Frame) error {
	v, ok := d.conns.Load(c)
	if !ok {
		v = &replyState{}
		d.conns.Store(c, v)
	}
	st := v.(*replyState)
	switch f.Type {
	case wire.TypeVote:
		if err := st.vote.Decode(f); err != nil {
			return err
		}
		return d.toShard(st, f.Type, engine.MsgVote, st.vote.Txn, st.vote.From, st.vote.Vote)
	case wire.TypeAck:
		if err := st.ack.Decode(f); err != nil {
			return err
		}
		return d.toShard(st, f.Type, engine.MsgAck, st.ack.Txn, st.ack.From, 0)
	case wire.TypeInquire:
		if err := st.inquire.Decode(f); err != nil {
			return err
		}
		return d.toShard(st, f.Type, engine.MsgInquire, st.inquire.Txn, st.inquire.From, 0)
	}
	if f.ReqID != 0 {
		return c.Reply(f.ReqID, &wire.Error{Code: wire.CodeInvalid,
			Message: fmt.Appendf(nil, "a coordinator serves no %v requests on a connection it dialed", f.Type)})
	}
	return mux.Refuse("participant %q may not send %v", d.name, f.Type)
}

func (d *replyDoor) toShard(st *replyState, wt wire.Type, t engine.MsgType, txn protocol.TxnID, from []byte, vote protocol.Vote) error {
	if string(from) != d.name {
		return mux.Refuse("participant %q sent a %v from %q", d.name, wt, from)
	}
	st.msg = engine.Message{Type: t, Txn: txn, From: d.name, Vote: vote}
	p := d.s.pumpFor(st.msg.Txn)
	if p == nil {
		d.s.metrics.ignored.Inc() // not the leader: the participant asks again
		d.s.notLeading.Add(1)
		return nil
	}
	p.Submit(&st.msg)
	return nil
}

// closed forgets a connection's scratch.
func (d *replyDoor) closed(c *mux.Conn, _ error) { d.conns.Delete(c) }

package coordinator

import (
	"fmt"
	"sync"

	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/net/wire"
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
	conns sync.Map // *mux.Conn → *partScratch, owned by that connection's reader
}

// HandleFrame implements mux.Handler.
func (d *replyDoor) HandleFrame(c *mux.Conn, f wire.Frame) error {
	v, ok := d.conns.Load(c)
	if !ok {
		v = &partScratch{}
		d.conns.Store(c, v)
	}
	switch f.Type {
	case wire.TypeVote, wire.TypeAck, wire.TypeInquire:
		return d.s.fromParticipant(v.(*partScratch), d.name, f)
	}
	if f.ReqID != 0 {
		return c.Reply(f.ReqID, &wire.Error{Code: wire.CodeInvalid,
			Message: fmt.Appendf(nil, "a coordinator serves no %v requests on a connection it dialed", f.Type)})
	}
	return mux.Refuse("participant %q may not send %v", d.name, f.Type)
}

// closed forgets a connection's scratch.
func (d *replyDoor) closed(c *mux.Conn, _ error) { d.conns.Delete(c) }

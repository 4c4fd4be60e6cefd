// This file holds the front door: the frames from the coordinator and admin
// tools, and which connections are admitted.

package participant

import (
	"fmt"
	"sync"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/net/link"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/net/wire"
)

// frontDoor handles frames from the coordinator and admin tools.
type frontDoor struct {
	s     *Server
	conns sync.Map // *mux.Conn → *connState
}

type connState struct {
	prepare wire.Prepare
	dec     wire.Decision
	resolve wire.Resolve
	admin   wire.AdminRequest
	msg     engine.Message
}

// state returns c's scratch, made on its first frame and kept on the
// connection (mux.Conn.State), where the reader finds it without a lookup
// in a shared map per frame; conns holds it too, for the metrics.
func (d *frontDoor) state(c *mux.Conn) *connState {
	if st, ok := c.State().(*connState); ok {
		return st
	}
	st := &connState{}
	d.conns.Store(c, st)
	c.SetState(st)
	return st
}

// Target implements mux.Decoder: the frames HandleFrame decodes are
// decoded, once, by the mux's check, into the connection's scratch.
func (d *frontDoor) Target(c *mux.Conn, t wire.Type) wire.Message {
	switch t {
	case wire.TypePrepare:
		return &d.state(c).prepare
	case wire.TypeDecision:
		return &d.state(c).dec
	case wire.TypeResolve:
		return &d.state(c).resolve
	case wire.TypeAdminRequest:
		return &d.state(c).admin
	}
	return nil
}

// HandleFrame implements mux.Handler. The mux has decoded a Prepare,
// Decision, Resolve or AdminRequest into the connection's scratch (Target).
func (d *frontDoor) HandleFrame(c *mux.Conn, f wire.Frame) error {
	s := d.s
	st := d.state(c)
	switch f.Type {
	case wire.TypeHello:
		return d.hello(c, f)
	case wire.TypePrepare:
		if s.life.Closing() {
			return nil // not taken: the coordinator will time it out
		}
		st.msg = engine.Message{Type: engine.MsgPrepare, Txn: st.prepare.Txn, To: s.cfg.Name,
			OnePhase: st.prepare.OnePhase, Staged: st.prepare.Staged, Work: st.prepare.Work}
		s.metrics.prepareArrived(st.msg.Txn)
		if s.tr != nil {
			s.tr.prepare(&st.prepare)
		}
		s.arrived(c, st.msg.Txn)
		s.pump.Submit(&st.msg)
	case wire.TypeDecision:
		st.msg = engine.Message{Type: engine.MsgDecision, Txn: st.dec.Txn, To: s.cfg.Name,
			Decision: st.dec.Decision}
		if tr := s.tr; tr != nil && !tr.idle() {
			tr.decision(st.dec.Txn, st.dec.Decision)
		}
		s.arrived(c, st.msg.Txn)
		s.pump.Submit(&st.msg)
	case wire.TypeResolve:
		if s.life.Closing() {
			return nil // not taken: the coordinator asks again
		}
		st.msg = engine.Message{Type: engine.MsgResolve, Txn: st.resolve.Txn, To: s.cfg.Name}
		s.arrived(c, st.msg.Txn)
		s.pump.Submit(&st.msg)
	case wire.TypeAdminRequest:
		r := &pacedReply{c: c, reqID: f.ReqID, base: c.Stats().BytesSent}
		if st.admin.Kind == wire.AdminOutcomes {
			return s.replyOutcomes(r)
		}
		body, err := s.adminJSON(c, st.admin.Kind, st.admin.Arg)
		if err != nil {
			msg := err.Error()
			if len(msg) > wire.MaxDetailLen {
				msg = msg[:wire.MaxDetailLen-3] + "..."
			}
			return c.Reply(f.ReqID, &wire.Error{Code: wire.CodeInvalid, Message: []byte(msg)})
		}
		if _, err := r.Write(body); err != nil {
			return err
		}
		return r.finish()
	default:
		if f.ReqID != 0 {
			return c.Reply(f.ReqID, &wire.Error{Code: wire.CodeInvalid,
				Message: fmt.Appendf(nil, "a participant does not serve %v requests", f.Type)})
		}
	}
	return nil
}

// hello admits a connection by its Hello, before any frame on it is
// handled: the coordinator, if it asks for this participant by name (and,
// with TLS, presents the coordinator's certificate), and admin tools. The
// mux has checked that each later frame comes from its sender's role
// (wire.Sender), so a connection admitted as an admin can never prepare.
// A refusal closes the connection with an Error frame and is logged.
func (d *frontDoor) hello(c *mux.Conn, f wire.Frame) error {
	cfg := &d.s.cfg
	var h wire.Hello
	if err := h.Decode(f); err != nil {
		return err
	}
	switch h.Role {
	case wire.RoleCoordinator:
		if string(h.Name) != cfg.Name {
			// A coordinator configured with another name for this
			// address: its prepares are for someone else, and our
			// votes would come back under a name it does not know.
			return mux.Refuse("this is participant %q, not %q: the coordinator's --participant NAME must be this participant's --name", cfg.Name, h.Name)
		}
		if err := link.Identity(c, cfg.coordinatorIdentities()); err != nil {
			return mux.Refuse("coordinator not accepted: %v", err)
		}
		d.s.sawMap(h.MapVersion, c.RemoteAddr().String())
	case wire.RoleAdmin:
		if err := link.Identity(c, cfg.AdminIdentities); err != nil {
			return mux.Refuse("admin not accepted: %v", err)
		}
	default:
		return mux.Refuse("participant %q serves the coordinator and admin tools, not %v connections", cfg.Name, h.Role)
	}
	return nil
}

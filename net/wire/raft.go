package wire

import "fmt"

// Raft carries one marshalled raft message (go.etcd.io/raft/v3's
// raftpb.Message) between the replicas of a coordinator group (one-way,
// RoleReplica connections only). The wire does not look inside: the
// replica decodes it, and a message it cannot decode is a connection error
// there. Msg is 1 to MaxPayload bytes; the replica sets raft's
// MaxSizePerMsg well below that so an append's entries fit.
type Raft struct {
	Msg []byte
}

// Type implements Message.
func (*Raft) Type() Type { return TypeRaft }

func (m *Raft) check() error {
	if len(m.Msg) == 0 {
		return fmt.Errorf("%w: empty raft message", ErrMalformed)
	}
	return checkLen("raft message", m.Msg, MaxPayload)
}

// AppendFrame implements Message; reqID must be zero.
func (m *Raft) AppendFrame(dst []byte, reqID uint64) ([]byte, error) {
	if err := m.check(); err != nil {
		return dst, err
	}
	dst, start := beginFrame(dst, TypeRaft, 0, reqID)
	return endFrame(append(dst, m.Msg...), start)
}

// Decode implements Message.
func (m *Raft) Decode(f Frame) error {
	if _, err := start(f, TypeRaft); err != nil {
		return err
	}
	m.Msg = f.Payload
	return m.check()
}

package wire

import "fmt"

// Raft carries a marshalled raft message (go.etcd.io/raft/v3's
// raftpb.Message) between the replicas of a coordinator group (one-way,
// RoleReplica connections only). The wire does not look inside: the
// replica decodes it, and a message it cannot decode is a connection error
// there. Msg is 1 to MaxPayload bytes; the replica sets raft's
// MaxSizePerMsg well below that so an append's entries fit. A longer
// message (a snapshot) goes as several frames on one connection, every one
// but the last with More set (FlagMore); the receiver concatenates them,
// up to a bound of its own.
type Raft struct {
	More bool
	Msg  []byte
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
	var fl Flags
	if m.More {
		fl = FlagMore
	}
	dst, start := beginFrame(dst, TypeRaft, fl, reqID)
	return endFrame(append(dst, m.Msg...), start)
}

// Decode implements Message.
func (m *Raft) Decode(f Frame) error {
	if _, err := start(f, TypeRaft); err != nil {
		return err
	}
	m.More = f.Flags&FlagMore != 0
	m.Msg = f.Payload
	return m.check()
}

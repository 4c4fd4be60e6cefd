package wire

import "github.com/commitd/commitd/protocol"

// Resolve asks a participant to settle a staged transaction (one-way,
// coordinator → participant; docs/protocol.md "Staged commits"): answer
// a YES Vote if it is durably prepared, or make "never prepare it" durable
// and answer a NO Vote. A coordinator sends it instead of aborting on its
// own, once it has logged the transaction staged.
//
//	txn [16]
type Resolve struct {
	Txn protocol.TxnID
}

// Type implements Message.
func (*Resolve) Type() Type { return TypeResolve }

func (*Resolve) check() error { return nil }

// AppendFrame implements Message; reqID must be zero.
func (m *Resolve) AppendFrame(dst []byte, reqID uint64) ([]byte, error) {
	dst, start := beginFrame(dst, TypeResolve, 0, reqID)
	return endFrame(append(dst, m.Txn[:]...), start)
}

// Decode implements Message.
func (m *Resolve) Decode(f Frame) error {
	d, err := start(f, TypeResolve)
	if err != nil {
		return err
	}
	m.Txn = d.txn()
	return d.finish(TypeResolve)
}

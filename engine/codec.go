package engine

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/commitd/commitd/protocol"
)

// MaxCheckpointLen bounds the Data of a RecCheckpoint (a resource snapshot
// plus the transactions prepared at that moment).
const MaxCheckpointLen = 64 << 20

// ErrBadRecord is returned (wrapped) for a record that cannot be encoded or
// decoded: an unknown type, a bound exceeded, a truncated or over-long
// encoding.
var ErrBadRecord = errors.New("engine: bad record")

// Record encoding. All integers are little endian; every length is checked
// against its bound before anything is allocated for it.
//
//	+------+----------+--------------------------------------------+
//	| type | txn      | body (by type)                             |
//	| u8   | 16 bytes |                                            |
//	+------+----------+--------------------------------------------+
//
//	commit      u8 n (1..MaxBranches), n × { u8 len (1..MaxNameLen), name }
//	staged      u8 n (2..MaxBranches), names as commit
//	end         -
//	abort       -
//	prevented   -
//	prepared    u16 len (0..MaxWorkLen), work
//	committed   u16 len (0..MaxWorkLen), work (non-empty only for one-phase)
//	aborted     -
//	checkpoint  u32 len (0..MaxCheckpointLen), data
//
// The log around the record (the WAL) supplies framing and checksums; the
// record itself must be exactly the bytes given to UnmarshalBinary.
const recordHeaderLen = 1 + 16

// AppendBinary appends the encoding of r to b. It fails, appending nothing,
// if r breaks a bound (too many participants, an empty or over-long name,
// over-long work or data) or has an unknown type.
func (r *Record) AppendBinary(b []byte) ([]byte, error) {
	if err := r.validate(); err != nil {
		return b, err
	}
	b = append(b, byte(r.Type))
	b = append(b, r.Txn[:]...)
	switch r.Type {
	case RecCommit, RecStaged:
		b = append(b, byte(len(r.Participants)))
		for _, p := range r.Participants {
			b = append(b, byte(len(p)))
			b = append(b, p...)
		}
	case RecPrepared, RecCommitted:
		b = binary.LittleEndian.AppendUint16(b, uint16(len(r.Work)))
		b = append(b, r.Work...)
	case RecCheckpoint:
		b = binary.LittleEndian.AppendUint32(b, uint32(len(r.Data)))
		b = append(b, r.Data...)
	}
	return b, nil
}

// MarshalBinary returns the encoding of r in a new slice.
func (r *Record) MarshalBinary() ([]byte, error) {
	return r.AppendBinary(nil)
}

func (r *Record) validate() error {
	switch r.Type {
	case RecCommit, RecStaged:
		if len(r.Participants) < minNames(r.Type) || len(r.Participants) > protocol.MaxBranches {
			return fmt.Errorf("%w: %v record with %d participants", ErrBadRecord, r.Type, len(r.Participants))
		}
		for _, p := range r.Participants {
			if len(p) == 0 || len(p) > protocol.MaxNameLen {
				return fmt.Errorf("%w: participant name of %d bytes", ErrBadRecord, len(p))
			}
		}
	case RecPrepared, RecCommitted:
		if len(r.Work) > protocol.MaxWorkLen {
			return fmt.Errorf("%w: work of %d bytes", ErrBadRecord, len(r.Work))
		}
	case RecCheckpoint:
		if len(r.Data) > MaxCheckpointLen {
			return fmt.Errorf("%w: checkpoint of %d bytes", ErrBadRecord, len(r.Data))
		}
	case RecEnd, RecAborted, RecAbort, RecPrevented:
	default:
		return fmt.Errorf("%w: unknown type %d", ErrBadRecord, uint8(r.Type))
	}
	return nil
}

// minNames is the fewest participants a record of type t names: a staged
// transaction has at least two branches (one is one-phase), and a commit
// names its YES voters.
func minNames(t RecordType) int {
	if t == RecStaged {
		return 2
	}
	return 1
}

// UnmarshalBinary decodes exactly one record from b, replacing r. Work,
// Data and names are copied, so b may be reused afterwards. It rejects
// unknown types, broken bounds, truncation and trailing bytes; on error r
// is left zero.
func (r *Record) UnmarshalBinary(b []byte) error {
	*r = Record{}
	if err := r.unmarshal(b); err != nil {
		*r = Record{}
		return err
	}
	return nil
}

func (r *Record) unmarshal(b []byte) error {
	if len(b) < recordHeaderLen {
		return fmt.Errorf("%w: %d bytes, shorter than a header", ErrBadRecord, len(b))
	}
	r.Type = RecordType(b[0])
	copy(r.Txn[:], b[1:recordHeaderLen])
	b = b[recordHeaderLen:]
	switch r.Type {
	case RecCommit, RecStaged:
		if len(b) < 1 {
			return fmt.Errorf("%w: %v record truncated", ErrBadRecord, r.Type)
		}
		n := int(b[0])
		b = b[1:]
		if n < minNames(r.Type) || n > protocol.MaxBranches {
			return fmt.Errorf("%w: %v record with %d participants", ErrBadRecord, r.Type, n)
		}
		if n > 0 {
			r.Participants = make([]string, n)
		}
		for i := range n {
			if len(b) < 1 {
				return fmt.Errorf("%w: %v record truncated", ErrBadRecord, r.Type)
			}
			l := int(b[0])
			b = b[1:]
			if l == 0 || l > protocol.MaxNameLen || l > len(b) {
				return fmt.Errorf("%w: participant name of %d bytes", ErrBadRecord, l)
			}
			r.Participants[i] = string(b[:l])
			b = b[l:]
		}
	case RecPrepared, RecCommitted:
		if len(b) < 2 {
			return fmt.Errorf("%w: %v record truncated", ErrBadRecord, r.Type)
		}
		l := int(binary.LittleEndian.Uint16(b))
		b = b[2:]
		if l > protocol.MaxWorkLen || l > len(b) {
			return fmt.Errorf("%w: work of %d bytes", ErrBadRecord, l)
		}
		if l > 0 {
			r.Work = append([]byte(nil), b[:l]...)
		}
		b = b[l:]
	case RecCheckpoint:
		if len(b) < 4 {
			return fmt.Errorf("%w: checkpoint record truncated", ErrBadRecord)
		}
		l := uint64(binary.LittleEndian.Uint32(b))
		b = b[4:]
		if l > MaxCheckpointLen || l > uint64(len(b)) {
			return fmt.Errorf("%w: checkpoint of %d bytes", ErrBadRecord, l)
		}
		if l > 0 {
			r.Data = append([]byte(nil), b[:l]...)
		}
		b = b[l:]
	case RecEnd, RecAborted, RecAbort, RecPrevented:
	default:
		return fmt.Errorf("%w: unknown type %d", ErrBadRecord, uint8(r.Type))
	}
	if len(b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrBadRecord, len(b))
	}
	return nil
}

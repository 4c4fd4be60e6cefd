package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Version is the only frame version this package speaks. Every frame
// carries it; a frame with any other version is refused with ErrVersion.
const Version = 1

// Frame size limits.
const (
	// HeaderSize is the size of the fixed frame header, length prefix included.
	HeaderSize = 16
	// MaxFrameSize bounds a whole frame, length prefix included. A reader
	// checks it against the length prefix before it waits for, or stores,
	// a single payload byte.
	MaxFrameSize = 64 << 10
	// MaxPayload is the largest payload a frame can carry.
	MaxPayload = MaxFrameSize - HeaderSize
)

// MaxDetailLen bounds Outcome.Detail and Error.Message. The other field
// limits are the protocol's (protocol.MaxNameLen for participant and peer
// names, protocol.MaxBranches, protocol.MaxWorkLen), checked when a message
// is encoded and when it is decoded.
const MaxDetailLen = 1024

// Sentinel errors. Decoding errors wrap one of them with the reason.
var (
	// ErrFrameTooLarge: the length prefix announces a frame over MaxFrameSize.
	ErrFrameTooLarge = errors.New("wire: frame too large")
	// ErrVersion: the frame's version is not Version.
	ErrVersion = errors.New("wire: unsupported frame version")
	// ErrMalformed: the header or the payload breaks the format or a
	// limit. On encoding it means the message breaks a limit.
	ErrMalformed = errors.New("wire: malformed frame")
)

// Type says what a frame carries.
type Type uint8

// Frame types. Types start at 1 so that a zero header is never valid.
const (
	TypeHello         Type = iota + 1 // one-way, first frame of a connection
	TypeBegin                         // request: client → coordinator
	TypeOutcome                       // reply to Begin
	TypePrepare                       // one-way: coordinator → participant
	TypeVote                          // one-way: participant → coordinator
	TypeDecision                      // one-way: coordinator → participant
	TypeAck                           // one-way: participant → coordinator
	TypeInquire                       // one-way: participant → coordinator
	TypeAdminRequest                  // request: admin → any server
	TypeAdminResponse                 // reply to AdminRequest; FlagMore may be set
	TypeError                         // reply to any request that failed
	TypeRaft                          // one-way: replica ↔ replica (raftpb.Message); FlagMore may be set
	TypeResolve                       // one-way: coordinator → participant (staged decisions)
	typeEnd                           // one past the last type
)

var typeNames = [...]string{
	TypeHello:         "hello",
	TypeBegin:         "begin",
	TypeOutcome:       "outcome",
	TypePrepare:       "prepare",
	TypeVote:          "vote",
	TypeDecision:      "decision",
	TypeAck:           "ack",
	TypeInquire:       "inquire",
	TypeAdminRequest:  "admin-request",
	TypeAdminResponse: "admin-response",
	TypeError:         "error",
	TypeRaft:          "raft",
	TypeResolve:       "resolve",
}

func (t Type) String() string {
	if t.valid() {
		return typeNames[t]
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

func (t Type) valid() bool { return t >= TypeHello && t < typeEnd }

// IsRequest reports whether frames of type t carry a non-zero request id
// and expect a reply (an Error, or the type's own reply).
func (t Type) IsRequest() bool { return t == TypeBegin || t == TypeAdminRequest }

// IsReply reports whether frames of type t answer a request: their request
// id is the request's. The one exception is an Error with request id 0,
// which answers no request: it is the reason the sender closes the
// connection.
func (t Type) IsReply() bool {
	return t == TypeOutcome || t == TypeAdminResponse || t == TypeError
}

// Flags are per-frame bits in the header. Each bit is valid only on the
// types its comment names; any other bit makes the frame malformed.
type Flags uint16

const (
	// FlagMore (AdminResponse): more response frames with the same
	// request id follow; (Raft) more frames of the same raft message
	// follow on the connection.
	FlagMore Flags = 1 << 0
	// FlagAnswer (Hello): the sender waits for the accepting side's own
	// Hello before it uses the connection, so that nothing is sent on a
	// connection the peer is about to refuse (see Hello.Answer).
	FlagAnswer Flags = 1 << 1
	// FlagTrace (Begin, Prepare): the payload ends with a W3C trace
	// context (TraceContext, TraceContextLen bytes) after the message's
	// own fields. Without it the payload is exactly what it was before
	// tracing existed, so frames that carry no trace decode as they
	// always did.
	FlagTrace Flags = 1 << 2
	// FlagStaged (Prepare): the transaction runs with a staged decision
	// (docs/protocol.md "Staged commits"): a NO vote must be a durable
	// prevention. See Prepare.Staged.
	FlagStaged Flags = 1 << 3
	// FlagPrevent (Hello, a participant's): this participant can prevent
	// a transaction durably, so the coordinator may stage the
	// transactions that name it. See Hello.Prevent.
	FlagPrevent Flags = 1 << 4
	// FlagMap (Hello): the payload ends with the version of the cluster
	// map the sender holds, a u64 (docs/scale.md). Sent only by a
	// process that has a map, so a Hello without one is unchanged. See
	// Hello.MapVersion.
	FlagMap Flags = 1 << 5
)

// allowedFlags returns the flag bits that frames of type t may carry.
func allowedFlags(t Type) Flags {
	switch t {
	case TypeAdminResponse, TypeRaft:
		return FlagMore
	case TypeHello:
		return FlagAnswer | FlagPrevent | FlagMap
	case TypeBegin:
		return FlagTrace
	case TypePrepare:
		return FlagTrace | FlagStaged
	}
	return 0
}

// Frame is one decoded frame header plus its undecoded payload.
//
// Payload references the buffer the frame was parsed from: it is valid only
// until that buffer is reused (for a Reader, until the next call to Next).
// Decode it with the Decode method of the message type that Type names.
type Frame struct {
	Type    Type
	Flags   Flags
	ReqID   uint64
	Payload []byte
}

// Size is the frame's encoded size, header included.
func (f Frame) Size() int { return HeaderSize + len(f.Payload) }

// AppendRaw appends f exactly as it came off the wire (header and payload,
// no payload check). It is for relaying and testing; build new frames with
// AppendFrame.
func AppendRaw(dst []byte, f Frame) []byte {
	dst = appendHeader(dst, f.Type, f.Flags, f.ReqID, len(f.Payload))
	return append(dst, f.Payload...)
}

// appendHeader appends a header for a payload of n bytes.
func appendHeader(dst []byte, t Type, fl Flags, reqID uint64, n int) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(HeaderSize-4+n))
	dst = append(dst, Version, byte(t))
	dst = binary.BigEndian.AppendUint16(dst, uint16(fl))
	return binary.BigEndian.AppendUint64(dst, reqID)
}

// FrameLen returns the size of the frame that b starts with, length prefix
// included, from its first four bytes. It returns io.ErrUnexpectedEOF if b
// is shorter than four bytes, ErrFrameTooLarge or ErrMalformed if the
// prefix is out of bounds.
func FrameLen(b []byte) (int, error) {
	if len(b) < 4 {
		return 0, io.ErrUnexpectedEOF
	}
	n := binary.BigEndian.Uint32(b)
	if n > MaxFrameSize-4 {
		return 0, fmt.Errorf("%w: %d bytes announced, limit %d", ErrFrameTooLarge, uint64(n)+4, MaxFrameSize)
	}
	if n < HeaderSize-4 {
		return 0, fmt.Errorf("%w: length %d shorter than a header", ErrMalformed, n)
	}
	return int(n) + 4, nil
}

// ParseFrame parses the frame at the start of b without copying: the
// returned Frame's Payload is a sub-slice of b. n is the number of bytes
// the frame occupies.
//
// Checks happen in this order, each as soon as the bytes it needs are there:
// the length prefix (ErrFrameTooLarge, ErrMalformed), then the rest of the
// header (ErrVersion; ErrMalformed for an unknown type, a flag the type does
// not allow, or a request id that does not fit the type), then the payload's
// presence. If b holds less than that, ParseFrame returns
// io.ErrUnexpectedEOF: more bytes are needed. The payload itself is not
// checked; Check or the message's Decode does that.
func ParseFrame(b []byte) (f Frame, n int, err error) {
	n, err = FrameLen(b)
	if err != nil {
		return Frame{}, 0, err
	}
	if len(b) < HeaderSize {
		return Frame{}, 0, io.ErrUnexpectedEOF
	}
	if v := b[4]; v != Version {
		return Frame{}, 0, fmt.Errorf("%w: version %d, want %d", ErrVersion, v, Version)
	}
	f.Type = Type(b[5])
	f.Flags = Flags(binary.BigEndian.Uint16(b[6:]))
	f.ReqID = binary.BigEndian.Uint64(b[8:])
	if err := checkHeader(f.Type, f.Flags, f.ReqID); err != nil {
		return Frame{}, 0, err
	}
	if len(b) < n {
		return Frame{}, 0, io.ErrUnexpectedEOF
	}
	f.Payload = b[HeaderSize:n:n]
	return f, n, nil
}

// headerRule is what checkHeader requires of a header of one type.
type headerRule struct {
	known  bool  // the type exists
	flags  Flags // the flags it may carry
	needID bool  // its request id must be non-zero (else zero; see checkHeader for Error)
}

// headerRules holds checkHeader's rules by type, so that a reader can
// accept a good header with one lookup (headerOK); checkHeader itself
// still gives the reason for a bad one.
var headerRules = func() (rs [256]headerRule) {
	for t := TypeHello; t < typeEnd; t++ {
		rs[t] = headerRule{known: true, flags: allowedFlags(t), needID: t.IsRequest() || t.IsReply()}
	}
	return rs
}()

// headerOK reports whether checkHeader accepts the header, without
// building its error.
func headerOK(t Type, fl Flags, reqID uint64) bool {
	r := &headerRules[t]
	return r.known && fl&^r.flags == 0 && (r.needID == (reqID != 0) || t == TypeError && reqID == 0)
}

// checkHeader checks the header fields that do not depend on the payload.
func checkHeader(t Type, fl Flags, reqID uint64) error {
	if !t.valid() {
		return fmt.Errorf("%w: unknown frame type %d", ErrMalformed, uint8(t))
	}
	if fl&^allowedFlags(t) != 0 {
		return fmt.Errorf("%w: flags %#x not allowed on %v", ErrMalformed, uint16(fl), t)
	}
	if t == TypeError && reqID == 0 {
		// A connection error: the sender says why it closes the
		// connection (a refused hello, a message the peer's role may not
		// send) instead of leaving the peer a bare EOF.
		return nil
	}
	if needID := t.IsRequest() || t.IsReply(); needID != (reqID != 0) {
		if needID {
			return fmt.Errorf("%w: %v without a request id", ErrMalformed, t)
		}
		return fmt.Errorf("%w: one-way %v with request id %d", ErrMalformed, t, reqID)
	}
	return nil
}

// Package wire is commitd's binary frame format: versioned, length-prefixed
// frames that carry the two-phase-commit protocol between clients,
// coordinators, participants and admin tools.
//
// The package knows nothing of the engine: it defines its own message
// structs, whose ids, votes, decisions, outcomes and causes are the
// protocol package's types (each one byte on the wire; their Valid methods
// are the range checks), so nothing converts between layers.
// docs/wire-format.md is the full reference.
//
// # Frames
//
// Every frame is a 16-byte header and a payload. Integers are big-endian.
//
//	 0               1               2               3
//	+---------------+---------------+---------------+---------------+
//	|                 len u32: bytes after this field               |
//	+---------------+---------------+---------------+---------------+
//	|  version u8   |    type u8    |           flags u16           |
//	+---------------+---------------+---------------+---------------+
//	|                                                               |
//	+                reqID u64 (0 for one-way frames)               +
//	|                                                               |
//	+---------------+---------------+---------------+---------------+
//	|                  payload: len-12 bytes ...                    |
//	+---------------+---------------+---------------+---------------+
//
// A frame is at most MaxFrameSize (64 KiB) bytes, len included. Begin and
// AdminRequest are requests (reqID ≠ 0); Outcome, AdminResponse and Error
// are replies carrying the request's reqID; every other type is one-way
// (reqID = 0).
//
// Payloads, with name = u8 length + bytes (≤ 64), bytes16 = u16 length +
// bytes, txn = 16 raw UUID bytes:
//
//	Hello          role u8 | name; flags bit 1 = answer with your own Hello
//	Begin          txn | n u8 (≤ 10) | n × (participant name | work bytes16 (≤ 4096))
//	               [| trace context]: flags bit 2 (FlagTrace)
//	Outcome        txn | outcome u8 | cause u8 | participant name | detail bytes16 (≤ 1024)
//	Prepare        txn | onePhase u8 (0/1) | work bytes16 (≤ 4096) [| trace context]
//	Vote           txn | vote u8 | from name
//	Decision       txn | decision u8
//	Ack, Inquire   txn | from name
//	AdminRequest   kind u8 (≠ 0) | argument: the rest of the frame (≤ 1024; empty for reports)
//	AdminResponse  JSON bytes (rest of the frame); flags bit 0 = more frames follow
//	Error          code u16 (≠ 0) | message bytes16 (≤ 1024); with request id 0,
//	               why the sender closes the connection
//
// A trace context (TraceContext) is trace id [16] | span id [8] | flags u8,
// a W3C traceparent's fields, present exactly when FlagTrace is set.
//
// Every message has exactly one encoding (no trailing bytes, booleans 0 or
// 1, enums in range), so decoding and re-encoding a valid frame reproduces
// it byte for byte; the fuzz target checks that.
//
// # Encoding and decoding
//
// Encoding appends to the caller's buffer (AppendFrame, or each message's
// AppendFrame method) and allocates only if the buffer must grow. Decoding
// slices: ParseFrame and Reader.Next return a Frame whose Payload
// references the input, and a message's Decode sets its byte slices to
// sub-slices of that payload. Names and work are therefore []byte, valid
// only until the buffer is reused; a receiver that keeps one copies it, and
// a receiver that looks a name up can do so without allocating
// (m[string(b)] does not allocate in Go).
//
// # Errors
//
// ErrFrameTooLarge, ErrVersion and ErrMalformed describe a broken stream
// or a broken peer: the connection must be closed. A request that is well
// formed but cannot be served gets an Error reply instead, and the
// connection stays open.
package wire

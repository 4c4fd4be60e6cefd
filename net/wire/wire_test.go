package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/commitd/commitd/protocol"
)

type sample struct {
	reqID uint64
	msg   Message
}

var txn = protocol.TxnID{0x01, 0x93, 0x7a, 0x10, 0, 0, 0x70, 0, 0x80, 0, 0, 0, 0, 0, 0, 0x2a}

// samples returns one or more valid messages of every type, including the
// largest each limit allows.
func samples() []sample {
	long := bytes.Repeat([]byte("n"), protocol.MaxNameLen)
	work := bytes.Repeat([]byte{0xab}, protocol.MaxWorkLen)
	var full []Branch
	for i := range protocol.MaxBranches {
		full = append(full, Branch{Participant: append(long[:protocol.MaxNameLen-1:protocol.MaxNameLen-1], byte('0'+i)), Work: work})
	}
	return []sample{
		{0, &Hello{Role: RoleParticipant, Name: []byte("bank-1")}},
		{0, &Hello{Role: RoleClient, Name: []byte{}}},
		{1, &Begin{Txn: txn, Branches: []Branch{{Participant: []byte("a"), Work: []byte{1, 2, 3}}, {Participant: []byte("b"), Work: []byte{}}}}},
		{1<<64 - 1, &Begin{Txn: txn, Branches: full}},
		{7, &Begin{Txn: txn}},
		{7, &Outcome{Txn: txn, Outcome: protocol.OutcomeAborted, Cause: protocol.CauseVotedNo, Participant: []byte("b"), Detail: []byte{}}},
		{8, &Outcome{Txn: txn, Outcome: protocol.OutcomeRejected, Cause: protocol.CauseInvalid, Participant: []byte{}, Detail: bytes.Repeat([]byte("x"), MaxDetailLen)}},
		{0, &Prepare{Txn: txn, OnePhase: true, Work: work}},
		{0, &Prepare{Txn: txn, Work: []byte{}}},
		{0, &Vote{Txn: txn, From: long, Vote: protocol.VoteReadOnly}},
		{0, &Decision{Txn: txn, Decision: protocol.DecisionAbort}},
		{0, &Ack{Txn: txn, From: []byte("bank-2")}},
		{0, &Inquire{Txn: txn, From: []byte("bank-2")}},
		{3, &AdminRequest{Kind: AdminOutcomes}},
		{3, &AdminRequest{Kind: 200}},
		{3, &AdminRequest{Kind: AdminTxn, Arg: []byte("0190a0b0-0000-7000-8000-000000000000")}},
		{3, &AdminRequest{Kind: AdminRetry, Arg: bytes.Repeat([]byte("p"), MaxAdminArgLen)}},
		{3, &AdminRequest{Kind: AdminReplicasAdd, Arg: []byte("4=127.0.0.1:7404")}},
		{3, &AdminResponse{More: true, JSON: []byte(`[{"txn":"x"}`)}},
		{3, &AdminResponse{JSON: bytes.Repeat([]byte(" "), MaxPayload)}},
		{4, &Error{Code: CodeUnavailable, Message: []byte("shutting down")}},
		{0, &Error{Code: CodeRefused, Message: []byte("this is participant p2, not p1")}},
		{0, &Hello{Role: RoleCoordinator, Name: []byte("p1"), Answer: true}},
		{4, &Error{Code: CodeNotLeader, Message: []byte("127.0.0.1:7402")}},
		{0, &Hello{Role: RoleReplica, Name: []byte("2")}},
		{0, &Raft{Msg: []byte{0x08, 0x03}}},
		{0, &Raft{More: true, Msg: []byte{0x08}}},
		{0, &Raft{Msg: bytes.Repeat([]byte{0xcd}, MaxPayload)}},
		{9, &Begin{Txn: txn, Branches: []Branch{{Participant: []byte("a"), Work: []byte{1}}}, Trace: tc}},
		{1<<64 - 1, &Begin{Txn: txn, Branches: full, Trace: tc}},
		{0, &Prepare{Txn: txn, OnePhase: true, Work: work, Trace: tc}},
		{0, &Prepare{Txn: txn, Work: []byte{}, Trace: TraceContext{TraceID: [16]byte{15: 1}, SpanID: [8]byte{0: 1}}}},
		{0, &Resolve{Txn: txn}},
		{0, &Prepare{Txn: txn, Staged: true, Work: []byte("w")}},
		{0, &Hello{Role: RoleParticipant, Name: []byte("bank-1"), Prevent: true}},
		{0, &Hello{Role: RoleParticipant, Name: []byte("bank-1"), Prevent: true, MapVersion: 7}},
		{0, &Hello{Role: RoleCoordinator, Name: []byte("p1"), Answer: true, MapVersion: 1<<64 - 1}},
		{0, &Prepare{Txn: txn, Staged: true, OnePhase: true, Work: work, Trace: tc}},
	}
}

// tc is a trace context as a sampled W3C traceparent carries it.
var tc = TraceContext{
	TraceID: [16]byte{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
	SpanID:  [8]byte{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
	Flags:   1,
}

// newOf returns an empty message of the type t carries.
func newOf(t Type) Message {
	switch t {
	case TypeHello:
		return new(Hello)
	case TypeBegin:
		return new(Begin)
	case TypeOutcome:
		return new(Outcome)
	case TypePrepare:
		return new(Prepare)
	case TypeVote:
		return new(Vote)
	case TypeDecision:
		return new(Decision)
	case TypeAck:
		return new(Ack)
	case TypeInquire:
		return new(Inquire)
	case TypeResolve:
		return new(Resolve)
	case TypeAdminRequest:
		return new(AdminRequest)
	case TypeAdminResponse:
		return new(AdminResponse)
	case TypeError:
		return new(Error)
	case TypeRaft:
		return new(Raft)
	}
	return nil
}

func mustAppend(t *testing.T, dst []byte, reqID uint64, m Message) []byte {
	t.Helper()
	b, err := AppendFrame(dst, reqID, m)
	if err != nil {
		t.Fatalf("AppendFrame(%T): %v", m, err)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	for _, s := range samples() {
		prefix := []byte("prefix")
		b := mustAppend(t, prefix, s.reqID, s.msg)
		if !bytes.Equal(b[:len(prefix)], prefix) {
			t.Fatalf("%T: AppendFrame overwrote dst", s.msg)
		}
		enc := b[len(prefix):]
		f, n, err := ParseFrame(enc)
		if err != nil || n != len(enc) {
			t.Fatalf("%T: ParseFrame = %d, %v; want %d, nil", s.msg, n, err, len(enc))
		}
		if f.Type != s.msg.Type() || f.ReqID != s.reqID || f.Size() != n {
			t.Fatalf("%T: header %+v", s.msg, f)
		}
		if err := Check(f); err != nil {
			t.Fatalf("%T: Check: %v", s.msg, err)
		}
		got := newOf(f.Type)
		if err := got.Decode(f); err != nil {
			t.Fatalf("%T: Decode: %v", s.msg, err)
		}
		if !reflect.DeepEqual(got, s.msg) {
			t.Fatalf("%T: decoded %+v, want %+v", s.msg, got, s.msg)
		}
		if again := mustAppend(t, nil, f.ReqID, got); !bytes.Equal(again, enc) {
			t.Fatalf("%T: re-encoding differs", s.msg)
		}
		if raw := AppendRaw(nil, f); !bytes.Equal(raw, enc) {
			t.Fatalf("%T: AppendRaw differs", s.msg)
		}
	}
}

// TestDecodeIsZeroCopy: decoded byte slices alias the frame, as documented.
func TestDecodeIsZeroCopy(t *testing.T) {
	b := mustAppend(t, nil, 0, &Vote{Txn: txn, From: []byte("bank-1"), Vote: protocol.VoteYes})
	f, _, _ := ParseFrame(b)
	var v Vote
	if err := v.Decode(f); err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] = 'X'
	if string(v.From) != "bank-X" {
		t.Fatalf("From = %q: decoding copied", v.From)
	}
}

func TestEncodeRefusesBrokenLimits(t *testing.T) {
	long := bytes.Repeat([]byte("n"), protocol.MaxNameLen+1)
	branches := make([]Branch, protocol.MaxBranches+1)
	for i := range branches {
		branches[i] = Branch{Participant: []byte{byte('a' + i)}}
	}
	cases := []sample{
		{1, &Begin{Txn: txn, Branches: branches}},
		{1, &Begin{Txn: txn, Branches: []Branch{{Participant: long}}}},
		{1, &Begin{Txn: txn, Branches: []Branch{{Participant: []byte("a"), Work: make([]byte, protocol.MaxWorkLen+1)}}}},
		{0, &Hello{Role: 0}},
		{0, &Hello{Role: RoleReplica + 1}},
		{0, &Raft{}},
		{0, &Raft{Msg: make([]byte, MaxPayload+1)}},
		{0, &Hello{Role: RoleClient, Name: long}},
		{1, &Outcome{Outcome: 0}},
		{1, &Outcome{Outcome: protocol.OutcomeAborted, Cause: protocol.CauseStaleID + 1}},
		{1, &Outcome{Outcome: protocol.OutcomeRejected, Detail: make([]byte, MaxDetailLen+1)}},
		{0, &Prepare{Work: make([]byte, protocol.MaxWorkLen+1)}},
		{0, &Vote{Vote: 0}},
		{0, &Vote{Vote: protocol.VoteReadOnly + 1}},
		{0, &Decision{Decision: 3}},
		{0, &Ack{From: long}},
		{0, &Inquire{From: long}},
		{1, &AdminRequest{}},
		{1, &AdminRequest{Kind: AdminTxn, Arg: make([]byte, MaxAdminArgLen+1)}},
		{1, &AdminResponse{JSON: make([]byte, MaxPayload+1)}},
		{1, &Error{Code: 0}},
		{1, &Error{Code: CodeInternal, Message: make([]byte, MaxDetailLen+1)}},
	}
	for _, c := range cases {
		dst := []byte("keep")
		got, err := AppendFrame(dst, c.reqID, c.msg)
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%T %+v: err = %v, want ErrMalformed", c.msg, c.msg, err)
		}
		if string(got) != "keep" {
			t.Errorf("%T: dst changed to %q", c.msg, got)
		}
	}
}

func TestEncodeWrongRequestIDPanics(t *testing.T) {
	for _, c := range []sample{{1, &Vote{Vote: protocol.VoteYes}}, {0, &Begin{}}, {0, &Outcome{Outcome: protocol.OutcomeCommitted}}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%T with reqID %d did not panic", c.msg, c.reqID)
				}
			}()
			_, _ = AppendFrame(nil, c.reqID, c.msg)
		}()
	}
}

// header builds a raw header with the given fields.
func header(size uint32, version byte, typ Type, fl Flags, reqID uint64) []byte {
	b := binary.BigEndian.AppendUint32(nil, size)
	b = append(b, version, byte(typ))
	b = binary.BigEndian.AppendUint16(b, uint16(fl))
	return binary.BigEndian.AppendUint64(b, reqID)
}

func TestParseFrameHeaderErrors(t *testing.T) {
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"oversized", header(MaxFrameSize-3, Version, TypeVote, 0, 0), ErrFrameTooLarge},
		{"oversized-prefix-only", []byte{0xff, 0xff, 0xff, 0xff}, ErrFrameTooLarge},
		{"shorter-than-header", header(11, Version, TypeVote, 0, 0), ErrMalformed},
		{"version-0", header(12, 0, TypeVote, 0, 0), ErrVersion},
		{"version-2", header(12, 2, TypeVote, 0, 0), ErrVersion},
		{"type-0", header(12, Version, 0, 0, 0), ErrMalformed},
		{"type-unknown", header(12, Version, typeEnd, 0, 0), ErrMalformed},
		{"flag-on-vote", header(12, Version, TypeVote, FlagMore, 0), ErrMalformed},
		{"unknown-flag", header(12, Version, TypeAdminResponse, 2, 1), ErrMalformed},
		{"one-way-with-id", header(12, Version, TypeDecision, 0, 9), ErrMalformed},
		{"request-without-id", header(12, Version, TypeBegin, 0, 0), ErrMalformed},
		{"reply-without-id", header(12, Version, TypeOutcome, 0, 0), ErrMalformed},
		{"admin-reply-without-id", header(12, Version, TypeAdminResponse, 0, 0), ErrMalformed},
		{"more-on-hello", header(12, Version, TypeHello, FlagMore, 0), ErrMalformed},
		{"answer-on-admin-reply", header(12, Version, TypeAdminResponse, FlagAnswer, 1), ErrMalformed},
	}
	for _, c := range cases {
		// The header alone is enough to refuse: no payload is present.
		if _, _, err := ParseFrame(c.b); !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
	}
	// The largest Begin is the size the docs state.
	if b := mustAppend(t, nil, 1, samples()[3].msg); len(b) != 41663 {
		t.Errorf("largest Begin is %d bytes; docs/wire-format.md says 41,663", len(b))
	}
	// The largest frame is accepted.
	big := mustAppend(t, nil, 1, &AdminResponse{JSON: make([]byte, MaxPayload)})
	if len(big) != MaxFrameSize {
		t.Fatalf("largest frame is %d bytes", len(big))
	}
	if _, _, err := ParseFrame(big); err != nil {
		t.Fatal(err)
	}
}

func TestParseFrameTruncated(t *testing.T) {
	for _, s := range samples() {
		b := mustAppend(t, nil, s.reqID, s.msg)
		for i := range len(b) {
			if _, _, err := ParseFrame(b[:i]); err != io.ErrUnexpectedEOF {
				t.Fatalf("%T cut at %d/%d: err = %v", s.msg, i, len(b), err)
			}
		}
	}
}

// TestDecodeMalformedPayload: payloads whose header is fine but whose
// fields are not.
// traced sets FlagTrace on f.
func traced(f Frame) Frame { f.Flags |= FlagTrace; return f }

// TestTraceContextKeepsOldFrames: a Begin or a Prepare without a trace
// context is encoded exactly as before the field existed (no flag, no
// bytes), and one with a trace context only adds the flag and 25 bytes at
// the end of the payload, so the old fields sit where they always did.
func TestTraceContextKeepsOldFrames(t *testing.T) {
	// A Prepare as wire version 1 always encoded it, written out by hand.
	old := []byte{0, 0, 0, 12 + 16 + 1 + 2 + 2, Version, byte(TypePrepare), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	old = append(old, txn[:]...)
	old = append(old, 1, 0, 2, 'w', 'k')
	p := Prepare{Txn: txn, OnePhase: true, Work: []byte("wk")}
	if got := mustAppend(t, nil, 0, &p); !bytes.Equal(got, old) {
		t.Fatalf("untraced prepare changed:\n got %x\nwant %x", got, old)
	}
	f, _, err := ParseFrame(old)
	if err != nil {
		t.Fatal(err)
	}
	var d Prepare
	d.Trace = tc // a decode must clear what an earlier one left
	if err := d.Decode(f); err != nil || !d.Trace.IsZero() || !bytes.Equal(d.Work, []byte("wk")) || !d.OnePhase {
		t.Fatalf("old prepare decoded as %+v, %v", d, err)
	}

	p.Trace = tc
	got := mustAppend(t, nil, 0, &p)
	want := append([]byte(nil), old...)
	binary.BigEndian.PutUint32(want, uint32(len(old)-4+TraceContextLen))
	binary.BigEndian.PutUint16(want[6:], uint16(FlagTrace))
	want = append(append(append(want, tc.TraceID[:]...), tc.SpanID[:]...), tc.Flags)
	if !bytes.Equal(got, want) {
		t.Fatalf("traced prepare:\n got %x\nwant %x", got, want)
	}
	f, _, err = ParseFrame(got)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Decode(f); err != nil || d.Trace != tc {
		t.Fatalf("traced prepare decoded as %+v, %v", d, err)
	}

	b := Begin{Txn: txn, Branches: []Branch{{Participant: []byte("p"), Work: []byte{7}}}}
	plain := mustAppend(t, nil, 3, &b)
	b.Trace = tc
	withTrace := mustAppend(t, nil, 3, &b)
	if len(withTrace) != len(plain)+TraceContextLen || !bytes.Equal(withTrace[HeaderSize:len(plain)], plain[HeaderSize:]) {
		t.Fatalf("traced begin is not the plain one plus a trace context:\n%x\n%x", plain, withTrace)
	}
	// A trace context with an all-zero id has no encoding.
	p.Trace = TraceContext{SpanID: [8]byte{1}}
	if _, err := AppendFrame(nil, 0, &p); !errors.Is(err, ErrMalformed) {
		t.Fatalf("zero trace id encoded: %v", err)
	}
}

func TestDecodeMalformedPayload(t *testing.T) {
	frame := func(typ Type, reqID uint64, payload []byte) Frame {
		return Frame{Type: typ, ReqID: reqID, Payload: payload}
	}
	id := txn[:]
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	elevenBranches := cat(id, []byte{11})
	for range 11 {
		elevenBranches = cat(elevenBranches, []byte{1, 'p', 0, 0})
	}
	cases := []struct {
		name string
		f    Frame
	}{
		{"begin-11-branches", frame(TypeBegin, 1, elevenBranches)},
		{"begin-255-branches-short", frame(TypeBegin, 1, cat(id, []byte{255}))},
		{"begin-branch-truncated", frame(TypeBegin, 1, cat(id, []byte{2, 1, 'a', 0, 0, 1}))},
		{"begin-work-too-long", frame(TypeBegin, 1, cat(id, []byte{1, 1, 'a', 0x10, 0x01}, make([]byte, 0x1001)))},
		{"begin-name-too-long", frame(TypeBegin, 1, cat(id, []byte{1, 65}, make([]byte, 65), []byte{0, 0}))},
		{"hello-empty", frame(TypeHello, 0, nil)},
		{"hello-bad-role", frame(TypeHello, 0, []byte{9, 0})},
		{"hello-trailing", frame(TypeHello, 0, []byte{1, 0, 0})},
		{"hello-name-past-end", frame(TypeHello, 0, []byte{1, 5, 'a'})},
		{"prepare-bool-2", frame(TypePrepare, 0, cat(id, []byte{2, 0, 0}))},
		{"vote-short-txn", frame(TypeVote, 0, id[:15])},
		{"vote-0", frame(TypeVote, 0, cat(id, []byte{0, 0}))},
		{"decision-trailing", frame(TypeDecision, 0, cat(id, []byte{1, 1}))},
		{"ack-no-name", frame(TypeAck, 0, id)},
		{"outcome-bad-cause", frame(TypeOutcome, 1, cat(id, []byte{2, 9, 0, 0, 0}))},
		{"admin-kind-0", frame(TypeAdminRequest, 1, []byte{0})},
		{"error-code-0", frame(TypeError, 1, []byte{0, 0, 0, 0})},
		{"error-message-too-long", frame(TypeError, 1, cat([]byte{0, 1, 0x04, 0x01}, make([]byte, 1025)))},
		{"prepare-trace-missing", traced(frame(TypePrepare, 0, cat(id, []byte{0, 0, 0})))},
		{"prepare-trace-truncated", traced(frame(TypePrepare, 0, cat(id, []byte{0, 0, 0}, tc.TraceID[:], tc.SpanID[:])))},
		{"prepare-trace-zero-trace-id", traced(frame(TypePrepare, 0, cat(id, []byte{0, 0, 0}, make([]byte, 16), tc.SpanID[:], []byte{1})))},
		{"prepare-trace-zero-span-id", traced(frame(TypePrepare, 0, cat(id, []byte{0, 0, 0}, tc.TraceID[:], make([]byte, 8), []byte{1})))},
		{"prepare-trace-trailing", traced(frame(TypePrepare, 0, cat(id, []byte{0, 0, 0}, tc.TraceID[:], tc.SpanID[:], []byte{1, 0})))},
		{"begin-trace-missing", traced(frame(TypeBegin, 1, cat(id, []byte{0})))},
		{"begin-trace-zero", traced(frame(TypeBegin, 1, cat(id, []byte{0}, make([]byte, TraceContextLen))))},
		{"vote-trace-flag", traced(frame(TypeVote, 0, cat(id, []byte{1, 1, 'a'}, tc.TraceID[:], tc.SpanID[:], []byte{1})))},
		{"decision-trace-flag", traced(frame(TypeDecision, 0, cat(id, []byte{1}, tc.TraceID[:], tc.SpanID[:], []byte{1})))},
	}
	for _, c := range cases {
		if err := Check(c.f); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Check = %v, want ErrMalformed", c.name, err)
		}
		if err := newOf(c.f.Type).Decode(c.f); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Decode = %v, want ErrMalformed", c.name, err)
		}
	}
	// Decoding a frame as the wrong message type is refused.
	f, _, _ := ParseFrame(mustAppend(t, nil, 0, &Ack{Txn: txn, From: []byte("a")}))
	if err := new(Inquire).Decode(f); !errors.Is(err, ErrMalformed) {
		t.Errorf("Ack decoded as Inquire: %v", err)
	}
}

// stream concatenates the encodings of every sample.
func stream(t *testing.T) ([]byte, []Frame) {
	var b []byte
	var offs []int
	for _, s := range samples() {
		offs = append(offs, len(b))
		b = mustAppend(t, b, s.reqID, s.msg)
	}
	var frames []Frame
	for _, o := range offs {
		f, _, err := ParseFrame(b[o:])
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, f)
	}
	return b, frames
}

func readAll(r *Reader) ([]Frame, error) {
	var out []Frame
	for {
		f, err := r.Next()
		if err != nil {
			return out, err
		}
		f.Payload = bytes.Clone(f.Payload)
		out = append(out, f)
	}
}

func TestReaderStreams(t *testing.T) {
	b, want := stream(t)
	// Repeat the stream so that frames straddle the end of the buffer and
	// the Reader has to move partial frames to the front.
	b3 := bytes.Repeat(b, 3)
	want3 := append(append(append([]Frame(nil), want...), want...), want...)
	readers := map[string]func() io.Reader{
		"whole":     func() io.Reader { return bytes.NewReader(b3) },
		"one-byte":  func() io.Reader { return iotest.OneByteReader(bytes.NewReader(b3)) },
		"half":      func() io.Reader { return iotest.HalfReader(bytes.NewReader(b3)) },
		"data-err":  func() io.Reader { return iotest.DataErrReader(bytes.NewReader(b3)) },
		"chunk-999": func() io.Reader { return &chunkReader{b: b3, n: 999} },
	}
	// From the smallest buffer (which must grow for the largest frames)
	// to one that never has to.
	for _, size := range []int{minReadBuffer, 0, MaxFrameSize} {
		for name, mk := range readers {
			got, err := readAll(NewReader(mk(), size))
			if err != io.EOF {
				t.Errorf("%s, buffer %d: err = %v, want io.EOF", name, size, err)
			}
			if !reflect.DeepEqual(got, want3) {
				t.Errorf("%s, buffer %d: read %d frames, want %d (or contents differ)", name, size, len(got), len(want3))
			}
		}
	}
}

// The buffer grows for a frame larger than itself and for reads that fill
// it, and shrinks back to its first size once reads stay small: an idle
// connection costs its small buffer, not MaxFrameSize.
func TestReaderBufferGrowsAndShrinks(t *testing.T) {
	big, err := AppendFrame(nil, 3, &AdminResponse{JSON: bytes.Repeat([]byte(" "), MaxPayload)})
	if err != nil {
		t.Fatal(err)
	}
	small, _ := AppendFrame(nil, 0, &Ack{Txn: txn, From: []byte("p1")})
	src := io.MultiReader(bytes.NewReader(big), &repeatReader{b: small, n: 2 * shrinkAfter * 8})
	r := NewReader(src, 0)
	if r.BufferSize() != DefaultReadBuffer {
		t.Fatalf("new reader: %d-byte buffer, want %d", r.BufferSize(), DefaultReadBuffer)
	}
	f, err := r.Next()
	if err != nil || f.Type != TypeAdminResponse || r.BufferSize() != MaxFrameSize {
		t.Fatalf("after the largest frame: %v, %v, buffer %d; want it whole in a %d-byte buffer", f.Type, err, r.BufferSize(), MaxFrameSize)
	}
	for {
		if _, err := r.Next(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if r.BufferSize() != DefaultReadBuffer {
		t.Fatalf("after many small reads: %d-byte buffer, want %d again", r.BufferSize(), DefaultReadBuffer)
	}
}

// repeatReader returns b, one copy per Read, n times.
type repeatReader struct {
	b []byte
	n int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	r.n--
	return copy(p, r.b), nil
}

// chunkReader returns at most n bytes per Read.
type chunkReader struct {
	b []byte
	n int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.n)], r.b)
	r.b = r.b[n:]
	return n, nil
}

// countingReader counts the bytes it has handed out.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestReaderRefusesBeforeReadingPayload(t *testing.T) {
	cases := map[string][]byte{
		"oversized": header(1<<31, Version, TypeAdminResponse, 0, 1),
		"version":   header(100, 7, TypeVote, 0, 0),
		"type":      header(100, Version, 99, 0, 0),
	}
	for name, h := range cases {
		// An endless supply of payload bytes follows the header; the
		// reader must refuse after the header, one byte at a time.
		src := &countingReader{r: iotest.OneByteReader(io.MultiReader(bytes.NewReader(h), neverEnding('x')))}
		r := NewReader(src, 0)
		_, err := r.Next()
		if err == nil {
			t.Fatalf("%s: no error", name)
		}
		if src.n > HeaderSize {
			t.Errorf("%s: read %d bytes before refusing (%v)", name, src.n, err)
		}
		if _, err2 := r.Next(); err2 != err {
			t.Errorf("%s: error not sticky: %v then %v", name, err, err2)
		}
	}
}

type neverEnding byte

func (b neverEnding) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(b)
	}
	return len(p), nil
}

func TestReaderTruncatedAndErrors(t *testing.T) {
	b := mustAppend(t, nil, 0, &Ack{Txn: txn, From: []byte("bank")})
	for i := 1; i < len(b); i++ {
		r := NewReader(bytes.NewReader(b[:i]), 0)
		if _, err := r.Next(); err != io.ErrUnexpectedEOF {
			t.Fatalf("cut at %d: err = %v", i, err)
		}
	}
	if _, err := NewReader(bytes.NewReader(nil), 0).Next(); err != io.EOF {
		t.Fatalf("empty stream: %v", err)
	}
	boom := errors.New("boom")
	r := NewReader(io.MultiReader(bytes.NewReader(b), iotest.ErrReader(boom)), 0)
	if _, err := r.Next(); err != nil {
		t.Fatalf("first frame: %v", err)
	}
	if _, err := r.Next(); err != boom {
		t.Fatalf("err = %v, want boom", err)
	}
	// Garbage: a valid frame followed by text.
	r = NewReader(strings.NewReader(string(b)+"GET / HTTP/1.1\r\n\r\n"), 0)
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(); err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("garbage accepted: %v", err)
	}
}

func TestAllocations(t *testing.T) {
	buf := make([]byte, 0, 1<<16)
	if n := testing.AllocsPerRun(1000, func() {
		v := Vote{Txn: txn, From: []byte("bank-1"), Vote: protocol.VoteYes}
		buf, _ = AppendFrame(buf[:0], 0, &v)
	}); n != 0 {
		t.Errorf("AppendFrame of a stack message: %v allocs", n)
	}
	b, _ := stream(t)
	var begin Begin
	var err error
	if n := testing.AllocsPerRun(100, func() {
		for rest := b; len(rest) > 0; {
			f, n, _ := ParseFrame(rest)
			rest = rest[n:]
			if err = Check(f); err != nil {
				return
			}
			if f.Type == TypeBegin {
				err = begin.Decode(f)
			}
		}
	}); n != 0 || err != nil {
		t.Errorf("ParseFrame+Check+Decode: %v allocs, err %v", n, err)
	}
	src := bytes.NewReader(b)
	r := NewReader(src, 0)
	if n := testing.AllocsPerRun(100, func() {
		src.Reset(b)
		r.Reset(src)
		for {
			if _, err := r.Next(); err != nil {
				return
			}
		}
	}); n != 0 {
		t.Errorf("Reader.Next: %v allocs", n)
	}
}

// BenchmarkPrepareFrame encodes, parses, checks and decodes a Prepare with
// and without a trace context: the trace context costs 25 bytes and no
// allocation.
func BenchmarkPrepareFrame(b *testing.B) {
	for _, bc := range []struct {
		name  string
		trace TraceContext
	}{{"untraced", TraceContext{}}, {"traced", tc}} {
		b.Run(bc.name, func(b *testing.B) {
			buf := make([]byte, 0, 256)
			p := Prepare{Txn: txn, Work: []byte("transfer 100 from a to b"), Trace: bc.trace}
			var out Prepare
			b.ReportAllocs()
			for b.Loop() {
				buf, _ = AppendFrame(buf[:0], 0, &p)
				f, _, _ := ParseFrame(buf)
				if err := Check(f); err != nil {
					b.Fatal(err)
				}
				if err := out.Decode(f); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBeginFrame is BenchmarkPrepareFrame for a two-branch Begin.
func BenchmarkBeginFrame(b *testing.B) {
	for _, bc := range []struct {
		name  string
		trace TraceContext
	}{{"untraced", TraceContext{}}, {"traced", tc}} {
		b.Run(bc.name, func(b *testing.B) {
			buf := make([]byte, 0, 256)
			m := Begin{Txn: txn, Branches: []Branch{{Participant: []byte("bank-1"), Work: []byte("a -100")}, {Participant: []byte("bank-2"), Work: []byte("b +100")}}, Trace: bc.trace}
			out := Begin{Branches: make([]Branch, 0, protocol.MaxBranches)}
			b.ReportAllocs()
			for b.Loop() {
				buf, _ = AppendFrame(buf[:0], 1, &m)
				f, _, _ := ParseFrame(buf)
				if err := Check(f); err != nil {
					b.Fatal(err)
				}
				if err := out.Decode(f); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAppendParseVote(b *testing.B) {
	buf := make([]byte, 0, 256)
	v := Vote{Txn: txn, From: []byte("bank-1"), Vote: protocol.VoteYes}
	var out Vote
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = AppendFrame(buf[:0], 0, &v)
		f, _, _ := ParseFrame(buf)
		_ = out.Decode(f)
	}
}

// Every type that is sent unasked has exactly one sending role, and the
// table is what docs/wire-format.md says; a Hello and replies have none.
func TestSender(t *testing.T) {
	want := map[Type]Role{
		TypeHello: 0, TypeBegin: RoleClient, TypeOutcome: 0,
		TypePrepare: RoleCoordinator, TypeVote: RoleParticipant, TypeDecision: RoleCoordinator,
		TypeAck: RoleParticipant, TypeInquire: RoleParticipant, TypeAdminRequest: RoleAdmin,
		TypeAdminResponse: 0, TypeError: 0, TypeRaft: RoleReplica, TypeResolve: RoleCoordinator,
	}
	for ty := TypeHello; ty < typeEnd; ty++ {
		w, ok := want[ty]
		if !ok {
			t.Fatalf("%v: not in the test's table", ty)
		}
		if got := Sender(ty); got != w {
			t.Errorf("Sender(%v) = %v, want %v", ty, got, w)
		}
		if (Sender(ty) == 0) != (ty == TypeHello || ty.IsReply()) {
			t.Errorf("%v: a sender role exactly when it is neither a hello nor a reply", ty)
		}
	}
}

// BenchmarkDecisionFrame encodes, parses and decodes a Decision: the
// coordinator sends one per participant per transaction, and each
// participant decodes it.
func BenchmarkDecisionFrame(b *testing.B) {
	buf := make([]byte, 0, 64)
	m := Decision{Txn: txn, Decision: protocol.DecisionCommit}
	var out Decision
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = AppendFrame(buf[:0], 0, &m)
		f, _, _ := ParseFrame(buf)
		if err := out.Decode(f); err != nil {
			b.Fatal(err)
		}
	}
}

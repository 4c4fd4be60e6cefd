package wire

import (
	"encoding/binary"
	"fmt"

	"github.com/commitd/commitd/protocol"
)

// Message is the payload of one frame type: *Hello, *Begin, *Outcome,
// *Prepare, *Vote, *Decision, *Ack, *Inquire, *AdminRequest,
// *AdminResponse, *Error, *Raft or *Resolve. The set is closed.
type Message interface {
	// Type is the frame type that carries this message.
	Type() Type
	// Decode fills the message from f, whose Type must be the message's.
	// It does not copy: byte slices in the message reference f.Payload and
	// are valid only as long as it is.
	Decode(f Frame) error
	// AppendFrame appends the message as a whole frame; see the package
	// function AppendFrame.
	AppendFrame(dst []byte, reqID uint64) ([]byte, error)
	// check reports the first limit the message breaks.
	check() error
}

// AppendFrame appends m as one frame with the given request id and returns
// the extended buffer. It allocates only if dst must grow.
//
// If m breaks a limit (a name over protocol.MaxNameLen, more than
// protocol.MaxBranches branches, an enum out of range...) AppendFrame
// returns dst unchanged and an error wrapping ErrMalformed: such a frame
// would make the peer close the connection. A request id that does not fit the type (zero for a request or
// a reply, non-zero for a one-way frame) is a programmer error and panics.
//
// m is not retained. AppendFrame dispatches with a type switch rather than
// an interface call so that escape analysis can see that, and a message
// built on the caller's stack stays there.
func AppendFrame(dst []byte, reqID uint64, m Message) ([]byte, error) {
	switch m := m.(type) {
	case *Hello:
		return m.AppendFrame(dst, reqID)
	case *Begin:
		return m.AppendFrame(dst, reqID)
	case *Outcome:
		return m.AppendFrame(dst, reqID)
	case *Prepare:
		return m.AppendFrame(dst, reqID)
	case *Vote:
		return m.AppendFrame(dst, reqID)
	case *Decision:
		return m.AppendFrame(dst, reqID)
	case *Ack:
		return m.AppendFrame(dst, reqID)
	case *Inquire:
		return m.AppendFrame(dst, reqID)
	case *AdminRequest:
		return m.AppendFrame(dst, reqID)
	case *AdminResponse:
		return m.AppendFrame(dst, reqID)
	case *Error:
		return m.AppendFrame(dst, reqID)
	case *Raft:
		return m.AppendFrame(dst, reqID)
	case *Resolve:
		return m.AppendFrame(dst, reqID)
	}
	// Unreachable while Message has an unexported method; a nil pointer of
	// a message type is handled above and panics in its own method.
	panic("wire: AppendFrame of an unknown message type")
}

// Check decodes f's payload into scratch space and reports whether it is
// well formed. It does not allocate. A reader that checks every frame
// before acting on it can treat any later Decode error as a bug.
func Check(f Frame) error {
	switch f.Type {
	case TypeHello:
		var m Hello
		return m.Decode(f)
	case TypeBegin:
		var bs [protocol.MaxBranches]Branch
		m := Begin{Branches: bs[:0]}
		return m.Decode(f)
	case TypeOutcome:
		var m Outcome
		return m.Decode(f)
	case TypePrepare:
		var m Prepare
		return m.Decode(f)
	case TypeVote:
		var m Vote
		return m.Decode(f)
	case TypeDecision:
		var m Decision
		return m.Decode(f)
	case TypeAck:
		var m Ack
		return m.Decode(f)
	case TypeInquire:
		var m Inquire
		return m.Decode(f)
	case TypeAdminRequest:
		var m AdminRequest
		return m.Decode(f)
	case TypeAdminResponse:
		var m AdminResponse
		return m.Decode(f)
	case TypeError:
		var m Error
		return m.Decode(f)
	case TypeRaft:
		var m Raft
		return m.Decode(f)
	case TypeResolve:
		var m Resolve
		return m.Decode(f)
	}
	return fmt.Errorf("%w: unknown frame type %d", ErrMalformed, uint8(f.Type))
}

// Role says what kind of program opened a connection.
type Role uint8

// Roles start at 1.
const (
	RoleClient Role = iota + 1
	RoleCoordinator
	RoleParticipant
	RoleAdmin
	// RoleReplica: another replica of this coordinator's group; its Hello
	// names its raft id in decimal.
	RoleReplica
)

func (r Role) String() string {
	switch r {
	case RoleClient:
		return "client"
	case RoleCoordinator:
		return "coordinator"
	case RoleParticipant:
		return "participant"
	case RoleAdmin:
		return "admin"
	case RoleReplica:
		return "replica"
	}
	return fmt.Sprintf("Role(%d)", uint8(r))
}

// Sender returns the only role that may send frames of type t unasked
// (requests and one-way messages), or 0 for a Hello and for replies, which
// any role sends. Every protocol message has exactly one sending role, so
// this one table is the authorization rule at both servers:
//
//	Begin                  client       → coordinator
//	Prepare, Decision,     coordinator  → participant
//	Resolve
//	Vote, Ack, Inquire     participant  → coordinator
//	AdminRequest           admin        → either server
//	Raft                   replica      → replica of the same group
//
// A receiver that checks it against the role of the connection's Hello
// (and that role against the peer's name and certificate) can trust the
// role of every message it acts on.
func Sender(t Type) Role {
	switch t {
	case TypeBegin:
		return RoleClient
	case TypePrepare, TypeDecision, TypeResolve:
		return RoleCoordinator
	case TypeVote, TypeAck, TypeInquire:
		return RoleParticipant
	case TypeAdminRequest:
		return RoleAdmin
	case TypeRaft:
		return RoleReplica
	}
	return 0
}

// AdminKind says what an AdminRequest asks for. Any non-zero kind is well
// formed on the wire; a server answers a kind it does not serve with an
// Error reply (a request error, not a connection error), so a newer admin
// tool does not lose its connection to an older server.
type AdminKind uint8

// Admin request kinds.
const (
	AdminStatus   AdminKind = iota + 1 // one JSON object: the server's stats
	AdminAccounts                      // one JSON object: balances (participants)
	AdminOutcomes                      // recent outcomes, possibly over several frames
	// AdminTxn: one JSON object, where one transaction stands (Arg: its
	// id, as text). Coordinator.
	AdminTxn
	// AdminInDoubt: one JSON object listing the transactions waiting on a
	// participant or a decision (coordinator: commits not yet
	// acknowledged; participant: transactions prepared, undecided).
	AdminInDoubt
	// AdminRetry: redeliver now, instead of at the next backoff, what
	// waits (Arg: a transaction id, or a participant's name); one JSON
	// object says how much was sent again. Coordinator: commit decisions;
	// participant: inquiries.
	AdminRetry
	// AdminResolve: an operator's decision for a transaction prepared at a
	// participant whose decision cannot be had (Arg: the request, as
	// JSON); one JSON object, or an Error saying why it was refused.
	// Participant.
	AdminResolve
	// AdminReplicas: one JSON object, a replica group's members.
	AdminReplicas
	// AdminReplicasAdd: Arg "ID=ADDR": add a replica to the group (to its
	// leader).
	AdminReplicasAdd
	// AdminReplicasRemove: Arg "ID": remove a replica from the group (to
	// its leader).
	AdminReplicasRemove
	// AdminParticipantsAdd: Arg "NAME=ADDR": a coordinator starts
	// dialing a new participant and admits begins that name it; one JSON
	// object, the participants afterwards. Coordinator.
	AdminParticipantsAdd
	// AdminParticipantsRemove: Arg "NAME": a coordinator forgets a
	// participant, refused while any transaction in flight or in doubt
	// names it; one JSON object, the participants afterwards.
	AdminParticipantsRemove
	// AdminClusterReload: the server re-reads the cluster map file it was
	// started with (--cluster), as on SIGHUP; one JSON object, the
	// version in use afterwards (cluster.Reloaded), or an Error saying in
	// one line why the map was refused. Coordinator and participant.
	AdminClusterReload
)

// MaxAdminArgLen bounds AdminRequest.Arg.
const MaxAdminArgLen = 1024

// ErrorCode classifies a failed request. Any non-zero code is well formed;
// a receiver treats codes it does not know like CodeInternal.
type ErrorCode uint16

// Error codes.
const (
	// CodeInvalid: the request was well formed but cannot be served as
	// asked (an admin kind this server does not serve, a Begin sent to a
	// participant...). Retrying it unchanged fails again.
	CodeInvalid ErrorCode = iota + 1
	// CodeUnavailable: the server cannot serve it now (overloaded, shutting
	// down). Nothing was started; retrying later or elsewhere is safe.
	CodeUnavailable
	// CodeInternal: the server failed. For a Begin the outcome is unknown.
	CodeInternal
	// CodeRefused: the server will not take this from this peer: a hello
	// whose role, name or certificate it does not accept, a message the
	// peer's role does not send, or a connection beyond its bound. Sent
	// as a connection error (request id 0), after which the server
	// closes the connection; nothing the peer sent on it changed state.
	CodeRefused
	// CodeNotLeader: this coordinator replica does not lead its group;
	// nothing was started. The message is the leader's address, or empty
	// when no leader is known: retry there (or at another replica later).
	CodeNotLeader
)

func (c ErrorCode) String() string {
	switch c {
	case CodeInvalid:
		return "invalid"
	case CodeUnavailable:
		return "unavailable"
	case CodeInternal:
		return "internal"
	case CodeRefused:
		return "refused"
	case CodeNotLeader:
		return "not-leader"
	}
	return fmt.Sprintf("ErrorCode(%d)", uint16(c))
}

// Hello is the first frame a connecting side sends: who it is, and, from
// the coordinator, whom it expects to reach.
type Hello struct {
	Role Role
	// Name is ≤ protocol.MaxNameLen bytes: for a participant, its participant
	// name; for the coordinator dialing a participant, the name it knows
	// that participant by (the participant refuses any name but its own);
	// empty for clients and admin tools.
	Name []byte
	// Answer (FlagAnswer) asks the accepting side to answer with its own
	// Hello once it has accepted this one; the sender uses the connection
	// only after that answer, so a refusal costs no lost message.
	Answer bool
	// Prevent (FlagPrevent), in a participant's answering Hello: it can
	// make "this transaction will never prepare here" durable, so the
	// coordinator may run the transactions that name it with a staged
	// decision. A participant that cannot (its resource keeps durability
	// where it cannot compare-and-swap) leaves it unset, and those
	// transactions run classic two-phase commit.
	Prevent bool
	// MapVersion (FlagMap) is the version of the cluster map the sender
	// held when it connected (docs/scale.md), or 0: it has none, and the
	// flag is not sent. The receiver only reports a newer one; it never
	// acts on it.
	MapVersion uint64
}

// Branch is one participant's share of a Begin.
type Branch struct {
	Participant []byte // ≤ protocol.MaxNameLen
	Work        []byte // ≤ protocol.MaxWorkLen
}

// Begin asks a coordinator to run a transaction (request; reply Outcome).
// The wire bounds the branches (≤ protocol.MaxBranches) and their sizes; whether they
// make a valid transaction (at least one, distinct non-empty names) is the
// coordinator's to judge, with an Outcome{protocol.OutcomeRejected}.
type Begin struct {
	Txn protocol.TxnID
	// Branches is reused by Decode: it decodes into Branches[:0], so a
	// Begin decoded again and again allocates only while it grows.
	Branches []Branch
	// Trace is the caller's trace context (FlagTrace), or zero: the
	// coordinator's span for the transaction is its child.
	Trace TraceContext
}

// Outcome answers a Begin.
type Outcome struct {
	Txn         protocol.TxnID
	Outcome     protocol.Outcome
	Cause       protocol.Cause // zero unless aborted or rejected
	Participant []byte         // ≤ protocol.MaxNameLen: the participant that caused an abort
	Detail      []byte         // ≤ MaxDetailLen: why a Begin was rejected
}

// Prepare asks a participant to prepare its branch (one-way).
type Prepare struct {
	Txn      protocol.TxnID
	OnePhase bool // the only branch: commit at once if possible
	// Staged (FlagStaged): the transaction has a staged decision, so a
	// NO vote must be a durable prevention.
	Staged bool
	Work   []byte
	// Trace is the coordinator's span for this prepare (FlagTrace), or
	// zero: the participant's span for the prepare is its child.
	Trace TraceContext
}

// Vote is a participant's answer to Prepare (one-way).
type Vote struct {
	Txn  protocol.TxnID
	From []byte
	Vote protocol.Vote
}

// Decision tells a participant the outcome of a transaction (one-way).
type Decision struct {
	Txn      protocol.TxnID
	Decision protocol.Decision
}

// Ack says the commit decision is durable at participant From (one-way).
type Ack struct {
	Txn  protocol.TxnID
	From []byte
}

// Inquire asks the coordinator for the decision on a transaction that
// participant From holds prepared (one-way).
type Inquire struct {
	Txn  protocol.TxnID
	From []byte
}

// AdminRequest asks a server for a report, or (AdminReplicasAdd,
// AdminReplicasRemove) a replica group's leader for a change (request;
// replies AdminResponse). Arg is the kind's argument, at most
// MaxDetailLen bytes: empty for reports.
type AdminRequest struct {
	Kind AdminKind
	// Arg is what the request is about (a transaction id, a participant's
	// name), as text; empty for the reports that take none. At most
	// MaxAdminArgLen bytes; it is the rest of the payload after the kind,
	// so an AdminRequest without one is encoded as it always was.
	Arg []byte
}

// AdminResponse carries a report as JSON. A report larger than one frame
// is sent as several AdminResponse frames with the same request id, every
// one but the last with More set (FlagMore); the receiver concatenates
// the JSON chunks. A chunk is at most MaxPayload bytes.
type AdminResponse struct {
	More bool
	JSON []byte
}

// Error is the reply to a request that failed: a request error. It is a
// frame, not a Go error; the connection stays open. With request id 0 it is
// a connection error instead: why the sender is closing the connection
// (usually CodeRefused).
type Error struct {
	Code    ErrorCode // non-zero
	Message []byte    // ≤ MaxDetailLen, human-readable
}

// ---- Type ----

// Type implements Message.
func (*Hello) Type() Type { return TypeHello }

// Type implements Message.
func (*Begin) Type() Type { return TypeBegin }

// Type implements Message.
func (*Outcome) Type() Type { return TypeOutcome }

// Type implements Message.
func (*Prepare) Type() Type { return TypePrepare }

// Type implements Message.
func (*Vote) Type() Type { return TypeVote }

// Type implements Message.
func (*Decision) Type() Type { return TypeDecision }

// Type implements Message.
func (*Ack) Type() Type { return TypeAck }

// Type implements Message.
func (*Inquire) Type() Type { return TypeInquire }

// Type implements Message.
func (*AdminRequest) Type() Type { return TypeAdminRequest }

// Type implements Message.
func (*AdminResponse) Type() Type { return TypeAdminResponse }

// Type implements Message.
func (*Error) Type() Type { return TypeError }

// ---- checks shared by encoding and decoding ----

func checkLen(what string, b []byte, max int) error {
	if len(b) > max {
		return fmt.Errorf("%w: %s is %d bytes, limit %d", ErrMalformed, what, len(b), max)
	}
	return nil
}

// checkValid reports an enum (protocol.Vote, Decision, Outcome, Cause)
// whose value v is not one that may be sent: valid is v's own Valid(),
// evaluated by the caller so that it is inlined there (through a type
// parameter it was an indirect call, on every vote, decision and outcome
// encoded or decoded), and this check inlines too.
func checkValid(what string, valid bool, v uint8) error {
	if valid {
		return nil
	}
	return errEnum(what, v)
}

func errEnum(what string, v uint8) error {
	return fmt.Errorf("%w: %s %d out of range", ErrMalformed, what, v)
}

func checkEnum(what string, v, lo, hi uint8) error {
	if v < lo || v > hi {
		return fmt.Errorf("%w: %s %d out of range", ErrMalformed, what, v)
	}
	return nil
}

func (m *Hello) check() error {
	if err := checkEnum("role", uint8(m.Role), uint8(RoleClient), uint8(RoleReplica)); err != nil {
		return err
	}
	return checkLen("name", m.Name, protocol.MaxNameLen)
}

func (m *Begin) check() error {
	if err := m.Trace.check(); err != nil {
		return err
	}
	if len(m.Branches) > protocol.MaxBranches {
		return fmt.Errorf("%w: %d branches, limit %d", ErrMalformed, len(m.Branches), protocol.MaxBranches)
	}
	for i := range m.Branches {
		if err := checkLen("participant", m.Branches[i].Participant, protocol.MaxNameLen); err != nil {
			return err
		}
		if err := checkLen("work", m.Branches[i].Work, protocol.MaxWorkLen); err != nil {
			return err
		}
	}
	return nil
}

func (m *Outcome) check() error {
	if err := checkValid("outcome", m.Outcome.Valid(), uint8(m.Outcome)); err != nil {
		return err
	}
	if err := checkValid("cause", m.Cause.Valid(), uint8(m.Cause)); err != nil {
		return err
	}
	if err := checkLen("participant", m.Participant, protocol.MaxNameLen); err != nil {
		return err
	}
	return checkLen("detail", m.Detail, MaxDetailLen)
}

func (m *Prepare) check() error {
	if err := m.Trace.check(); err != nil {
		return err
	}
	return checkLen("work", m.Work, protocol.MaxWorkLen)
}

func (m *Vote) check() error {
	if err := checkValid("vote", m.Vote.Valid(), uint8(m.Vote)); err != nil {
		return err
	}
	return checkLen("from", m.From, protocol.MaxNameLen)
}

func (m *Decision) check() error {
	return checkValid("decision", m.Decision.Valid(), uint8(m.Decision))
}

func (m *Ack) check() error     { return checkLen("from", m.From, protocol.MaxNameLen) }
func (m *Inquire) check() error { return checkLen("from", m.From, protocol.MaxNameLen) }

func (m *AdminRequest) check() error {
	if m.Kind == 0 {
		return fmt.Errorf("%w: admin kind 0", ErrMalformed)
	}
	return checkLen("admin argument", m.Arg, MaxAdminArgLen)
}

func (m *AdminResponse) check() error { return checkLen("admin JSON", m.JSON, MaxPayload) }

func (m *Error) check() error {
	if m.Code == 0 {
		return fmt.Errorf("%w: error code 0", ErrMalformed)
	}
	return checkLen("error message", m.Message, MaxDetailLen)
}

// ---- encoding ----

// beginFrame appends a header whose length endFrame patches later. It
// panics if reqID does not fit t: that is a programmer error.
func beginFrame(dst []byte, t Type, fl Flags, reqID uint64) ([]byte, int) {
	if err := checkHeader(t, fl, reqID); err != nil {
		panic(err.Error())
	}
	return appendHeader(dst, t, fl, reqID, 0), len(dst)
}

// endFrame patches the length of the frame that starts at dst[start:].
func endFrame(dst []byte, start int) ([]byte, error) {
	n := len(dst) - start
	if n > MaxFrameSize {
		// Unreachable with the field limits above (the largest Begin is
		// 41,663 bytes); kept so that a new field cannot silently produce
		// frames every reader refuses.
		return dst[:start], fmt.Errorf("%w: encoded frame is %d bytes", ErrFrameTooLarge, n)
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(n-4))
	return dst, nil
}

func appendName(dst, name []byte) []byte { return append(append(dst, byte(len(name))), name...) }

func appendBytes16(dst, b []byte) []byte {
	return append(binary.BigEndian.AppendUint16(dst, uint16(len(b))), b...)
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// AppendFrame implements Message; reqID must be zero.
func (m *Hello) AppendFrame(dst []byte, reqID uint64) ([]byte, error) {
	if err := m.check(); err != nil {
		return dst, err
	}
	var fl Flags
	if m.Answer {
		fl = FlagAnswer
	}
	if m.Prevent {
		fl |= FlagPrevent
	}
	if m.MapVersion != 0 {
		fl |= FlagMap
	}
	dst, start := beginFrame(dst, TypeHello, fl, reqID)
	dst = appendName(append(dst, byte(m.Role)), m.Name)
	if m.MapVersion != 0 {
		dst = binary.BigEndian.AppendUint64(dst, m.MapVersion)
	}
	return endFrame(dst, start)
}

// AppendFrame implements Message; reqID must not be zero.
func (m *Begin) AppendFrame(dst []byte, reqID uint64) ([]byte, error) {
	if err := m.check(); err != nil {
		return dst, err
	}
	dst, start := beginFrame(dst, TypeBegin, m.Trace.flag(), reqID)
	dst = append(dst, m.Txn[:]...)
	dst = append(dst, byte(len(m.Branches)))
	for i := range m.Branches {
		dst = appendName(dst, m.Branches[i].Participant)
		dst = appendBytes16(dst, m.Branches[i].Work)
	}
	return endFrame(m.Trace.append(dst), start)
}

// AppendFrame implements Message; reqID must be the Begin's.
func (m *Outcome) AppendFrame(dst []byte, reqID uint64) ([]byte, error) {
	if err := m.check(); err != nil {
		return dst, err
	}
	dst, start := beginFrame(dst, TypeOutcome, 0, reqID)
	dst = append(dst, m.Txn[:]...)
	dst = append(dst, byte(m.Outcome), byte(m.Cause))
	dst = appendName(dst, m.Participant)
	return endFrame(appendBytes16(dst, m.Detail), start)
}

// AppendFrame implements Message; reqID must be zero.
func (m *Prepare) AppendFrame(dst []byte, reqID uint64) ([]byte, error) {
	if err := m.check(); err != nil {
		return dst, err
	}
	fl := m.Trace.flag()
	if m.Staged {
		fl |= FlagStaged
	}
	dst, start := beginFrame(dst, TypePrepare, fl, reqID)
	dst = append(dst, m.Txn[:]...)
	dst = append(dst, boolByte(m.OnePhase))
	return endFrame(m.Trace.append(appendBytes16(dst, m.Work)), start)
}

// AppendFrame implements Message; reqID must be zero.
func (m *Vote) AppendFrame(dst []byte, reqID uint64) ([]byte, error) {
	if err := m.check(); err != nil {
		return dst, err
	}
	dst, start := beginFrame(dst, TypeVote, 0, reqID)
	dst = append(dst, m.Txn[:]...)
	dst = append(dst, byte(m.Vote))
	return endFrame(appendName(dst, m.From), start)
}

// AppendFrame implements Message; reqID must be zero.
func (m *Decision) AppendFrame(dst []byte, reqID uint64) ([]byte, error) {
	if err := m.check(); err != nil {
		return dst, err
	}
	dst, start := beginFrame(dst, TypeDecision, 0, reqID)
	dst = append(dst, m.Txn[:]...)
	return endFrame(append(dst, byte(m.Decision)), start)
}

// AppendFrame implements Message; reqID must be zero.
func (m *Ack) AppendFrame(dst []byte, reqID uint64) ([]byte, error) {
	if err := m.check(); err != nil {
		return dst, err
	}
	dst, start := beginFrame(dst, TypeAck, 0, reqID)
	dst = append(dst, m.Txn[:]...)
	return endFrame(appendName(dst, m.From), start)
}

// AppendFrame implements Message; reqID must be zero.
func (m *Inquire) AppendFrame(dst []byte, reqID uint64) ([]byte, error) {
	if err := m.check(); err != nil {
		return dst, err
	}
	dst, start := beginFrame(dst, TypeInquire, 0, reqID)
	dst = append(dst, m.Txn[:]...)
	return endFrame(appendName(dst, m.From), start)
}

// AppendFrame implements Message; reqID must not be zero.
func (m *AdminRequest) AppendFrame(dst []byte, reqID uint64) ([]byte, error) {
	if err := m.check(); err != nil {
		return dst, err
	}
	dst, start := beginFrame(dst, TypeAdminRequest, 0, reqID)
	return endFrame(append(append(dst, byte(m.Kind)), m.Arg...), start)
}

// AppendFrame implements Message; reqID must be the AdminRequest's.
func (m *AdminResponse) AppendFrame(dst []byte, reqID uint64) ([]byte, error) {
	if err := m.check(); err != nil {
		return dst, err
	}
	var fl Flags
	if m.More {
		fl = FlagMore
	}
	dst, start := beginFrame(dst, TypeAdminResponse, fl, reqID)
	return endFrame(append(dst, m.JSON...), start)
}

// AppendFrame implements Message; reqID must be the failed request's.
func (m *Error) AppendFrame(dst []byte, reqID uint64) ([]byte, error) {
	if err := m.check(); err != nil {
		return dst, err
	}
	dst, start := beginFrame(dst, TypeError, 0, reqID)
	dst = binary.BigEndian.AppendUint16(dst, uint16(m.Code))
	return endFrame(appendBytes16(dst, m.Message), start)
}

// ---- decoding ----

// decoder reads fields off a payload; the first failure sticks and later
// reads return zero values, so a decode function checks once at the end.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: payload truncated in %s", ErrMalformed, what)
	}
	d.b = nil
}

func (d *decoder) take(n int, what string) []byte {
	if d.err != nil || n > len(d.b) {
		d.fail(what)
		return nil
	}
	b := d.b[:n:n]
	d.b = d.b[n:]
	return b
}

func (d *decoder) u8(what string) uint8 {
	if b := d.take(1, what); b != nil {
		return b[0]
	}
	return 0
}

func (d *decoder) u16(what string) uint16 {
	if b := d.take(2, what); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (d *decoder) txn() (id protocol.TxnID) {
	copy(id[:], d.take(16, "txn"))
	return id
}

// name reads a u8-prefixed name; its limit is checked afterwards by check.
func (d *decoder) name(what string) []byte { return d.take(int(d.u8(what)), what) }

// bytes16 reads a u16-prefixed byte string.
func (d *decoder) bytes16(what string) []byte { return d.take(int(d.u16(what)), what) }

func (d *decoder) bool(what string) bool {
	switch d.u8(what) {
	case 0:
		return false
	case 1:
		return true
	}
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s is neither 0 nor 1", ErrMalformed, what)
	}
	return false
}

// finish reports the first error, or trailing bytes: every message has
// exactly one encoding, so decoding and re-encoding reproduce the frame.
func (d *decoder) finish(t Type) error {
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes after %v", ErrMalformed, len(d.b), t)
	}
	return nil
}

func start(f Frame, t Type) (decoder, error) {
	if f.Type != t {
		return decoder{}, fmt.Errorf("%w: decoding a %v frame as %v", ErrMalformed, f.Type, t)
	}
	if f.Flags&^allowedFlags(t) != 0 {
		return decoder{}, fmt.Errorf("%w: flags %#x not allowed on %v", ErrMalformed, uint16(f.Flags), t)
	}
	return decoder{b: f.Payload}, nil
}

// Decode implements Message.
func (m *Hello) Decode(f Frame) error {
	d, err := start(f, TypeHello)
	if err != nil {
		return err
	}
	m.Answer = f.Flags&FlagAnswer != 0
	m.Prevent = f.Flags&FlagPrevent != 0
	m.Role = Role(d.u8("role"))
	m.Name = d.name("name")
	m.MapVersion = 0
	if f.Flags&FlagMap != 0 {
		if b := d.take(8, "map version"); b != nil {
			m.MapVersion = binary.BigEndian.Uint64(b)
		}
		if m.MapVersion == 0 && d.err == nil {
			d.err = fmt.Errorf("%w: Hello with the map flag and map version 0", ErrMalformed) // a sender without a map sends no flag
		}
	}
	if err := d.finish(TypeHello); err != nil {
		return err
	}
	return m.check()
}

// Decode implements Message.
func (m *Begin) Decode(f Frame) error {
	d, err := start(f, TypeBegin)
	if err != nil {
		return err
	}
	m.Txn = d.txn()
	n := int(d.u8("branch count"))
	if n > protocol.MaxBranches {
		// Checked before the branches are read, so that a hostile count
		// never grows m.Branches.
		return fmt.Errorf("%w: %d branches, limit %d", ErrMalformed, n, protocol.MaxBranches)
	}
	// Reslice rather than append, so that escape analysis sees no new
	// backing array flowing into m and Check's scratch stays on the stack.
	if cap(m.Branches) < n {
		m.Branches = make([]Branch, n, protocol.MaxBranches)
	}
	m.Branches = m.Branches[:n]
	for i := range m.Branches {
		m.Branches[i].Participant = d.name("participant")
		m.Branches[i].Work = d.bytes16("work")
	}
	d.traceContext(f.Flags, &m.Trace)
	if err := d.finish(TypeBegin); err != nil {
		return err
	}
	return m.check()
}

// Decode implements Message.
func (m *Outcome) Decode(f Frame) error {
	d, err := start(f, TypeOutcome)
	if err != nil {
		return err
	}
	m.Txn = d.txn()
	m.Outcome = protocol.Outcome(d.u8("outcome"))
	m.Cause = protocol.Cause(d.u8("cause"))
	m.Participant = d.name("participant")
	m.Detail = d.bytes16("detail")
	if err := d.finish(TypeOutcome); err != nil {
		return err
	}
	return m.check()
}

// Decode implements Message.
func (m *Prepare) Decode(f Frame) error {
	d, err := start(f, TypePrepare)
	if err != nil {
		return err
	}
	m.Staged = f.Flags&FlagStaged != 0
	m.Txn = d.txn()
	m.OnePhase = d.bool("one-phase")
	m.Work = d.bytes16("work")
	d.traceContext(f.Flags, &m.Trace)
	if err := d.finish(TypePrepare); err != nil {
		return err
	}
	return m.check()
}

// Decode implements Message.
func (m *Vote) Decode(f Frame) error {
	d, err := start(f, TypeVote)
	if err != nil {
		return err
	}
	m.Txn = d.txn()
	m.Vote = protocol.Vote(d.u8("vote"))
	m.From = d.name("from")
	if err := d.finish(TypeVote); err != nil {
		return err
	}
	return m.check()
}

// Decode implements Message.
func (m *Decision) Decode(f Frame) error {
	d, err := start(f, TypeDecision)
	if err != nil {
		return err
	}
	m.Txn = d.txn()
	m.Decision = protocol.Decision(d.u8("decision"))
	if err := d.finish(TypeDecision); err != nil {
		return err
	}
	return m.check()
}

// Decode implements Message.
func (m *Ack) Decode(f Frame) error {
	d, err := start(f, TypeAck)
	if err != nil {
		return err
	}
	m.Txn = d.txn()
	m.From = d.name("from")
	if err := d.finish(TypeAck); err != nil {
		return err
	}
	return m.check()
}

// Decode implements Message.
func (m *Inquire) Decode(f Frame) error {
	d, err := start(f, TypeInquire)
	if err != nil {
		return err
	}
	m.Txn = d.txn()
	m.From = d.name("from")
	if err := d.finish(TypeInquire); err != nil {
		return err
	}
	return m.check()
}

// Decode implements Message.
func (m *AdminRequest) Decode(f Frame) error {
	d, err := start(f, TypeAdminRequest)
	if err != nil {
		return err
	}
	m.Kind = AdminKind(d.u8("kind"))
	if d.err != nil {
		return d.err
	}
	m.Arg = nil
	if len(d.b) > 0 {
		m.Arg = d.b // the rest of the payload
	}
	return m.check()
}

// Decode implements Message.
func (m *AdminResponse) Decode(f Frame) error {
	if _, err := start(f, TypeAdminResponse); err != nil {
		return err
	}
	m.More = f.Flags&FlagMore != 0
	m.JSON = f.Payload
	return m.check()
}

// Decode implements Message.
func (m *Error) Decode(f Frame) error {
	d, err := start(f, TypeError)
	if err != nil {
		return err
	}
	m.Code = ErrorCode(d.u16("code"))
	m.Message = d.bytes16("message")
	if err := d.finish(TypeError); err != nil {
		return err
	}
	return m.check()
}

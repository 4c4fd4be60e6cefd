package participant_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/participant"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/protocol"
	"github.com/commitd/commitd/wal"
	"github.com/commitd/commitd/wal/waltest"
	"github.com/google/uuid"
)

// fakeCoordinator stands in for the coordinator, as a participant sees it:
// it records the votes, acks and inquiries on the participant's
// connections, and sends prepares and decisions on its own.
type fakeCoordinator struct {
	*nodetest.Peer

	mu struct {
		sync.Mutex
		votes    map[protocol.TxnID]protocol.Vote
		acks     map[protocol.TxnID]int
		inquires map[protocol.TxnID]int
	}
}

func newFakeCoordinator(t *testing.T) *fakeCoordinator {
	t.Helper()
	f := &fakeCoordinator{}
	f.mu.votes = map[protocol.TxnID]protocol.Vote{}
	f.mu.acks = map[protocol.TxnID]int{}
	f.mu.inquires = map[protocol.TxnID]int{}
	// It asks for participant p1, the rig's name, as the real coordinator
	// asks for each participant by the name it knows it by.
	f.Peer = nodetest.Listen(t, wire.Hello{Role: wire.RoleCoordinator, Name: []byte("p1")}, f.handle)
	return f
}

func (f *fakeCoordinator) handle(_ *mux.Conn, fr wire.Frame) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch fr.Type {
	case wire.TypeVote:
		var m wire.Vote
		if err := m.Decode(fr); err != nil {
			return err
		}
		f.mu.votes[m.Txn] = m.Vote
	case wire.TypeAck:
		var m wire.Ack
		if err := m.Decode(fr); err != nil {
			return err
		}
		f.mu.acks[m.Txn]++
	case wire.TypeInquire:
		var m wire.Inquire
		if err := m.Decode(fr); err != nil {
			return err
		}
		f.mu.inquires[m.Txn]++
	}
	return nil
}

func (f *fakeCoordinator) send(t *testing.T, m wire.Message) {
	t.Helper()
	if err := f.Send(m); err != nil {
		t.Fatal(err)
	}
}

func (f *fakeCoordinator) prepare(t *testing.T, id uuid.UUID, account uint32, amount int64) {
	t.Helper()
	f.send(t, &wire.Prepare{Txn: id, Work: bank.AppendWork(nil, account, amount)})
}

func (f *fakeCoordinator) decide(t *testing.T, id uuid.UUID, d protocol.Decision) {
	t.Helper()
	f.send(t, &wire.Decision{Txn: id, Decision: d})
}

func (f *fakeCoordinator) vote(id uuid.UUID) protocol.Vote {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mu.votes[id]
}

func (f *fakeCoordinator) acked(id uuid.UUID) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mu.acks[id] > 0
}

func (f *fakeCoordinator) inquired(id uuid.UUID) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mu.inquires[id] > 0
}

const (
	accounts = 10
	balance  = 100
)

// rig is a participant p1 with a bank of 10 accounts of 100, and a fake
// coordinator.
type rig struct {
	t     *testing.T
	cfg   participant.Config
	bank  *bank.Bank // the running server's; read it only once it is closed
	p     *participant.Server
	coord *fakeCoordinator
}

func newRig(t *testing.T, fs wal.FS) *rig {
	t.Helper()
	r := unstartedRig(t, fs)
	r.start()
	return r
}

// unstartedRig is newRig before the participant starts.
func unstartedRig(t *testing.T, fs wal.FS) *rig {
	t.Helper()
	r := &rig{t: t, coord: newFakeCoordinator(t)}
	r.cfg = participant.Config{
		Name:         "p1",
		Listen:       "127.0.0.1:0",
		DataDir:      t.TempDir(),
		Coordinator:  r.coord.Addr(),
		InquireAfter: 50 * time.Millisecond,
		InquireMax:   200 * time.Millisecond,
		SegmentBytes: 1 << 20,
		FS:           fs,
		Logger:       nodetest.Quiet(),
	}
	return r
}

// start starts the participant on the rig's data directory with a fresh
// bank (recovery fills it from the log) and connects the fake to it.
func (r *rig) start() {
	t := r.t
	t.Helper()
	r.bank = bank.New(accounts, balance)
	r.cfg.Resource = r.bank
	r.p = nodetest.Start(t, participant.Start, r.cfg)
	r.coord.Connect(t, r.p.Addr().String())
}

func (r *rig) restart() {
	r.t.Helper()
	if err := r.p.Close(); err != nil {
		r.t.Fatal(err)
	}
	r.start()
}

// outcomes asks for `admin outcomes` over the wire and keeps the last line
// per transaction, as every reader does.
func (r *rig) outcomes() map[uuid.UUID]string {
	r.t.Helper()
	var outs []participant.Outcome
	nodetest.Report(r.t, r.p.Addr().String(), "outcomes", &outs)
	m := map[uuid.UUID]string{}
	for _, o := range outs {
		m[o.Txn] = o.Outcome
	}
	return m
}

func (r *rig) accounts() participant.Accounts {
	r.t.Helper()
	var a participant.Accounts
	nodetest.Report(r.t, r.p.Addr().String(), "accounts", &a)
	return a
}

func newID() uuid.UUID { return uuid.Must(uuid.NewV7()) }

// Prepares and decisions over the wire: yes for what the bank can hold, no
// for an overdraft; an ack once a commit is durable; the bank moves only
// for the commit; the outcomes report says what was decided.
func TestPrepareAndDecideOverTheWire(t *testing.T) {
	r := newRig(t, nil)
	commit, overdraw, abort := newID(), newID(), newID()
	r.coord.prepare(t, commit, 1, -40)
	r.coord.prepare(t, overdraw, 2, -balance-1)
	r.coord.prepare(t, abort, 3, 25)
	nodetest.Eventually(t, "three votes", func() bool {
		return r.coord.vote(commit) != 0 && r.coord.vote(overdraw) != 0 && r.coord.vote(abort) != 0
	})
	if v := r.coord.vote(commit); v != protocol.VoteYes {
		t.Errorf("vote on a withdrawal the account covers: %v, want yes", v)
	}
	if v := r.coord.vote(overdraw); v != protocol.VoteNo {
		t.Errorf("vote on an overdraft: %v, want no", v)
	}
	if a := r.accounts(); a.Prepared != 2 || a.Total != accounts*balance {
		t.Errorf("accounts while two are prepared: %+v, want 2 prepared and the total untouched", a)
	}
	r.coord.decide(t, commit, protocol.DecisionCommit)
	r.coord.decide(t, abort, protocol.DecisionAbort)
	nodetest.Eventually(t, "the commit acked", func() bool { return r.coord.acked(commit) })
	nodetest.Eventually(t, "nothing prepared", func() bool { return r.accounts().Prepared == 0 })
	if a := r.accounts(); a.Total != accounts*balance-40 || a.Accounts != accounts {
		t.Errorf("accounts after the commit: %+v, want total %d", a, accounts*balance-40)
	}
	outs := r.outcomes()
	if outs[commit] != "committed" || outs[abort] != "aborted" {
		t.Errorf("outcomes %v: want %v committed and %v aborted", outs, commit, abort)
	}
	if err := r.p.Close(); err != nil {
		t.Fatal(err)
	}
	if b1, b3 := r.bank.Balance(1), r.bank.Balance(3); b1 != balance-40 || b3 != balance {
		t.Errorf("balances %d and %d, want %d and %d", b1, b3, balance-40, balance)
	}
}

// A participant restarted with a transaction prepared and undecided holds
// it prepared (its lock and its amount), asks the coordinator, and applies
// the answer.
func TestRestartInDoubtInquires(t *testing.T) {
	r := newRig(t, nil)
	id := newID()
	r.coord.prepare(t, id, 4, -30)
	nodetest.Eventually(t, "the yes vote", func() bool { return r.coord.vote(id) == protocol.VoteYes })
	r.restart()
	if a := r.accounts(); a.Prepared != 1 {
		t.Fatalf("after the restart %d prepared, want the one in doubt", a.Prepared)
	}
	if o := r.outcomes()[id]; o != "prepared" {
		t.Fatalf("outcome of the one in doubt %q, want prepared", o)
	}
	nodetest.Eventually(t, "an inquiry", func() bool { return r.coord.inquired(id) })
	// A second prepare of the same account must wait: the restored hold
	// keeps its lock.
	other := newID()
	r.coord.prepare(t, other, 4, -1)
	nodetest.Eventually(t, "a vote on the locked account", func() bool { return r.coord.vote(other) != 0 })
	if v := r.coord.vote(other); v != protocol.VoteNo {
		t.Fatalf("vote on an account held by the transaction in doubt: %v, want no", v)
	}
	r.coord.decide(t, id, protocol.DecisionCommit)
	nodetest.Eventually(t, "the commit acked", func() bool { return r.coord.acked(id) })
	if o := r.outcomes()[id]; o != "committed" {
		t.Fatalf("outcome %q after the commit, want committed", o)
	}
	if a := r.accounts(); a.Prepared != 0 || a.Total != accounts*balance-30 {
		t.Fatalf("accounts %+v, want nothing prepared and total %d", a, accounts*balance-30)
	}
}

// The admin reports survive restarts: every decision is still listed, the
// balances are recovered, and a report the participant does not serve
// gets an error reply on a connection that stays usable.
func TestAdminReportsAfterRestart(t *testing.T) {
	r := newRig(t, nil)
	want := map[uuid.UUID]string{}
	total := int64(accounts * balance)
	for i := range 6 {
		id := newID()
		r.coord.prepare(t, id, uint32(i), 10)
		nodetest.Eventually(t, "a yes vote", func() bool { return r.coord.vote(id) == protocol.VoteYes })
		if i%2 == 0 {
			r.coord.decide(t, id, protocol.DecisionCommit)
			nodetest.Eventually(t, "an ack", func() bool { return r.coord.acked(id) })
			want[id] = "committed"
			total += 10
		} else {
			r.coord.decide(t, id, protocol.DecisionAbort)
			want[id] = "aborted"
		}
	}
	nodetest.Eventually(t, "every decision listed", func() bool { return len(r.outcomes()) == len(want) })
	for range 2 {
		r.restart()
		got := r.outcomes()
		for id, o := range want {
			if got[id] != o {
				t.Errorf("after restart: %v is %q, want %q", id, got[id], o)
			}
		}
		if len(got) != len(want) {
			t.Errorf("after restart: %d transactions listed, want %d", len(got), len(want))
		}
		if a := r.accounts(); a.Total != total || a.Prepared != 0 {
			t.Errorf("after restart: %+v, want total %d, nothing prepared", a, total)
		}
	}

	conn := nodetest.Admin(t, r.p.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := conn.Call(ctx, &wire.AdminRequest{Kind: 99}, nil)
	if !nodetest.RemoteError(err, wire.CodeInvalid, "does not serve") {
		t.Errorf("admin request of kind 99: %v, want an invalid-request error", err)
	}
	if _, err := conn.Call(ctx, &wire.AdminRequest{Kind: wire.AdminStatus}, nil); err != nil {
		t.Errorf("status on the same connection after the error: %v", err)
	}
	// A Begin is no admin's to send (wire.Sender): the connection is
	// refused, and a new one is served.
	_, err = conn.Call(ctx, &wire.Begin{Txn: newID()}, nil)
	if !errors.Is(err, mux.ErrRefused) || !strings.Contains(err.Error(), "may not send begin") {
		t.Errorf("a Begin sent to a participant: %v, want the connection refused", err)
	}
	if _, err := nodetest.Admin(t, r.p.Addr().String()).Call(ctx, &wire.AdminRequest{Kind: wire.AdminStatus}, nil); err != nil {
		t.Errorf("status on a new connection after the refusal: %v", err)
	}
}

// A failed fsync stops the participant before it votes yes on what it
// could not make durable; Err names the failure.
func TestFsyncFailureStopsTheParticipant(t *testing.T) {
	fs := waltest.NewMemFS()
	r := newRig(t, fs)
	before := newID()
	r.coord.prepare(t, before, 0, -1)
	nodetest.Eventually(t, "a yes vote before the fault", func() bool { return r.coord.vote(before) == protocol.VoteYes })
	fs.Inject(waltest.FailNth(waltest.OpSync, 1, syscall.EIO, true))
	id := newID()
	r.coord.prepare(t, id, 1, -1)
	nodetest.WaitFailed(t, r.p, "participant", syscall.EIO, wal.ErrFailed)
	if v := r.coord.vote(id); v == protocol.VoteYes {
		t.Fatal("voted yes on a prepare whose record never became durable")
	}
}

// The outcomes report streams the ledger from disk: a ledger of many
// decisions comes over the wire whole, oldest first, in many frames and
// more than the reply's pacing window; a ledger that cannot be read ends
// the reply with an error (never a short list), and the participant keeps
// serving.
func TestOutcomesStreamFromTheLedger(t *testing.T) {
	const n = 20_000 // ~1.3 MB of JSON: 21 frames, past the 1 MiB window
	fs := waltest.NewMemFS()
	r := unstartedRig(t, fs)
	// The ledger's format (ledger.go): one 17-byte record per decision,
	// the transaction id then the decision; its segments are a quarter of
	// the log's.
	lg, err := wal.Open(filepath.Join(r.cfg.DataDir, "ledger"), wal.Options{FS: fs, SegmentBytes: r.cfg.SegmentBytes / 4})
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]uuid.UUID, n)
	var rec [17]byte
	for i := range ids {
		ids[i] = newID()
		copy(rec[:16], ids[i][:])
		rec[16] = byte(protocol.DecisionCommit)
		if i%3 == 0 {
			rec[16] = byte(protocol.DecisionAbort)
		}
		if _, err := lg.Append(rec[:]); err != nil {
			t.Fatal(err)
		}
	}
	if err := lg.Sync(lg.LastLSN()); err != nil {
		t.Fatal(err)
	}
	if err := lg.Close(); err != nil {
		t.Fatal(err)
	}
	r.start()

	// Count the ledger's reads for one listing, to fail the next one
	// halfway through: after some frames of the reply have gone out.
	var reads atomic.Int64
	isLedgerRead := func(op waltest.Op) bool {
		return op.Kind == waltest.OpRead && strings.Contains(op.Path, "ledger")
	}
	fs.Inject(func(op waltest.Op) error {
		if isLedgerRead(op) {
			reads.Add(1)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var outs []participant.Outcome
	if err := client.Admin(ctx, r.p.Addr().String(), "outcomes", nil, &outs); err != nil {
		t.Fatal(err)
	}
	if len(outs) != n {
		t.Fatalf("%d outcomes, want %d", len(outs), n)
	}
	for i, o := range outs {
		want := "committed"
		if i%3 == 0 {
			want = "aborted"
		}
		if o.Txn != ids[i] || o.Outcome != want {
			t.Fatalf("line %d: %v %s, want %v %s", i, o.Txn, o.Outcome, ids[i], want)
		}
	}

	total := reads.Load()
	if total < 4 {
		t.Fatalf("a listing read the ledger %d times: too few to fail halfway", total)
	}
	reads.Store(0)
	fs.Inject(func(op waltest.Op) error {
		if isLedgerRead(op) && reads.Add(1) > total/2 {
			return syscall.EIO
		}
		return nil
	})
	var frames int
	conn := nodetest.Admin(t, r.p.Addr().String())
	err = conn.Stream(ctx, &wire.AdminRequest{Kind: wire.AdminOutcomes}, func(wire.Frame) error {
		frames++
		return nil
	})
	if !nodetest.RemoteError(err, wire.CodeInternal, "input/output error") {
		t.Fatalf("outcomes from an unreadable ledger: %v; want an internal error naming EIO", err)
	}
	if frames == 0 {
		t.Fatal("the ledger failed before any of the reply went out: the test does not fail it halfway")
	}
	fs.Inject(nil)
	if a := r.accounts(); a.Accounts != accounts {
		t.Fatalf("after the failed report: %+v", a)
	}
	if err := r.p.Err(); err != nil {
		t.Fatalf("a failed read of the ledger for a report stopped the participant: %v", err)
	}
}

// Only the coordinator that asks for this participant by name may prepare
// or decide here (issue 13, defects 3 and 4). Every other combination of
// hello and message is refused — an Error frame (refused) that says why,
// the connection closed, the refusal logged — and changes nothing: a
// one-phase prepare of +1,000,000 from a client, an admin, a participant
// or a coordinator that wants another participant leaves the bank's total
// as it was and nothing prepared or decided.
func TestOnlyTheCoordinatorMayPrepare(t *testing.T) {
	var logs nodetest.Logs
	r := unstartedRig(t, nil)
	r.cfg.Logger = logs.Logger()
	r.start()
	before := r.accounts()
	addr := r.p.Addr().String()
	rich := func() *wire.Prepare {
		return &wire.Prepare{Txn: newID(), OnePhase: true, Work: bank.AppendWork(nil, 1, 1_000_000)}
	}
	commit := func() *wire.Decision {
		return &wire.Decision{Txn: newID(), Decision: protocol.DecisionCommit}
	}
	client := wire.Hello{Role: wire.RoleClient}
	admin := wire.Hello{Role: wire.RoleAdmin}
	self := wire.Hello{Role: wire.RoleParticipant, Name: []byte("p1")}
	coordP1 := wire.Hello{Role: wire.RoleCoordinator, Name: []byte("p1")}
	coordP2 := wire.Hello{Role: wire.RoleCoordinator, Name: []byte("p2")}
	cases := []struct {
		name  string
		hello wire.Hello
		m     wire.Message
		want  string
	}{
		{"client prepares", client, rich(), "not client connections"},
		{"client decides", client, commit(), "not client connections"},
		{"client begins", client, &wire.Begin{Txn: newID()}, "not client connections"},
		{"participant prepares", self, rich(), "not participant connections"},
		{"admin prepares", admin, rich(), "admin connection"},
		{"admin decides", admin, commit(), "may not send decision"},
		{"coordinator of p2 prepares", coordP2, rich(), `this is participant "p1", not "p2"`},
		{"coordinator of p2 decides", coordP2, commit(), `not "p2"`},
		{"coordinator votes", coordP1, &wire.Vote{Txn: newID(), From: []byte("p1"), Vote: protocol.VoteYes}, "may not send vote"},
		{"coordinator acks", coordP1, &wire.Ack{Txn: newID(), From: []byte("p1")}, "may not send ack"},
		{"coordinator inquires", coordP1, &wire.Inquire{Txn: newID(), From: []byte("p1")}, "may not send inquire"},
		{"coordinator asks for a report", coordP1, &wire.AdminRequest{Kind: wire.AdminAccounts}, "may not send admin-request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := nodetest.Refused(t, addr, tc.hello, tc.m)
			if e.Code != wire.CodeRefused || !strings.Contains(string(e.Message), tc.want) {
				t.Errorf("refused with %v %q, want one saying %q", e.Code, e.Message, tc.want)
			}
		})
	}
	// The real coordinator's connection is served meanwhile, and what it
	// prepares after all of that is stepped after anything they could
	// have submitted.
	id := newID()
	r.coord.prepare(t, id, 2, 5)
	nodetest.Eventually(t, "the coordinator's vote", func() bool { return r.coord.vote(id) == protocol.VoteYes })
	r.coord.decide(t, id, protocol.DecisionAbort)
	// Under presumed abort nothing acknowledges the abort: wait until it
	// is applied, then look at what the refused connections left.
	nodetest.Eventually(t, "the coordinator's abort applied", func() bool { return r.accounts().Prepared == 0 })
	if a := r.accounts(); a.Total != before.Total || a.Prepared != 0 {
		t.Errorf("after the refused connections: %+v, want total %d and nothing prepared", a, before.Total)
	}
	if outs := r.outcomes(); len(outs) != 1 {
		t.Errorf("after the refused connections: %d transactions in the ledger, want only the coordinator's", len(outs))
	}
	if n := strings.Count(logs.String(), "refused"); n == 0 {
		t.Errorf("no refusal logged")
	}
}

// With mutual TLS, a certificate the CA signed is not enough to act as the
// coordinator or to read reports: the coordinator's hello must come with a
// certificate for CoordinatorIdentity (--coordinator-identity), an admin's
// with one for an AdminIdentities entry (--admin-identity). Another node's
// certificate is refused, and its prepare changes nothing.
func TestCertificatesMustMatchTheRole(t *testing.T) {
	ca := nodetest.NewCA(t)
	r := unstartedRig(t, nil)
	r.cfg.TLS = ca.Config(t, "p1")
	r.cfg.CoordinatorIdentity = "coordinator.test"
	r.cfg.AdminIdentities = []string{"ops"}
	r.bank = bank.New(accounts, balance)
	r.cfg.Resource = r.bank
	p, err := participant.Start(r.cfg) // its coordinator does not speak TLS: it never connects
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	addr := p.Addr().String()
	dial := func(cfg *tls.Config) net.Conn {
		t.Helper()
		nc, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return nc
	}
	asCoordinator := wire.Hello{Role: wire.RoleCoordinator, Name: []byte("p1")}
	prepare := func(amount int64) *wire.Prepare {
		return &wire.Prepare{Txn: newID(), OnePhase: true, Work: bank.AppendWork(nil, 1, amount)}
	}
	other := ca.Config(t, "p7", "p7.test")
	e := nodetest.RefusedOn(t, dial(other), asCoordinator, prepare(1_000_000))
	if e.Code != wire.CodeRefused || !strings.Contains(string(e.Message), "want one for coordinator.test") {
		t.Errorf("another node's certificate as the coordinator: %v %q, want a refusal", e.Code, e.Message)
	}
	e = nodetest.RefusedOn(t, dial(other), wire.Hello{Role: wire.RoleAdmin}, &wire.AdminRequest{Kind: wire.AdminAccounts})
	if e.Code != wire.CodeRefused || !strings.Contains(string(e.Message), "want one for ops") {
		t.Errorf("another node's certificate as an admin: %v %q, want a refusal", e.Code, e.Message)
	}
	if a := p.AccountsSummary(); a.Total != accounts*balance {
		t.Fatalf("after the refusals: total %d, want %d", a.Total, accounts*balance)
	}

	// The coordinator's certificate (by DNS name) may prepare; the
	// operator's (by common name) may read.
	nc := dial(ca.Config(t, "commitd coordinator", "coordinator.test"))
	defer nc.Close()
	b, _ := wire.AppendFrame(nil, 0, &asCoordinator)
	b, _ = wire.AppendFrame(b, 0, prepare(5))
	if _, err := nc.Write(b); err != nil {
		t.Fatal(err)
	}
	nodetest.Eventually(t, "the coordinator's one-phase prepare applied", func() bool {
		return p.AccountsSummary().Total == accounts*balance+5
	})
	var a participant.Accounts
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := client.Admin(ctx, addr, "accounts", ca.Config(t, "ops"), &a); err != nil || a.Total != accounts*balance+5 {
		t.Errorf("accounts for the operator: %+v, %v", a, err)
	}
}

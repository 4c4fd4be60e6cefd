package participant_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/commitd/commitd/participant"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/protocol"
)

// A transaction prepared and undecided is listed in doubt with its age
// and what it waits for; retry inquires about it at once (the regular
// inquiries are a minute apart here); bad arguments are refused.
func TestInDoubtAndRetryAtAParticipant(t *testing.T) {
	r := unstartedRig(t, nil)
	r.cfg.InquireAfter, r.cfg.InquireMax = time.Minute, time.Minute
	r.start()
	admin := func(kind, arg string, v any) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return client.AdminArg(ctx, r.p.Addr().String(), kind, arg, nil, v)
	}
	id := newID()
	r.coord.prepare(t, id, 1, -10)
	nodetest.Eventually(t, "a yes vote", func() bool { return r.coord.vote(id) == protocol.VoteYes })
	var rep participant.InDoubt
	if err := admin("in-doubt", "", &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Total != 1 || len(rep.Txns) != 1 || rep.Txns[0].Txn != id || rep.Txns[0].State != "prepared" ||
		!strings.Contains(rep.Txns[0].WaitsFor, "coordinator's decision") {
		t.Fatalf("in doubt: %+v", rep)
	}
	if r.coord.inquired(id) {
		t.Fatal("inquired before a minute")
	}
	var got participant.Retried
	if err := admin("retry", id.String(), &got); err != nil || got.Inquired != 1 {
		t.Fatalf("retry: %+v %v", got, err)
	}
	nodetest.Eventually(t, "the inquiry", func() bool { return r.coord.inquired(id) })
	if err := admin("retry", "p1", &got); err != nil || got.Inquired != 1 {
		t.Fatalf("retry of every prepared one: %+v %v", got, err)
	}
	for _, c := range []struct{ arg, want string }{
		{"p9", "neither a transaction id nor this participant's name (p1)"},
		{newID().String(), "is not prepared here"},
	} {
		if err := admin("retry", c.arg, &got); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("retry %q: %v, want %q", c.arg, err, c.want)
		}
	}
	var st protocol.TxnStatus
	if err := admin("txn", id.String(), &st); err != nil || st.State != protocol.TxnInFlight || st.Participants[0].State != "prepared" {
		t.Errorf("txn at a participant: %+v, %v", st, err)
	}
	r.coord.decide(t, id, protocol.DecisionAbort)
	nodetest.Eventually(t, "nothing in doubt after the abort", func() bool {
		return admin("in-doubt", "", &rep) == nil && rep.Total == 0
	})
}

// resolveReq is the JSON of a resolve request.
func resolveReq(t *testing.T, req participant.ResolveRequest) string {
	t.Helper()
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// An operator's resolve: refused while the participant is connected to
// its coordinator; with its coordinator gone, refused without a reason,
// when a decision was seen elsewhere, for a transaction not prepared
// here; applied once — through the machine, so the bank and the ledger
// have it — and refused after. Every request is in the audit log, and
// admin txn at the participant reports them.
func TestResolveByHand(t *testing.T) {
	connected := newRig(t, nil)
	admin := func(addr, kind, arg string, v any) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return client.AdminArg(ctx, addr, kind, arg, nil, v)
	}
	id := newID()
	connected.coord.prepare(t, id, 1, -10)
	nodetest.Eventually(t, "a yes vote", func() bool { return connected.coord.vote(id) == protocol.VoteYes })
	var res participant.Resolved
	err := admin(connected.p.Addr().String(), "resolve", resolveReq(t, participant.ResolveRequest{Txn: id, Decision: "abort", Reason: "test"}), &res)
	if err == nil || !strings.Contains(err.Error(), "the coordinator is connected") {
		t.Fatalf("resolve while connected: %v", err)
	}

	// A participant whose coordinator is gone: nothing listens at its
	// address. The fake still reaches it to prepare.
	r := unstartedRig(t, nil)
	r.cfg.Coordinator = nodetest.FreeAddr(t)
	r.bank = bank.New(accounts, balance)
	r.cfg.Resource = r.bank
	p, err := participant.Start(r.cfg) // not nodetest.Start: it would wait for the coordinator
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	r.p = p
	r.coord.Connect(t, p.Addr().String())
	addr := p.Addr().String()
	id = newID()
	r.coord.prepare(t, id, 2, -10)
	var rep participant.InDoubt
	nodetest.Eventually(t, "prepared", func() bool {
		return admin(addr, "in-doubt", "", &rep) == nil && rep.Total == 1 && rep.Txns[0].State == "prepared"
	})
	for _, c := range []struct {
		req  participant.ResolveRequest
		want string
	}{
		{participant.ResolveRequest{Txn: id, Decision: "commit"}, "a reason of 1 to 512 bytes is required"},
		{participant.ResolveRequest{Txn: id, Decision: "maybe", Reason: "x"}, `decision "maybe": want commit or abort`},
		{participant.ResolveRequest{Txn: id, Decision: "commit", Reason: "x", Seen: []string{"participant at p2 has aborted it"}}, "a decision exists: participant at p2 has aborted it"},
		{participant.ResolveRequest{Txn: newID(), Decision: "commit", Reason: "x"}, "is not prepared and undecided here"},
	} {
		if err := admin(addr, "resolve", resolveReq(t, c.req), &res); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("resolve %+v: %v, want %q", c.req, err, c.want)
		}
	}
	var v any
	if err := admin(addr, "resolve", "{not json", &v); err == nil || !strings.Contains(err.Error(), "malformed request") {
		t.Errorf("resolve of bad JSON: %v", err)
	}
	req := participant.ResolveRequest{Txn: id, Decision: "commit", Reason: "coordinator c1 lost its disk; p2's ledger shows commit", Unreached: []string{"coordinator: not asked"}}
	if err := admin(addr, "resolve", resolveReq(t, req), &res); err != nil {
		t.Fatal(err)
	}
	if res.Audit.Result != "applied" || res.Audit.Peer == "" || res.Decision != "commit" {
		t.Fatalf("resolved: %+v", res)
	}
	if err := admin(addr, "resolve", resolveReq(t, req), &res); err == nil || !strings.Contains(err.Error(), "not prepared and undecided here (committ") {
		t.Fatalf("a second resolve: %v", err)
	}
	nodetest.Eventually(t, "committed in the ledger", func() bool { return r.outcomes()[id] == "committed" })
	var st protocol.TxnStatus
	if err := admin(addr, "txn", id.String(), &st); err != nil {
		t.Fatal(err)
	}
	applied := 0
	for _, x := range st.Resolves {
		if x.Result == "applied" {
			applied++
		}
	}
	// Three refused before, the one applied, one refused after.
	if st.State != protocol.TxnCommitted || len(st.Resolves) != 5 || applied != 1 || st.Resolves[3].Reason != req.Reason {
		t.Fatalf("admin txn at the participant: %+v", st)
	}
	if err := r.p.Close(); err != nil {
		t.Fatal(err)
	}
	if got := r.bank.Balance(2); got != balance-10 {
		t.Fatalf("account 2 holds %d after the resolved commit, want %d", got, balance-10)
	}
}

// The audit log: a torn last line (a crash mid-append) is no entry; a
// damaged line before others is an error that names it, never skipped.
func TestAuditLogDamage(t *testing.T) {
	r := newRig(t, nil)
	id := newID()
	var st protocol.TxnStatus
	txn := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return client.AdminArg(ctx, r.p.Addr().String(), "txn", id.String(), nil, &st)
	}
	path := filepath.Join(r.cfg.DataDir, "audit.log")
	entry := `{"at":"2026-12-06T06:00:00Z","txn":"` + id.String() + `","decision":"abort","reason":"r","peer":"x","result":"refused: test"}`
	if err := os.WriteFile(path, []byte(entry+"\n"+`{"at":"2026-12-06T06:0`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := txn(); err != nil || len(st.Resolves) != 1 {
		t.Fatalf("with a torn last line: %+v, %v", st, err)
	}
	if err := os.WriteFile(path, []byte(`{"at":"2026-12-06T06:0`+"\n"+entry+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := txn(); err == nil || !strings.Contains(err.Error(), "line 1 is damaged") {
		t.Fatalf("with a damaged first line: %v", err)
	}
}

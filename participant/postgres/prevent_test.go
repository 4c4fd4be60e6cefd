package postgres_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/participant/postgres"
	"github.com/commitd/commitd/protocol"
	"github.com/google/uuid"
)

// results routes a resource's reports to the caller waiting for each,
// by transaction and type: prepares and preventions of one transaction
// may race.
type results struct {
	t  *testing.T
	mu sync.Mutex
	ch map[resultKey]chan engine.Message
}

type resultKey struct {
	txn protocol.TxnID
	typ engine.MsgType
}

func (rs *results) chanFor(k resultKey) chan engine.Message {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.ch == nil {
		rs.ch = map[resultKey]chan engine.Message{}
	}
	c := rs.ch[k]
	if c == nil {
		c = make(chan engine.Message, 4)
		rs.ch[k] = c
	}
	return c
}

func (rs *results) report(m engine.Message) { rs.chanFor(resultKey{m.Txn, m.Type}) <- m }

func (rs *results) wait(txn protocol.TxnID, typ engine.MsgType) engine.Message {
	select {
	case m := <-rs.chanFor(resultKey{txn, typ}):
		return m
	case <-time.After(20 * time.Second):
		rs.t.Errorf("no %v for %v from the resource", typ, txn)
		return engine.Message{}
	}
}

// openPrevent opens a resource on dsn as participant "a" with its
// reports routed by rs.
func openPrevent(t *testing.T, dsn string, rs *results) *postgres.Resource {
	t.Helper()
	r, err := postgres.Open(context.Background(), postgres.Config{DSN: dsn, Name: "a", Accounts: 4, Balance: 100,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	r.Attach(rs.report)
	return r
}

func prepareVote(r *postgres.Resource, rs *results, id protocol.TxnID, acct uint32, amount int64) protocol.Vote {
	v := r.Prepare(id, bank.AppendWork(nil, acct, amount))
	if v != protocol.VotePending {
		return v
	}
	return rs.wait(id, engine.MsgResPrepared).Vote
}

func preventVote(r *postgres.Resource, rs *results, id protocol.TxnID) protocol.Vote {
	r.Prevent(id)
	return rs.wait(id, engine.MsgResPrevented).Vote
}

func finishType(r *postgres.Resource, rs *results, id protocol.TxnID, d protocol.Decision) engine.MsgType {
	if d == protocol.DecisionCommit {
		r.Commit(id)
	} else {
		r.Abort(id)
	}
	select {
	case m := <-rs.chanFor(resultKey{id, engine.MsgResFinished}):
		return m.Type
	case m := <-rs.chanFor(resultKey{id, engine.MsgResFailed}):
		return m.Type
	case <-time.After(20 * time.Second):
		return 0
	}
}

// TestPreventThenPrepare: a prevented transaction never prepares — not
// on this resource, not on a new one opened after it (a restart of the
// participant), not after Forget was asked to drop its marker — until
// the prevention has expired; Decided does not report a prevention as a
// decision.
func TestPreventThenPrepare(t *testing.T) {
	dsn := freshDB(t, server(t, "COMMITD_PG_DSN1"))
	ctx := context.Background()
	rs := &results{t: t}
	r := openPrevent(t, dsn, rs)
	id := uuid.Must(uuid.NewV7())
	if v := preventVote(r, rs, id); v != protocol.VoteNo {
		t.Fatalf("prevent of an unknown transaction: %v, want no (prevented)", v)
	}
	if v := preventVote(r, rs, id); v != protocol.VoteNo {
		t.Fatalf("a second prevent: %v, want no", v)
	}
	if v := prepareVote(r, rs, id, 0, 5); v != protocol.VoteNo {
		t.Fatalf("prepare after prevent: %v, want no", v)
	}
	if err := r.Forget(ctx, []protocol.TxnID{id}); err != nil {
		t.Fatal(err)
	}
	if d, err := r.Decided(ctx); err != nil || len(d) != 0 {
		t.Fatalf("Decided lists a prevention: %v %v", d, err)
	}
	if st := r.Stats(); st.Prevented != 2 || st.RefusedPrevented != 1 {
		t.Fatalf("stats %+v", st)
	}
	r.Close()

	// A restart: the prevention is the database's, not the process's.
	rs = &results{t: t}
	r = openPrevent(t, dsn, rs)
	defer r.Close()
	if v := prepareVote(r, rs, id, 0, 5); v != protocol.VoteNo {
		t.Fatalf("prepare after prevent and a restart: %v, want no", v)
	}
	if n := (db{t: t, dsn: dsn}).prepared(); n != 0 {
		t.Fatalf("%d prepared transactions after refused prepares", n)
	}
	// Only the prevention refused it: once expired, the id prepares.
	if err := r.ExpirePrevented(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if v := prepareVote(r, rs, id, 0, 5); v != protocol.VoteYes {
		t.Fatalf("prepare after the prevention expired: %v, want yes", v)
	}
	if got := finishType(r, rs, id, protocol.DecisionAbort); got != engine.MsgResFinished {
		t.Fatalf("abort: %v", got)
	}
}

// TestPrepareThenPrevent: a prevention of a prepared transaction answers
// "prepared" (the prepared transaction holds the marker's key, so the
// prevention's insert waits, times out and finds it in
// pg_prepared_xacts) and leaves it prepared; of a committed one,
// "prepared" too (its commit marker); of one rolled back, prevented.
func TestPrepareThenPrevent(t *testing.T) {
	dsn := freshDB(t, server(t, "COMMITD_PG_DSN1"))
	rs := &results{t: t}
	r := openPrevent(t, dsn, rs)
	defer r.Close()
	d := db{t: t, dsn: dsn}
	t1, t2 := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	if v := prepareVote(r, rs, t1, 0, -5); v != protocol.VoteYes {
		t.Fatalf("prepare: %v", v)
	}
	if v := preventVote(r, rs, t1); v != protocol.VoteYes {
		t.Fatalf("prevent of a prepared transaction: %v, want yes (prepared)", v)
	}
	if n := d.prepared(); n != 1 {
		t.Fatalf("%d prepared after the prevention, want 1", n)
	}
	if got := finishType(r, rs, t1, protocol.DecisionCommit); got != engine.MsgResFinished {
		t.Fatalf("commit: %v", got)
	}
	if v := preventVote(r, rs, t1); v != protocol.VoteYes {
		t.Fatalf("prevent of a committed transaction: %v, want yes", v)
	}
	if v := prepareVote(r, rs, t2, 1, 5); v != protocol.VoteYes {
		t.Fatalf("prepare: %v", v)
	}
	if got := finishType(r, rs, t2, protocol.DecisionAbort); got != engine.MsgResFinished {
		t.Fatalf("abort: %v", got)
	}
	if v := preventVote(r, rs, t2); v != protocol.VoteNo {
		t.Fatalf("prevent of a rolled-back transaction: %v, want no", v)
	}
	if sum := d.sum(); sum != 4*100-5 {
		t.Fatalf("sum %d, want 395", sum)
	}
	if st := r.Stats(); st.FoundPrepared != 2 || st.Prevented != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestPreventRacesPrepare starts a prepare and a prevention of the same
// transaction at once, many times: never both win (a YES to the prepare
// and a NO — prevented — to the prevention); when the prevention answers
// "prepared", the transaction is prepared in the database, and when it
// answers "prevented", it is not.
func TestPreventRacesPrepare(t *testing.T) {
	dsn := freshDB(t, server(t, "COMMITD_PG_DSN1"))
	rs := &results{t: t}
	r := openPrevent(t, dsn, rs)
	defer r.Close()
	d := db{t: t, dsn: dsn}
	const rounds = 200
	var wins [2][2]int // [prepare yes][prevent found prepared]
	for i := range rounds {
		id := uuid.Must(uuid.NewV7())
		var pv, vv protocol.Vote
		var wg sync.WaitGroup
		// Alternate which starts first; the goroutines do the rest.
		first, second := func() { pv = prepareVote(r, rs, id, uint32(i%4), 1) }, func() { vv = preventVote(r, rs, id) }
		if i%2 == 1 {
			first, second = second, first
		}
		wg.Go(first)
		wg.Go(second)
		wg.Wait()
		if t.Failed() {
			return
		}
		if pv == protocol.VoteYes && vv == protocol.VoteNo {
			t.Fatalf("round %d: the prepare voted yes and the prevention said prevented", i)
		}
		if vv == protocol.VoteYes && pv != protocol.VoteYes {
			t.Fatalf("round %d: the prevention found it prepared, the prepare voted %v", i, pv)
		}
		if n := d.prepared(); (n == 1) != (pv == protocol.VoteYes) {
			t.Fatalf("round %d: prepare %v, prevent %v, %d prepared in the database", i, pv, vv, n)
		}
		if pv == protocol.VoteYes {
			wins[1][b2i(vv == protocol.VoteYes)]++
			if got := finishType(r, rs, id, protocol.DecisionAbort); got != engine.MsgResFinished {
				t.Fatalf("round %d: abort: %v", i, got)
			}
		} else {
			wins[0][b2i(vv == protocol.VoteYes)]++
		}
	}
	t.Logf("prepare won %d times, prevention won %d times", wins[1][1], wins[0][0])
	if wins[1][1] == 0 || wins[0][0] == 0 {
		t.Fatalf("the race was never run both ways: %v", wins)
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

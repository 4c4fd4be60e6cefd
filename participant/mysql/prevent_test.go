package mysql_test

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/participant/mysql"
	"github.com/commitd/commitd/protocol"
	"github.com/google/uuid"
)

// routed is a resource whose reports go to the caller waiting for each,
// by transaction and type: prepares and preventions of one transaction
// may race.
type routed struct {
	t  *testing.T
	r  *mysql.Resource
	mu sync.Mutex
	ch map[routeKey]chan engine.Message
}

type routeKey struct {
	txn protocol.TxnID
	typ engine.MsgType
}

// openRouted opens a resource named name on dsn (the name is the XIDs'
// bqual, and XA RECOVER lists the whole server's: a name of the test's
// own keeps other tests' XIDs out of its counts).
func openRouted(t *testing.T, dsn, name string) *routed {
	t.Helper()
	r, err := mysql.Open(context.Background(), mysql.Config{DSN: dsn, Name: name, Accounts: 4, Balance: 100,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	x := &routed{t: t, r: r, ch: map[routeKey]chan engine.Message{}}
	r.Attach(func(m engine.Message) { x.chanFor(routeKey{m.Txn, m.Type}) <- m })
	// Before freshDB's cleanup: a pinned session must end before its
	// XID can be rolled back and the database dropped.
	t.Cleanup(func() { r.Close() })
	return x
}

// uniqueName is a participant name no other test uses.
func uniqueName() string {
	var b [4]byte
	crand.Read(b[:])
	return "pv-" + hex.EncodeToString(b[:])
}

func (x *routed) chanFor(k routeKey) chan engine.Message {
	x.mu.Lock()
	defer x.mu.Unlock()
	c := x.ch[k]
	if c == nil {
		c = make(chan engine.Message, 4)
		x.ch[k] = c
	}
	return c
}

func (x *routed) wait(k routeKey) (engine.Message, bool) {
	select {
	case m := <-x.chanFor(k):
		return m, true
	case <-time.After(20 * time.Second):
		x.t.Errorf("no %v for %v from the resource", k.typ, k.txn)
		return engine.Message{}, false
	}
}

func (x *routed) prepare(id protocol.TxnID, acct uint32, amount int64) protocol.Vote {
	v := x.r.Prepare(id, bank.AppendWork(nil, acct, amount))
	if v != protocol.VotePending {
		return v
	}
	m, _ := x.wait(routeKey{id, engine.MsgResPrepared})
	return m.Vote
}

func (x *routed) prevent(id protocol.TxnID) protocol.Vote {
	x.r.Prevent(id)
	m, _ := x.wait(routeKey{id, engine.MsgResPrevented})
	return m.Vote
}

func (x *routed) finish(id protocol.TxnID, d protocol.Decision) engine.MsgType {
	if d == protocol.DecisionCommit {
		x.r.Commit(id)
	} else {
		x.r.Abort(id)
	}
	select {
	case m := <-x.chanFor(routeKey{id, engine.MsgResFinished}):
		return m.Type
	case m := <-x.chanFor(routeKey{id, engine.MsgResFailed}):
		return m.Type
	case <-time.After(20 * time.Second):
		return 0
	}
}

// TestPreventThenPrepare: a prevented transaction never prepares — not
// on this resource, not on one opened after it (a restart), not after
// Forget was asked to drop its marker — until the prevention expires;
// Decided does not list it.
func TestPreventThenPrepare(t *testing.T) {
	dsn := freshDB(t, server(t, "COMMITD_MYSQL_DSN1"))
	ctx := context.Background()
	name := uniqueName()
	x := openRouted(t, dsn, name)
	id := uuid.Must(uuid.NewV7())
	if v := x.prevent(id); v != protocol.VoteNo {
		t.Fatalf("prevent of an unknown transaction: %v, want no", v)
	}
	if v := x.prevent(id); v != protocol.VoteNo {
		t.Fatalf("a second prevent: %v, want no", v)
	}
	if v := x.prepare(id, 0, 5); v != protocol.VoteNo {
		t.Fatalf("prepare after prevent: %v, want no", v)
	}
	if err := x.r.Forget(ctx, []protocol.TxnID{id}); err != nil {
		t.Fatal(err)
	}
	if d, err := x.r.Decided(ctx); err != nil || len(d) != 0 {
		t.Fatalf("Decided lists a prevention: %v %v", d, err)
	}
	if st := x.r.Stats(); st.Prevented != 2 || st.RefusedPrevented != 1 {
		t.Fatalf("stats %+v", st)
	}
	x.r.Close()

	x = openRouted(t, dsn, name)
	defer x.r.Close()
	if v := x.prepare(id, 0, 5); v != protocol.VoteNo {
		t.Fatalf("prepare after prevent and a restart: %v, want no", v)
	}
	if n := (db{t: t, dsn: dsn, names: []string{name}}).prepared(); n != 0 {
		t.Fatalf("%d prepared after refused prepares", n)
	}
	if err := x.r.ExpirePrevented(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if v := x.prepare(id, 0, 5); v != protocol.VoteYes {
		t.Fatalf("prepare after the prevention expired: %v, want yes", v)
	}
	if got := x.finish(id, protocol.DecisionAbort); got != engine.MsgResFinished {
		t.Fatalf("abort: %v", got)
	}
}

// TestPrepareThenPrevent: a prevention of a prepared branch answers
// "prepared" (its marker's record lock, then XA RECOVER) and leaves it
// prepared; of a committed one, "prepared"; of a rolled-back one,
// prevented. An overdraft is never prepared (checked before XA PREPARE).
func TestPrepareThenPrevent(t *testing.T) {
	dsn := freshDB(t, server(t, "COMMITD_MYSQL_DSN1"))
	name := uniqueName()
	x := openRouted(t, dsn, name)
	defer x.r.Close()
	d := db{t: t, dsn: dsn, names: []string{name}}
	t1, t2, t3 := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	if v := x.prepare(t1, 0, -5); v != protocol.VoteYes {
		t.Fatalf("prepare: %v", v)
	}
	if v := x.prevent(t1); v != protocol.VoteYes {
		t.Fatalf("prevent of a prepared branch: %v, want yes (prepared)", v)
	}
	if n := d.prepared(); n != 1 {
		t.Fatalf("%d prepared after the prevention, want 1", n)
	}
	if got := x.finish(t1, protocol.DecisionCommit); got != engine.MsgResFinished {
		t.Fatalf("commit: %v", got)
	}
	if v := x.prevent(t1); v != protocol.VoteYes {
		t.Fatalf("prevent of a committed branch: %v, want yes", v)
	}
	if v := x.prepare(t2, 1, 5); v != protocol.VoteYes {
		t.Fatalf("prepare: %v", v)
	}
	if got := x.finish(t2, protocol.DecisionAbort); got != engine.MsgResFinished {
		t.Fatalf("abort: %v", got)
	}
	if v := x.prevent(t2); v != protocol.VoteNo {
		t.Fatalf("prevent of a rolled-back branch: %v, want no", v)
	}
	if v := x.prepare(t3, 2, -1000); v != protocol.VoteNo {
		t.Fatalf("overdraft: %v, want no", v)
	}
	if v := x.prevent(t3); v != protocol.VoteNo {
		t.Fatalf("prevent after an overdraft: %v, want no (nothing was prepared)", v)
	}
	if sum := d.sum(); sum != 4*100-5 {
		t.Fatalf("sum %d, want 395", sum)
	}
}

// TestPreventRacesPrepare races a prepare and a prevention of the same
// transaction many times: never both win; "prepared" means prepared in
// the server, "prevented" means not.
func TestPreventRacesPrepare(t *testing.T) {
	dsn := freshDB(t, server(t, "COMMITD_MYSQL_DSN1"))
	name := uniqueName()
	x := openRouted(t, dsn, name)
	defer x.r.Close()
	d := db{t: t, dsn: dsn, names: []string{name}}
	const rounds = 200
	var prepWon, prevWon int
	for i := range rounds {
		id := uuid.Must(uuid.NewV7())
		var pv, vv protocol.Vote
		var wg sync.WaitGroup
		first, second := func() { pv = x.prepare(id, uint32(i%4), 1) }, func() { vv = x.prevent(id) }
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
			t.Fatalf("round %d: prepare %v, prevent %v, %d prepared in the server", i, pv, vv, n)
		}
		if pv == protocol.VoteYes {
			prepWon++
			if got := x.finish(id, protocol.DecisionAbort); got != engine.MsgResFinished {
				t.Fatalf("round %d: abort: %v", i, got)
			}
		} else {
			prevWon++
		}
	}
	t.Logf("prepare won %d times, prevention won %d times", prepWon, prevWon)
	if prepWon == 0 || prevWon == 0 {
		t.Fatalf("the race was never run both ways: prepare %d, prevention %d", prepWon, prevWon)
	}
}

package coordinator_test

import (
	"context"
	"encoding/binary"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/commitd/commitd/protocol"
	"github.com/commitd/commitd/wal/waltest"
	"github.com/google/uuid"
)

func (r *rig) txn(id uuid.UUID) protocol.TxnStatus {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := r.cl.Outcome(ctx, id)
	if err != nil {
		r.t.Fatalf("Outcome(%v): %v", id, err)
	}
	return st
}

func (r *rig) admin(kind, arg string, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return client.AdminArg(ctx, r.coord.Addr().String(), kind, arg, nil, v)
}

// Outcome answers from the index long after the shards forgot (Remember
// is 200 ms here), across a restart; an aborted transaction says why; an
// id never seen is not-found, one older than the index expired.
func TestOutcomeByIDAfterTheShardsForget(t *testing.T) {
	r := newRig(t, nil, func(c *coordinator.Config) {
		c.Remember = 200 * time.Millisecond
		c.MaxIDAhead = 50 * time.Millisecond
	})
	// With ids checked for at most ~130 ms, a loaded machine may take
	// longer from making one to its arrival: then try a fresh one.
	run := func(want client.Outcome) uuid.UUID {
		for {
			id := newID()
			res := r.run(id, "p1", "p2")
			if res.Outcome == client.Rejected && res.Cause == protocol.CauseStaleID {
				continue
			}
			if res.Outcome != want {
				t.Fatalf("%v, want %v", res, want)
			}
			return id
		}
	}
	committed := run(client.Committed)
	r.parts["p2"].vote.Store(uint32(protocol.VoteNo))
	aborted := run(client.Aborted)
	nodetest.Eventually(t, "the shards forget both", func() bool {
		st := r.coord.Status()
		return st.InFlight == 0 && st.InDoubt == 0
	})
	time.Sleep(500 * time.Millisecond) // beyond twice Remember: forgotten by the shards
	check := func() {
		t.Helper()
		st := r.txn(committed)
		if st.State != protocol.TxnCommitted || len(st.Participants) != 2 || st.DecidedAt.IsZero() {
			t.Fatalf("committed: %+v", st)
		}
		st = r.txn(aborted)
		if st.State != protocol.TxnAborted || st.Cause != "voted-no" || st.Participant != "p2" {
			t.Fatalf("aborted: %+v", st)
		}
		if st := r.txn(newID()); st.State != protocol.TxnNotFound || st.KeptFrom.IsZero() {
			t.Fatalf("a fresh id: %+v", st)
		}
		old := newID()
		binary.BigEndian.PutUint64(old[:8], uint64(time.Now().Add(-time.Hour).UnixMilli())<<16|0x7000)
		if st := r.txn(old); st.State != protocol.TxnExpired {
			t.Fatalf("an id older than the index: %+v", st)
		}
	}
	check()
	if st := r.coord.Status(); st.OutcomeBytes == 0 || st.OutcomesKeptFrom.IsZero() {
		t.Fatalf("status: %d bytes of outcomes kept from %v", st.OutcomeBytes, st.OutcomesKeptFrom)
	}
	if err := r.coord.Close(); err != nil {
		t.Fatal(err)
	}
	r.start()
	check()
}

// A commit a participant does not acknowledge is in flight (with who
// is awaited), listed in doubt with its age, and redelivered at once by
// retry, by id and by participant.
func TestInDoubtAndRetry(t *testing.T) {
	r := newRig(t, nil, func(c *coordinator.Config) {
		// The regular redeliveries come late: what arrives soon is retry's.
		c.RedeliverMin, c.RedeliverMax = time.Minute, time.Minute
	})
	p1 := r.parts["p1"]
	p1.ack.Store(false)
	id := newID()
	if res := r.run(id, "p1", "p2"); res.Outcome != client.Committed {
		t.Fatalf("%v", res)
	}
	nodetest.Eventually(t, "p2 acknowledged", func() bool {
		st := r.txn(id)
		return len(st.Participants) == 2 && st.Participants[1].State == "acknowledged"
	})
	st := r.txn(id)
	if st.State != protocol.TxnCommitted || st.Participants[0].Name != "p1" || st.Participants[0].State != "commit sent, acknowledgement awaited" {
		t.Fatalf("in flight: %+v", st)
	}
	var rep coordinator.InDoubt
	if err := r.admin("in-doubt", "", &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Total != 1 || len(rep.Txns) != 1 || rep.Txns[0].Txn != id || rep.Waiting["p1"] != 1 || rep.Waiting["p2"] != 0 {
		t.Fatalf("in doubt: %+v", rep)
	}
	before := p1.decisionsFor(id, protocol.DecisionCommit)
	var got coordinator.Retried
	if err := r.admin("retry", id.String(), &got); err != nil || got.Redelivered != 1 {
		t.Fatalf("retry by id: %+v, %v", got, err)
	}
	nodetest.Eventually(t, "the decision redelivered to p1", func() bool { return p1.decisionsFor(id, protocol.DecisionCommit) > before })
	if err := r.admin("retry", "p1", &got); err != nil || got.Redelivered != 1 {
		t.Fatalf("retry by participant: %+v, %v", got, err)
	}
	if err := r.admin("retry", "p2", &got); err != nil || got.Redelivered != 0 {
		t.Fatalf("retry of a participant owing nothing: %+v, %v", got, err)
	}
	p1.ack.Store(true)
	if err := r.admin("retry", "p1", &got); err != nil {
		t.Fatal(err)
	}
	nodetest.Eventually(t, "every participant acknowledged once p1 does", func() bool {
		st := r.txn(id)
		return st.State == protocol.TxnCommitted && st.Participants[0].State == "acknowledged"
	})
}

// Bad input gets a refusal that says what is wrong, and the coordinator
// goes on serving.
func TestAdminBadInput(t *testing.T) {
	r := newRig(t, nil)
	var v any
	for _, c := range []struct{ kind, arg, want string }{
		{"txn", "", "no transaction id"},
		{"txn", "not-a-uuid", "malformed transaction id"},
		{"txn", uuid.NewString(), "version 4 UUID"},
		{"retry", "", "retry what"},
		{"retry", "p9", "not one of this coordinator's participants"},
		{"retry", newID().String(), "no commit waiting"},
		{"txn", strings.Repeat("x", 2000), "at most 1024"},
	} {
		err := r.admin(c.kind, c.arg, &v)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("admin %s %.20q: %v, want an error saying %q", c.kind, c.arg, err, c.want)
		}
		var re *client.RefusedError
		if c.arg != "" && len(c.arg) < 100 && !errors.As(err, &re) {
			t.Errorf("admin %s %q: %T is not a refusal", c.kind, c.arg, err)
		}
	}
	if res := r.run(newID(), "p1", "p2"); res.Outcome != client.Committed {
		t.Fatalf("after the bad requests: %v", res)
	}
}

// The outcome index outlives the coordinator's log: with small segments
// the log retires commit records as their transactions end, and a machine
// crash (the file system keeps only what was synced) right after loses the
// index's last unsynced entries — yet every acknowledged commit is still
// answered committed after the restart, because the log retires a record
// only once the index has synced its entry, and recovery indexes what the
// log still holds.
func TestOutcomesSurviveRetirementAndCrash(t *testing.T) {
	fs := waltest.NewMemFS()
	r := newRig(t, fs, func(c *coordinator.Config) { c.SegmentBytes = 64 << 10 })
	walDir := filepath.Join(r.cfg.DataDir, "wal")
	first := func() string {
		names, err := fs.ReadDir(walDir)
		if err != nil || len(names) == 0 {
			t.Fatalf("reading %s: %v %v", walDir, names, err)
		}
		return names[0]
	}
	before := first()
	var mu sync.Mutex
	var committed []uuid.UUID
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 250 {
				id := newID()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				res, err := r.cl.Run(ctx, id, []client.Branch{{Participant: "p1", Work: []byte("w")}, {Participant: "p2", Work: []byte("w")}})
				cancel()
				if err == nil && res.Outcome == client.Committed {
					mu.Lock()
					committed = append(committed, id)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if len(committed) < 1000 {
		t.Fatalf("only %d of 2,000 committed", len(committed))
	}
	nodetest.Eventually(t, "the log retires its first segments", func() bool { return first() != before })
	after := fs.Crash(nil)
	_ = r.coord.Close() // fails on the frozen file system; it only releases the process's part
	r.cfg.FS = after
	r.start()
	for _, id := range committed {
		if st := r.txn(id); st.State != protocol.TxnCommitted {
			t.Fatalf("acknowledged commit %v after retirement and a crash: %+v", id, st)
		}
	}
}

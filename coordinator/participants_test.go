package coordinator_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/protocol"
)

// changeParticipants asks the rig's coordinator for a participant change
// and returns its participants afterwards.
func (r *rig) changeParticipants(change, arg string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var rep coordinator.ParticipantsReport
	err := client.ChangeParticipants(ctx, r.coord.Addr().String(), change, arg, nil, &rep)
	return rep.Participants, err
}

// refused asserts err is the coordinator's refusal and that it says want.
func refused(t *testing.T, err error, want string) {
	t.Helper()
	var re *client.RefusedError
	if !errors.As(err, &re) || re.NotLeader {
		t.Fatalf("got %v, want a refusal saying %q", err, want)
	}
	if !strings.Contains(re.Message, want) {
		t.Fatalf("refusal %q does not say %q", re.Message, want)
	}
}

// A participant added while transactions run takes part at once: begins
// naming it were rejected before and commit through it after, and the
// load on the others loses nothing on the way. Bad changes are refused,
// each with a reason, and change nothing.
func TestAddParticipantUnderLoad(t *testing.T) {
	r := newRig(t, nil)
	p3 := newFakeParticipant(t, "p3")
	if res := r.run(newID(), "p1", "p3"); res.Outcome != client.Rejected || !strings.Contains(res.Detail, `unknown participant "p3"`) {
		t.Fatalf("a begin naming p3 before it is added: %+v", res)
	}

	var stop atomic.Bool
	var ran, bad atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				res, err := r.cl.Run(ctx, newID(), []client.Branch{{Participant: "p1", Work: []byte("w")}, {Participant: "p2", Work: []byte("w")}})
				cancel()
				ran.Add(1)
				if err != nil || res.Outcome != client.Committed {
					bad.Add(1)
					t.Errorf("load: %+v, %v", res, err)
				}
			}
		}()
	}

	ps, err := r.changeParticipants("add", "p3="+p3.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if ps["p3"] != p3.Addr() || len(ps) != 3 {
		t.Fatalf("participants after add: %v", ps)
	}
	r.parts["p3"] = p3
	p3.Connect(t, r.coord.Addr().String())
	nodetest.Eventually(t, "the coordinator connected to p3", func() bool {
		return r.coord.Status().Participants["p3"].Connected > 0
	})
	id := newID()
	if res := r.run(id, "p1", "p3"); res.Outcome != client.Committed {
		t.Fatalf("through the added p3: %+v", res)
	}
	if !p3.prepared(id) {
		t.Fatal("p3 never saw the prepare of a transaction committed through it")
	}
	nodetest.Eventually(t, "p3 told the commit", func() bool { return p3.decisionsFor(id, protocol.DecisionCommit) > 0 })

	for _, c := range []struct{ change, arg, want string }{
		{"add", "p3=" + r.parts["p1"].Addr(), "already known"},
		{"add", "p4=" + r.parts["p1"].Addr(), `already participant "p1"'s`},
		{"add", "p4", "malformed participant"},
		{"add", "=x:1", "must be 1 to"},
		{"add", "p4=", "has no address"},
		{"remove", "nope", `"nope" is not one of this coordinator's participants`},
		{"remove", "", "give its NAME"},
	} {
		_, err := r.changeParticipants(c.change, c.arg)
		refused(t, err, c.want)
	}
	time.Sleep(100 * time.Millisecond) // some load after the change too
	stop.Store(true)
	wg.Wait()
	if ran.Load() == 0 || bad.Load() != 0 {
		t.Fatalf("load: %d ran, %d not committed", ran.Load(), bad.Load())
	}
	if got := len(r.coord.Status().Participants); got != 3 {
		t.Fatalf("%d participants after the refused changes, want 3", got)
	}
}

// A participant a commit still waits on cannot be removed; once it has
// acknowledged, it can, and begins naming it are rejected. The change
// survives a restart (the data directory's list wins over
// Config.Participants), as does an add.
func TestRemoveParticipantRefusedUntilSettledAndKeptAcrossRestart(t *testing.T) {
	r := newRig(t, nil)
	p2 := r.parts["p2"]
	p2.ack.Store(false)
	id := newID()
	if res := r.run(id, "p1", "p2"); res.Outcome != client.Committed {
		t.Fatalf("%+v, want committed", res)
	}
	nodetest.Eventually(t, "one commit in doubt", func() bool { return r.coord.Status().InDoubt == 1 })
	_, err := r.changeParticipants("remove", "p2")
	refused(t, err, "in flight or in doubt")
	// Still fully there: the refused removal barred nothing.
	if res := r.run(newID(), "p1", "p2"); res.Outcome != client.Committed {
		t.Fatalf("after a refused removal: %+v, want committed", res)
	}

	p2.ack.Store(true)
	nodetest.Eventually(t, "nothing in doubt or in flight once p2 acknowledges", func() bool {
		st := r.coord.Status()
		return st.InDoubt == 0 && st.InFlight == 0
	})
	// A commit every participant acknowledged still names p2 until its
	// end record is durable (a crash before would deliver it again):
	// refused until then.
	var ps map[string]string
	nodetest.Eventually(t, "p2 removed once its transactions have ended", func() bool {
		ps, err = r.changeParticipants("remove", "p2")
		if err != nil {
			refused(t, err, "in flight or in doubt")
		}
		return err == nil
	})
	if _, ok := ps["p2"]; ok || len(ps) != 1 {
		t.Fatalf("participants after removing p2: %v", ps)
	}
	if res := r.run(newID(), "p1", "p2"); res.Outcome != client.Rejected || !strings.Contains(res.Detail, `unknown participant "p2"`) {
		t.Fatalf("a begin naming the removed p2: %+v", res)
	}
	// Its connections are closed, and a new one is refused as unknown.
	nodetest.Eventually(t, "p2's own connection closed", func() bool {
		return p2.Send(&wire.Ack{Txn: id, From: []byte("p2")}) != nil
	})
	if e := nodetest.Refused(t, r.coord.Addr().String(), wire.Hello{Role: wire.RoleParticipant, Name: []byte("p2")}); !strings.Contains(string(e.Message), `unknown participant "p2"`) {
		t.Fatalf("a removed participant's Hello: %q", e.Message)
	}
	_, err = r.changeParticipants("remove", "p1")
	refused(t, err, "last")

	p3 := newFakeParticipant(t, "p3")
	if _, err := r.changeParticipants("add", "p3="+p3.Addr()); err != nil {
		t.Fatal(err)
	}

	// Restart with the original Config.Participants (p1 and p2).
	if err := r.coord.Close(); err != nil {
		t.Fatal(err)
	}
	delete(r.parts, "p2")
	r.parts["p3"] = p3
	r.start()
	st := r.coord.Status()
	if _, ok := st.Participants["p2"]; ok || len(st.Participants) != 2 || st.Participants["p3"].Addr != p3.Addr() {
		t.Fatalf("participants after the restart: %+v", st.Participants)
	}
	if res := r.run(newID(), "p1", "p2"); res.Outcome != client.Rejected {
		t.Fatalf("the removed p2 after a restart: %+v", res)
	}
	nodetest.Eventually(t, "the coordinator connected to p3", func() bool {
		return r.coord.Status().Participants["p3"].Connected > 0
	})
	if res := r.run(newID(), "p1", "p3"); res.Outcome != client.Committed {
		t.Fatalf("through p3 after a restart: %+v", res)
	}
}

// A damaged participants file refuses to start, naming it: the
// coordinator must not fall back to --participant and forget a change.
func TestDamagedParticipantsFileRefusesToStart(t *testing.T) {
	r := newRig(t, nil)
	if err := r.coord.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(r.cfg.DataDir, "participants")
	for _, bad := range []string{"{not json", `{"participants":{}}`, `{"participants":{"p1":""}}`} {
		if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := coordinator.Start(r.cfg)
		if err == nil {
			c.Close()
			t.Fatalf("started on a participants file holding %q", bad)
		}
		if !strings.Contains(err.Error(), path) {
			t.Fatalf("%q: error %q does not name %s", bad, err, path)
		}
	}
}

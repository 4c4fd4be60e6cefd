package participant_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/commitd/commitd/participant"
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
	var v any
	if err := admin("txn", id.String(), &v); err == nil || !strings.Contains(err.Error(), "does not serve admin request") {
		t.Errorf("txn at a participant: %v", err)
	}
	r.coord.decide(t, id, protocol.DecisionAbort)
	nodetest.Eventually(t, "nothing in doubt after the abort", func() bool {
		return admin("in-doubt", "", &rep) == nil && rep.Total == 0
	})
}

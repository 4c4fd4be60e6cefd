package engine_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/participant/bank"
)

// TestParticipantPrepareAgain: a prepare for a transaction id the
// participant already has (in hand or decided) is either a copy of the one
// it handled or a new transaction that reuses the id at a coordinator that
// forgot the old one. A YES for a reuse makes the coordinator commit the
// reuse's other branches while this participant applies nothing new (issue
// 13: money created). Each case sets a transaction up, sends a second
// prepare and lists every vote a sends from then on, durability included.
func TestParticipantPrepareAgain(t *testing.T) {
	w100, w7, w0 := bank.AppendWork(nil, 0, -100), bank.AppendWork(nil, 0, -7), bank.AppendWork(nil, 1, 0)
	const (
		two = false
		one = true
	)
	for _, c := range []struct {
		name string
		// the first prepare, and how far it goes: "committed",
		// "prepared", "preparing" (its record not durable), "read-only"
		work    []byte
		phase1  bool
		upTo    string
		again   []byte
		phase2  bool
		want    string // a's votes after the second prepare, durability included
		because string
	}{
		{"committed two-phase, other work", w100, two, "committed", w7, two, "no",
			"a reuse: a YES would commit the other branches alone"},
		{"committed two-phase, the same work", w100, two, "committed", w100, two, "no",
			"past voting at its coordinator, a copy's answer is ignored; a reuse with other branches must not count a's old commit"},
		{"committed one-phase, the same work", w100, one, "committed", w100, one, "yes",
			"a copy: its coordinator may still be voting, and committed is the true answer"},
		{"committed one-phase, other work", w100, one, "committed", w7, one, "no",
			"a reuse: yes would say committed for work not done"},
		{"committed one-phase, the same work two-phase", w100, one, "committed", w100, two, "no",
			"a reuse with other branches"},
		{"prepared, the same work", w100, two, "prepared", w100, two, "yes",
			"a copy: prepared, yes again"},
		{"prepared, other work", w100, two, "prepared", w7, two, "no",
			"a reuse: a's prepared work is not the reuse's"},
		{"prepared, the same work one-phase", w100, two, "prepared", w100, one, "no",
			"a one-phase yes would say committed"},
		{"preparing, other work", w100, two, "preparing", w7, two, "no",
			"no now, and no yes when the old prepare becomes durable"},
		{"preparing, the same work", w100, two, "preparing", w100, two, "yes",
			"a copy: one yes, once durable"},
		{"read-only, the same work", w0, two, "read-only", w0, two, "read-only",
			"a copy"},
		{"read-only, other work", w0, two, "read-only", w7, two, "no",
			"a reuse: read-only would leave a out of phase two"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := engine.NewParticipant(engine.ParticipantConfig{Name: "a"}, bank.New(2, 1000))
			id := tid(1)
			durable := func() {
				if rd := p.Ready(); len(rd.Records) > 0 {
					p.Durable(rd.FirstIndex + uint64(len(rd.Records)) - 1)
				}
			}
			p.Step(engine.Message{Type: engine.MsgPrepare, Txn: id, To: "a", Work: c.work, OnePhase: c.phase1})
			switch c.upTo {
			case "committed":
				durable()
				if !c.phase1 {
					p.Step(engine.Message{Type: engine.MsgDecision, Txn: id, To: "a", Decision: engine.DecisionCommit})
					durable()
				}
			case "prepared":
				durable()
			}
			var last uint64 // the last record appended, durable or not
			if rd := p.Ready(); len(rd.Records) > 0 {
				last = rd.FirstIndex + uint64(len(rd.Records)) - 1
			}
			p.Step(engine.Message{Type: engine.MsgPrepare, Txn: id, To: "a", Work: c.again, OnePhase: c.phase2})
			var votes []string
			for range 2 {
				rd := p.Ready()
				for _, m := range rd.Messages {
					if m.Type == engine.MsgVote {
						votes = append(votes, m.Vote.String())
					}
				}
				if len(rd.Records) > 0 {
					last = rd.FirstIndex + uint64(len(rd.Records)) - 1
				}
				if last > 0 {
					p.Durable(last)
				}
			}
			if got := strings.Join(votes, " "); got != c.want {
				t.Errorf("votes after the second prepare: %q, want %q (%s)", got, c.want, c.because)
			}
			if st := p.Stats(); (c.want == "no") != (st.RefusedReuse == 1) {
				t.Errorf("RefusedReuse = %d, want %v", st.RefusedReuse, fmt.Sprint(c.want == "no"))
			}
		})
	}
}

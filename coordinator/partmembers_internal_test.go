package coordinator

import (
	"bytes"
	"maps"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/commitd/commitd/protocol"
)

// applyReplica is a replica with no server running: applyParticipants
// changes its table only (setParticipants finds no participant set).
func applyReplica(open ...engine.Record) *replica {
	r := &replica{s: &Server{cfg: Config{Logger: nodetest.Quiet()}}, open: map[protocol.TxnID][]byte{}}
	for _, rec := range open {
		b, err := rec.AppendBinary(nil)
		if err != nil {
			panic(err)
		}
		r.open[rec.Txn] = b
	}
	return r
}

// The rules a participant change applies by, from the log alone: the
// first change applies to the proposer's list it carries, later ones to
// the log's table whatever they carry; an add of a known name at another
// address, or of another name's address, is refused, the same add again
// is no change; a removal of an unknown name, of the last one, or of one a
// commit without an end names, is refused.
func TestParticipantChangeRulesAtApply(t *testing.T) {
	flags := map[string]string{"p1": "a:1", "p2": "a:2"}
	txn := uuid.Must(uuid.NewV7())
	r := applyReplica(engine.Record{Type: engine.RecCommit, Txn: txn, Participants: []string{"p1", "p3"}})
	steps := []struct {
		c    partChange
		why  string // "" applies
		want map[string]string
	}{
		{partChange{name: "p3", addr: "a:3", base: flags}, "", map[string]string{"p1": "a:1", "p2": "a:2", "p3": "a:3"}},
		// Later changes apply to the log's table, not to their base.
		{partChange{name: "p4", addr: "a:4", base: map[string]string{"p9": "a:9"}}, "", map[string]string{"p1": "a:1", "p2": "a:2", "p3": "a:3", "p4": "a:4"}},
		{partChange{name: "p4", addr: "a:4"}, "", nil},
		{partChange{name: "p4", addr: "a:5"}, `"p4" is already known, at a:4`, nil},
		{partChange{name: "p5", addr: "a:4"}, `already participant "p4"'s`, nil},
		{partChange{remove: true, name: "p9"}, "not one of this coordinator's participants", nil},
		{partChange{remove: true, name: "p3"}, "named by 1 commits not yet acknowledged", nil},
		{partChange{remove: true, name: "p4"}, "", map[string]string{"p1": "a:1", "p2": "a:2", "p3": "a:3"}},
	}
	want := map[string]string(nil)
	for i, st := range steps {
		why := r.applyParticipants(&st.c)
		if st.why == "" && why != "" || !strings.Contains(why, st.why) {
			t.Fatalf("step %d (%+v): %q, want %q", i, st.c, why, st.why)
		}
		if st.want != nil {
			want = st.want
		}
		if !maps.Equal(r.parts.table, want) {
			t.Fatalf("step %d: table %v, want %v", i, r.parts.table, want)
		}
	}
	// Once the commit has ended, p3 goes; the last one cannot.
	delete(r.open, txn)
	for _, name := range []string{"p3", "p2"} {
		if why := r.applyParticipants(&partChange{remove: true, name: name}); why != "" {
			t.Fatalf("removing %s: %s", name, why)
		}
	}
	if why := r.applyParticipants(&partChange{remove: true, name: "p1"}); !strings.Contains(why, "last") {
		t.Fatalf("removing the last participant: %q", why)
	}
}

// A change's entry and a snapshot's section decode to what was encoded,
// and nothing shorter or damaged decodes.
func TestParticipantEntryAndSection(t *testing.T) {
	c := partChange{remove: true, name: "bank3", addr: "10.0.0.3:7401", proposer: 2, seq: 7, base: map[string]string{"bank1": "h:1", "bank3": "10.0.0.3:7401"}}
	b := c.marshal()
	var got partChange
	if err := got.unmarshal(b); err != nil {
		t.Fatal(err)
	}
	if got.remove != c.remove || got.name != c.name || got.addr != c.addr || got.proposer != c.proposer || got.seq != c.seq || !maps.Equal(got.base, c.base) {
		t.Fatalf("decoded %+v, want %+v", got, c)
	}
	for n := range len(b) {
		if err := got.unmarshal(b[:n]); err == nil {
			t.Fatalf("%d of %d bytes decoded", n, len(b))
		}
	}
	r := applyReplica()
	r.parts.table = c.base
	sec := r.appendParts(nil)
	tail := []byte{1, 2, 3}
	tb, rest, err := takeParts(append(sec, tail...))
	if err != nil || !maps.Equal(tb, c.base) || !bytes.Equal(rest, tail) {
		t.Fatalf("section: %v %q %v", tb, rest, err)
	}
	// Data without the section (a commit record's length first) is all
	// left for the records.
	if tb, rest, err := takeParts(tail); tb != nil || !bytes.Equal(rest, tail) || err != nil {
		t.Fatalf("data without a section: %v %q %v", tb, rest, err)
	}
	if _, _, err := takeParts(sec[:len(sec)-1]); err == nil {
		t.Fatal("a truncated section decoded")
	}
}

func FuzzParticipantEntry(f *testing.F) {
	f.Add((&partChange{name: "p3", addr: "h:3", base: map[string]string{"p1": "h:1"}}).marshal())
	f.Add((&partChange{remove: true, name: "p3"}).marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		var c partChange
		if c.unmarshal(b) != nil {
			return
		}
		var again partChange
		if err := again.unmarshal(c.marshal()); err != nil {
			t.Fatalf("a decoded change does not decode once encoded: %v", err)
		}
		if again.remove != c.remove || again.name != c.name || again.addr != c.addr || !maps.Equal(again.base, c.base) {
			t.Fatalf("%+v became %+v", c, again)
		}
	})
}

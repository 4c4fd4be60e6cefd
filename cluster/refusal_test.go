package cluster

import (
	"testing"

	"github.com/google/uuid"
)

// The refusal's text is what the coordinator sends and what the client
// parses: each kind reads back as it was made, and other details are not
// refusals.
func TestRefusalRoundTrip(t *testing.T) {
	id := uuid.Must(uuid.NewV7())
	for _, r := range []Refusal{
		{Group: 2, Owner: 1, Version: 3},
		{Group: 2, Owner: 4095}, // a group without a map
		{Group: 2, Owner: 2, State: Draining, Version: 4},
		{Group: 7, Owner: 7, State: Retired, Version: 1 << 40},
	} {
		got, ok := ParseRefusal(r.Detail(id))
		if !ok || got != r {
			t.Errorf("ParseRefusal(%q) = %+v, %v; want %+v", r.Detail(id), got, ok, r)
		}
	}
	for _, d := range []string{
		"", "no participant named p9", "group 2 is active in cluster map version 4: x",
		"id x belongs to group 2, and this coordinator is group 2: y",
		"id x belongs to group 1, and this coordinator is group 2 (cluster map version q)",
	} {
		if r, ok := ParseRefusal(d); ok {
			t.Errorf("ParseRefusal(%q) = %+v, true; want not a refusal", d, r)
		}
	}
}

// FuzzParseRefusal: any detail a coordinator (or anyone on the wire)
// sends either is not a refusal, or reads as one whose own text reads back
// the same; nothing panics.
func FuzzParseRefusal(f *testing.F) {
	id := uuid.Must(uuid.NewV7())
	f.Add(Refusal{Group: 2, Owner: 1, Version: 3}.Detail(id))
	f.Add(Refusal{Group: 2, Owner: 2, State: Draining, Version: 4}.Detail(id))
	f.Add("group 1 is retired in cluster map version 0:")
	f.Fuzz(func(t *testing.T, d string) {
		r, ok := ParseRefusal(d)
		if !ok {
			return
		}
		if again, ok := ParseRefusal(r.Detail(id)); !ok || again != r {
			t.Fatalf("%q reads as %+v, whose text %q reads as %+v, %v", d, r, r.Detail(id), again, ok)
		}
	})
}

// Newer reports each newer version once, ignores older and equal ones,
// and stops reporting once the process holds that version itself.
func TestNewer(t *testing.T) {
	var n Newer
	for _, c := range []struct {
		peer, own uint64
		want      bool
	}{{3, 3, false}, {2, 3, false}, {5, 3, true}, {5, 3, false}, {4, 3, false}, {6, 3, true}, {6, 6, false}} {
		if got := n.Saw(c.peer, c.own); got != c.want {
			t.Errorf("Saw(%d, %d) = %v, want %v", c.peer, c.own, got, c.want)
		}
	}
	if n.Seen(3) != 6 || n.Seen(6) != 0 || n.Seen(7) != 0 {
		t.Fatalf("Seen: %d %d %d; want 6 0 0", n.Seen(3), n.Seen(6), n.Seen(7))
	}
}

package cluster

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"
)

const sample = `# three groups, two participants
version 7
group 2 replicas 1=10.0.1.1:7400,2=10.0.1.2:7400,3=10.0.1.3:7400 weight 3
group 1 replicas 1=10.0.0.1:7400 # weight defaults to 1
group 3 replicas 1=10.0.2.1:7400 draining
participant p1=10.0.9.1:7401
participant p2=[::1]:7402
`

func TestParse(t *testing.T) {
	m, err := Parse(strings.NewReader(sample), "map")
	if err != nil {
		t.Fatal(err)
	}
	if m.Version != 7 || len(m.Groups) != 3 || len(m.Participants) != 2 {
		t.Fatalf("%+v", m)
	}
	for i, want := range []struct {
		id       uint16
		replicas int
		weight   uint32
		state    State
	}{{1, 1, 1, Active}, {2, 3, 3, Active}, {3, 1, 0, Draining}} {
		g := m.Groups[i]
		if g.ID != want.id || len(g.Replicas) != want.replicas || g.Weight != want.weight || g.State != want.state {
			t.Errorf("group %d = %+v, want %+v", i, g, want)
		}
	}
	if g, ok := m.Group(2); !ok || g.Replicas[2] != (Replica{3, "10.0.1.3:7400"}) {
		t.Errorf("Group(2) = %+v, %v", g, ok)
	}
	if _, ok := m.Group(4); ok {
		t.Error("Group(4) found")
	}
	if m.Participants[1] != (Participant{"p2", "[::1]:7402"}) {
		t.Errorf("participants %+v", m.Participants)
	}
}

// Every mistake is refused with the file and line that hold it.
func TestParseRefuses(t *testing.T) {
	ok := "version 1\ngroup 1 replicas 1=h:1\n"
	for _, tc := range []struct{ text, want string }{
		{"", "m: no version line"},
		{"group 1 replicas 1=h:1\n", "m: no version line"},
		{"version 1\nversion 2\n", "m:2: a second version line"},
		{"version 0\n", "m:1: version \"0\""},
		{"version x y\n", "m:1: want: version N"},
		{ok + "group 1 replicas 1=h:2\n", "m:3: group 1 again (first on line 2)"},
		{ok + "group 0 replicas 1=h:2\n", "m:3: group \"0\""},
		{ok + "group 4096 replicas 1=h:2\n", "m:3: group \"4096\""},
		{ok + "group 2 nodes 1=h:2\n", "m:3: want: group N replicas"},
		{ok + "group 2 replicas 1=h\n", "m:3: group 2: replica 1: address \"h\""},
		{ok + "group 2 replicas 1=h:0\n", "port \"0\""},
		{ok + "group 2 replicas 0=h:1\n", "replica \"0=h:1\""},
		{ok + "group 2 replicas 1=h:1,1=h:2\n", "replica 1 twice"},
		{ok + "group 2 replicas 1=a:1,2=a:1,3=a:1,4=a:1,5=a:1,6=a:1,7=a:1,8=a:1\n", "more than 7 replicas"},
		{ok + "group 2 replicas 1=h:1 weight\n", "want one weight"},
		{ok + "group 2 replicas 1=h:1 weight 1 weight 2\n", "want one weight"},
		{ok + "group 2 replicas 1=h:1 weight 2000000\n", "weight \"2000000\""},
		{ok + "group 2 replicas 1=h:1 draining weight 1\n", "weight must be 0"},
		{ok + "group 2 replicas 1=h:1 draining retired\n", "both draining and retired"},
		{ok + "group 2 replicas 1=h:1 fast\n", "m:3: group 2: unknown word \"fast\""},
		{ok + "participant p1\n", "m:3: participant \"p1\""},
		{ok + "participant p1=h:1\nparticipant p1=h:2\n", "m:4: participant p1 again (first on line 3)"},
		{ok + "participant p1=nowhere\n", "participant p1: address"},
		{ok + "\n\nshards 4\n", "m:5: unknown key \"shards\""},
		{"version 1\ngroup 1 replicas 1=h:1 weight 0\n", "no active group has a weight above 0"},
		{"version 1\n" + strings.Repeat("#", maxLine+1) + "\n", "m:2: bufio.Scanner: token too long"},
	} {
		_, err := Parse(strings.NewReader(tc.text), "m")
		if !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%.60q) = %v, want an ErrSyntax containing %q", tc.text, err, tc.want)
		}
	}
}

func TestFormatParsesBack(t *testing.T) {
	m, err := Parse(strings.NewReader(sample), "map")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := m.Format(&b); err != nil {
		t.Fatal(err)
	}
	again, err := Parse(&b, "formatted")
	if err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	var b2 bytes.Buffer
	again.Format(&b2)
	m.Format(&b)
	if b.String() != b2.String() {
		t.Fatalf("formatted twice differently:\n%s\n%s", b.String(), b2.String())
	}
}

func TestStampAndGroupOf(t *testing.T) {
	for _, g := range []uint16{1, 2, 255, 256, MaxGroup} {
		id := uuid.Must(uuid.NewV7())
		s := Stamp(id, g)
		if GroupOf(s) != g {
			t.Fatalf("GroupOf(Stamp(id, %d)) = %d", g, GroupOf(s))
		}
		// The time, the version, the variant and the random bits are kept.
		if s.Version() != 7 || s.Variant() != uuid.RFC4122 || !bytes.Equal(s[:6], id[:6]) || !bytes.Equal(s[8:], id[8:]) {
			t.Fatalf("Stamp changed more than rand_a: %v → %v", id, s)
		}
	}
	if g := GroupOf(uuid.New()); g != 0 {
		t.Fatalf("GroupOf(a UUIDv4) = %d, want 0", g)
	}
	for _, bad := range []func(){
		func() { Stamp(uuid.Must(uuid.NewV7()), 0) },
		func() { Stamp(uuid.Must(uuid.NewV7()), MaxGroup+1) },
		func() { Stamp(uuid.New(), 1) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Error("Stamp did not panic")
				}
			}()
			bad()
		}()
	}
}

// Pick shares new transactions in proportion to the weights, and never
// to a draining group.
func TestPickFollowsWeights(t *testing.T) {
	m, err := Parse(strings.NewReader(sample), "map")
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint16]int{}
	for r := range uint64(4000) {
		got[m.Pick(r*0x9e3779b97f4a7c15)]++
	}
	// Weights 1 and 3: a quarter and three quarters, within 5 %.
	if got[3] != 0 || got[1] < 900 || got[1] > 1100 || got[2] < 2900 || got[2] > 3100 {
		t.Fatalf("picks %v, want about 1000 for group 1, 3000 for group 2, none for 3", got)
	}
}

func TestCanFollow(t *testing.T) {
	parse := func(s string) *Map {
		t.Helper()
		m, err := Parse(strings.NewReader(s), "m")
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	v1 := parse("version 1\ngroup 1 replicas 1=h:1\ngroup 2 replicas 1=h:2\n")
	for _, tc := range []struct{ next, want string }{
		{"version 2\ngroup 1 replicas 1=h:1\ngroup 2 replicas 1=h:2\ngroup 3 replicas 1=h:3\n", ""},
		{"version 2\ngroup 1 replicas 1=h:1\ngroup 2 replicas 1=h:2 draining\n", ""},
		{"version 1\ngroup 1 replicas 1=h:1\ngroup 2 replicas 1=h:2\n", "does not follow version 1"},
		{"version 2\ngroup 1 replicas 1=h:1\n", "drops group 2, which is active"},
		{"version 2\ngroup 1 replicas 1=h:1\ngroup 2 replicas 1=h:2 retired\n", "retires group 2, which is active"},
	} {
		err := parse(tc.next).CanFollow(v1)
		if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CanFollow(%q) = %v, want %q", tc.next, err, tc.want)
		}
	}
	v2 := parse("version 2\ngroup 1 replicas 1=h:1\ngroup 2 replicas 1=h:2 retired\n")
	if err := parse("version 3\ngroup 1 replicas 1=h:1\n").CanFollow(v2); err != nil {
		t.Errorf("dropping a retired group: %v", err)
	}
	if err := parse("version 3\ngroup 1 replicas 1=h:1\ngroup 2 replicas 1=h:2\n").CanFollow(v2); err == nil || !strings.Contains(err.Error(), "brings back group 2") {
		t.Errorf("reviving a retired group: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(sample)
	f.Add("version 1\ngroup 1 replicas 1=h:1 weight 0\ngroup 2 replicas 2=[::1]:9 retired\n")
	f.Fuzz(func(t *testing.T, text string) {
		m, err := Parse(strings.NewReader(text), "fuzz")
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("error %v is not ErrSyntax", err)
			}
			return
		}
		// A map that parses formats to one that parses to the same.
		var a, b bytes.Buffer
		m.Format(&a)
		again, err := Parse(bytes.NewReader(a.Bytes()), "formatted")
		if err != nil {
			t.Fatalf("formatted map does not parse: %v\n%s", err, a.String())
		}
		again.Format(&b)
		if a.String() != b.String() {
			t.Fatalf("round trip changed the map:\n%s\n%s", a.String(), b.String())
		}
		_ = m.Pick(uint64(len(text)))
	})
}

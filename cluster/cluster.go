package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/commitd/commitd/protocol"
)

// Limits a map is held to: every one bounds what a parser allocates.
const (
	// MaxGroup is the largest group number: rand_a has 12 bits, and 0
	// is "no group" (an unstamped id).
	MaxGroup = 1<<12 - 1
	// MaxReplicas is the most replicas a group may list (raft groups
	// larger than 7 only slow every commit down).
	MaxReplicas = 7
	// MaxWeight bounds a group's weight, so that the sum of every
	// group's fits in 32 bits.
	MaxWeight = 1_000_000
	// MaxParticipants is the most participants a map may list.
	MaxParticipants = 4096
	// maxLine bounds one line of a map file.
	maxLine = 64 << 10
)

// ErrSyntax marks a map file that does not parse or breaks a rule; the
// error names the file and the line.
var ErrSyntax = errors.New("cluster map")

// State is a group's place in its life.
type State uint8

const (
	// Active: the group takes new transactions in proportion to its
	// weight (possibly none, with weight 0) and resolves its own.
	Active State = iota + 1
	// Draining: the group takes no new transaction and resolves its
	// own; it is on its way out.
	Draining
	// Retired: the group has drained (nothing in flight, every commit
	// acknowledged, its ids past their lifetime). A participant that
	// still holds one of its transactions prepared aborts it: the group
	// had no commit left unacknowledged when it was retired.
	Retired
)

func (s State) String() string {
	switch s {
	case Active:
		return "active"
	case Draining:
		return "draining"
	case Retired:
		return "retired"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// Replica is one member of a group: its raft id and its address.
type Replica struct {
	ID   uint64
	Addr string
}

// Group is one coordinator group.
type Group struct {
	ID       uint16 // 1..MaxGroup
	Replicas []Replica
	Weight   uint32 // share of new transactions; 0 for draining and retired groups
	State    State
}

// Participant is a participant every group may name.
type Participant struct {
	Name string
	Addr string
}

// Map is one version of a cluster's map. A Map is not changed once
// parsed; a new version is a new Map.
type Map struct {
	Version      uint64
	Groups       []Group // sorted by ID
	Participants []Participant
	total        uint64 // sum of the weights
}

// GroupOf returns the group stamped in id, or 0 if id is not a UUIDv7
// (an id made without a map, which belongs to the one group there is).
func GroupOf(id protocol.TxnID) uint16 {
	if id[6]>>4 != 7 {
		return 0
	}
	return uint16(id[6]&0x0f)<<8 | uint16(id[7])
}

// Stamp returns id with group g in its rand_a bits; id must be a UUIDv7
// and g in 1..MaxGroup (a programmer's error otherwise).
func Stamp(id protocol.TxnID, g uint16) protocol.TxnID {
	if id[6]>>4 != 7 || g == 0 || g > MaxGroup {
		panic(fmt.Sprintf("cluster: stamping group %d into %v", g, id))
	}
	id[6] = 0x70 | byte(g>>8)
	id[7] = byte(g)
	return id
}

// Group returns the group numbered g.
func (m *Map) Group(g uint16) (*Group, bool) {
	i, ok := slices.BinarySearchFunc(m.Groups, g, func(x Group, g uint16) int { return int(x.ID) - int(g) })
	if !ok {
		return nil, false
	}
	return &m.Groups[i], true
}

// Pick chooses the group for a new transaction from a uniformly random
// r, in proportion to the groups' weights.
func (m *Map) Pick(r uint64) uint16 {
	// Parse refuses a map whose weights sum to 0, so total > 0.
	x := r % m.total
	for i := range m.Groups {
		w := uint64(m.Groups[i].Weight)
		if x < w {
			return m.Groups[i].ID
		}
		x -= w
	}
	panic("cluster: weights changed after parsing")
}

// Load reads and parses the map file at path.
func Load(path string) (*Map, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(f, path)
}

// Parse reads a map in the format Format writes:
//
//	# a comment, and blank lines, anywhere
//	version 7
//	group 1 replicas 1=10.0.0.1:7400,2=10.0.0.2:7400,3=10.0.0.3:7400 weight 1
//	group 3 replicas 1=10.0.2.1:7400 draining
//	participant p1=10.0.9.1:7401
//
// A group's weight defaults to 1 if active and must be 0 (or absent)
// if draining or retired. Every error names name and the line.
func Parse(r io.Reader, name string) (*Map, error) {
	m := &Map{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	seenVersion := false
	groups := map[uint16]int{}
	parts := map[string]int{}
	line := 0
	fail := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s:%d: %s", ErrSyntax, name, line, fmt.Sprintf(format, a...))
	}
	for sc.Scan() {
		line++
		text := sc.Text()
		if i := strings.IndexByte(text, '#'); i >= 0 {
			text = text[:i]
		}
		f := strings.Fields(text)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "version":
			if seenVersion {
				return nil, fail("a second version line")
			}
			if len(f) != 2 {
				return nil, fail("want: version N")
			}
			v, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil || v == 0 {
				return nil, fail("version %q: want a number from 1", f[1])
			}
			m.Version, seenVersion = v, true
		case "group":
			g, err := parseGroup(f)
			if err != nil {
				return nil, fail("%v", err)
			}
			if at, ok := groups[g.ID]; ok {
				return nil, fail("group %d again (first on line %d)", g.ID, at)
			}
			groups[g.ID] = line
			m.Groups = append(m.Groups, g)
			m.total += uint64(g.Weight)
		case "participant":
			if len(f) != 2 {
				return nil, fail("want: participant NAME=HOST:PORT")
			}
			n, addr, ok := strings.Cut(f[1], "=")
			if !ok || n == "" {
				return nil, fail("participant %q: want NAME=HOST:PORT", f[1])
			}
			if err := checkAddr(addr); err != nil {
				return nil, fail("participant %s: %v", n, err)
			}
			if at, ok := parts[n]; ok {
				return nil, fail("participant %s again (first on line %d)", n, at)
			}
			if len(m.Participants) == MaxParticipants {
				return nil, fail("more than %d participants", MaxParticipants)
			}
			parts[n] = line
			m.Participants = append(m.Participants, Participant{Name: n, Addr: addr})
		default:
			return nil, fail("unknown key %q (want version, group or participant)", f[0])
		}
	}
	if err := sc.Err(); err != nil {
		line++
		return nil, fail("%v", err)
	}
	if !seenVersion {
		return nil, fmt.Errorf("%w: %s: no version line", ErrSyntax, name)
	}
	if m.total == 0 {
		return nil, fmt.Errorf("%w: %s: no active group has a weight above 0: no new transaction could start", ErrSyntax, name)
	}
	slices.SortFunc(m.Groups, func(a, b Group) int { return int(a.ID) - int(b.ID) })
	return m, nil
}

// parseGroup parses the fields of one group line.
func parseGroup(f []string) (Group, error) {
	if len(f) < 4 || f[2] != "replicas" {
		return Group{}, errors.New("want: group N replicas ID=HOST:PORT[,...] [weight W] [draining|retired]")
	}
	id, err := strconv.ParseUint(f[1], 10, 16)
	if err != nil || id == 0 || id > MaxGroup {
		return Group{}, fmt.Errorf("group %q: want a number from 1 to %d", f[1], MaxGroup)
	}
	g := Group{ID: uint16(id), State: Active, Weight: 1}
	seen := map[uint64]bool{}
	for _, r := range strings.Split(f[3], ",") {
		rid, addr, ok := strings.Cut(r, "=")
		n, err := strconv.ParseUint(rid, 10, 64)
		if !ok || err != nil || n == 0 {
			return Group{}, fmt.Errorf("group %d: replica %q: want ID=HOST:PORT with an id from 1", id, r)
		}
		if err := checkAddr(addr); err != nil {
			return Group{}, fmt.Errorf("group %d: replica %d: %v", id, n, err)
		}
		if seen[n] {
			return Group{}, fmt.Errorf("group %d: replica %d twice", id, n)
		}
		if len(g.Replicas) == MaxReplicas {
			return Group{}, fmt.Errorf("group %d: more than %d replicas", id, MaxReplicas)
		}
		seen[n] = true
		g.Replicas = append(g.Replicas, Replica{ID: n, Addr: addr})
	}
	weighted := false
	for i := 4; i < len(f); i++ {
		switch f[i] {
		case "weight":
			if weighted || i+1 == len(f) {
				return Group{}, fmt.Errorf("group %d: want one weight W", id)
			}
			i++
			w, err := strconv.ParseUint(f[i], 10, 32)
			if err != nil || w > MaxWeight {
				return Group{}, fmt.Errorf("group %d: weight %q: want 0 to %d", id, f[i], MaxWeight)
			}
			g.Weight, weighted = uint32(w), true
		case "draining", "retired":
			if g.State != Active {
				return Group{}, fmt.Errorf("group %d: both %s and %s", id, g.State, f[i])
			}
			g.State = Draining
			if f[i] == "retired" {
				g.State = Retired
			}
		default:
			return Group{}, fmt.Errorf("group %d: unknown word %q (want weight, draining or retired)", id, f[i])
		}
	}
	if g.State != Active {
		if weighted && g.Weight != 0 {
			return Group{}, fmt.Errorf("group %d: a %s group takes no new transactions: weight must be 0", id, g.State)
		}
		g.Weight = 0
	}
	return g, nil
}

func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return fmt.Errorf("address %q: want HOST:PORT", addr)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("address %q: port %q: want 1 to 65535", addr, port)
	}
	return nil
}

// Format writes m in the format Parse reads.
func (m *Map) Format(w io.Writer) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "version %d\n", m.Version)
	for _, g := range m.Groups {
		fmt.Fprintf(bw, "group %d replicas ", g.ID)
		for i, r := range g.Replicas {
			if i > 0 {
				bw.WriteByte(',')
			}
			fmt.Fprintf(bw, "%d=%s", r.ID, r.Addr)
		}
		if g.State == Active {
			fmt.Fprintf(bw, " weight %d\n", g.Weight)
		} else {
			fmt.Fprintf(bw, " %s\n", g.State)
		}
	}
	for _, p := range m.Participants {
		fmt.Fprintf(bw, "participant %s=%s\n", p.Name, p.Addr)
	}
	return bw.Flush()
}

// CanFollow says whether m may replace prev while transactions run: its
// version is higher, no group is dropped before it is retired (a
// participant could still hold one of its transactions and would have
// no one to ask), no group goes straight from active to retired (it must
// drain first), and a retired group stays retired (its ids were given up).
func (m *Map) CanFollow(prev *Map) error {
	if m.Version <= prev.Version {
		return fmt.Errorf("cluster map version %d does not follow version %d", m.Version, prev.Version)
	}
	for _, old := range prev.Groups {
		g, ok := m.Group(old.ID)
		switch {
		case !ok && old.State != Retired:
			return fmt.Errorf("cluster map version %d drops group %d, which is %s: drain and retire it first", m.Version, old.ID, old.State)
		case !ok:
		case old.State == Active && g.State == Retired:
			return fmt.Errorf("cluster map version %d retires group %d, which is active: drain it first", m.Version, old.ID)
		case old.State == Retired && g.State != Retired:
			return fmt.Errorf("cluster map version %d brings back group %d, which was retired: give the new group another number", m.Version, old.ID)
		}
	}
	return nil
}

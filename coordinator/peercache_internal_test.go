package coordinator

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// newTestSet is a participant set of n peers named p0..p(n-1) (peers with
// no connections: only their identity matters here).
func newTestSet(n int) *participantSet {
	ps := &participantSet{peers: map[string]*peer{}, names: map[string]string{}}
	for i := range n {
		name := fmt.Sprintf("p%d", i)
		ps.peers[name] = &peer{name: name}
		ps.names[name] = name
	}
	return ps
}

// The cache answers exactly as the set's map does: for the set's own name
// strings, for equal names at other addresses (a string cloned, as a name
// restored from the log is), for unknown names, for more names than it
// holds, and across a set replaced by another with the same names.
func TestPeerCacheMatchesMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	var c peerCache
	sets := []*participantSet{newTestSet(3), newTestSet(12), newTestSet(12)}
	set := sets[0]
	for i := range 200000 {
		if rng.IntN(5000) == 0 {
			set = sets[rng.IntN(len(sets))]
		}
		var name string
		switch k := rng.IntN(14); {
		case k < 10:
			name = set.names[fmt.Sprintf("p%d", rng.IntN(len(set.names)))] // the interned string
		case k < 13:
			name = strings.Clone(fmt.Sprintf("p%d", rng.IntN(len(set.names)))) // equal, elsewhere
		default:
			name = fmt.Sprintf("q%d", rng.IntN(3)) // unknown
		}
		if got, want := c.lookup(set, name), set.peers[name]; got != want {
			t.Fatalf("lookup %d of %q: %p, want %p", i, name, got, want)
		}
	}
}

// BenchmarkPeerLookup is Deliver's lookup of a message's participant: the
// set's map, and the cache, for two participants named alternately.
func BenchmarkPeerLookup(b *testing.B) {
	set := newTestSet(2)
	names := []string{set.names["p0"], set.names["p1"]}
	b.Run("map", func(b *testing.B) {
		var p *peer
		for i := 0; b.Loop(); i++ {
			p = set.peers[names[i&1]]
		}
		_ = p
	})
	b.Run("cache", func(b *testing.B) {
		var c peerCache
		var p *peer
		for i := 0; b.Loop(); i++ {
			p = c.lookup(set, names[i&1])
		}
		_ = p
	})
}

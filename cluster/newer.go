package cluster

import "sync/atomic"

// Newer remembers the newest map version a process has heard that a peer
// holds (a Hello's map version, docs/scale.md). The process only reports
// it — a log line once per version and `newer_map_seen` in its status —
// and never acts on it: the operator's tooling pushes the file. The zero
// value is ready; it is safe for concurrent use.
type Newer struct {
	max atomic.Uint64
}

// Saw notes that a peer holds version peer while this process holds own,
// and reports true the first time a version above own and above every
// one seen before is seen: the caller logs it then, once.
func (n *Newer) Saw(peer, own uint64) bool {
	for {
		cur := n.max.Load()
		if peer <= own || peer <= cur {
			return false
		}
		if n.max.CompareAndSwap(cur, peer) {
			return true
		}
	}
}

// Seen is the newest version seen at a peer if it is above own (the
// version this process holds now), else 0: a process that has since
// taken that map has nothing newer to report.
func (n *Newer) Seen(own uint64) uint64 {
	if v := n.max.Load(); v > own {
		return v
	}
	return 0
}

package participant

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commitd/commitd/cluster"
	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/internal/testrace"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/protocol"
)

// The cluster simulation (docs/scale.md, "Proof") runs coordinator groups
// that share their participants, on one goroutine, from one seeded random
// source, as engine/sim_test.go runs one coordinator: each group is one
// engine.Shard with a log of its own (a group of replicas is one
// replicated coordinator, which coordinator/replica_sim_test.go covers),
// each participant an engine.Participant over a bank and a log. The
// network drops, duplicates, delays and reorders; nodes crash, keeping
// what their log had made durable and a random part of the rest, and are
// rebuilt from it alone.
//
// The map changes while transactions run, as an operator changes it:
// version 1 has groups 1 and 2; version 2 adds group 3; version 3 drains
// group 2 (weight 0: its front door refuses new begins, it resolves what
// it has); once group 2 is drained — nothing in flight, every commit
// acknowledged — version 4 retires it and its process stops for good.
// Each participant and the client learn each version after their own
// delay (participants first, as an operator publishes it), so old and
// new maps are in use at once. What the servers do is mirrored here:
//
//   - the client stamps each new id with the group its map picks by
//     weight, and sends the begin there (sometimes, as a client with a
//     stale or broken map would, to another group);
//   - a group's front door refuses a begin stamped for another group,
//     or any begin while it drains (coordinator/frontdoor.go);
//   - a participant sends every vote, ack and inquiry to the group
//     stamped in its id, never to another, and nothing to a group its
//     map does not list or lists as retired (participant/cluster.go);
//   - a participant aborts what it holds undecided of a group its map
//     lists as retired (retiredInDoubt, the function the server uses).
//
// Not modelled here: groups of several replicas (each group is one
// shard; coordinator/replica_sim_test.go covers replication), staged
// decisions (every begin is classic), durable resources, and the id
// lifetime the operator waits for before retiring a group (a begin
// reaches its group at once here, so no late begin can arrive).
//
// Invariants, after every event: atomicity across participants; the
// client is never told an outcome that differs from what happened;
// conservation of money in every bank; no message about a transaction
// ever reaches a group other than the one stamped in its id, and no
// group begins another group's transaction. At the end: every
// transaction of a live group has settled within a bounded time after
// the faults stop (no lock held, nothing in doubt), the drain finished,
// and every acknowledged commit is durable at every participant.
//
//	go test ./participant -run ClusterSimulation                  2,000 seeds (200 with -race, 300 with -short)
//	COMMITD_CSIM_SEEDS=20000 go test ./participant -run ClusterSimulation
//	COMMITD_CSIM_SEED=12 go test ./participant -run ClusterSimulation -v   one seed, with a trace

const csBalance = 100

// csOptions plants the bugs the simulation must catch
// (TestClusterSimulationCatchesBugs; docs/testing.md).
type csOptions struct {
	// noRouteCheck leaves out the direct check that no message reaches
	// a group other than its own: only the end-to-end invariants remain.
	noRouteCheck bool
	// routeByWeights: a participant sends votes, acks and inquiries to
	// the group its current map would pick by weight for the id, not to
	// the group stamped in it.
	routeByWeights bool
	// acceptOtherGroup: a group's front door begins an id stamped for
	// another group.
	acceptOtherGroup bool
	// drainSkipsUndelivered: the operator retires the draining group
	// once nothing is in flight there, with commits still unacknowledged.
	drainSkipsUndelivered bool
	// abortDraining: a participant aborts what it holds of a draining
	// group, which may still have it in doubt (or commit it).
	abortDraining bool
}

type csParams struct {
	parts, accounts int
	scfg            engine.ShardConfig
	pcfg            engine.ParticipantConfig
	faultTicks      int
	beginP          float64
	dropP, dupP     float64
	maxDelay        int
	maxSync         int
	crashP          float64
	buggifyP        float64
	maxDown         int
	mapLag          int     // a participant learns a new map 0..mapLag ticks after it is published
	misrouteP       float64 // chance a client sends a begin to a group not stamped in its id
}

func csDraw(r *rand.Rand) csParams {
	p := csParams{
		parts:      2 + r.IntN(3),
		accounts:   3 + r.IntN(6),
		faultTicks: 400,
		beginP:     0.15 + 0.4*r.Float64(),
		dropP:      0.1 * r.Float64(),
		dupP:       0.1 * r.Float64(),
		maxDelay:   1 + r.IntN(6),
		maxSync:    r.IntN(4),
		crashP:     0.01 * r.Float64(),
		buggifyP:   0.02 * r.Float64(),
		maxDown:    1 + r.IntN(40),
		mapLag:     r.IntN(30),
		misrouteP:  0.1 * r.Float64(),
	}
	p.scfg = engine.ShardConfig{
		PrepareTimeoutTicks: 15 + r.IntN(40),
		RedeliverMinTicks:   3 + r.IntN(10),
		RedeliverMaxTicks:   30 + r.IntN(60),
		RememberTicks:       20 + r.IntN(200),
	}
	p.pcfg = engine.ParticipantConfig{
		InquireAfterTicks: 5 + r.IntN(20),
		InquireMaxTicks:   30 + r.IntN(80),
		RememberTicks:     20 + r.IntN(200),
	}
	if r.IntN(2) == 0 {
		p.pcfg.CheckpointEvery = 2 + r.IntN(15)
	}
	return p
}

type csRec struct {
	data    []byte
	typ     engine.RecordType
	txn     protocol.TxnID
	durable bool
}

type csNode struct {
	id      int
	name    string
	group   uint16 // the group a shard is; 0 for a participant
	pi      int    // participant number; -1 for a group
	shard   *engine.Shard
	part    *engine.Participant
	bank    *bank.Bank
	log     []csRec
	trimmed uint64
	syncAt  int64
	up      bool
	gone    bool // a retired group: stopped for good
	downTil int64
	learn   []int64 // participants: when it learns map i (s.maps[i])
}

type csBranch struct {
	part   int
	amount int64
}

type csTxn struct {
	id       protocol.TxnID
	branches []csBranch
	outcome  protocol.Outcome
}

func (t *csTxn) amount(part int) (int64, bool) {
	for _, b := range t.branches {
		if b.part == part {
			return b.amount, true
		}
	}
	return 0, false
}

type csEnv struct {
	at       int64
	from, to int
	m        engine.Message
}

type csim struct {
	seed int64
	r    *rand.Rand
	p    csParams
	o    csOptions
	now  int64

	nodes  []*csNode
	parts  []*csNode
	groups map[uint16]*csNode
	net    []csEnv

	// maps are the versions published so far, in order; clientLearn[i]
	// is when the client learns maps[i].
	maps        []*cluster.Map
	clientLearn []int64
	retiredAt   int64 // tick of the retiring map's publication; 0 before

	txns        map[protocol.TxnID]*csTxn
	order       []*csTxn
	awaiting    map[protocol.TxnID]*csTxn
	nextID      uint64
	durCommit   []map[*csTxn]bool // RecCommitted durable at participant i
	expected    []int64
	abortedAt   map[*csTxn]int
	committedAt map[*csTxn]int
	coordCommit map[*csTxn]bool

	faults  bool
	err     error
	trace   []string
	tracing bool
	cov     map[string]int
	stats   csStats
}

type csStats struct {
	txns, committed, aborted, unknown, crashes, msgs int
	cov                                              map[string]int
}

// csMapText is map version v: groups 1 and 2, then group 3 added, then
// group 2 draining, then retired.
func csMapText(v int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "version %d\ngroup 1 replicas 1=g1:7400 weight 1\n", v)
	switch v {
	case 1, 2:
		b.WriteString("group 2 replicas 1=g2:7400 weight 1\n")
	case 3:
		b.WriteString("group 2 replicas 1=g2:7400 draining\n")
	default:
		b.WriteString("group 2 replicas 1=g2:7400 retired\n")
	}
	if v >= 2 {
		b.WriteString("group 3 replicas 1=g3:7400 weight 2\n")
	}
	return b.String()
}

func newCsim(seed int64, o csOptions, tracing bool) *csim {
	r := rand.New(rand.NewPCG(uint64(seed), 0x636c7573746572))
	s := &csim{
		seed: seed, r: r, p: csDraw(r), o: o, tracing: tracing,
		groups: map[uint16]*csNode{}, txns: map[protocol.TxnID]*csTxn{}, awaiting: map[protocol.TxnID]*csTxn{},
		abortedAt: map[*csTxn]int{}, committedAt: map[*csTxn]int{}, coordCommit: map[*csTxn]bool{},
		cov: map[string]int{},
	}
	s.addGroup(1)
	s.addGroup(2)
	for i := range s.p.parts {
		n := &csNode{id: len(s.nodes), name: fmt.Sprintf("p%d", i), pi: i, syncAt: -1, up: true}
		s.newParticipant(n)
		s.nodes = append(s.nodes, n)
		s.parts = append(s.parts, n)
		s.durCommit = append(s.durCommit, map[*csTxn]bool{})
		s.expected = append(s.expected, int64(s.p.accounts)*csBalance)
	}
	s.publish()
	return s
}

func (s *csim) addGroup(g uint16) {
	n := &csNode{id: len(s.nodes), name: fmt.Sprintf("g%d", g), group: g, pi: -1, syncAt: -1, up: true}
	n.shard = engine.NewShard(s.p.scfg)
	s.nodes = append(s.nodes, n)
	s.groups[g] = n
}

func (s *csim) newParticipant(n *csNode) {
	cfg := s.p.pcfg
	cfg.Name = n.name
	n.bank = bank.New(s.p.accounts, csBalance)
	n.part = engine.NewParticipant(cfg, n.bank)
}

// publish makes the next map version current: the groups' front doors
// know it at once (the operator tells them first), each participant after
// 0..mapLag ticks, the client after every participant.
func (s *csim) publish() {
	v := len(s.maps) + 1
	m, err := cluster.Parse(strings.NewReader(csMapText(v)), "sim")
	if err != nil {
		panic(err)
	}
	if len(s.maps) > 0 {
		if err := m.CanFollow(s.maps[len(s.maps)-1]); err != nil {
			panic(err)
		}
	}
	s.maps = append(s.maps, m)
	last := s.now
	for _, n := range s.parts {
		at := s.now + int64(s.r.IntN(s.p.mapLag+1))
		if k := len(n.learn); k > 0 {
			at = max(at, n.learn[k-1])
		}
		n.learn = append(n.learn, at)
		last = max(last, at)
	}
	s.clientLearn = append(s.clientLearn, last+int64(s.r.IntN(s.p.mapLag+1)))
	s.tracef("map version %d published", v)
}

// mapAt is the map held by someone who learns map i at learn[i].
func (s *csim) mapAt(learn []int64) *cluster.Map {
	i := 0
	for i+1 < len(learn) && learn[i+1] <= s.now {
		i++
	}
	return s.maps[i]
}

func (s *csim) tracef(format string, args ...any) {
	if s.tracing {
		s.trace = append(s.trace, fmt.Sprintf("%5d ", s.now)+fmt.Sprintf(format, args...))
	}
}

func (s *csim) fail(format string, args ...any) {
	if s.err == nil {
		s.err = fmt.Errorf("tick %d: %s", s.now, fmt.Sprintf(format, args...))
		s.tracef("VIOLATION: %v", s.err)
	}
}

func csShort(id protocol.TxnID) string {
	return fmt.Sprintf("t%d/g%d", binary.BigEndian.Uint16(id[14:]), cluster.GroupOf(id))
}

func (s *csim) run() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("tick %d: panic: %v", s.now, r)
			s.tracef("PANIC: %v", r)
		}
	}()
	s.faults = true
	for s.now = 1; s.now <= int64(s.p.faultTicks) && s.err == nil; s.now++ {
		s.step()
	}
	s.faults = false
	for _, n := range s.nodes {
		if !n.up && !n.gone {
			s.restart(n)
		}
	}
	bound := int64(s.p.scfg.PrepareTimeoutTicks + s.p.pcfg.InquireMaxTicks + 2*s.p.scfg.RedeliverMaxTicks +
		3*s.p.mapLag + 10*(s.p.maxDelay+s.p.maxSync+1))
	start := s.now
	for ; s.err == nil; s.now++ {
		if s.quiescent() {
			break
		}
		if s.now-start > bound {
			s.fail("not settled %d ticks after the faults stopped: %s", bound, s.pending())
			break
		}
		s.step()
	}
	if s.err == nil {
		s.finalChecks()
	}
	s.stats.cov = s.cov
	return s.err
}

func (s *csim) step() {
	switch {
	case s.now == int64(s.p.faultTicks/4):
		s.addGroup(3)
		s.publish()
		s.cov["map: group added"]++
	case s.now == int64(s.p.faultTicks/2):
		s.publish()
		s.cov["map: group draining"]++
	case len(s.maps) == 3 && s.drained(s.groups[2]):
		s.retire(s.groups[2])
	}
	if s.faults {
		for _, n := range s.nodes {
			if !n.up && !n.gone && s.now >= n.downTil {
				s.restart(n)
			}
		}
		if s.r.Float64() < s.p.crashP*float64(len(s.nodes)) {
			if n := s.nodes[s.r.IntN(len(s.nodes))]; n.up {
				s.crash(n, "random")
			}
		}
		for range 2 {
			if s.r.Float64() < s.p.beginP {
				s.begin()
			}
		}
	}
	s.deliver()
	for _, n := range s.nodes {
		if n.up && n.syncAt >= 0 && n.syncAt <= s.now && s.err == nil {
			s.sync(n)
		}
	}
	for _, n := range s.nodes {
		if n.up && s.err == nil {
			if n.shard != nil {
				n.shard.Tick()
			} else {
				n.part.Tick()
				s.abortRetired(n)
			}
			s.pump(n)
		}
	}
	s.checkBanks()
}

// drained is the operator's check before retiring a draining group (its
// `admin status`): up, nothing in flight, every commit acknowledged.
func (s *csim) drained(g *csNode) bool {
	if !g.up {
		return false
	}
	st := g.shard.Stats()
	if s.o.drainSkipsUndelivered {
		return st.InFlight == 0
	}
	return st.InFlight == 0 && st.Undelivered == 0 && st.Undecided == 0
}

// retire publishes the map that retires g and stops g for good.
func (s *csim) retire(g *csNode) {
	if st := g.shard.Stats(); st.Undelivered > 0 {
		s.cov["retired with commits unacknowledged (planted)"]++
	}
	s.publish()
	s.retiredAt = s.now
	s.cov["map: group retired"]++
	s.tracef("%s: retired, stopped", g.name)
	g.up, g.gone = false, true
	g.shard = nil
	for id, t := range s.awaiting {
		if cluster.GroupOf(id) == g.group {
			s.fail("group %d retired with %s's client still waiting", g.group, csShort(t.id))
		}
	}
	s.dropTo(g)
}

// abortRetired applies the retired rule at participant n, with its map.
func (s *csim) abortRetired(n *csNode) {
	m := s.mapAt(n.learn)
	held, _ := n.part.InDoubt(nil, 0)
	var ids []protocol.TxnID
	if s.o.abortDraining {
		for _, v := range held {
			if g, ok := m.Group(cluster.GroupOf(v.Txn)); ok && g.State != cluster.Active &&
				(v.State == "prepared" || v.State == "preparing" || v.State == "voting") {
				ids = append(ids, v.Txn)
			}
		}
	} else {
		ids = retiredInDoubt(nil, m, held)
	}
	for _, id := range ids {
		s.tracef("%s: aborts %s: its group is retired", n.name, csShort(id))
		s.cov["participant aborts a retired group's transaction"]++
		n.part.Step(engine.Message{Type: engine.MsgDecision, Txn: id, To: n.name, Decision: protocol.DecisionAbort})
	}
}

// begin starts a random transfer (or a one-phase deposit) with an id the
// client's map stamps.
func (s *csim) begin() {
	s.nextID++
	cm := s.mapAt(s.clientLearn)
	g := cm.Pick(s.r.Uint64())
	var id protocol.TxnID
	binary.BigEndian.PutUint64(id[:8], uint64(1_800_000_000_000+s.now*10)<<16|0x7000)
	binary.BigEndian.PutUint64(id[8:], s.nextID|1<<63)
	id = cluster.Stamp(id, g)
	to := g
	if s.r.Float64() < s.p.misrouteP {
		to = uint16(1 + s.r.IntN(len(s.groups)))
		s.cov["client sends a begin to another group"]++
	}
	k := 1 + s.r.IntN(min(3, len(s.parts)))
	perm := s.r.Perm(len(s.parts))[:k]
	t := &csTxn{id: id}
	if k == 1 {
		t.branches = []csBranch{{part: perm[0], amount: int64(s.r.IntN(41) - 20)}}
	} else {
		var sum int64
		for i, p := range perm {
			a := int64(s.r.IntN(61) - 30)
			if i == k-1 {
				a = -sum
			}
			sum += a
			t.branches = append(t.branches, csBranch{part: p, amount: a})
		}
	}
	m := engine.Message{Type: engine.MsgBegin, Txn: id, Tag: s.nextID}
	for _, b := range t.branches {
		m.Branches = append(m.Branches, engine.Branch{
			Participant: s.parts[b.part].name, Work: bank.AppendWork(nil, uint32(s.r.IntN(s.p.accounts)), b.amount),
		})
	}
	n := s.groups[to]
	if !n.up {
		return // the client cannot reach the group: nothing begun
	}
	// The front door (coordinator/frontdoor.go): another group's id, or
	// any new transaction while the group drains, is refused.
	latest := s.maps[len(s.maps)-1]
	if grp, _ := latest.Group(to); grp.State != cluster.Active {
		s.cov["draining group refuses a begin"]++
		return
	}
	if cluster.GroupOf(id) != to && !s.o.acceptOtherGroup {
		s.cov["group refuses another group's begin"]++
		return
	}
	s.txns[id] = t
	s.order = append(s.order, t)
	s.awaiting[id] = t
	s.stats.txns++
	s.tracef("begin %s at g%d %v", csShort(id), to, t.branches)
	before := n.shard.Stats().Begun
	n.shard.Step(m)
	if n.shard.Stats().Begun > before && cluster.GroupOf(id) != to {
		s.fail("group %d began %s, stamped for group %d", to, csShort(id), cluster.GroupOf(id))
	}
	s.pump(n)
	if t.outcome == protocol.OutcomeRejected {
		delete(s.txns, id)
		s.order = s.order[:len(s.order)-1]
	}
}

// send puts a message on the network. A participant's vote, ack or
// inquiry goes to the group stamped in its id (participant/cluster.go),
// or nowhere if its map does not list that group or lists it retired.
func (s *csim) send(from *csNode, m engine.Message) {
	m.Work = append([]byte(nil), m.Work...)
	var to *csNode
	if from.shard != nil {
		for _, p := range s.parts {
			if p.name == m.To {
				to = p
			}
		}
		if to == nil {
			s.fail("%s sent %v to unknown %q", from.name, m.Type, m.To)
			return
		}
	} else {
		pm := s.mapAt(from.learn)
		g := cluster.GroupOf(m.Txn)
		if s.o.routeByWeights {
			h := fnv.New64a()
			h.Write(m.Txn[:])
			g = pm.Pick(h.Sum64())
		}
		grp, ok := pm.Group(g)
		switch {
		case !ok:
			s.cov["participant: group not in its map yet"]++
			return
		case grp.State == cluster.Retired:
			s.cov["participant: nothing sent to a retired group"]++
			return
		}
		if g != cluster.GroupOf(m.Txn) && !s.o.noRouteCheck {
			s.fail("%s sent %v of %s to group %d", from.name, m.Type, csShort(m.Txn), g)
			return
		}
		to = s.groups[g]
		if to.gone {
			s.cov["participant: message to a stopped group"]++
			return
		}
	}
	s.stats.msgs++
	copies := 1
	if s.faults && s.r.Float64() < s.p.dropP {
		copies = 0
	}
	if s.faults && s.r.Float64() < s.p.dupP {
		copies++
	}
	for range copies {
		s.net = append(s.net, csEnv{at: s.now + 1 + int64(s.r.IntN(s.p.maxDelay)), from: from.id, to: to.id, m: m})
	}
}

func (s *csim) deliver() {
	var due []csEnv
	kept := s.net[:0]
	for _, e := range s.net {
		if e.at <= s.now {
			due = append(due, e)
		} else {
			kept = append(kept, e)
		}
	}
	s.net = kept
	s.r.Shuffle(len(due), func(i, j int) { due[i], due[j] = due[j], due[i] })
	for _, e := range due {
		if s.err != nil {
			return
		}
		n := s.nodes[e.to]
		if !n.up {
			continue
		}
		s.tracef("%s → %s: %v %s %v%v", s.nodes[e.from].name, n.name, e.m.Type, csShort(e.m.Txn), e.m.Vote, e.m.Decision)
		if n.shard != nil {
			n.shard.Step(e.m)
		} else {
			n.part.Step(e.m)
		}
		s.pump(n)
	}
}

func (s *csim) pump(n *csNode) {
	for s.err == nil && n.up {
		var rd engine.Ready
		if n.shard != nil {
			if !n.shard.HasReady() {
				return
			}
			rd = n.shard.Ready()
		} else {
			if !n.part.HasReady() {
				return
			}
			rd = n.part.Ready()
		}
		if len(rd.Records) > 0 {
			if want := n.trimmed + uint64(len(n.log)) + 1; rd.FirstIndex != want {
				s.fail("%s: records start at %d, log expects %d", n.name, rd.FirstIndex, want)
				return
			}
			for _, r := range rd.Records {
				if r.Txn != (protocol.TxnID{}) && n.group != 0 && cluster.GroupOf(r.Txn) != n.group {
					s.fail("group %d logged %v of %s", n.group, r.Type, csShort(r.Txn))
				}
				b, err := r.AppendBinary(nil)
				if err != nil {
					s.fail("%s: encode %v: %v", n.name, r.Type, err)
					return
				}
				n.log = append(n.log, csRec{data: b, typ: r.Type, txn: r.Txn})
			}
			if n.syncAt < 0 {
				n.syncAt = s.now + int64(s.r.IntN(s.p.maxSync+1))
			}
		}
		for _, a := range rd.Applied {
			s.applied(n, a)
		}
		for _, m := range rd.Messages {
			s.send(n, m)
		}
		for _, r := range rd.Replies {
			s.reply(r)
		}
		if rd.LowWater > n.trimmed+1 {
			drop := rd.LowWater - 1 - n.trimmed
			n.log = append(n.log[:0:0], n.log[drop:]...)
			n.trimmed += drop
		}
		if len(rd.Records) > 0 && s.faults && s.r.Float64() < s.p.buggifyP {
			s.crash(n, "after append")
			return
		}
	}
}

func (s *csim) sync(n *csNode) {
	n.syncAt = -1
	for i := range n.log {
		if !n.log[i].durable {
			n.log[i].durable = true
			s.nowDurable(n, n.log[i])
		}
	}
	idx := n.trimmed + uint64(len(n.log))
	if n.shard != nil {
		n.shard.Durable(idx)
	} else {
		n.part.Durable(idx)
	}
	s.pump(n)
}

func (s *csim) nowDurable(n *csNode, r csRec) {
	switch r.typ {
	case engine.RecCommit:
		s.coordCommit[s.txns[r.txn]] = true
	case engine.RecCommitted:
		t := s.txns[r.txn]
		if t == nil {
			s.fail("%s committed unknown %s", n.name, csShort(r.txn))
			return
		}
		s.durCommit[n.pi][t] = true
		if p, ok := s.abortedAt[t]; ok {
			s.fail("atomicity: %s committed at %s but aborted at %s", csShort(t.id), n.name, s.parts[p].name)
		}
		if t.outcome == protocol.OutcomeAborted {
			s.fail("honesty: %s committed at %s, its client was told aborted", csShort(t.id), n.name)
		}
		s.committedAt[t] = n.pi
	}
}

func (s *csim) applied(n *csNode, a engine.Applied) {
	t := s.txns[a.Txn]
	if t == nil {
		s.fail("%s applied %v for %s, never begun", n.name, a.Decision, csShort(a.Txn))
		return
	}
	switch a.Decision {
	case protocol.DecisionCommit:
		amt, _ := t.amount(n.pi)
		s.expected[n.pi] += amt
	case protocol.DecisionAbort:
		if p, ok := s.committedAt[t]; ok {
			s.fail("atomicity: %s aborted at %s but committed at %s", csShort(a.Txn), n.name, s.parts[p].name)
		}
		if t.outcome == protocol.OutcomeCommitted {
			s.fail("durability: %s aborted at %s, its client was told committed", csShort(a.Txn), n.name)
		}
		s.abortedAt[t] = n.pi
	}
}

func (s *csim) reply(r engine.Reply) {
	t := s.txns[r.Txn]
	if t == nil || t.outcome != 0 {
		s.fail("reply %v for %s: unknown or second reply", r.Outcome, csShort(r.Txn))
		return
	}
	s.tracef("reply %s %v", csShort(r.Txn), r.Outcome)
	delete(s.awaiting, r.Txn)
	t.outcome = r.Outcome
	switch r.Outcome {
	case protocol.OutcomeCommitted:
		s.stats.committed++
		if p, ok := s.abortedAt[t]; ok {
			s.fail("honesty: client told %s committed, %s aborted it", csShort(r.Txn), s.parts[p].name)
		}
	case protocol.OutcomeAborted:
		s.stats.aborted++
		if p, ok := s.committedAt[t]; ok {
			s.fail("honesty: client told %s aborted, committed at %s", csShort(r.Txn), s.parts[p].name)
		}
	case protocol.OutcomeUnknown:
		s.stats.unknown++
	case protocol.OutcomeRejected:
	default:
		s.fail("unexpected reply %v for %s", r.Outcome, csShort(r.Txn))
	}
}

func (s *csim) checkBanks() {
	for _, n := range s.parts {
		if n.up && s.err == nil && n.bank.Total() != s.expected[n.pi] {
			s.fail("conservation: %s total %d, want %d", n.name, n.bank.Total(), s.expected[n.pi])
		}
	}
}

// crash loses the node and what its log had not made durable but for a
// random prefix of it, and every message in flight to it.
func (s *csim) crash(n *csNode, why string) {
	s.stats.crashes++
	s.cov["crash "+why]++
	keep := 0
	for keep < len(n.log) && n.log[keep].durable {
		keep++
	}
	keep += s.r.IntN(len(n.log) - keep + 1)
	for i := range n.log[:keep] {
		if !n.log[i].durable {
			n.log[i].durable = true
			s.nowDurable(n, n.log[i])
		}
	}
	s.tracef("%s: CRASH (%s), log keeps %d of %d", n.name, why, keep, len(n.log))
	n.log = n.log[:keep]
	n.up = false
	n.shard, n.part, n.bank = nil, nil, nil
	n.syncAt = -1
	n.downTil = s.now + 1 + int64(s.r.IntN(s.p.maxDown))
	if n.group != 0 {
		for id, t := range s.awaiting {
			if cluster.GroupOf(id) == n.group {
				t.outcome = protocol.OutcomeUnknown
				s.stats.unknown++
				delete(s.awaiting, id)
			}
		}
	}
	s.dropTo(n)
}

func (s *csim) dropTo(n *csNode) {
	kept := s.net[:0]
	for _, e := range s.net {
		if e.to != n.id {
			kept = append(kept, e)
		}
	}
	s.net = kept
}

func (s *csim) restart(n *csNode) {
	s.tracef("%s: restart from %d records", n.name, len(n.log))
	if n.group != 0 {
		n.shard = engine.NewShard(s.p.scfg)
	} else {
		s.newParticipant(n)
	}
	n.up = true
	n.trimmed = 0
	for _, lr := range n.log {
		var r engine.Record
		if err := r.UnmarshalBinary(lr.data); err != nil {
			s.fail("%s: decode: %v", n.name, err)
			return
		}
		var err error
		if n.shard != nil {
			err = n.shard.Restore(r)
		} else {
			err = n.part.Restore(r)
		}
		if err != nil {
			s.fail("%s: restore: %v", n.name, err)
			return
		}
	}
	if n.pi >= 0 {
		s.expected[n.pi] = int64(s.p.accounts) * csBalance
		for t := range s.durCommit[n.pi] {
			amt, _ := t.amount(n.pi)
			s.expected[n.pi] += amt
		}
		if got := n.bank.Total(); got != s.expected[n.pi] {
			s.fail("%s restored with total %d, durable commits say %d", n.name, got, s.expected[n.pi])
		}
	}
	s.pump(n)
}

func (s *csim) quiescent() bool {
	if len(s.net) > 0 || len(s.maps) < 4 {
		return false
	}
	for _, n := range s.nodes {
		switch {
		case n.gone:
		case !n.up || n.syncAt >= 0:
			return false
		case n.shard != nil:
			if st := n.shard.Stats(); st.InFlight > 0 || st.Undelivered > 0 || st.Undecided > 0 {
				return false
			}
		case n.part.Stats().Prepared > 0 || n.bank.Locked() > 0:
			return false
		}
	}
	return true
}

func (s *csim) pending() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d messages in flight, map version %d;", len(s.net), len(s.maps))
	for _, n := range s.nodes {
		switch {
		case n.gone:
		case n.shard != nil:
			st := n.shard.Stats()
			fmt.Fprintf(&b, " %s in-flight=%d undelivered=%d;", n.name, st.InFlight, st.Undelivered)
		case n.part != nil:
			held, _ := n.part.InDoubt(nil, 5)
			fmt.Fprintf(&b, " %s prepared=%d locked=%d %v;", n.name, n.part.Stats().Prepared, n.bank.Locked(), held)
		}
	}
	return b.String()
}

// finalChecks: every transaction has an outcome and is all or nothing
// across its participants, as its client was told; money is conserved.
func (s *csim) finalChecks() {
	var total, want int64
	for _, n := range s.parts {
		total += n.bank.Total()
		want += int64(s.p.accounts) * csBalance
	}
	for _, t := range s.order {
		if t.outcome == 0 {
			s.fail("%s never got an outcome", csShort(t.id))
			return
		}
		committed, writers := 0, 0
		for _, b := range t.branches {
			if b.amount == 0 {
				continue
			}
			writers++
			if s.durCommit[b.part][t] {
				committed++
				want += b.amount
			}
		}
		switch {
		case committed != 0 && committed != writers:
			s.fail("atomicity: %s committed at %d of its %d writing participants", csShort(t.id), committed, writers)
		case t.outcome == protocol.OutcomeCommitted && committed != writers:
			s.fail("durability: client told %s committed, committed at %d of %d", csShort(t.id), committed, writers)
		case t.outcome == protocol.OutcomeAborted && committed != 0:
			s.fail("honesty: client told %s aborted, committed at %d", csShort(t.id), committed)
		}
	}
	if total != want {
		s.fail("conservation: banks hold %d, want %d", total, want)
	}
}

// --- driving seeds ---

func csEnvInt(name string, def int) int {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			panic(fmt.Sprintf("%s=%q: %v", name, v, err))
		}
		return n
	}
	return def
}

// csRunSeeds runs seeds [first, first+count) on every CPU and returns the
// lowest failing seed (-1 if none) with its error, and totals.
func csRunSeeds(first, count int64, o csOptions, stopAtFirst bool) (int64, csStats, error) {
	var (
		next   atomic.Int64
		mu     sync.Mutex
		bad    int64 = -1
		badErr error
		tot    = csStats{cov: map[string]int{}}
		wg     sync.WaitGroup
	)
	next.Store(first)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for {
				seed := next.Add(1) - 1
				if seed >= first+count {
					return
				}
				mu.Lock()
				stop := stopAtFirst && bad >= 0 && bad < seed
				mu.Unlock()
				if stop {
					return
				}
				s := newCsim(seed, o, false)
				err := s.run()
				mu.Lock()
				if err != nil && (bad < 0 || seed < bad) {
					bad, badErr = seed, err
				}
				tot.txns += s.stats.txns
				tot.committed += s.stats.committed
				tot.aborted += s.stats.aborted
				tot.unknown += s.stats.unknown
				tot.crashes += s.stats.crashes
				tot.msgs += s.stats.msgs
				for k, v := range s.cov {
					tot.cov[k] += v
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return bad, tot, badErr
}

func csReport(t *testing.T, seed int64, err error, o csOptions) {
	t.Helper()
	s := newCsim(seed, o, true)
	if err2 := s.run(); fmt.Sprint(err2) != fmt.Sprint(err) {
		t.Errorf("seed %d did not replay the same way: first %v, then %v", seed, err, err2)
	}
	tail := s.trace
	if len(tail) > 150 {
		tail = tail[len(tail)-150:]
	}
	t.Logf("last events of seed %d:\n%s", seed, strings.Join(tail, "\n"))
	t.Fatalf("cluster simulation seed %d failed: %v\nreplay: COMMITD_CSIM_SEED=%d go test ./participant -run TestClusterSimulation -v\nparams: %+v",
		seed, err, seed, s.p)
}

func TestClusterSimulation(t *testing.T) {
	var o csOptions
	if v := os.Getenv("COMMITD_CSIM_SEED"); v != "" {
		seed, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		s := newCsim(seed, o, true)
		err = s.run()
		if testing.Verbose() {
			for _, l := range s.trace {
				fmt.Println(l)
			}
		}
		if err != nil {
			csReport(t, seed, err, o)
		}
		t.Logf("seed %d: %+v params %+v", seed, s.stats, s.p)
		return
	}
	count := int64(csEnvInt("COMMITD_CSIM_SEEDS", csimSeeds))
	if testing.Short() && os.Getenv("COMMITD_CSIM_SEEDS") == "" {
		count = 300
	}
	start := time.Now()
	bad, tot, err := csRunSeeds(1, count, o, false)
	if bad >= 0 {
		csReport(t, bad, err, o)
	}
	t.Logf("%d seeds in %v: %d txns (%d committed, %d aborted, %d unknown), %d crashes, %d messages",
		count, time.Since(start).Round(time.Millisecond), tot.txns, tot.committed, tot.aborted, tot.unknown, tot.crashes, tot.msgs)
	keys := make([]string, 0, len(tot.cov))
	for k := range tot.cov {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "\n  %-50s %d", k, tot.cov[k])
	}
	t.Logf("paths exercised:%s", b.String())
	if tot.committed == 0 || tot.aborted == 0 || tot.unknown == 0 || tot.crashes == 0 {
		t.Fatalf("the simulation does not exercise every outcome and crashes: %+v", tot)
	}
	for _, k := range []string{
		"map: group added", "map: group draining", "map: group retired",
		"participant aborts a retired group's transaction", "participant: nothing sent to a retired group",
		"draining group refuses a begin", "group refuses another group's begin",
		"crash random", "crash after append",
	} {
		if tot.cov[k] == 0 {
			t.Errorf("no seed went through %q", k)
		}
	}
}

// TestClusterSimulationCatchesBugs shows the cluster simulation can fail:
// each planted bug of the cluster's rules is caught within a few hundred
// seeds, and must replay the same way.
func TestClusterSimulationCatchesBugs(t *testing.T) {
	testrace.SkipSimulation(t)
	for _, c := range []struct {
		name string
		o    csOptions
	}{
		{"route-by-new-map-weights/direct", csOptions{routeByWeights: true}},
		{"route-by-new-map-weights/end-to-end", csOptions{routeByWeights: true, noRouteCheck: true}},
		{"group-accepts-another-groups-begin", csOptions{acceptOtherGroup: true}},
		{"retire-with-commits-unacknowledged", csOptions{drainSkipsUndelivered: true}},
		{"participant-aborts-draining-groups-transaction", csOptions{abortDraining: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			const limit = 500
			bad, _, err := csRunSeeds(1, limit, c.o, true)
			if bad < 0 {
				t.Fatalf("%d seeds passed with the bug", limit)
			}
			if err2 := newCsim(bad, c.o, false).run(); fmt.Sprint(err2) != fmt.Sprint(err) {
				t.Fatalf("seed %d: %v, then on replay %v", bad, err, err2)
			}
			t.Logf("caught by seed %d: %v", bad, err)
		})
	}
}

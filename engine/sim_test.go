package engine_test

import (
	"encoding/binary"
	"fmt"
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

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/internal/testrace"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/protocol"
)

// The simulation runs one coordinator (2–4 shards, one log each, crashing
// together) and 3–5 participants (banks) on one goroutine, driven by one
// seeded random source: random transfers, a network that drops,
// duplicates, delays and reorders, durability that arrives late (the group
// commit window), and crashes that keep only what a real log could keep
// (every durable record plus a random prefix of the rest). Restarted nodes
// are rebuilt only from their logs, through the record codec. Invariants
// are checked after every event; after the fault phase every transaction
// must finish and every lock be released within a bounded number of ticks.
//
// In two seeds of three, all or some participants run in durable-resource
// mode (ParticipantConfig.DurableResource, as the PostgreSQL participant
// does) over a simulated database, simRes (simres_test.go): it keeps
// prepared transactions, their locks and its commits across crashes of
// the participant, which keeps no log; it answers prepares VotePending
// (sometimes at once) and finishes prepares, commits and aborts after
// random delays, in random order; while faults last, a prepare may lose
// its connection (answered no, and prepared in the database or not: an
// orphan) and a commit or abort may fail (MsgResFailed) and must be
// retried; a crash cancels the work in flight or leaves it to finish
// without telling anyone. Every restart begins with a scan
// (MsgResInDoubt for each transaction the database holds prepared), and
// later scans arrive up to a few ticks late, so stale. Besides the
// invariants above (with "durable" meaning done in the database), it
// checks that a YES vote goes out only once the database has prepared,
// an ack or one-phase YES only once it has committed; that the database
// commits a two-phase transaction only after the coordinator's RecCommit
// is durable, never rolls one back after that, and is never asked to
// commit what it does not hold prepared or to roll back what it
// committed; that such a participant appends no record; and, at
// quiescence, that no transaction is left prepared in any database.
//
// Of the participants with a log, in two seeds of three all or some
// answer prepares VotePending through asyncBank (simasync_test.go), as
// participant/remote does for an HTTP service: the vote comes back later
// as a MsgResPrepared, or never if the participant crashes first, and a
// crash loses every hold that no durable RecPrepared brings back (remote's
// scan aborts them at the service).
//
//	go test ./engine -run Simulation                      10,000 seeds (300 with -race or -short; make sims runs it)
//	COMMITD_SIM_SEEDS=10000 go test ./engine -run Simulation
//	COMMITD_SIM_SEED=1234 go test ./engine -run Simulation -v   replay one, with a trace

const initialBalance = 100

type simOptions struct {
	// checkOutputs checks directly, at every send, that each output waits
	// for its record (the engine's durability ordering). Off, only the
	// end-to-end invariants (atomicity, durability, conservation, client
	// honesty) remain — the broken-variant test uses both.
	checkOutputs bool
	voteEarly    bool // participants with a log: bugVoteBeforeDurable
	ackEarly     bool // participants with a log: bugAckBeforeDurable
	decideEarly  bool // shards: bugDecideBeforeDurable
	redeliverAll bool // shards: bugRedeliverUndecided
	resVoteEarly bool // participants with a durable resource: bugResVoteEarly
	resAckEarly  bool // participants with a durable resource: bugResAckEarly
	asyncEarly   bool // participants with a log and an asynchronous bank: bugResVoteEarly
	reuseYes     bool // every participant: bugReuseYes
	noIDWindow   bool // shards accept any id they do not remember (no stamps)
	// Staged decisions (docs/protocol.md "Staged commits"): by default a
	// seed runs them unless seed%3 == 0 (classic); stagedAll runs every
	// seed staged (the planted staged bugs). Every participant can
	// prevent: one with a log in it, one with a durable resource by the
	// resource's compare-and-swap (simRes.Prevent, as
	// participant/postgres).
	stagedAll bool
	// The planted staged bugs (engine/planted.go), as the SPIN model's.
	stagedReplyEarly, stagedTimeoutAbort, inquiryLateStaged, stagedRO, commitMsgEarly, noRefuseAfterPrevent bool
	// resNoRefuse: a durable resource (simRes) prepares a transaction it
	// has prevented — a compare-and-swap that is none.
	resNoRefuse bool
	// slowCoordSync delays the shards' group commits by up to 30 ticks
	// more, so that a participant may inquire before a RecStaged is
	// durable (what BUG_INQUIRY_LATE_STAGED answers wrongly).
	slowCoordSync bool
	// lateLeftovers lets work a crashed participant left running in its
	// durable resource finish after the restarted participant's first
	// scan (COMMITD_SIM_LATE_LEFTOVERS=1): see restartRes.
	lateLeftovers bool
}

// simParams is drawn from the seed.
type simParams struct {
	shards, parts, accounts int
	scfg                    engine.ShardConfig
	pcfg                    engine.ParticipantConfig
	faultTicks              int
	beginP                  float64 // chance per tick of each of two begins
	dropP, dupP             float64
	maxDelay                int // network delay 1..maxDelay ticks
	maxSync                 int // durability after 0..maxSync ticks
	crashP                  float64
	buggifyP                float64 // crash at a dangerous point
	maxDown                 int

	// Participants with a durable resource (simRes) instead of a bank
	// and a log: none, all or some, by seed.
	durable     []bool
	resMaxDelay int     // resource work takes effect after 0..resMaxDelay ticks
	resSyncP    float64 // chance a prepare is answered at once
	resErrP     float64 // chance a prepare loses its connection (faults only)
	resFailP    float64 // chance a commit or abort fails (faults only)
	scanEvery   int     // ticks between scans of the resource
	scanLag     int     // a scan's results arrive 0..scanLag ticks late

	// Participants with a log whose bank answers prepares VotePending
	// (asyncBank, as participant/remote does for an HTTP service): none,
	// all or some of those with a log, by seed.
	async []bool

	// Transaction ids: UUIDv7s stamped with the client's clock, which
	// runs up to clientAheadMs ahead of the coordinator's (wall time is
	// tickMs per tick; less than a tick, so less than any restart takes:
	// the id window's assumption). reuseP is the chance a begin reuses
	// the id of a transaction whose client has its outcome, with new
	// branches. The front door stamps begins with its wall time and the
	// shards refuse ids they can no longer check (Shard.checkIDTime);
	// with simOptions.noIDWindow they do not, and accept any id they
	// have forgotten.
	tickMs        int
	clientAheadMs int
	reuseP        float64

	// staged: begins ask for staged decisions (simOptions.stagedAll, or
	// by seed).
	staged bool
}

func drawParams(r *rand.Rand) simParams {
	p := simParams{
		shards:     2 + r.IntN(3),
		parts:      3 + r.IntN(3),
		accounts:   4 + r.IntN(8),
		faultTicks: 300,
		beginP:     0.1 + 0.4*r.Float64(),
		dropP:      0.1 * r.Float64(),
		dupP:       0.1 * r.Float64(),
		maxDelay:   1 + r.IntN(6),
		maxSync:    r.IntN(4),
		crashP:     0.01 * r.Float64(),
		buggifyP:   0.02 * r.Float64(),
		maxDown:    1 + r.IntN(50),
	}
	p.scfg = engine.ShardConfig{
		PrepareTimeoutTicks: 15 + r.IntN(40),
		RedeliverMinTicks:   3 + r.IntN(10),
		RedeliverMaxTicks:   30 + r.IntN(60),
		// Longer than any message can live in the network (maxDelay):
		// the engine's assumption for answering duplicates from memory.
		RememberTicks: 20 + r.IntN(200),
	}
	p.pcfg = engine.ParticipantConfig{
		InquireAfterTicks: 5 + r.IntN(20),
		InquireMaxTicks:   30 + r.IntN(80),
		RememberTicks:     20 + r.IntN(200),
	}
	if r.IntN(3) > 0 {
		p.pcfg.CheckpointEvery = 2 + r.IntN(15)
	}
	p.durable = make([]bool, p.parts)
	mode := r.IntN(3) // 0: every participant has a log, 1: none has, 2: some have
	for i := range p.durable {
		p.durable[i] = mode == 1 || mode == 2 && r.IntN(2) == 0
	}
	p.resMaxDelay = r.IntN(8)
	p.resSyncP = 0.3 * r.Float64()
	p.resErrP = 0.1 * r.Float64()
	p.resFailP = 0.2 * r.Float64()
	p.scanEvery = 10 + r.IntN(60)
	// Well within RememberTicks (≥ 20): the engine's assumption about
	// scan results.
	p.scanLag = r.IntN(10)
	p.tickMs = 10
	p.scfg.TickMicros = p.tickMs * 1000
	remembered := (p.scfg.RememberTicks - 2) * p.tickMs
	p.scfg.MaxIDAheadMs = 1 + r.IntN(remembered/2)
	p.clientAheadMs = r.IntN(min(p.tickMs, p.scfg.MaxIDAheadMs+1))
	p.reuseP = 0.15 * r.Float64()
	p.async = make([]bool, p.parts)
	amode := r.IntN(3) // 0: none, 1: every participant with a log, 2: some
	for i := range p.async {
		p.async[i] = !p.durable[i] && (amode == 1 || amode == 2 && r.IntN(2) == 0)
	}
	return p
}

type simRec struct {
	data    []byte // the encoded record, as a log would hold it
	typ     engine.RecordType
	txn     protocol.TxnID
	durable bool
}

type simNode struct {
	id      int
	name    string
	shard   *engine.Shard
	part    *engine.Participant
	bank    *bank.Bank
	pi      int      // participant number, -1 for a shard
	res     *simRes  // a durable resource (survives crashes), or nil: then bank and log
	async   bool     // with a log: the bank answers prepares VotePending (asyncBank)
	inc     int      // incarnation, counted from 1 (restarts)
	log     []simRec // this incarnation's records still kept; log[i] has index trimmed+i+1
	trimmed uint64
	syncAt  int64 // tick of the pending sync, -1 if none
	up      bool
	downTil int64
}

type envelope struct {
	at       int64
	from, to int
	m        engine.Message
	inc      *simTxn // a prepare's transaction: the id alone may name several
}

type simBranch struct {
	part   int
	amount int64
}

// simTxn is one transaction: one begin of an id. A reused id has one per
// begin, and the maps that follow transactions are keyed by *simTxn.
type simTxn struct {
	id       protocol.TxnID
	branches []simBranch
	begun    int64
	outcome  protocol.Outcome // what the client was told; 0 = nothing yet
	shard    int
	reuse    bool // the id was used before: the coordinator may reject it
	// staged: begun with a staged decision; coordInc is the coordinator's
	// incarnation then.
	staged   bool
	coordInc int
}

func (t *simTxn) amount(part int) (int64, bool) {
	for _, b := range t.branches {
		if b.part == part {
			return b.amount, true
		}
	}
	return 0, false
}

type sim struct {
	seed int64
	r    *rand.Rand
	// ops draws the operator's early redeliveries and inquiries
	// (Shard.RedeliverNow, Participant.InquireNow: `commitd admin retry`),
	// from a stream of its own so that every other draw of a seed is what
	// it was before they existed.
	ops *rand.Rand
	p   simParams
	o   simOptions
	now int64

	nodes  []*simNode // shards first, then participants
	shards []*simNode
	parts  []*simNode
	net    []envelope
	resOps []*resOp // durable resources' work and scan results, in flight

	// txns maps an id to the transaction the coordinator runs (or last
	// ran) under it; partInc, per participant, to the one whose prepare
	// that participant took as new (a reuse it refused, or answered from
	// memory, is not one it works on).
	txns     map[protocol.TxnID]*simTxn
	partInc  []map[protocol.TxnID]*simTxn
	order    []*simTxn // in begin order
	awaiting map[protocol.TxnID]*simTxn
	nextID   uint64
	// retry: ids whose clients lost the coordinator (told unknown) —
	// the ids a careless client reuses first, right after the restart.
	retry []protocol.TxnID

	// What each participant has done, across its restarts. With a
	// durable resource, a prepare or commit is durable once it has taken
	// effect in the resource, and appliedNow lists the commits the
	// machine reported applied, in any incarnation.
	durPrepared  []map[*simTxn]bool // RecPrepared durable
	durCommitted []map[*simTxn]bool // RecCommitted durable (the commit is permanent)
	appliedNow   []map[*simTxn]bool // commits reflected in the current bank
	expected     []int64            // what the current bank's total must be
	abortedAt    map[*simTxn]int    // a participant that applied an abort
	committedAt  map[*simTxn]int    // a participant where the commit is durable
	coordCommit  map[*simTxn]bool   // RecCommit durable at the coordinator
	// Staged decisions: RecStaged durable, RecAbort durable, and the
	// implicit commit — RecStaged durable and every branch durably
	// prepared, the moment a staged transaction is committed.
	stagedDurable map[*simTxn]bool
	coordAbort    map[*simTxn]bool
	implicitAt    map[*simTxn]bool
	coordInc      int // the coordinator's incarnation, from 1

	faults   bool
	err      error
	trace    []string
	tracing  bool
	quiesced int64 // ticks the quiescence phase took
	stats    simStats
}

type simStats struct {
	txns, committed, aborted, unknown, crashes, msgs int
	parts, durableParts, asyncParts                  int
	// cov counts the paths a run went through (engine counters summed
	// over every incarnation, and events seen by the simulator), to show
	// that the faults reach the code they are meant to reach.
	cov map[string]int
}

func (st *simStats) add(o simStats) {
	st.txns += o.txns
	st.committed += o.committed
	st.aborted += o.aborted
	st.unknown += o.unknown
	st.crashes += o.crashes
	st.msgs += o.msgs
	st.parts += o.parts
	st.durableParts += o.durableParts
	st.asyncParts += o.asyncParts
	if st.cov == nil {
		st.cov = map[string]int{}
	}
	for k, v := range o.cov {
		st.cov[k] += v
	}
}

// collect adds a machine's counters to the coverage before it is lost.
func (s *sim) collect(n *simNode) {
	c := s.stats.cov
	if n.shard != nil {
		st := n.shard.Stats()
		c["shard.redelivered"] += int(st.Redelivered)
		c["shard.presumed-abort"] += int(st.PresumedAborts)
		c["shard.not-sent"] += int(st.NotSent)
		c["shard.inquiry-deferred"] += int(st.Deferred)
		c["shard.ignored-duplicate"] += int(st.IgnoredDuplicate)
		c["shard.ignored-late"] += int(st.IgnoredLate)
		c["shard.ignored-unknown"] += int(st.IgnoredUnknown)
		c["shard.staged"] += int(st.Staged)
		c["shard.resolutions"] += int(st.Resolutions)
		c["shard.resolves"] += int(st.Resolves)
		return
	}
	st := n.part.Stats()
	c["part.inquiries"] += int(st.Inquiries)
	c["part.checkpoints"] += int(st.Checkpoints)
	c["part.acked-unknown"] += int(st.AckedUnknown)
	c["part.voted-no"] += int(st.VotedNo)
	c["part.read-only"] += int(st.ReadOnly)
	c["part.ignored-duplicate"] += int(st.IgnoredDuplicate)
	c["part.ignored-unknown"] += int(st.IgnoredUnknown)
	c["part.ignored-invalid"] += int(st.IgnoredInvalid)
	c["part.in-doubt-found"] += int(st.InDoubtFound)
	c["part.orphans-aborted"] += int(st.OrphansAborted)
	c["part.resource-failures"] += int(st.ResourceFailures)
	c["part.refused-reuse"] += int(st.RefusedReuse)
	c["part.prevented"] += int(st.Prevented)
	c["part.refused-prevented"] += int(st.RefusedPrevented)
	c["part.prevent-found-prepared"] += int(st.PreventFoundPrepared)
}

func newSim(seed int64, o simOptions, tracing bool) *sim {
	r := rand.New(rand.NewPCG(uint64(seed), 0x636f6d6d697464))
	s := &sim{
		seed: seed, r: r, p: drawParams(r), o: o, tracing: tracing,
		ops:  rand.New(rand.NewPCG(uint64(seed), 0x6f70657261746f72)),
		txns: map[protocol.TxnID]*simTxn{}, awaiting: map[protocol.TxnID]*simTxn{},
		abortedAt: map[*simTxn]int{}, committedAt: map[*simTxn]int{},
		coordCommit: map[*simTxn]bool{}, stagedDurable: map[*simTxn]bool{}, coordAbort: map[*simTxn]bool{},
		implicitAt: map[*simTxn]bool{}, coordInc: 1,
	}
	// Not drawn from r, so that every other draw of a seed is what it was
	// before staged decisions existed.
	s.p.staged = o.stagedAll || seed%3 != 0
	if seed%5 == 0 || o.stagedAll && seed%2 == 0 {
		// Prepare timeouts shorter than the network's delays: prepares
		// and votes arrive after the timeout (staged: after the
		// resolution began, as the prepare a prevention must refuse).
		s.p.scfg.PrepareTimeoutTicks = 1 + int(seed/5%4)
	}
	s.stats.cov = map[string]int{}
	for i := range s.p.shards {
		n := &simNode{id: len(s.nodes), name: fmt.Sprintf("shard%d", i), pi: -1, syncAt: -1, up: true}
		n.shard = s.newShard()
		s.plantShard(n.shard)
		s.nodes = append(s.nodes, n)
		s.shards = append(s.shards, n)
	}
	for i := range s.p.parts {
		n := &simNode{id: len(s.nodes), name: fmt.Sprintf("p%d", i), pi: i, syncAt: -1, up: true}
		s.stats.parts++
		if s.p.durable[i] {
			s.stats.durableParts++
			n.res = newSimRes(s, n)
			n.res.nextScan = int64(s.p.scanEvery)
		}
		if n.async = s.p.async[i]; n.async {
			s.stats.asyncParts++
		}
		s.newParticipant(n)
		s.nodes = append(s.nodes, n)
		s.parts = append(s.parts, n)
		s.durPrepared = append(s.durPrepared, map[*simTxn]bool{})
		s.durCommitted = append(s.durCommitted, map[*simTxn]bool{})
		s.appliedNow = append(s.appliedNow, map[*simTxn]bool{})
		s.partInc = append(s.partInc, map[protocol.TxnID]*simTxn{})
		s.expected = append(s.expected, int64(s.p.accounts)*initialBalance)
	}
	return s
}

func (s *sim) plantShard(sh *engine.Shard) {
	o := s.o
	engine.SetStagedShardBugs(sh, o.decideEarly, o.redeliverAll, o.stagedReplyEarly, o.stagedTimeoutAbort, o.inquiryLateStaged, o.stagedRO, o.commitMsgEarly)
}

// newShard makes a shard starting now (at wall time s.wallMs()).
func (s *sim) newShard() *engine.Shard {
	cfg := s.p.scfg
	cfg.StartUnixMs = s.wallMs()
	return engine.NewShard(cfg)
}

func (s *sim) newParticipant(n *simNode) {
	n.inc++
	cfg := s.p.pcfg
	cfg.Name = n.name
	if n.res != nil {
		n.bank = n.res.bank
		cfg.DurableResource = true
		n.part = engine.NewParticipant(cfg, n.res)
		engine.SetDurableResourceBugs(n.part, s.o.resVoteEarly, s.o.resAckEarly, s.o.reuseYes)
		return
	}
	n.bank = bank.New(s.p.accounts, initialBalance)
	var res engine.Resource = n.bank
	if n.async {
		res = &asyncBank{Bank: n.bank, s: s, n: n}
	}
	n.part = engine.NewParticipant(cfg, res)
	engine.SetParticipantBugs(n.part, s.o.voteEarly, s.o.ackEarly, s.o.reuseYes, n.async && s.o.asyncEarly)
	if s.o.noRefuseAfterPrevent {
		engine.AddPreventBug(n.part)
	}
}

func (s *sim) tracef(format string, args ...any) {
	if s.tracing {
		s.trace = append(s.trace, fmt.Sprintf("%5d ", s.now)+fmt.Sprintf(format, args...))
	}
}

func (s *sim) fail(format string, args ...any) {
	if s.err == nil {
		s.err = fmt.Errorf("tick %d: %s", s.now, fmt.Sprintf(format, args...))
		s.tracef("VIOLATION: %v", s.err)
	}
}

// run is the whole simulation of one seed.
func (s *sim) run() (err error) {
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
	// Faults stop: everyone comes back, nothing more is lost, no new work.
	s.faults = false
	for _, n := range s.nodes {
		if !n.up {
			s.restart(n)
		}
	}
	bound := int64(s.p.scfg.PrepareTimeoutTicks + s.p.pcfg.InquireMaxTicks + s.p.scfg.RedeliverMaxTicks +
		10*(s.p.maxDelay+s.p.maxSync+1))
	for _, d := range s.p.durable {
		if d {
			// Work left by a crash runs, a scan finds the orphan, and a
			// one-phase transaction found in doubt whose coordinator
			// answered "unknown" ignores its inquiries until the
			// coordinator forgets it (up to twice RememberTicks): then it
			// presumes abort.
			bound += int64(2*s.p.scfg.RememberTicks + s.p.pcfg.InquireMaxTicks + s.p.scanEvery + s.p.scanLag +
				4*(s.p.resMaxDelay+3))
			break
		}
	}
	start := s.now
	for ; s.err == nil; s.now++ {
		if s.quiescent() {
			s.quiesced = s.now - start
			break
		}
		if s.now-start > bound {
			s.fail("not quiescent %d ticks after faults stopped: %s", bound, s.pendingSummary())
			break
		}
		s.step()
	}
	if s.err == nil {
		s.finalChecks()
	}
	for _, n := range s.nodes {
		s.collect(n)
	}
	return s.err
}

// step is one tick: crashes and restarts, new transactions, message
// delivery, durability, clocks.
func (s *sim) step() {
	if s.faults {
		for _, n := range s.nodes {
			if !n.up && s.now >= n.downTil {
				s.restart(n)
			}
		}
		if s.r.Float64() < s.p.crashP*float64(len(s.parts)+1) {
			i := s.r.IntN(len(s.parts) + 1)
			if i == 0 {
				s.crashCoordinator("random")
			} else if n := s.parts[i-1]; n.up {
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
	s.runResources()
	if s.faults && s.ops.Float64() < 0.02 {
		// An operator asks for a redelivery or an inquiry now: one more
		// of what the timers send anyway, sooner.
		n := s.nodes[s.ops.IntN(len(s.nodes))]
		switch {
		case !n.up:
		case n.shard != nil:
			s.stats.cov["operator.redelivered"] += n.shard.RedeliverNow(nil, "")
		default:
			s.stats.cov["operator.inquired"] += n.part.InquireNow(nil)
		}
	}
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
			}
			s.pump(n)
		}
	}
	s.checkBanks()
}

// simEpochMs is the simulation's wall time at tick 0, in Unix ms.
const simEpochMs = 1_800_000_000_000

// wallMs is the coordinator's wall clock now.
func (s *sim) wallMs() int64 { return simEpochMs + s.now*int64(s.p.tickMs) }

// begin starts a random transaction: 1–4 distinct participants; several
// branches move money between accounts with amounts summing to zero (some
// read-only, amount 0); a single branch is a one-phase deposit, withdrawal
// or read. Its id is a new UUIDv7 from the client's clock, or, with
// chance reuseP, the id of a transaction whose client has its outcome
// (the client reuses it, with new branches).
func (s *sim) begin() {
	s.nextID++
	var id protocol.TxnID
	ms := s.wallMs() + int64(s.r.IntN(s.p.clientAheadMs+1))
	binary.BigEndian.PutUint64(id[:8], uint64(ms)<<16|0x7000)
	binary.BigEndian.PutUint64(id[8:], s.nextID|1<<63)
	var prev *simTxn
	if len(s.retry) > 0 && s.r.Float64() < 2*s.p.reuseP {
		id = s.retry[len(s.retry)-1]
		s.retry = s.retry[:len(s.retry)-1]
		prev = s.txns[id]
	} else if len(s.order) > 0 && s.r.Float64() < s.p.reuseP {
		for i, n := s.r.IntN(len(s.order)), 0; n < len(s.order); i, n = (i+1)%len(s.order), n+1 {
			if o := s.order[i]; o.outcome != 0 && o.outcome != protocol.OutcomeRejected {
				prev = s.txns[o.id]
				id = o.id
				break
			}
		}
	}
	k := 1 + s.r.IntN(min(4, len(s.parts)))
	perm := s.r.Perm(len(s.parts))[:k]
	t := &simTxn{id: id, begun: s.now, reuse: prev != nil}
	if k == 1 {
		t.branches = []simBranch{{part: perm[0], amount: int64(s.r.IntN(41) - 20)}}
	} else {
		var sum int64
		for i, p := range perm {
			var a int64
			switch {
			case s.r.IntN(5) == 0:
				// read-only
			case i < k-1:
				a = int64(s.r.IntN(61) - 30)
			default:
				a = -sum
			}
			sum += a
			t.branches = append(t.branches, simBranch{part: p, amount: a})
		}
		if sum != 0 {
			t.branches[k-1].amount -= sum // the last was read-only: make it balance
		}
	}
	m := engine.Message{Type: engine.MsgBegin, Txn: id, Tag: s.nextID}
	if s.p.staged && k > 1 {
		// Every participant can prevent: in its log, or a durable
		// resource by its compare-and-swap (simRes.Prevent).
		m.Staged = true
		t.staged, t.coordInc = m.Staged, s.coordInc
	}
	if !s.o.noIDWindow {
		m.UnixMs = s.wallMs() // the front door's stamp
	}
	for _, b := range t.branches {
		acct := uint32(s.r.IntN(s.p.accounts))
		m.Branches = append(m.Branches, engine.Branch{
			Participant: s.parts[b.part].name, Work: bank.AppendWork(nil, acct, b.amount),
		})
	}
	t.shard = engine.ShardFor(id, len(s.shards))
	sh := s.shards[t.shard]
	if !sh.up {
		return // the client cannot reach the coordinator: nothing begun
	}
	waiting, inFlight := s.awaiting[id] // the reuse of an id still in flight is refused
	s.txns[id] = t
	s.order = append(s.order, t)
	s.awaiting[id] = t
	s.stats.txns++
	if t.reuse {
		s.tracef("begin %s again %v (reused id, %d ms old)", short(id), t.branches, s.wallMs()-int64(binary.BigEndian.Uint64(id[:8])>>16))
	} else {
		s.tracef("begin %s %v", short(id), t.branches)
	}
	sh.shard.Step(m)
	s.pump(sh)
	if t.outcome == protocol.OutcomeRejected {
		// Nothing started: the id still names the transaction before.
		s.txns[id] = prev
		if inFlight {
			s.awaiting[id] = waiting
		}
	} else if t.reuse {
		s.stats.cov["reused id started"]++

	}
}

func short(id protocol.TxnID) string { return fmt.Sprintf("t%d", uint64(id[14])<<8|uint64(id[15])) }

// send puts a message on the network: dropped, duplicated, delayed.
func (s *sim) send(from *simNode, m engine.Message) {
	m.Work = append([]byte(nil), m.Work...)
	to := -1
	if m.Type == engine.MsgPrepare || m.Type == engine.MsgDecision || m.Type == engine.MsgResolve {
		for _, p := range s.parts {
			if p.name == m.To {
				to = p.id
			}
		}
	} else {
		to = s.shards[engine.ShardFor(m.Txn, len(s.shards))].id
	}
	if to < 0 {
		s.fail("%s sent %v to unknown %q", from.name, m.Type, m.To)
		return
	}
	s.stats.msgs++
	copies := 1
	if s.faults && s.r.Float64() < s.p.dropP {
		copies = 0
		if m.Type == engine.MsgPrepare && from.shard != nil && s.r.IntN(2) == 0 {
			// Dropped before it left (no connection), and the server says
			// so: the shard may abort at once. Never duplicated.
			s.tracef("%s: prepare %s to %s not sent", from.name, short(m.Txn), m.To)
			s.net = append(s.net, envelope{at: s.now + 1, from: from.id, to: from.id,
				m: engine.Message{Type: engine.MsgNotSent, Txn: m.Txn, From: m.To}})
			return
		}
	}
	if s.faults && s.r.Float64() < s.p.dupP {
		copies++
	}
	var inc *simTxn
	if m.Type == engine.MsgPrepare {
		inc = s.txns[m.Txn]
	}
	for range copies {
		s.net = append(s.net, envelope{at: s.now + 1 + int64(s.r.IntN(s.p.maxDelay)), from: from.id, to: to, m: m, inc: inc})
	}
}

// deliver hands every message that is due to its node, in random order.
func (s *sim) deliver() {
	var due []envelope
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
	unpumped := make([]bool, len(s.nodes))
	for _, e := range due {
		if s.err != nil {
			return
		}
		n := s.nodes[e.to]
		if !n.up {
			continue
		}
		s.tracef("%s → %s: %v %s %v%v", s.nodes[e.from].name, n.name, e.m.Type, short(e.m.Txn), e.m.Vote, e.m.Decision)
		if n.shard != nil {
			n.shard.Step(e.m)
		} else {
			if e.m.Type == engine.MsgPrepare && (!engine.ParticipantKnows(n.part, e.m.Txn) || s.partInc[n.pi][e.m.Txn] == nil) {
				// (Known without a prepare: prevented by a resolution. It
				// refuses this prepare, unless a planted bug prepares it.)
				// Prepared as a new transaction: what n does under this
				// id from now on is this one's.
				if old := s.partInc[n.pi][e.m.Txn]; old != nil && old != e.inc {
					s.stats.cov["participant prepares a reused id as new"]++
				}
				s.partInc[n.pi][e.m.Txn] = e.inc
			}
			n.part.Step(e.m)
		}
		// Like the real pump, often step several inputs before draining
		// Ready: what one input finishes must not disturb what another in
		// the same batch still has in the pending Ready.
		if s.r.IntN(2) == 0 {
			s.pump(n)
		} else {
			unpumped[e.to] = true
		}
	}
	for id, n := range s.nodes {
		if unpumped[id] && n.up && s.err == nil {
			s.pump(n)
		}
	}
}

// pump drains a node's Ready: append records, apply, send, reply.
func (s *sim) pump(n *simNode) {
	for s.err == nil {
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
		if len(rd.Records) > 0 && n.res != nil {
			s.fail("%s, with a durable resource, appended a %v record", n.name, rd.Records[0].Type)
			return
		}
		if len(rd.Records) > 0 {
			if want := n.trimmed + uint64(len(n.log)) + 1; rd.FirstIndex != want {
				s.fail("%s: records start at %d, log expects %d", n.name, rd.FirstIndex, want)
				return
			}
			for _, r := range rd.Records {
				b, err := r.AppendBinary(nil)
				if err != nil {
					s.fail("%s: encode %v: %v", n.name, r.Type, err)
					return
				}
				n.log = append(n.log, simRec{data: b, typ: r.Type, txn: r.Txn})
				s.tracef("%s: append #%d %v %s", n.name, n.trimmed+uint64(len(n.log)), r.Type, short(r.Txn))
			}
			if n.syncAt < 0 {
				n.syncAt = s.now + int64(s.r.IntN(s.p.maxSync+1))
				if n.shard != nil && s.o.slowCoordSync {
					n.syncAt += int64(s.r.IntN(30))
				}
			}
		}
		for _, a := range rd.Applied {
			s.applied(n, a)
		}
		for _, m := range rd.Messages {
			s.checkOutput(n, m)
			s.send(n, m)
		}
		for _, r := range rd.Replies {
			s.reply(r)
		}
		if rd.LowWater > n.trimmed+1 {
			drop := rd.LowWater - 1 - n.trimmed
			for _, r := range n.log[:drop] {
				if !r.durable {
					s.fail("%s: low water %d passes a record that is not durable", n.name, rd.LowWater)
					return
				}
			}
			n.log = append(n.log[:0:0], n.log[drop:]...)
			n.trimmed += drop
		}
		if len(rd.Records) > 0 && s.faults && s.r.Float64() < s.p.buggifyP {
			// Between append and durable.
			s.crashNode(n, "after append")
			return
		}
	}
}

// logged reports whether n's log holds a record of type typ for txn.
func (n *simNode) logged(typ engine.RecordType, txn protocol.TxnID) bool {
	for i := len(n.log) - 1; i >= 0; i-- {
		if n.log[i].typ == typ && n.log[i].txn == txn {
			return true
		}
	}
	return false
}

// sync makes everything appended so far durable, as one group commit.
func (s *sim) sync(n *simNode) {
	n.syncAt = -1
	for i := range n.log {
		if !n.log[i].durable {
			n.log[i].durable = true
			s.nowDurable(n, n.log[i])
		}
	}
	idx := n.trimmed + uint64(len(n.log))
	s.tracef("%s: durable ≤ #%d", n.name, idx)
	if n.shard != nil {
		n.shard.Durable(idx)
	} else {
		n.part.Durable(idx)
	}
	if s.faults && s.r.Float64() < s.p.buggifyP {
		// Between durable and send: what the machine released is lost.
		s.crashNode(n, "after durable")
		return
	}
	s.pump(n)
}

// nowDurable records what a record becoming durable means.
func (s *sim) nowDurable(n *simNode, r simRec) {
	switch r.typ {
	case engine.RecCommit:
		s.coordCommit[s.txns[r.txn]] = true
	case engine.RecStaged:
		t := s.txns[r.txn]
		s.stagedDurable[t] = true
		s.checkImplicit(t)
	case engine.RecAbort:
		t := s.txns[r.txn]
		s.coordAbort[t] = true
		if s.implicitAt[t] {
			s.fail("agreement: the abort of %s is durable, but it committed implicitly (staged, every branch prepared)", short(r.txn))
		}
	case engine.RecPrepared:
		t := s.partInc[n.pi][r.txn]
		s.durPrepared[n.pi][t] = true
		s.checkImplicit(t)
	case engine.RecCommitted:
		t := s.partInc[n.pi][r.txn]
		s.durCommitted[n.pi][t] = true
		s.committed(n, t, r.txn)
	}
}

// checkImplicit notes the implicit commit of t, staged, once it holds:
// its RecStaged is durable and every branch has durably prepared it
// (voted YES or can). From that moment t is committed, whoever knows it
// (docs/protocol.md "The commit condition"): no abort anywhere may follow
// or precede it.
func (s *sim) checkImplicit(t *simTxn) {
	if t == nil || !t.staged || !s.stagedDurable[t] || s.implicitAt[t] {
		return
	}
	for _, b := range t.branches {
		if b.amount == 0 || !s.durPrepared[b.part][t] {
			return // a read-only branch holds nothing: no implicit commit
		}
	}
	s.implicitAt[t] = true
	s.stats.cov["staged: implicit commit"]++
	switch p, aborted := s.abortedAt[t]; {
	case aborted:
		s.fail("atomicity: %s committed implicitly (staged, every branch prepared) but aborted at %s", short(t.id), s.parts[p].name)
	case s.coordAbort[t]:
		s.fail("agreement: %s committed implicitly (staged, every branch prepared) after its abort was durable", short(t.id))
	case t.outcome == protocol.OutcomeAborted:
		s.fail("honesty: %s committed implicitly (staged, every branch prepared), the client was told aborted", short(t.id))
	}
}

// committed: the commit of txn is now permanent at n.
func (s *sim) committed(n *simNode, t *simTxn, txn protocol.TxnID) {
	if t == nil {
		s.fail("%s committed unknown txn %s", n.name, short(txn))
		return
	}
	if a, ok := t.amount(n.pi); !ok || a == 0 {
		s.fail("%s committed %s, where it has no (or a read-only) branch", n.name, short(txn))
	}
	if p, ok := s.abortedAt[t]; ok {
		s.fail("atomicity: %s committed at %s but aborted at %s", short(txn), n.name, s.parts[p].name)
	}
	if t.outcome == protocol.OutcomeAborted {
		s.fail("honesty: %s committed at %s but the client was told aborted", short(txn), n.name)
	}
	s.committedAt[t] = n.pi
}

func (s *sim) applied(n *simNode, a engine.Applied) {
	t := s.partInc[n.pi][a.Txn]
	s.tracef("%s: applied %s %v", n.name, short(a.Txn), a.Decision)
	if t == nil {
		s.fail("%s applied %v for %s, which it never prepared", n.name, a.Decision, short(a.Txn))
		return
	}
	switch a.Decision {
	case protocol.DecisionCommit:
		if n.res != nil {
			// Reported once the resource has committed (its balance
			// changed then); at most once, across restarts.
			switch {
			case !s.durCommitted[n.pi][t]:
				s.fail("%s reported the commit of %s applied before its resource committed it", n.name, short(a.Txn))
			case s.appliedNow[n.pi][t]:
				s.fail("%s applied the commit of %s twice", n.name, short(a.Txn))
			}
			s.appliedNow[n.pi][t] = true
			return
		}
		// A one-phase commit is the participant's own decision: applied
		// only once its record is durable. A two-phase commit may be
		// applied early (locks released before the fsync), but only once
		// the decision is durable at the coordinator and logged here.
		switch {
		case len(t.branches) == 1 && !s.durCommitted[n.pi][t]:
			s.fail("%s applied the one-phase commit of %s before its record was durable", n.name, short(a.Txn))
			return
		case len(t.branches) > 1 && !s.coordCommit[t]:
			s.fail("%s applied the commit of %s before the coordinator's commit record was durable", n.name, short(a.Txn))
			return
		case len(t.branches) > 1 && !n.logged(engine.RecCommitted, a.Txn):
			s.fail("%s applied the commit of %s before logging it", n.name, short(a.Txn))
			return
		}
		if s.appliedNow[n.pi][t] {
			s.fail("%s applied the commit of %s twice", n.name, short(a.Txn))
			return
		}
		amt, _ := t.amount(n.pi)
		s.appliedNow[n.pi][t] = true
		s.expected[n.pi] += amt
	case protocol.DecisionAbort:
		if p, ok := s.committedAt[t]; ok {
			s.fail("atomicity: %s aborted at %s but committed at %s", short(a.Txn), n.name, s.parts[p].name)
		}
		if s.implicitAt[t] {
			s.fail("atomicity: %s aborted at %s but committed implicitly (staged, every branch prepared)", short(a.Txn), n.name)
		}
		s.abortedAt[t] = n.pi
	}
}

// checkOutput checks that an output waits for the record it depends on.
func (s *sim) checkOutput(n *simNode, m engine.Message) {
	if !s.o.checkOutputs {
		return
	}
	var t *simTxn // the transaction the output is about
	if n.pi >= 0 {
		t = s.partInc[n.pi][m.Txn]
	} else {
		t = s.txns[m.Txn]
	}
	prepared, committed := "its prepared record is durable", "its committed record is durable"
	if n.res != nil {
		prepared, committed = "its resource has prepared it", "its resource has committed it"
	}
	switch {
	case m.Type == engine.MsgVote && m.Vote == protocol.VoteYes:
		if t == nil {
			s.fail("%s voted for unknown %s", n.name, short(m.Txn))
		} else if len(t.branches) == 1 && !s.durCommitted[n.pi][t] {
			s.fail("%s: one-phase YES for %s before %s", n.name, short(m.Txn), committed)
		} else if len(t.branches) > 1 && !s.durPrepared[n.pi][t] {
			s.fail("%s: YES for %s before %s", n.name, short(m.Txn), prepared)
		}
	case m.Type == engine.MsgAck:
		if !s.durCommitted[n.pi][t] {
			s.fail("%s: ack for %s before %s", n.name, short(m.Txn), committed)
		}
	case m.Type == engine.MsgDecision && m.Decision == protocol.DecisionCommit:
		if !s.coordCommit[t] {
			s.fail("%s: commit decision for %s before the commit record is durable", n.name, short(m.Txn))
		}
	case m.Type == engine.MsgDecision && t != nil && t.staged && !s.coordAbort[t] &&
		(s.stagedDurable[t] || t.outcome == 0 && t.coordInc == s.coordInc):
		// A staged transaction is aborted only by a durable RecAbort.
		// Presuming abort is right only where no RecStaged can still
		// become durable: not while the shard that appended it holds it.
		s.fail("%s: abort decision for staged %s before its abort record is durable", n.name, short(m.Txn))
	}
}

func (s *sim) reply(r engine.Reply) {
	if r.Tag == 0 {
		s.replyNobody(r)
		return
	}
	t := s.txns[r.Txn]
	if t == nil || t.outcome != 0 {
		s.fail("reply %v for %s: unknown or second reply", r.Outcome, short(r.Txn))
		return
	}
	s.tracef("reply %s %v", short(r.Txn), r.Outcome)
	delete(s.awaiting, r.Txn)
	t.outcome = r.Outcome
	switch r.Outcome {
	case protocol.OutcomeCommitted:
		s.stats.committed++
		if p, ok := s.abortedAt[t]; ok {
			s.fail("honesty: client told %s committed, but %s aborted it", short(r.Txn), s.parts[p].name)
		}
		if s.o.checkOutputs {
			yes := false
			for _, b := range t.branches {
				yes = yes || b.amount != 0
			}
			switch {
			case len(t.branches) == 1 && yes && !s.durCommitted[t.branches[0].part][t]:
				s.fail("client told one-phase %s committed before it is durable", short(r.Txn))
			case len(t.branches) > 1 && yes && !s.coordCommit[t] && !s.implicitAt[t]:
				s.fail("client told %s committed before the commit record is durable (or, staged, the implicit commit holds)", short(r.Txn))
			}
		}
	case protocol.OutcomeAborted:
		s.stats.aborted++
		if s.implicitAt[t] {
			s.fail("honesty: client told %s aborted, but it committed implicitly (staged, every branch prepared)", short(r.Txn))
		}
		if p, ok := s.committedAt[t]; ok {
			s.fail("honesty: client told %s aborted, but it is committed at %s", short(r.Txn), s.parts[p].name)
		}
	case protocol.OutcomeUnknown:
		s.stats.unknown++
	case protocol.OutcomeRejected:
		// Only a reused id may be refused: as in use, or as stale.
		switch {
		case !t.reuse:
			s.fail("a new id %s was rejected: %v %s", short(r.Txn), r.Cause, r.Detail)
		case r.Cause == protocol.CauseStaleID:
			s.stats.cov["reused id refused: stale"]++
		case r.Detail == "transaction id in use":
			s.stats.cov["reused id refused: in use"]++
		default:
			s.fail("reused id %s rejected: %v %s", short(r.Txn), r.Cause, r.Detail)
		}
	default:
		s.fail("unexpected reply %v (%s) for %s", r.Outcome, r.Detail, short(r.Txn))
	}
}

// replyNobody checks the decision a restarted shard reports for a staged
// transaction it resolved (Tag 0: its client is gone, told unknown): the
// truth, as far as anyone can see yet.
func (s *sim) replyNobody(r engine.Reply) {
	t := s.txns[r.Txn]
	if t == nil || !t.staged {
		s.fail("a reply to nobody (%v) for %s, not a staged transaction", r.Outcome, short(r.Txn))
		return
	}
	s.stats.cov["staged: decision after a restart reported"]++
	switch r.Outcome {
	case protocol.OutcomeCommitted:
		if p, ok := s.abortedAt[t]; ok {
			s.fail("honesty: %s reported committed after a restart, but %s aborted it", short(r.Txn), s.parts[p].name)
		}
	case protocol.OutcomeAborted:
		if s.implicitAt[t] {
			s.fail("honesty: %s reported aborted after a restart, but it committed implicitly", short(r.Txn))
		}
		if p, ok := s.committedAt[t]; ok {
			s.fail("honesty: %s reported aborted after a restart, but it is committed at %s", short(r.Txn), s.parts[p].name)
		}
	default:
		s.fail("a reply to nobody for %s: %v", short(r.Txn), r.Outcome)
	}
}

// checkBanks: every bank's total is what its applied commits say, and no
// balance is negative.
func (s *sim) checkBanks() {
	for _, n := range s.parts {
		if !n.up || s.err != nil {
			continue
		}
		if got := n.bank.Total(); got != s.expected[n.pi] {
			s.fail("conservation: %s total %d, want %d", n.name, got, s.expected[n.pi])
		}
		for a := range n.bank.Accounts() {
			if b := n.bank.Balance(uint32(a)); b < 0 {
				s.fail("%s account %d is negative: %d", n.name, a, b)
			}
		}
	}
}

func (s *sim) crashNode(n *simNode, why string) {
	if n.shard != nil {
		s.crashCoordinator(why)
	} else {
		s.crash(n, why)
	}
}

// crashCoordinator crashes every shard: they share one process.
func (s *sim) crashCoordinator(why string) {
	if !s.shards[0].up {
		return
	}
	for _, n := range s.shards {
		s.crash(n, why)
	}
	s.coordInc++
	// Clients waiting on the coordinator lose it: their library reports
	// an ambiguous result.
	for id, t := range s.awaiting {
		t.outcome = protocol.OutcomeUnknown
		s.stats.unknown++
		delete(s.awaiting, id)
		s.retry = append(s.retry, id)
	}
	sort.Slice(s.retry, func(i, j int) bool { return string(s.retry[i][:]) < string(s.retry[j][:]) }) // map order is random
	down := s.shards[0].downTil
	for _, n := range s.shards {
		n.downTil = down
	}
}

// crash loses the machine and whatever its log had not made durable,
// except a random prefix of it (a torn tail), and every message in
// flight to it (its connections reset).
func (s *sim) crash(n *simNode, why string) {
	s.stats.crashes++
	keep := 0
	for keep < len(n.log) && n.log[keep].durable {
		keep++
	}
	if tail := len(n.log) - keep; tail > 0 {
		torn := s.r.IntN(tail + 1)
		keep += torn
		if torn > 0 {
			s.stats.cov["crash keeps part of a torn tail"]++
		}
		if torn < tail {
			s.stats.cov["crash loses records"]++
		}
	}
	for i := range n.log[:keep] {
		if !n.log[i].durable {
			n.log[i].durable = true
			s.nowDurable(n, n.log[i])
		}
	}
	s.tracef("%s: CRASH (%s), log keeps %d of %d", n.name, why, keep, len(n.log))
	s.collect(n)
	if n.res != nil {
		s.crashRes(n)
	}
	s.stats.cov["crash "+why]++
	n.log = n.log[:keep]
	n.up = false
	n.shard, n.part, n.bank = nil, nil, nil
	n.syncAt = -1
	n.downTil = s.now + 1 + int64(s.r.IntN(s.p.maxDown))
	kept := s.net[:0]
	for _, e := range s.net {
		if e.to != n.id {
			kept = append(kept, e)
		}
	}
	s.net = kept
}

// restart rebuilds a node from its log alone.
func (s *sim) restart(n *simNode) {
	s.tracef("%s: restart from %d records", n.name, len(n.log))
	if n.pi < 0 {
		n.shard = s.newShard()
		s.plantShard(n.shard)
	} else {
		s.newParticipant(n)
	}
	n.up = true
	n.trimmed = 0
	if len(n.log) > 0 && n.log[0].typ == engine.RecCheckpoint {
		s.stats.cov["restart from a checkpoint"]++
	}
	for _, lr := range n.log {
		var r engine.Record
		err := r.UnmarshalBinary(lr.data)
		if err != nil {
			s.fail("%s: decode: %v", n.name, err)
			return
		}
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
		// The rebuilt bank (or the resource) holds exactly the commits
		// that were durable.
		if n.res == nil {
			s.appliedNow[n.pi] = map[*simTxn]bool{}
		}
		s.expected[n.pi] = int64(s.p.accounts) * initialBalance
		for t := range s.durCommitted[n.pi] {
			amt, _ := t.amount(n.pi)
			if n.res == nil {
				s.appliedNow[n.pi][t] = true
			}
			s.expected[n.pi] += amt
		}
		if got := n.bank.Total(); got != s.expected[n.pi] {
			s.fail("%s restored with total %d, durable commits say %d", n.name, got, s.expected[n.pi])
		}
	}
	if n.res != nil {
		s.restartRes(n)
	}
	s.pump(n)
}

func (s *sim) quiescent() bool {
	if len(s.net) > 0 || len(s.resOps) > 0 {
		return false
	}
	for _, n := range s.nodes {
		if !n.up || n.syncAt >= 0 {
			return false
		}
		if n.shard != nil {
			if st := n.shard.Stats(); st.InFlight > 0 || st.Undelivered > 0 || st.Undecided > 0 {
				return false
			}
		} else if n.part.Stats().Prepared > 0 || n.bank.Locked() > 0 || n.res != nil && s.resPending(n) != "" {
			return false
		}
	}
	return true
}

func (s *sim) pendingSummary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d messages in flight;", len(s.net))
	for _, n := range s.nodes {
		if n.shard != nil {
			st := n.shard.Stats()
			fmt.Fprintf(&b, " %s in-flight=%d undelivered=%d undecided=%d %v;", n.name, st.InFlight, st.Undelivered, st.Undecided, engine.UndecidedTxns(n.shard))
		} else {
			fmt.Fprintf(&b, " %s prepared=%d locked=%d", n.name, n.part.Stats().Prepared, n.bank.Locked())
			if n.res != nil {
				fmt.Fprintf(&b, " voting=%d %s", n.part.Stats().Voting, s.resPending(n))
			}
			b.WriteString(";")
		}
	}
	return b.String()
}

// finalChecks run at quiescence: every transaction has an outcome, and
// each is all-or-nothing across its participants, consistent with what
// the client was told; money is conserved.
func (s *sim) finalChecks() {
	var total, want int64
	for _, n := range s.parts {
		total += n.bank.Total()
		want += int64(s.p.accounts) * initialBalance
	}
	for _, t := range s.order {
		if t.outcome == 0 {
			s.fail("%s never got an outcome", short(t.id))
			return
		}
		committed, writers := 0, 0
		for _, b := range t.branches {
			if b.amount == 0 {
				continue
			}
			writers++
			if s.durCommitted[b.part][t] {
				committed++
				want += b.amount
			}
		}
		switch {
		case committed != 0 && committed != writers:
			s.fail("atomicity: %s committed at %d of its %d writing participants", short(t.id), committed, writers)
		case t.outcome == protocol.OutcomeCommitted && committed != writers:
			s.fail("durability: client told %s committed, committed at %d of %d", short(t.id), committed, writers)
		case t.outcome == protocol.OutcomeAborted && committed != 0:
			s.fail("honesty: client told %s aborted, committed at %d", short(t.id), committed)
		}
	}
	if total != want {
		s.fail("conservation: banks hold %d, want %d", total, want)
	}
}

// --- driving seeds ---

func envInt(name string, def int) int {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			panic(fmt.Sprintf("%s=%q: %v", name, v, err))
		}
		return n
	}
	return def
}

// runSeeds runs seeds [first, first+count) on every CPU and returns the
// lowest failing seed and its error (seed -1 if none failed), and totals.
func runSeeds(first, count int64, o simOptions, stopAtFirst bool) (int64, simStats, error) {
	var (
		next   atomic.Int64
		mu     sync.Mutex
		bad    int64 = -1
		badErr error
		tot    simStats
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
				s := newSim(seed, o, false)
				err := s.run()
				mu.Lock()
				if err != nil && (bad < 0 || seed < bad) {
					bad, badErr = seed, err
				}
				tot.add(s.stats)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return bad, tot, badErr
}

func reportFailure(t *testing.T, seed int64, err error, o simOptions) {
	t.Helper()
	s := newSim(seed, o, true)
	if err2 := s.run(); fmt.Sprint(err2) != fmt.Sprint(err) {
		t.Errorf("seed %d did not replay the same way: first %v, then %v", seed, err, err2)
	}
	tail := s.trace
	if len(tail) > 150 {
		tail = tail[len(tail)-150:]
	}
	t.Logf("last events of seed %d:\n%s", seed, strings.Join(tail, "\n"))
	t.Fatalf("simulation seed %d failed: %v\nreplay: COMMITD_SIM_SEED=%d go test ./engine -run TestSimulation -v\nparams: %+v",
		seed, err, seed, s.p)
}

func TestSimulation(t *testing.T) {
	o := simOptions{checkOutputs: true, lateLeftovers: envInt("COMMITD_SIM_LATE_LEFTOVERS", 0) == 1}
	if v := os.Getenv("COMMITD_SIM_SEED"); v != "" {
		seed, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		s := newSim(seed, o, true)
		err = s.run()
		if testing.Verbose() {
			// The whole trace, the failing event last.
			for _, l := range s.trace {
				fmt.Println(l)
			}
		}
		if err != nil {
			reportFailure(t, seed, err, o)
		}
		t.Logf("seed %d: %+v params %+v quiescent after %d ticks", seed, s.stats, s.p, s.quiesced)
		return
	}
	count := int64(envInt("COMMITD_SIM_SEEDS", simSeeds))
	if testing.Short() && os.Getenv("COMMITD_SIM_SEEDS") == "" {
		count = 300
	}
	start := time.Now()
	bad, tot, err := runSeeds(1, count, o, false)
	if bad >= 0 {
		reportFailure(t, bad, err, o)
	}
	t.Logf("%d seeds in %v: %d txns (%d committed, %d aborted, %d unknown), %d crashes, %d messages, %d of %d participants with a durable resource, %d with a log and an asynchronous bank",
		count, time.Since(start).Round(time.Millisecond), tot.txns, tot.committed, tot.aborted, tot.unknown, tot.crashes, tot.msgs,
		tot.durableParts, tot.parts, tot.asyncParts)
	if tot.committed == 0 || tot.aborted == 0 || tot.unknown == 0 || tot.crashes == 0 {
		t.Fatalf("the simulation does not exercise every outcome and crashes: %+v", tot)
	}
	keys := make([]string, 0, len(tot.cov))
	for k := range tot.cov {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "\n  %-34s %d", k, tot.cov[k])
	}
	t.Logf("paths exercised:%s", b.String())
	if count < 100 {
		return // too few seeds to insist on every path
	}
	if tot.durableParts == 0 || tot.durableParts == tot.parts {
		t.Errorf("%d of %d participants with a durable resource: want both kinds", tot.durableParts, tot.parts)
	}
	if tot.asyncParts == 0 {
		t.Errorf("no participant with a log answered prepares asynchronously")
	}
	for _, k := range []string{
		"shard.redelivered", "shard.presumed-abort", "operator.redelivered", "operator.inquired", "shard.not-sent", "shard.inquiry-deferred", "shard.ignored-duplicate",
		"shard.ignored-late", "shard.ignored-unknown", "part.inquiries", "part.checkpoints", "part.acked-unknown",
		"part.voted-no", "part.read-only", "part.ignored-duplicate", "part.ignored-unknown",
		"crash random", "crash after append", "crash after durable", "crash keeps part of a torn tail",
		"crash loses records", "restart from a checkpoint",
		"part.in-doubt-found", "part.orphans-aborted", "part.resource-failures",
		"res.prepare pending", "res.prepare answered at once", "res.prepare lost its connection, runs later",
		"res.failed", "res.stale scan result", "res.abort of nothing prepared", "res.work nobody waits for ran",
		"crash after resource work", "crash cancels resource work", "crash leaves resource work to run",
		"restart finds prepared transactions in the resource",
		"async.prepare pending", "async.prepare answered at once", "async.prepare lost its connection",
		// With the id window no reuse is ever started: the
		// participants' rule (part.refused-reuse) is exercised by the
		// variants without it, in TestSimulationCatchesBugs.
		"reused id refused: in use", "reused id refused: stale",
		// Staged decisions.
		"shard.staged", "shard.resolutions", "shard.resolves", "part.prevented", "part.refused-prevented",
		"staged: implicit commit", "staged: decision after a restart reported",
		// Staged decisions at durable resources (their compare-and-swap).
		"res.prevent pending", "res.prevent found prepared", "res.prepare refused: prevented", "part.prevent-found-prepared",
	} {
		if tot.cov[k] == 0 {
			t.Errorf("no seed went through %q", k)
		}
	}
}

// TestSimulationCatchesBugs shows the simulation can fail: each
// deliberately broken variant of the engine is caught within a few
// seeds, both by the direct output checks and by the end-to-end
// invariants alone. The durable-resource variants break only the
// participants with a durable resource, the others only those with a
// log.
func TestSimulationCatchesBugs(t *testing.T) {
	testrace.SkipSimulation(t)
	for _, c := range []struct {
		name string
		o    simOptions
	}{
		{"vote-before-durable", simOptions{voteEarly: true}},
		{"ack-before-durable", simOptions{ackEarly: true}},
		{"decide-before-durable", simOptions{decideEarly: true}},
		{"operator-redelivers-undecided", simOptions{redeliverAll: true}},
		{"durable-resource/vote-before-prepared", simOptions{resVoteEarly: true}},
		{"durable-resource/ack-before-committed", simOptions{resAckEarly: true}},
		{"async-resource/vote-before-answer", simOptions{asyncEarly: true}},
		{"reused-id-answered-as-a-copy", simOptions{reuseYes: true, noIDWindow: true}},
		{"no-id-window", simOptions{noIDWindow: true}},
	} {
		for _, direct := range []bool{true, false} {
			o := c.o
			o.checkOutputs = direct
			name := c.name + "/end-to-end"
			if direct {
				name = c.name + "/direct"
			}
			t.Run(name, func(t *testing.T) {
				const limit = 300
				bad, _, err := runSeeds(1, limit, o, true)
				if bad < 0 {
					t.Fatalf("%d seeds passed with the bug", limit)
				}
				// It must replay exactly.
				if err2 := newSim(bad, o, false).run(); fmt.Sprint(err2) != fmt.Sprint(err) {
					t.Fatalf("seed %d: %v, then on replay %v", bad, err, err2)
				}
				t.Logf("caught by seed %d: %v", bad, err)
			})
		}
	}
}

// TestSimulationCatchesStagedBugs shows the simulation catches each
// planted bug of the staged-decision protocol — the six the SPIN model
// rejects (docs/model/check.sh) — with every seed staged. Each is caught
// by the end-to-end invariants, among which the implicit commit (a
// staged transaction whose RecStaged is durable and whose every branch
// has durably prepared is committed: nobody may abort it); those that
// release an output too early are also caught directly at the output.
// inquiry-late-staged and staged-reply-early need a coordinator whose
// group commit is slow enough for a participant to inquire, or every vote
// to arrive, before RecStaged is durable (with the usual 0–3 ticks it
// is durable before any vote can be back).
func TestSimulationCatchesStagedBugs(t *testing.T) {
	testrace.SkipSimulation(t)
	for _, c := range []struct {
		name   string
		o      simOptions
		direct []bool // which checks must catch it
	}{
		{"staged-reply-early", simOptions{stagedReplyEarly: true, slowCoordSync: true}, []bool{true, false}},
		{"no-refuse-after-prevent", simOptions{noRefuseAfterPrevent: true}, []bool{false}},
		{"staged-timeout-abort", simOptions{stagedTimeoutAbort: true}, []bool{false}},
		{"inquiry-late-staged", simOptions{inquiryLateStaged: true, slowCoordSync: true}, []bool{true, false}},
		{"staged-read-only", simOptions{stagedRO: true}, []bool{true, false}},
		{"commit-msg-early", simOptions{commitMsgEarly: true}, []bool{true}},
		{"res-no-refuse-after-prevent", simOptions{resNoRefuse: true}, []bool{false}},
	} {
		for _, direct := range c.direct {
			o := c.o
			o.stagedAll = true
			o.checkOutputs = direct
			name := c.name + "/end-to-end"
			if direct {
				name = c.name + "/direct"
			}
			t.Run(name, func(t *testing.T) {
				const limit = 300
				bad, _, err := runSeeds(1, limit, o, true)
				if bad < 0 {
					t.Fatalf("%d seeds passed with the bug", limit)
				}
				if err2 := newSim(bad, o, false).run(); fmt.Sprint(err2) != fmt.Sprint(err) {
					t.Fatalf("seed %d: %v, then on replay %v", bad, err, err2)
				}
				t.Logf("caught by seed %d: %v", bad, err)
			})
		}
	}
}

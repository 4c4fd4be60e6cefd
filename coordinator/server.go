package coordinator

import (
	"context"
	"fmt"
	"maps"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/commitd/commitd/cluster"
	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/internal/datadir"
	"github.com/commitd/commitd/internal/node"
	"github.com/commitd/commitd/internal/obs"
	"github.com/commitd/commitd/internal/pump"
	"github.com/commitd/commitd/net/link"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/protocol"
	"github.com/commitd/commitd/wal"
)

// Server is a running coordinator: Config.Shards engine shards, each driven
// by its own pump goroutine, sharing one write-ahead log (so one fdatasync
// covers every shard's records), a listener for clients, participants and
// admin queries, and a few connections to every participant.
type Server struct {
	cfg     Config          // immutable after Start
	lock    *datadir.Lock   // held while running
	log     *wal.Log        // shared by the pumps
	shards  []*engine.Shard // shards[i] is owned by pumps[i]'s goroutine
	pumps   []*pump.Pump    // immutable after Start
	stats   []shardStats    // stats[i] written by pumps[i] after each loop
	outputs []*shardOutput  // outputs[i] is pumps[i]'s; its fields are its goroutine's
	// pset is the participants: read without a lock on the hot paths,
	// replaced whole by a change (participants.go), which partsMu
	// serializes. added are the peers added at run time, closed at stop.
	pset    atomic.Pointer[participantSet]
	partsMu sync.Mutex
	addedMu sync.Mutex
	added   []*peer
	mux     *mux.Server
	door    *frontDoor
	ln      net.Listener
	clients clientTable
	metrics *metrics
	http    *obs.Server
	life    *node.Lifecycle // goroutines, Close, Done, Err
	rep     *replica        // nil unless Config.Peers: then shards come and go with leadership
	// tr keeps the spans of traced transactions (trace.go); nil, and
	// every hook one nil check, unless Config.TracerProvider is set.
	tr *tracer

	// rates[i] is shard i's record of its recent answers, for the web
	// console (rates.go); kept across reigns.
	rates []*rates

	// staged: begins whose participants can all prevent run with a
	// staged decision (Config.Classic). Immutable.
	staged bool

	// outcomes is the outcome index (outcomes.go): fed by the pumps'
	// replies, recovery and, replicated, raft's applied commits; read by
	// admin txn.
	outcomes *outcomeIndex

	// rejected counts the begins the front door rejected itself (a
	// participant it does not know) without handing them to a shard; the
	// shards count the rejections they judge. Added to by the connections'
	// readers, read by Status.
	rejected atomic.Uint64
	// notLeading counts participants' messages a replica dropped because
	// it did not lead (Status.NotLeading).
	notLeading atomic.Uint64
	// otherGroup counts participants' messages dropped because their
	// transaction belongs to another group (Config.Group,
	// Status.OtherGroup).
	otherGroup atomic.Uint64
	// clusterMap is the cluster map in use (Config.Cluster; clustermap.go),
	// nil without one; ReloadCluster replaces it under reloadMu.
	clusterMap atomic.Pointer[cluster.Map]
	reloadMu   sync.Mutex
	// newerMap is the newest cluster map version a participant's or
	// another replica's Hello said it holds (clustermap.go sawMap):
	// reported, never acted on.
	newerMap cluster.Newer
}

type shardStats struct {
	mu sync.Mutex
	s  engine.ShardStats
}

// Start opens (and recovers) the coordinator's log, starts its shards and
// starts listening. It returns once the coordinator is serving.
func Start(cfg Config) (*Server, error) {
	cfg.fill()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	lock, err := datadir.Acquire(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:  cfg,
		lock: lock,
		// A replicated coordinator stages too: RecStaged is a raft entry
		// like the other records (replica.apply; docs/ha.md, "Staged
		// decisions in a group").
		staged: !cfg.Classic,
	}
	s.clusterMap.Store(cfg.Cluster)
	// The outcome index is synced before the log retires anything: a
	// commit record leaves the log only once its entry is durable there.
	s.life = node.New(node.Config{Name: "coordinator", Logger: cfg.Logger,
		BeforeRetire: func() error { return s.outcomes.sync() }})
	s.metrics = newMetrics()
	s.rates = make([]*rates, cfg.Shards)
	for i := range s.rates {
		s.rates[i] = newRates()
	}
	if cfg.TracerProvider != nil {
		s.tr = newTracer(cfg.TracerProvider)
	}
	ok := false
	defer func() {
		if !ok {
			node.Abandon(s.parts())
		}
	}()
	if err = s.openOutcomes(); err != nil {
		return nil, err
	}
	if len(cfg.Peers) > 0 {
		err = s.openReplica()
	} else {
		err = s.openLog()
	}
	if err != nil {
		return nil, err
	}
	// --participant is the initial list: once changed at run time, the
	// persisted list wins (participants.go; a replica's is in its raft
	// log, partmembers.go).
	initial := cfg.Participants
	if s.rep != nil {
		initial = s.rep.startParticipants()
	} else if saved, ok, err := loadParticipants(cfg.DataDir); err != nil {
		return nil, err
	} else if ok {
		if !maps.Equal(saved, initial) {
			cfg.Logger.Info("participants as last changed by admin participants, not --participant", "file", filepath.Join(cfg.DataDir, participantsFile), "participants", len(saved))
		}
		initial = saved
	}
	ps := &participantSet{peers: make(map[string]*peer), names: make(map[string]string)}
	for name, addr := range initial {
		ps.names[name] = name
		ps.peers[name] = newPeer(s, name, addr)
	}
	s.pset.Store(ps)
	var ln net.Listener
	if s.ln, ln, err = node.Listen(cfg.Listener, cfg.Listen, cfg.TLS); err != nil {
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	door := &frontDoor{s: s}
	s.door = door
	s.metrics.gauges(s, door)
	// The answer to a Hello that asks for one: a replica of a group adds
	// its raft id, which the other replicas' Peers check (replica.go).
	answer := wire.Hello{Role: wire.RoleCoordinator}
	if s.rep != nil {
		answer.Name = []byte(strconv.FormatUint(cfg.ID, 10))
	}
	s.mux = mux.NewServer(mux.ServerOptions{Conn: mux.Options{
		Handler:      door,
		Logger:       cfg.Logger,
		NoCoalesce:   cfg.NoCoalesce,
		FrameTimeout: cfg.FrameTimeout,
		IdleTimeout:  cfg.IdleTimeout,
		Answer:       answer,
		OnClose:      func(c *mux.Conn, _ error) { door.closed(c) },
	}, MaxConns: cfg.MaxClients})
	// After the mux server: /metrics reads Status, which reads its stats.
	if cfg.HTTP != "" {
		s.http, err = obs.Start(cfg.HTTP, s.metrics.reg, s.Err, s.consoleRoutes()...)
		if err != nil {
			return nil, fmt.Errorf("coordinator: %w", err)
		}
	}
	s.life.Serve(s.parts(), ln)
	s.life.Go(s.keepOutcomes)
	if s.rep != nil {
		s.life.Go(s.rep.run)
	}
	ok = true
	cfg.Logger.Info("coordinator serving", "addr", s.ln.Addr().String(), "shards", cfg.Shards,
		"participants", len(initial), "data", cfg.DataDir, "staged", s.staged)
	return s, nil
}

// openLog opens (and recovers) the log of a coordinator that runs alone
// and makes its shards.
func (s *Server) openLog() error {
	cfg := &s.cfg
	var err error
	if cfg.FS == nil {
		// A data directory too small for the segments fails here, with
		// the sizes, not after "serving".
		err := datadir.CheckSpace(cfg.DataDir, []datadir.LogSpace{logSpace("log", filepath.Join(cfg.DataDir, "wal"), cfg.SegmentBytes)}, datadir.FreeBytes)
		if err != nil {
			return fmt.Errorf("coordinator: %w", err)
		}
	}
	s.log, err = wal.Open(filepath.Join(cfg.DataDir, "wal"), wal.Options{
		FS:            cfg.FS,
		SegmentBytes:  cfg.SegmentBytes,
		NoGroupCommit: cfg.NoGroupCommit,
		OnSync:        s.metrics.observeSync,
		Logger:        cfg.Logger,
	})
	if err != nil {
		return fmt.Errorf("coordinator: opening log in %s: %w", cfg.DataDir, err)
	}
	s.shards = make([]*engine.Shard, cfg.Shards)
	s.pumps = make([]*pump.Pump, cfg.Shards)
	s.stats = make([]shardStats, cfg.Shards)
	s.outputs = make([]*shardOutput, cfg.Shards)
	// Before the log is restored: what this process does not restore it
	// has forgotten, and ids older than its start may name such
	// transactions (engine.ShardConfig.StartUnixMs).
	scfg := cfg.shardConfig()
	scfg.StartUnixMs = time.Now().UnixMilli()
	for i := range s.shards {
		s.shards[i] = engine.NewShard(scfg)
		out := &shardOutput{s: s, shard: i}
		s.outputs[i] = out
		s.pumps[i] = pump.New(s.shards[i], s.log, out, cfg.Tick)
		out.pump = s.pumps[i]
		s.pumps[i].NoBatch = cfg.NoBatch
		i := i
		s.pumps[i].OnLoop = func() {
			st := &s.stats[i]
			st.mu.Lock()
			st.s = s.shards[i].Stats()
			st.mu.Unlock()
		}
	}
	return s.recover()
}

// openOutcomes opens the outcome index in <data>/outcomes.
func (s *Server) openOutcomes() error {
	cfg := &s.cfg
	dir := filepath.Join(cfg.DataDir, "outcomes")
	if cfg.FS == nil {
		if err := datadir.CheckSpace(cfg.DataDir, []datadir.LogSpace{logSpace("outcome index", dir, outcomeSegmentBytes(cfg.SegmentBytes))}, datadir.FreeBytes); err != nil {
			return fmt.Errorf("coordinator: %w", err)
		}
	}
	var err error
	s.outcomes, err = openOutcomes(dir, wal.Options{
		FS:           cfg.FS,
		SegmentBytes: outcomeSegmentBytes(cfg.SegmentBytes),
		// Nothing waits for an entry but a sync; a lazy append waits the
		// longest the log allows for company.
		LazyDelay: time.Second,
		Logger:    cfg.Logger,
	}, cfg.OutcomeRetention, cfg.OutcomeMaxBytes)
	if err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	return nil
}

// keepOutcomes syncs the outcome index and applies its retention once a
// second, until the server stops; a failure stops the server.
func (s *Server) keepOutcomes() {
	t := time.NewTicker(node.RetireEvery)
	defer t.Stop()
	for {
		select {
		case <-s.life.Stopping():
			return
		case <-t.C:
		}
		err := s.outcomes.sync()
		if err == nil {
			err = s.outcomes.retire()
		}
		if err != nil {
			s.life.Fail(fmt.Errorf("coordinator: %w", err))
			return
		}
	}
}

// logSpace is what a log with segments of size bytes (0: the default)
// needs to start: the segment being written, the one before it until
// retirement catches up, and the ones the preparer keeps ready.
func logSpace(name, dir string, size int64) datadir.LogSpace {
	if size <= 0 {
		size = wal.DefaultSegmentBytes
	}
	return datadir.LogSpace{Name: name, Dir: dir, Segments: wal.DefaultSegmentsAhead + 2, SegmentBytes: size}
}

// recover replays the log into the shards: every commit decision that was
// not yet acknowledged by all its participants is driven again.
func (s *Server) recover() error {
	idx := make([]uint64, len(s.shards))
	var rec engine.Record
	n := 0
	// From the first record the log still holds: the segments before it
	// were retired because every commit in them had ended, and replaying
	// from 1 would fail with wal.ErrRetired once anything was retired.
	err := s.log.Replay(s.log.Recovery().FirstLSN, func(lsn wal.LSN, data []byte) error {
		rec = engine.Record{}
		if err := rec.UnmarshalBinary(data); err != nil {
			return fmt.Errorf("record at LSN %d: %v: %w", lsn, err, wal.ErrCorrupt)
		}
		k := engine.ShardFor(rec.Txn, len(s.shards))
		if rec.Type == engine.RecCommit {
			// Its index entry may have been lost with the process.
			s.outcomes.recordCommit(rec.Txn, rec.Participants)
		}
		if err := s.shards[k].Restore(rec); err != nil {
			return fmt.Errorf("record at LSN %d: %w", lsn, err)
		}
		idx[k]++
		s.pumps[k].Restored(idx[k], lsn)
		n++
		return nil
	})
	if err != nil {
		return fmt.Errorf("coordinator: recovering from %s: %w", s.cfg.DataDir, err)
	}
	if n > 0 {
		s.cfg.Logger.Info("coordinator recovered", "records", n)
	}
	return nil
}

// WaitConnected waits until the coordinator has a connection to every
// participant (or ctx ends). Transactions begun before then may time out
// in prepare: a participant that is not connected misses its prepare.
func (s *Server) WaitConnected(ctx context.Context) error {
	for name, p := range s.set().peers {
		if err := p.mux.WaitConnected(ctx); err != nil {
			return fmt.Errorf("coordinator: participant %s not connected: %w", name, err)
		}
	}
	return nil
}

// Addr is the address the coordinator listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Done is closed when the server has stopped, after Close or a fatal error.
func (s *Server) Done() <-chan struct{} { return s.life.Done() }

// Err is the fatal error that stopped the server, if any.
func (s *Server) Err() error { return s.life.Err() }

// Close stops the coordinator gracefully: it stops accepting work, gives
// transactions in flight up to a second to finish (drain), stops the
// shards and syncs the log. A crash instead of Close loses nothing
// acknowledged.
func (s *Server) Close() error { return s.life.Close() }

// drain waits up to a second for the transactions in flight to finish, so
// that a graceful stop answers their clients.
func (s *Server) drain() {
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) && s.Err() == nil && s.Status().InFlight > 0 {
		time.Sleep(10 * time.Millisecond)
	}
}

// parts lists what the coordinator holds, for node's shutdown order; what a
// failed Start never acquired is nil.
func (s *Server) parts() node.Parts {
	var peers []*mux.Peer
	if ps := s.set(); ps != nil {
		for _, p := range ps.peers {
			peers = append(peers, p.mux)
		}
	}
	// Not a store, but closed after the pumps have stopped, as Peers
	// are: the participants added at run time.
	stores := []func() error{s.closeAdded}
	if s.outcomes != nil {
		stores = append(stores, s.outcomes.close)
	}
	if s.rep != nil {
		for _, p := range s.rep.conns {
			peers = append(peers, p)
		}
		stores = append(stores, s.rep.log.Close)
	}
	return node.Parts{
		Stores:   stores,
		Listener: s.ln,
		Drain:    s.drain,
		Pumps:    s.pumps,
		PumpName: func(i int) string { return fmt.Sprintf("coordinator shard %d", i) },
		Mux:      s.mux,
		Peers:    peers,
		HTTP:     s.http,
		Log:      s.log,
		Lock:     s.lock,
	}
}

// Status is the coordinator's summary for `commitd admin status`.
type Status struct {
	Committed   uint64 `json:"committed"`
	Aborted     uint64 `json:"aborted"`
	Unknown     uint64 `json:"unknown"`
	Rejected    uint64 `json:"rejected"` // begins refused: invalid (a shard or the front door) or overloaded (a shard)
	InFlight    int    `json:"in_flight"`
	InDoubt     int    `json:"in_doubt"` // commit decided, not yet acknowledged by every participant
	Redelivered uint64 `json:"redelivered"`
	// Staged counts the transactions begun with a staged decision,
	// Resolutions those that had to be resolved (a prepare timeout, a
	// prepare not sent, a restart), and Undecided the staged ones whose
	// decision is not yet durable (docs/protocol.md "Staged commits").
	Staged      uint64 `json:"staged"`
	Resolutions uint64 `json:"resolutions"`
	Undecided   int    `json:"undecided"`
	Shards      int    `json:"shards"`
	DurableLSN  uint64 `json:"durable_lsn"`
	// The process's runtime counters: heap objects allocated since start,
	// bytes in heap objects (garbage not yet collected included: the live
	// heap is what /debug/pprof/heap?gc=1 reports), and user+system CPU
	// seconds.
	Mallocs    uint64  `json:"mallocs"`
	HeapBytes  uint64  `json:"heap_bytes"`
	CPUSeconds float64 `json:"cpu_seconds"`
	// Participants shows the coordinator's connections to each
	// participant, by name: a participant that refuses them (it has
	// another --name, or does not accept the coordinator's certificate)
	// says why in last_error.
	Participants map[string]link.PeerStatus `json:"participants"`
	// Conns counts the connections to the coordinator's listener.
	Conns Conns `json:"conns"`
	// A replica of a group (Config.Peers) adds its raft role (leader,
	// follower, candidate, pre-candidate), the leader's address ("" when
	// none is known) and the raft term.
	Role   string `json:"role,omitempty"`
	Leader string `json:"leader,omitempty"`
	Term   uint64 `json:"term,omitempty"`
	// OutcomesKeptFrom is the time of the oldest transaction id the
	// outcome index is sure to answer for (admin txn: older is expired),
	// and OutcomeBytes the bytes of entries it keeps.
	OutcomesKeptFrom time.Time `json:"outcomes_kept_from"`
	OutcomeBytes     int64     `json:"outcome_bytes"`
	// RaftApplied is the index of the last raft entry applied, and
	// RaftSnapshot that of the latest snapshot (made here or received).
	RaftApplied  uint64 `json:"raft_applied,omitempty"`
	RaftSnapshot uint64 `json:"raft_snapshot,omitempty"`
	// RaftStaleEntries counts raft entries applied without their records
	// because a deposed reign proposed them (their term is not the
	// entry's): nonzero only for logs written before proposal forwarding
	// was turned off.
	RaftStaleEntries uint64 `json:"raft_stale_entries,omitempty"`
	// Members is the group's configuration as this replica last applied
	// it (as `admin replicas` shows it).
	Members *Members `json:"members,omitempty"`
	// NotLeading counts the votes, acks and inquiries this replica
	// dropped because it did not lead: a participant that finds the
	// leader sends a follower none but the inquiries it sends to every
	// replica while it does not know which leads.
	NotLeading uint64 `json:"not_leading,omitempty"`
	// Group is this coordinator's group in a cluster (Config.Group; 0:
	// the only group), and OtherGroup counts the votes, acks and
	// inquiries it dropped because they were for another group's
	// transaction.
	Group      uint16 `json:"group,omitempty"`
	OtherGroup uint64 `json:"other_group,omitempty"`
	// MapVersion is the version of the cluster map this group uses
	// (Config.Cluster; 0: none).
	MapVersion uint64 `json:"map_version,omitempty"`
	// NewerMapSeen is a cluster map version newer than MapVersion that a
	// participant's or another replica's Hello said it holds (0: none
	// seen): the operator's
	// tooling has not yet pushed it here, or this group's SIGHUP or
	// admin cluster reload is still to come.
	NewerMapSeen uint64 `json:"newer_map_seen,omitempty"`
}

// Conns counts the connections to a server's listener: open now (Clients
// of them clients), accepted since the start, and refused because a bound
// was reached.
type Conns struct {
	Open     int    `json:"open"`
	Clients  int    `json:"clients"`
	Accepted uint64 `json:"accepted"`
	Rejected uint64 `json:"rejected"`
}

// Status sums the shards' statistics, and adds the front door's rejections
// to theirs: Rejected is every begin answered "rejected", the number the
// commitd_coordinator_transactions_total{outcome="rejected"} series counts.
// Each shard publishes its counts after every round of its pump, once the
// round's replies are out: a client may have its answer a moment before
// Status counts it.
func (s *Server) Status() Status {
	st := Status{Shards: len(s.shards)}
	stats := s.stats
	if s.log != nil {
		st.DurableLSN = uint64(s.log.DurableLSN())
	}
	if s.rep != nil {
		stats = s.rep.report(&st)
	}
	st.Rejected = s.rejected.Load()
	st.OutcomesKeptFrom = s.outcomes.horizon()
	s.outcomes.spansMu.Lock()
	st.OutcomeBytes = s.outcomes.bytes
	s.outcomes.spansMu.Unlock()
	st.NotLeading = s.notLeading.Load()
	st.Group, st.OtherGroup, st.MapVersion = s.cfg.Group, s.otherGroup.Load(), s.ClusterVersion()
	st.NewerMapSeen = s.newerMap.Seen(st.MapVersion)
	st.Mallocs, st.HeapBytes, st.CPUSeconds = runtimeSample()
	ms := s.mux.Stats()
	st.Conns = Conns{Open: ms.Open, Clients: ms.Clients, Accepted: ms.Accepted, Rejected: ms.Rejected}
	ps := s.set()
	st.Participants = make(map[string]link.PeerStatus, len(ps.peers))
	for name, p := range ps.peers {
		st.Participants[name] = link.StatusOf(p.mux, p.addr)
	}
	for i := range stats {
		stats[i].mu.Lock()
		x := stats[i].s
		stats[i].mu.Unlock()
		st.Committed += x.Committed
		st.Aborted += x.Aborted
		st.Unknown += x.Unknown
		st.Rejected += x.Rejected
		st.InFlight += x.InFlight
		st.InDoubt += x.Undelivered
		st.Redelivered += x.Redelivered
		st.Staged += x.Staged
		st.Resolutions += x.Resolutions
		st.Undecided += x.Undecided
	}
	return st
}

// shardOutput sends what a shard produced. It runs on the shard's pump
// goroutine; queueing a frame on a connection never blocks.
type shardOutput struct {
	s       *Server
	shard   int        // the shard's index: which connection to each participant it uses
	pump    *pump.Pump // the pump that drives the shard
	prepare wire.Prepare
	dec     wire.Decision
	resolve wire.Resolve
	outcome wire.Outcome
	notSent engine.Message
	// gone are participants being removed (participants.go): a prepare
	// for one is not sent, as if its connection were down.
	gone map[string]bool
	// peers caches the set's peers by name for Deliver.
	peers peerCache
}

// peerCache finds a participant's peer by name without a map lookup per
// message: the shard names participants with the very strings the front
// door took from the set's names (engine messages copy the string, not
// its bytes), so a few name addresses recur, and comparing an address and
// a length is cheaper than hashing or comparing the bytes. The cached
// pointer keeps the name's bytes alive, so an address cannot be reused by
// another name while it is cached: same address and length, same name.
// A set of participants replaced (added, removed) empties it.
type peerCache struct {
	set  *participantSet
	n    int // entries in use
	next int // the entry replaced next once all are in use
	e    [8]struct {
		name *byte
		len  int
		p    *peer
	}
}

// lookup returns set.peers[name].
func (c *peerCache) lookup(set *participantSet, name string) *peer {
	if c.set != set {
		*c = peerCache{set: set}
	}
	data := unsafe.StringData(name)
	for i := range c.e[:c.n] {
		if e := &c.e[i]; e.name == data && e.len == len(name) {
			return e.p
		}
	}
	p := set.peers[name]
	if p == nil || len(name) == 0 {
		return p // not cached: a programmer error follows, or a name being removed
	}
	i := c.n
	if i == len(c.e) {
		i, c.next = c.next, (c.next+1)%len(c.e)
	} else {
		c.n++
	}
	c.e[i].name, c.e[i].len, c.e[i].p = data, len(name), p
	return p
}

func (o *shardOutput) Deliver(rd *engine.Ready) {
	s := o.s
	var set *participantSet
	if len(rd.Messages) > 0 {
		set = s.set()
	}
	for i := range rd.Messages {
		m := &rd.Messages[i]
		p := o.peers.lookup(set, m.To)
		if p == nil && !o.gone[m.To] {
			// The front door only admits known participants, and one is
			// removed only once every shard has barred it.
			panic(fmt.Sprintf("coordinator: message for unknown participant %q", m.To))
		}
		if o.gone[m.To] {
			// Being removed: no transaction in flight named it when this
			// shard barred it, so this is a begin admitted just before
			// its name was withdrawn (aborts, as not sent), or an abort
			// decision (presumed anyway).
			p = nil
		}
		switch m.Type {
		case engine.MsgPrepare:
			o.prepare = wire.Prepare{Txn: m.Txn, OnePhase: m.OnePhase, Staged: m.Staged, Work: m.Work}
			tr := s.tr
			if tr != nil && !tr.idle() {
				o.prepare.Trace = tr.prepare(m.Txn, m.To, m.OnePhase)
			}
			if p == nil || !p.send(o.shard, &o.prepare) {
				if tr != nil && !tr.idle() {
					tr.notSent(m.Txn, m.To)
				}
				// Never left: the participant cannot have prepared, so the
				// shard may abort now rather than after the prepare
				// timeout (and a one-phase one need not end unknown).
				o.notSent = engine.Message{Type: engine.MsgNotSent, Txn: m.Txn, From: m.To}
				o.pump.Inject(&o.notSent) // on that pump's goroutine: must not wait
				s.metrics.prepareNotSent()
			}
		case engine.MsgDecision:
			if tr := s.tr; tr != nil && !tr.idle() {
				tr.decision(m.Txn, m.To, m.Decision)
			}
			if m.Decision == protocol.DecisionAbort && s.rep != nil {
				// No record backs an abort: a replica releases it only
				// once its abort marker is committed (window.go).
				s.rep.holdAbort(o.shard, m.To, m.Txn)
				continue
			}
			if p == nil {
				continue // an abort for a participant being removed
			}
			o.dec = wire.Decision{Txn: m.Txn, Decision: m.Decision}
			p.send(o.shard, &o.dec)
		case engine.MsgResolve:
			if p == nil {
				continue // being removed: no transaction names it any more
			}
			// A resolve that does not leave is asked again (the shard's
			// backoff): nothing to tell the shard.
			o.resolve = wire.Resolve{Txn: m.Txn}
			p.send(o.shard, &o.resolve)
		default:
			panic(fmt.Sprintf("coordinator: shard emitted a %v message", m.Type))
		}
	}
	var nowMs, nowNs int64
	if len(rd.Replies) > 0 {
		nowMs = s.outcomes.now().UnixMilli() // once for all of them
		// The latency clock (not the outcomes', which tests replace),
		// read once for the batch too: its replies are queued within
		// microseconds of each other.
		nowNs = time.Now().UnixNano()
	}
	for i := range rd.Replies {
		r := &rd.Replies[i]
		s.outcomes.recordReply(r, nowMs)
		s.metrics.outcome(r.Outcome)
		if tr := s.tr; tr != nil && !tr.idle() {
			tr.reply(r)
		}
		cc, reqID := s.clients.lookup(r.Tag)
		if cc == nil {
			s.rates[o.shard].record(nowMs, r.Outcome, 0, false)
			continue // the client went away; it will see "unknown"
		}
		d, measured := cc.elapsed(reqID, nowNs)
		if measured {
			s.metrics.latency(r.Outcome, d)
		}
		s.rates[o.shard].record(nowMs, r.Outcome, d, measured)
		c := cc.conn
		// The byte buffers are kept across replies: assigning a fresh
		// Outcome would drop them and allocate both again per reply.
		part, detail := o.outcome.Participant[:0], o.outcome.Detail[:0]
		o.outcome = wire.Outcome{
			Txn:         r.Txn,
			Outcome:     r.Outcome,
			Cause:       r.Cause,
			Participant: append(part, r.Participant...),
			Detail:      append(detail, r.Detail...),
		}
		if r.Outcome == protocol.OutcomeAborted && s.rep != nil {
			// No record backs it: a replica answers once an abort
			// marker is committed (window.go).
			s.rep.holdReply(cc, reqID, &o.outcome)
			continue
		}
		// An error means the connection failed; its client sees "unknown".
		_ = c.Reply(reqID, &o.outcome)
	}
}

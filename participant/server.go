package participant

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/internal/datadir"
	"github.com/commitd/commitd/internal/link"
	"github.com/commitd/commitd/internal/node"
	"github.com/commitd/commitd/internal/obs"
	"github.com/commitd/commitd/internal/pump"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/wal"
	"github.com/prometheus/client_golang/prometheus"
)

// Config is everything a participant server needs. Zero values take the
// defaults noted.
type Config struct {
	// Name is the participant's name, as the coordinator knows it. Required.
	Name string
	// Listen is the address the coordinator dials (default 127.0.0.1:7401).
	Listen string
	// Listener, if set, is used instead of listening on Listen.
	Listener net.Listener
	// DataDir holds the participant's log and ledger. Required.
	DataDir string
	// Coordinator is the coordinator's address: votes, acks and inquiries
	// go there. Required. For a replicated coordinator (docs/ha.md) it
	// lists every replica's address, separated by commas, and every vote,
	// ack and inquiry goes to each of them: only the leader takes it.
	Coordinator string
	// Resource does the work. Required; the bank resource for the bank
	// participant.
	Resource Inspectable

	// Tick is the engine's clock period (default 10ms).
	Tick time.Duration
	// InquireAfter: a prepared transaction with no decision this long asks
	// the coordinator (default 1s), then with backoff up to InquireMax
	// (default 5s).
	InquireAfter, InquireMax time.Duration
	// Remember is how long a decided transaction is kept for duplicates
	// (default 30s; at least this long and at most twice as long). Keep it
	// at least twice the coordinator's Remember (5 s by default), as each
	// side may forget anywhere between its window and twice it: a participant that forgot a transaction the coordinator
	// still remembers as committed could, on a stale duplicate prepare,
	// prepare it again and be told to commit it again (docs/model/README.md,
	// FORGET_PART). The coordinator sends each prepare once over TCP, so a
	// stale duplicate needs a network that replays old segments.
	Remember time.Duration
	// CheckpointEvery is the number of decided transactions between
	// checkpoints, which let the log retire (default 10000).
	CheckpointEvery int
	// ScanEvery is how often a Durable resource is asked what it holds
	// prepared, so that none is left behind holding locks (default 2s).
	ScanEvery time.Duration
	// LedgerRetention is how long the ledger keeps a decision for `admin
	// outcomes` (default 1h): its segments are retired once every entry
	// in them is older and the protocol log has retired every record they
	// came from (see ledger). The ledger has no protocol role, so any
	// retention is safe; it bounds the ledger's disk (17 bytes a decision)
	// and the read of it at every start.
	LedgerRetention time.Duration

	// SegmentSize is the size of each log segment file (default 64 MiB;
	// the ledger's are a quarter of it).
	SegmentSize int64
	// FS is the file system under the log and the ledger (nil: the
	// operating system's); tests inject crashes and I/O errors through it.
	FS wal.FS

	// NoGroupCommit and NoCoalesce: see the coordinator's Config.
	NoGroupCommit bool
	NoCoalesce    bool
	// NoBatch: see the coordinator's Config.
	NoBatch bool
	// ConnsToCoordinator is the number of connections to the coordinator
	// (default 2).
	ConnsToCoordinator int
	// TLS, when set, is required of every connection (mutual TLS).
	TLS *tls.Config
	// HTTP, if set, serves /metrics, /debug/pprof/ and /healthz.
	HTTP string
	// Logger receives structured logs (default slog.Default()).
	Logger *slog.Logger
}

func (c *Config) fill() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:7401"
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Tick, 10*time.Millisecond)
	def(&c.InquireAfter, time.Second)
	def(&c.InquireMax, 5*time.Second)
	def(&c.Remember, 30*time.Second)
	def(&c.ScanEvery, 2*time.Second)
	def(&c.LedgerRetention, DefaultLedgerRetention)
	if c.CheckpointEvery <= 0 {
		c.CheckpointEvery = 10000
	}
	if c.ConnsToCoordinator <= 0 {
		c.ConnsToCoordinator = 2
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func (c *Config) validate() error {
	switch {
	case c.Name == "" || len(c.Name) > engine.MaxNameLen:
		return fmt.Errorf("participant: name %q must be 1 to %d bytes", c.Name, engine.MaxNameLen)
	case c.DataDir == "":
		return errors.New("participant: a data directory is required")
	case c.Coordinator == "":
		return errors.New("participant: the coordinator's address is required")
	case c.Resource == nil:
		return errors.New("participant: a resource is required")
	}
	return nil
}

func (c *Config) ticks(d time.Duration) int { return max(1, int((d+c.Tick-1)/c.Tick)) }

// Server is a running participant: one engine machine driven by a pump
// goroutine over its own log, its resource, its ledger, a listener for the
// coordinator and admin queries, and connections to the coordinator.
type Server struct {
	cfg     Config
	lock    *datadir.Lock
	log     *wal.Log
	ledger  *ledger
	res     *guarded
	durable Durable             // cfg.Resource if it is one, else nil
	machine *engine.Participant // owned by the pump goroutine
	pump    *pump.Pump
	coord   *mux.Peer
	mux     *mux.Server
	ln      net.Listener
	http    *obs.Server
	reg     *prometheus.Registry
	metrics *metrics // set before the front door opens

	// replicas are the other replicas of a replicated coordinator, after
	// coord; immutable after Start.
	replicas []*mux.Peer

	statsMu sync.Mutex
	stats   engine.ParticipantStats // published by the pump after each round

	// forget lists decisions recorded in the ledger whose markers the
	// Durable resource may drop once the ledger is synced: appended by
	// the pump, taken by durableLoop.
	forgetMu sync.Mutex
	forget   []engine.TxnID

	life *node.Lifecycle // goroutines, Close, Done, Err
}

// Start opens and recovers the participant's log and ledger and starts
// serving.
func Start(cfg Config) (*Server, error) {
	cfg.fill()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	lock, err := datadir.Acquire(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, lock: lock, reg: prometheus.NewRegistry()}
	s.life = node.New(node.Config{
		Name:   "participant",
		Logger: cfg.Logger.With("name", cfg.Name),
		// The ledger is synced before the protocol log retires anything,
		// so no decision drops out of both before the ledger's retention
		// has passed; then what the retention lets go is retired.
		BeforeRetire: func() error {
			if err := s.ledger.sync(); err != nil {
				return err
			}
			return s.ledger.retire()
		},
	})
	ok := false
	defer func() {
		if !ok {
			node.Abandon(s.parts(false))
		}
	}()
	// A checkpoint is one record holding the whole resource: allow records
	// up to the engine's bound (the log lowers it to what fits a segment).
	walOpts := wal.Options{FS: cfg.FS, NoGroupCommit: cfg.NoGroupCommit, SegmentSize: cfg.SegmentSize,
		OnSync:        obs.NewWAL(s.reg, "wal").OnSync,
		MaxRecordSize: engine.MaxCheckpointLen,
		Logger:        cfg.Logger.With("name", cfg.Name)}
	ledgerSize := max(cmp.Or(cfg.SegmentSize, wal.DefaultSegmentSize)/4, wal.MinSegmentSize)
	if cfg.FS == nil {
		// A data directory too small for the segments fails here, with
		// the sizes, not after "serving".
		err := datadir.CheckSpace(cfg.DataDir, []datadir.LogSpace{
			logSpace("log", filepath.Join(cfg.DataDir, "wal"), cmp.Or(cfg.SegmentSize, wal.DefaultSegmentSize)),
			logSpace("ledger", filepath.Join(cfg.DataDir, "ledger"), ledgerSize),
		}, datadir.FreeBytes)
		if err != nil {
			return nil, fmt.Errorf("participant: %w", err)
		}
	}
	s.log, err = wal.Open(filepath.Join(cfg.DataDir, "wal"), walOpts)
	if err != nil {
		return nil, fmt.Errorf("participant: opening log in %s: %w", cfg.DataDir, err)
	}
	// Ledger entries are small, and retired by segment: smaller segments
	// waste less when the participant is idle and retire closer to the
	// retention.
	ledgerOpts := walOpts
	ledgerOpts.OnSync = obs.NewWAL(s.reg, "ledger").OnSync
	ledgerOpts.SegmentSize = ledgerSize
	s.ledger, err = openLedger(filepath.Join(cfg.DataDir, "ledger"), ledgerOpts, s.log, cfg.LedgerRetention)
	if err != nil {
		return nil, fmt.Errorf("participant: opening ledger in %s: %w", cfg.DataDir, err)
	}
	s.res = newGuarded(cfg.Resource)
	s.durable, _ = cfg.Resource.(Durable)
	s.machine = engine.NewParticipant(engine.ParticipantConfig{
		Name:              cfg.Name,
		InquireAfterTicks: cfg.ticks(cfg.InquireAfter),
		InquireMaxTicks:   cfg.ticks(cfg.InquireMax),
		RememberTicks:     cfg.ticks(cfg.Remember),
		CheckpointEvery:   cfg.CheckpointEvery,
		DurableResource:   s.durable != nil,
	}, s.res)
	s.pump = pump.New(s.machine, s.log, &output{s: s, name: []byte(cfg.Name)}, cfg.Tick)
	s.pump.NoBatch = cfg.NoBatch
	s.pump.OnLoop = func() {
		st := s.machine.Stats()
		s.statsMu.Lock()
		s.stats = st
		s.statsMu.Unlock()
	}
	if err := s.recover(); err != nil {
		return nil, err
	}
	if s.durable != nil {
		if err := s.recoverDurable(); err != nil {
			return nil, err
		}
	} else if err := s.ledger.settle(); err != nil {
		return nil, fmt.Errorf("participant: reading ledger in %s: %w", cfg.DataDir, err)
	}
	for i, addr := range strings.Split(cfg.Coordinator, ",") {
		p := mux.NewPeer(addr, mux.PeerOptions{
			Conn:  mux.Options{Logger: cfg.Logger, NoCoalesce: cfg.NoCoalesce},
			Hello: wire.Hello{Role: wire.RoleParticipant, Name: []byte(cfg.Name)},
			Dial:  link.Dialer(cfg.TLS),
			Conns: cfg.ConnsToCoordinator,
		})
		if i == 0 {
			s.coord = p
		} else {
			s.replicas = append(s.replicas, p)
		}
	}
	var ln net.Listener
	if s.ln, ln, err = node.Listen(cfg.Listener, cfg.Listen, cfg.TLS); err != nil {
		return nil, fmt.Errorf("participant: %w", err)
	}
	if cfg.HTTP != "" {
		if s.http, err = obs.Start(cfg.HTTP, s.reg, s.Err); err != nil {
			return nil, fmt.Errorf("participant: %w", err)
		}
	}
	door := &frontDoor{s: s}
	s.metrics = newMetrics(s, door)
	s.mux = mux.NewServer(mux.ServerOptions{Conn: mux.Options{
		Handler:    door,
		Logger:     cfg.Logger,
		NoCoalesce: cfg.NoCoalesce,
		OnClose: func(c *mux.Conn, _ error) {
			s.metrics.writes.Closed(c.Stats())
			door.conns.Delete(c)
		},
	}})
	s.life.Serve(s.parts(true), ln)
	if s.durable != nil {
		s.life.Go(s.durableLoop)
	}
	ok = true
	cfg.Logger.Info("participant serving", "name", cfg.Name, "addr", s.ln.Addr().String(),
		"coordinator", cfg.Coordinator, "data", cfg.DataDir)
	return s, nil
}

// logSpace is what a log with segments of size bytes needs to start: the
// segment being written, the one before it until retirement catches up,
// and the ones the preparer keeps ready.
func logSpace(name, dir string, size int64) datadir.LogSpace {
	return datadir.LogSpace{Name: name, Dir: dir, Segments: wal.DefaultSegmentsAhead + 2, SegmentSize: size}
}

// recover replays the log into the machine and the resource, and hands
// the ledger every decision the log holds (a ledger entry is written
// lazily, so a crash can lose one that the log kept); the ledger's settle
// then records the ones it lacks.
//
// Once segments were retired the log no longer starts at LSN 1, and its
// first records may be decisions whose prepare was retired: the machine is
// then restored from the first checkpoint left, which supersedes every
// record before it (retirement keeps everything from the latest durable
// checkpoint on), while the ledger still gets every decision before it.
func (s *Server) recover() error {
	from := s.log.Recovery().FirstLSN
	if from > 1 {
		var err error
		if from, err = s.firstCheckpoint(from); err != nil {
			return fmt.Errorf("participant: recovering from %s: %w", s.cfg.DataDir, err)
		}
	}
	var idx uint64
	var rec engine.Record
	err := s.log.Replay(from, func(lsn wal.LSN, data []byte) error {
		rec = engine.Record{}
		if err := rec.UnmarshalBinary(data); err != nil {
			return fmt.Errorf("record at LSN %d: %v: %w", lsn, err, wal.ErrCorrupt)
		}
		if err := s.machine.Restore(rec); err != nil {
			return fmt.Errorf("record at LSN %d: %w", lsn, err)
		}
		idx++
		s.pump.Restored(idx, lsn)
		switch rec.Type {
		case engine.RecCommitted:
			s.ledger.ensure(engine.Applied{Txn: rec.Txn, Decision: engine.DecisionCommit})
		case engine.RecAborted:
			s.ledger.ensure(engine.Applied{Txn: rec.Txn, Decision: engine.DecisionAbort})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("participant: recovering from %s: %w", s.cfg.DataDir, err)
	}
	if idx > 0 {
		s.cfg.Logger.Info("participant recovered", "name", s.cfg.Name, "records", idx)
	}
	return nil
}

// errFound stops a replay early.
var errFound = errors.New("found")

// firstCheckpoint returns the LSN of the first checkpoint at or after
// first, making sure the ledger has every decision before it.
func (s *Server) firstCheckpoint(first wal.LSN) (wal.LSN, error) {
	var at wal.LSN
	var rec engine.Record
	err := s.log.Replay(first, func(lsn wal.LSN, data []byte) error {
		rec = engine.Record{}
		if err := rec.UnmarshalBinary(data); err != nil {
			return fmt.Errorf("record at LSN %d: %v: %w", lsn, err, wal.ErrCorrupt)
		}
		switch rec.Type {
		case engine.RecCheckpoint:
			at = lsn
			return errFound
		case engine.RecCommitted:
			s.ledger.ensure(engine.Applied{Txn: rec.Txn, Decision: engine.DecisionCommit})
		case engine.RecAborted:
			s.ledger.ensure(engine.Applied{Txn: rec.Txn, Decision: engine.DecisionAbort})
		}
		return nil
	})
	if err != nil && !errors.Is(err, errFound) {
		return 0, err
	}
	if at == 0 {
		return 0, fmt.Errorf("the log starts at LSN %d but holds no checkpoint: %w", first, wal.ErrCorrupt)
	}
	return at, nil
}

// recoverDurable brings the ledger up to the decisions the log holds and a
// Durable resource still remembers (the ledger is synced lazily, the
// resource's commits are not), lets the resource forget those, and queues
// every transaction the resource holds prepared as in doubt: the machine
// inquires for each before anything else happens.
func (s *Server) recoverDurable() error {
	s.durable.Attach(func(m engine.Message) {
		m.To = s.cfg.Name
		s.pump.Inject(&m) // the resource's answers: bounded by what it was asked
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	decided, err := s.durable.Decided(ctx)
	if err != nil {
		return fmt.Errorf("participant: %w", err)
	}
	ids := make([]engine.TxnID, 0, len(decided))
	for _, a := range decided {
		s.ledger.ensure(a)
		ids = append(ids, a.Txn)
	}
	if err := s.ledger.settle(); err != nil {
		return fmt.Errorf("participant: reading ledger in %s: %w", s.cfg.DataDir, err)
	}
	if err := s.ledger.sync(); err != nil {
		return fmt.Errorf("participant: %w", err)
	}
	if err := s.durable.Forget(ctx, ids); err != nil {
		return fmt.Errorf("participant: %w", err)
	}
	inDoubt, err := s.durable.InDoubt(ctx)
	if err != nil {
		return fmt.Errorf("participant: %w", err)
	}
	for _, id := range inDoubt {
		s.pump.Inject(&engine.Message{Type: engine.MsgResInDoubt, Txn: id, To: s.cfg.Name})
	}
	if len(decided) > 0 || len(inDoubt) > 0 {
		s.cfg.Logger.Info("participant recovered from its resource", "name", s.cfg.Name,
			"decisions", len(decided), "in_doubt", len(inDoubt))
	}
	return nil
}

// durableLoop scans a Durable resource for prepared transactions every
// ScanEvery (the machine inquires for the ones it does not know and rolls
// back orphans), and once a second lets the resource forget the
// decisions the ledger has made durable.
func (s *Server) durableLoop() {
	forgetT := time.NewTicker(time.Second)
	defer forgetT.Stop()
	scanT := time.NewTicker(s.cfg.ScanEvery)
	defer scanT.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.life.Stopping():
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		select {
		case <-s.life.Stopping():
			return
		case <-scanT.C:
			ids, err := s.durable.InDoubt(ctx)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				// The server may be restarting: the next scan will do.
				s.cfg.Logger.Warn("participant: scanning the resource", "name", s.cfg.Name, "err", err)
				continue
			}
			for _, id := range ids {
				s.pump.Inject(&engine.Message{Type: engine.MsgResInDoubt, Txn: id, To: s.cfg.Name})
			}
		case <-forgetT.C:
			s.forgetMu.Lock()
			ids := s.forget
			s.forget = nil
			s.forgetMu.Unlock()
			if len(ids) == 0 {
				continue
			}
			if err := s.ledger.sync(); err != nil {
				s.life.Fail(err)
				return
			}
			if err := s.durable.Forget(ctx, ids); err != nil {
				// Kept a while longer; the next start forgets them.
				s.cfg.Logger.Warn("participant: resource forgetting decisions", "name", s.cfg.Name, "err", err)
			}
		}
	}
}

// WaitConnected waits until the participant has a connection to the
// coordinator (or ctx ends).
func (s *Server) WaitConnected(ctx context.Context) error {
	if err := s.coord.WaitConnected(ctx); err != nil {
		return fmt.Errorf("participant %s: coordinator not connected: %w", s.cfg.Name, err)
	}
	for _, p := range s.replicas {
		if err := p.WaitConnected(ctx); err != nil {
			return fmt.Errorf("participant %s: coordinator replica not connected: %w", s.cfg.Name, err)
		}
	}
	return nil
}

// Addr is the address the participant listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Done is closed when the server has stopped, after Close or a fatal error.
func (s *Server) Done() <-chan struct{} { return s.life.Done() }

// Err is the fatal error that stopped the server, if any.
func (s *Server) Err() error { return s.life.Err() }

// Close stops the participant: no more prepares are accepted, the machine
// stops, the log and ledger are synced. Prepared transactions stay
// prepared on disk and are resolved after the next start.
func (s *Server) Close() error { return s.life.Close() }

// parts lists what the participant holds, for node's shutdown order; what a
// failed Start never acquired is nil. The Durable resource is the server's
// to close only once Start has succeeded (serving).
func (s *Server) parts(serving bool) node.Parts {
	p := node.Parts{
		Listener: s.ln,
		Mux:      s.mux,
		HTTP:     s.http,
		Log:      s.log,
		Lock:     s.lock,
	}
	if s.pump != nil {
		p.Pumps = []*pump.Pump{s.pump}
		p.PumpName = func(int) string { return "participant " + s.cfg.Name }
	}
	if s.coord != nil {
		p.Peers = append([]*mux.Peer{s.coord}, s.replicas...)
	}
	if serving && s.durable != nil {
		p.Stores = append(p.Stores, s.durable.Close)
	}
	if s.ledger != nil {
		p.Stores = append(p.Stores, s.ledger.close)
	}
	return p
}

// Accounts is the participant's summary for `commitd admin accounts`.
type Accounts struct {
	Name     string `json:"name"`
	Accounts int    `json:"accounts"`
	Total    int64  `json:"total"`
	Prepared int    `json:"prepared"`
}

// AccountsSummary reads the resource. For a Durable resource that cannot
// be read, Total is -1.
func (s *Server) AccountsSummary() Accounts {
	n, total, prepared := s.res.summary()
	if s.durable != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var err error
		if n, total, err = s.durable.Summary(ctx); err != nil {
			s.cfg.Logger.Warn("participant: reading the resource", "name", s.cfg.Name, "err", err)
			total = -1
		}
		if ids, err := s.durable.InDoubt(ctx); err == nil {
			prepared = ids
		}
	}
	return Accounts{Name: s.cfg.Name, Accounts: n, Total: total, Prepared: len(prepared)}
}

// Outcome is one line of `commitd admin outcomes`.
type Outcome struct {
	Txn     engine.TxnID `json:"txn"`
	Outcome string       `json:"outcome"` // committed, aborted or prepared
}

// EachOutcome calls fn for every transaction this participant holds
// prepared now, then for every decision in its ledger (those of the last
// Config.LedgerRetention, at least), oldest first. The ledger is read from disk as fn
// goes, so memory does not grow with it. A transaction may come more than
// once — prepared and then decided meanwhile, or a decision recorded twice
// at recovery — and its last line is its outcome. An error from fn stops
// the listing and is returned, as is an error reading the ledger.
func (s *Server) EachOutcome(fn func(Outcome) error) error {
	_, _, prepared := s.res.summary()
	if s.durable != nil {
		// The resource's own list: it also has what is still being
		// prepared, and what a crash left behind.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if ids, err := s.durable.InDoubt(ctx); err == nil {
			prepared = ids
		}
	}
	for _, id := range prepared {
		if err := fn(Outcome{Txn: id, Outcome: "prepared"}); err != nil {
			return err
		}
	}
	return s.ledger.each(func(id engine.TxnID, d engine.Decision) error {
		o := "committed"
		if d == engine.DecisionAbort {
			o = "aborted"
		}
		return fn(Outcome{Txn: id, Outcome: o})
	})
}

// Outcomes is EachOutcome gathered in memory, one line per transaction (the
// last), sorted by id: for tests and tools in the same process. Its memory
// grows with the ledger; `commitd admin outcomes` streams instead. An error
// reading the ledger (a failed disk, a stopped server) is logged and ends
// the list where it happened.
func (s *Server) Outcomes() []Outcome {
	last := make(map[engine.TxnID]string)
	err := s.EachOutcome(func(o Outcome) error {
		last[o.Txn] = o.Outcome
		return nil
	})
	if err != nil {
		s.cfg.Logger.Error("participant: listing outcomes", "name", s.cfg.Name, "err", err)
	}
	out := make([]Outcome, 0, len(last))
	for id, o := range last {
		out = append(out, Outcome{Txn: id, Outcome: o})
	}
	sort.Slice(out, func(i, j int) bool {
		return string(out[i].Txn[:]) < string(out[j].Txn[:])
	})
	return out
}

// Stats is the engine's view of the participant.
func (s *Server) Stats() engine.ParticipantStats {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return s.stats
}

func (s *Server) adminJSON(kind wire.AdminKind) ([]byte, error) {
	switch kind {
	case wire.AdminStatus:
		return json.Marshal(s.Stats())
	case wire.AdminAccounts:
		return json.Marshal(s.AccountsSummary())
	}
	return nil, fmt.Errorf("a participant does not serve admin request %d", kind)
}

// output sends what the machine produced: votes, acks and inquiries to the
// coordinator; applied decisions into the ledger.
type output struct {
	s       *Server
	name    []byte // the participant's name, for From fields
	vote    wire.Vote
	ack     wire.Ack
	inquire wire.Inquire
}

func (o *output) Deliver(rd *engine.Ready) {
	s := o.s
	for i := range rd.Applied {
		s.ledger.record(rd.Applied[i])
	}
	if s.durable != nil && len(rd.Applied) > 0 {
		s.forgetMu.Lock()
		for i := range rd.Applied {
			s.forget = append(s.forget, rd.Applied[i].Txn)
		}
		s.forgetMu.Unlock()
	}
	name := o.name
	for i := range rd.Messages {
		m := &rd.Messages[i]
		var wm wire.Message
		switch m.Type {
		case engine.MsgVote:
			if s.metrics != nil {
				s.metrics.voteSent(m.Txn)
			}
			o.vote = wire.Vote{Txn: wire.TxnID(m.Txn), From: name, Vote: wire.VoteCode(m.Vote)}
			wm = &o.vote
		case engine.MsgAck:
			o.ack = wire.Ack{Txn: wire.TxnID(m.Txn), From: name}
			wm = &o.ack
		case engine.MsgInquire:
			o.inquire = wire.Inquire{Txn: wire.TxnID(m.Txn), From: name}
			wm = &o.inquire
		default:
			panic(fmt.Sprintf("participant: machine emitted a %v message", m.Type))
		}
		// Not connected: dropped. The coordinator times the vote out, or
		// redelivers the decision; inquiries repeat.
		_ = s.coord.SendVia(0, wm) // one connection: a batch goes out in one write
		for _, p := range s.replicas {
			_ = p.SendVia(0, wm)
		}
	}
}

// frontDoor handles frames from the coordinator and admin tools.
type frontDoor struct {
	s     *Server
	conns sync.Map // *mux.Conn → *connState
}

type connState struct {
	prepare wire.Prepare
	dec     wire.Decision
	admin   wire.AdminRequest
	msg     engine.Message
}

func (d *frontDoor) HandleFrame(c *mux.Conn, f wire.Frame) error {
	s := d.s
	v, ok := d.conns.Load(c)
	if !ok {
		v = &connState{}
		d.conns.Store(c, v)
	}
	st := v.(*connState)
	switch f.Type {
	case wire.TypeHello:
		return nil
	case wire.TypePrepare:
		if err := st.prepare.Decode(f); err != nil {
			return err
		}
		if s.life.Closing() {
			return nil // not taken: the coordinator will time it out
		}
		st.msg = engine.Message{Type: engine.MsgPrepare, Txn: engine.TxnID(st.prepare.Txn), To: s.cfg.Name,
			OnePhase: st.prepare.OnePhase, Work: st.prepare.Work}
		s.metrics.prepareArrived(st.msg.Txn)
		s.pump.Submit(&st.msg)
	case wire.TypeDecision:
		if err := st.dec.Decode(f); err != nil {
			return err
		}
		st.msg = engine.Message{Type: engine.MsgDecision, Txn: engine.TxnID(st.dec.Txn), To: s.cfg.Name,
			Decision: engine.Decision(st.dec.Decision)}
		s.pump.Submit(&st.msg)
	case wire.TypeAdminRequest:
		if err := st.admin.Decode(f); err != nil {
			return err
		}
		r := &pacedReply{c: c, reqID: f.ReqID, base: c.Stats().BytesSent}
		if st.admin.Kind == wire.AdminOutcomes {
			return s.replyOutcomes(r)
		}
		body, err := s.adminJSON(st.admin.Kind)
		if err != nil {
			return c.Reply(f.ReqID, &wire.Error{Code: wire.CodeInvalid, Message: []byte(err.Error())})
		}
		if _, err := r.Write(body); err != nil {
			return err
		}
		return r.finish()
	default:
		if f.ReqID != 0 {
			return c.Reply(f.ReqID, &wire.Error{Code: wire.CodeInvalid,
				Message: fmt.Appendf(nil, "a participant does not serve %v requests", f.Type)})
		}
	}
	return nil
}

// replyOutcomes answers `admin outcomes` with EachOutcome as one JSON
// array, encoded a line at a time as the ledger is read from disk: the
// report of a participant that has run for years is gigabytes, and neither
// the ledger nor the reply is ever whole in memory. A ledger that cannot be
// read ends the reply with an Error frame, so the client sees the request
// fail rather than a short list.
func (s *Server) replyOutcomes(r *pacedReply) error {
	enc := json.NewEncoder(r) // one Write per Encode
	sep := []byte{'['}
	var connErr error // the connection failed under the reply
	err := s.EachOutcome(func(o Outcome) error {
		if _, connErr = r.Write(sep); connErr != nil {
			return connErr
		}
		sep[0] = ','
		connErr = enc.Encode(o)
		return connErr
	})
	if connErr != nil {
		return connErr // closes the connection: nothing more can be said on it
	}
	if err != nil {
		return r.c.Reply(r.reqID, &wire.Error{Code: wire.CodeInternal, Message: []byte(err.Error())})
	}
	if sep[0] == '[' {
		if _, err := r.Write(sep); err != nil {
			return err
		}
	}
	if _, err := r.Write([]byte{']'}); err != nil {
		return err
	}
	return r.finish()
}

// adminWindow bounds the bytes of an admin reply queued ahead of what the
// connection has written.
const adminWindow = 1 << 20

// adminChunk is the most JSON one AdminResponse frame carries.
const adminChunk = wire.MaxPayload - 8

// pacedReply answers one admin request like link.ReplyJSON, with JSON in as
// many AdminResponse frames as it takes, but waits for the connection to
// write them out as it goes, and takes the JSON as it is made (Write), so
// neither the whole body nor its frames need be in memory at once. The
// outcomes report grows with the ledger (tens of MB after a few minutes of
// load); queued all at once it overran the connection's MaxPendingBytes bound
// whenever the reader was slower than the loop, and the participant cut its
// own admin client off as a slow peer (found by internal/chaos). It runs on
// the connection's reader goroutine, which may wait: nothing else arrives
// on an admin connection.
type pacedReply struct {
	c      *mux.Conn
	reqID  uint64
	base   uint64 // the connection's BytesSent when the reply began
	queued uint64 // JSON bytes queued: fewer than the frames' bytes, so the wait in send ends
	buf    []byte // JSON not yet queued: at most adminChunk bytes between Writes
}

// Write takes more of the reply's JSON, queueing every full frame but the
// last (finish sends that one, so the reply never ends with an empty frame).
// An error is the connection's.
func (r *pacedReply) Write(p []byte) (int, error) {
	r.buf = append(r.buf, p...)
	for len(r.buf) > adminChunk {
		if err := r.send(r.buf[:adminChunk], true); err != nil {
			return 0, err
		}
		r.buf = r.buf[:copy(r.buf, r.buf[adminChunk:])]
	}
	return len(p), nil
}

// finish sends the rest of the reply, in its last frame.
func (r *pacedReply) finish() error { return r.send(r.buf, false) }

// send queues one frame, once the connection has written out all but
// adminWindow bytes of what the reply queued before.
func (r *pacedReply) send(json []byte, more bool) error {
	for r.queued > r.c.Stats().BytesSent-r.base+adminWindow {
		select {
		case <-r.c.Done():
			return r.c.Err()
		case <-time.After(time.Millisecond):
		}
	}
	if err := r.c.Reply(r.reqID, &wire.AdminResponse{More: more, JSON: json}); err != nil {
		return err
	}
	r.queued += uint64(len(json))
	return nil
}

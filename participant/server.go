// This file holds the participant Server's lifecycle: Start, the parts it
// holds for the shutdown order, and its accessors.

package participant

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

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
	"github.com/prometheus/client_golang/prometheus"
)

// Server is a running participant: one engine machine driven by a pump
// goroutine over its own log, its resource, its ledger, a listener for the
// coordinator and admin queries, and connections to the coordinator.
type Server struct {
	cfg     Config
	lock    *datadir.Lock
	log     *wal.Log
	ledger  *ledger
	audit   *audit // the operators' resolves (resolve.go)
	res     *guarded
	durable Durable             // cfg.Resource if it is one, else nil
	forward Forwarding          // cfg.Resource if it is one, else nil
	machine *engine.Participant // owned by the pump goroutine
	pump    *pump.Pump
	coord   *mux.Peer
	mux     *mux.Server
	ln      net.Listener
	http    *obs.Server
	reg     *prometheus.Registry
	metrics *metrics // set before the front door opens
	// prevents: durable is an engine.Preventer, so the Hello announces
	// Prevent and the machine prevents through it.
	prevents bool
	// tr keeps the spans of traced transactions (trace.go); nil, and
	// every hook one nil check, unless Config.TracerProvider is set.
	tr *tracer

	// replicas are the other replicas of a replicated coordinator, after
	// coord; immutable after Start.
	replicas []*mux.Peer
	// route finds a replicated coordinator's leader; nil for a lone
	// coordinator (route.go).
	route *router
	// cluster is the cluster map in use and a link to each of its groups
	// (Config.Cluster; cluster.go); nil without a map. ReloadCluster
	// replaces it, under reloadMu.
	cluster  atomic.Pointer[clusterView]
	reloadMu sync.Mutex
	// newerMap is the newest cluster map version a coordinator's Hello
	// said it holds (cluster.go sawMap): reported, never acted on.
	newerMap cluster.Newer
	// added are the peers ReloadCluster dialed, closed at shutdown.
	addedMu sync.Mutex
	added   []*mux.Peer
	// retiredAborts counts the aborts this participant gave itself for
	// transactions of retired groups (the retired rule).
	retiredAborts atomic.Uint64
	// groupOrder[i] is the group of the i-th coordinator peer dialed.
	groupOrder []*groupLink
	// unknownGroup counts messages dropped because their transaction's
	// group is not in the cluster map.
	unknownGroup atomic.Uint64

	statsMu sync.Mutex
	stats   engine.ParticipantStats // published by the pump after each round

	// forget lists decisions recorded in the ledger whose markers the
	// Durable resource may drop once the ledger is synced: appended by
	// the pump, taken by durableLoop.
	forgetMu sync.Mutex
	forget   []protocol.TxnID

	life *node.Lifecycle // goroutines, Close, Done, Err
}

// Start opens and recovers the participant's log and ledger and starts
// serving.
func Start(cfg Config) (*Server, error) {
	cfg.fill()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Cluster != nil {
		// Every replica of every group is "the coordinator" for status,
		// logs and TLS identities; cluster.go sends each message to its
		// transaction's group only.
		cfg.Coordinator = strings.Join(clusterAddrs(cfg.Cluster), ",")
	}
	lock, err := datadir.Acquire(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, lock: lock, reg: prometheus.NewRegistry()}
	if cfg.TracerProvider != nil {
		s.tr = newTracer(cfg.TracerProvider, cfg.Name)
	}
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
	walOpts := wal.Options{FS: cfg.FS, NoGroupCommit: cfg.NoGroupCommit, SegmentBytes: cfg.SegmentBytes,
		OnSync:         obs.NewWAL(s.reg, "wal").OnSync,
		MaxRecordBytes: engine.MaxCheckpointLen,
		Logger:         cfg.Logger.With("name", cfg.Name)}
	ledgerSize := max(cmp.Or(cfg.SegmentBytes, wal.DefaultSegmentBytes)/4, wal.MinSegmentBytes)
	if cfg.FS == nil {
		// A data directory too small for the segments fails here, with
		// the sizes, not after "serving".
		err := datadir.CheckSpace(cfg.DataDir, []datadir.LogSpace{
			logSpace("log", filepath.Join(cfg.DataDir, "wal"), cmp.Or(cfg.SegmentBytes, wal.DefaultSegmentBytes)),
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
	ledgerOpts.SegmentBytes = ledgerSize
	s.audit = newAudit(cfg.DataDir)
	s.ledger, err = openLedger(filepath.Join(cfg.DataDir, "ledger"), ledgerOpts, s.log, cfg.LedgerRetention)
	if err != nil {
		return nil, fmt.Errorf("participant: opening ledger in %s: %w", cfg.DataDir, err)
	}
	s.res = newGuarded(cfg.Resource)
	s.durable, _ = cfg.Resource.(Durable)
	if s.durable == nil {
		s.forward, _ = cfg.Resource.(Forwarding)
	}
	var res engine.Resource = s.res
	if pv, ok := cfg.Resource.(engine.Preventer); ok && s.durable != nil {
		// A durable resource with a compare-and-swap (participant/postgres):
		// the machine prevents through it, and staged decisions may name
		// this participant.
		res = guardedPreventer{guarded: s.res, pv: pv}
		s.prevents = true
	}
	s.machine = engine.NewParticipant(engine.ParticipantConfig{
		Name:              cfg.Name,
		InquireAfterTicks: cfg.ticks(cfg.InquireAfter),
		InquireMaxTicks:   cfg.ticks(cfg.InquireMax),
		RememberTicks:     cfg.ticks(cfg.Remember),
		CheckpointEvery:   cfg.CheckpointEvery,
		DurableResource:   s.durable != nil,
	}, res)
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
	if s.forward != nil {
		if t, ok := s.forward.(Traced); ok && s.tr != nil {
			t.TraceWith(s.tr.context)
		}
		s.forward.Attach(func(m engine.Message) {
			m.To = s.cfg.Name
			s.pump.Inject(&m) // votes: bounded by the prepares in flight
		})
	}
	// A replicated coordinator (docs/ha.md): votes and acks go back to the
	// replica that asked, inquiries to the one that leads (route.go), and
	// to every replica when this participant does not know which.
	if cfg.Cluster == nil && strings.Contains(cfg.Coordinator, ",") {
		s.route = newRouter(cfg.InquireAfter, max(cfg.InquireAfter, time.Second))
	}
	if cfg.Cluster != nil {
		s.dialGroups(cfg.Cluster)
	}
	for i, addr := range strings.Split(cfg.Coordinator, ",") {
		p := s.dialCoordinator(addr)
		if i == 0 {
			s.coord = p
		} else {
			s.replicas = append(s.replicas, p)
		}
		if g := s.groupAt(i); g != nil {
			g.peers = append(g.peers, p)
		}
	}
	var ln net.Listener
	if s.ln, ln, err = node.Listen(cfg.Listener, cfg.Listen, cfg.TLS); err != nil {
		return nil, fmt.Errorf("participant: %w", err)
	}
	if cfg.HTTP != "" {
		if s.http, err = obs.Start(cfg.HTTP, s.reg, s.Err, s.consoleRoutes()...); err != nil {
			return nil, fmt.Errorf("participant: %w", err)
		}
	}
	door := &frontDoor{s: s}
	s.metrics = newMetrics(s, door)
	s.mux = mux.NewServer(mux.ServerOptions{Conn: mux.Options{
		Handler:    door,
		Logger:     cfg.Logger,
		NoCoalesce: cfg.NoCoalesce,
		// Prevent: a resource whose durability is this participant's own
		// log (the bank, an embedded in-memory resource) can make "never
		// prepare" durable and atomic with a prepare, and so can a
		// durable resource with a compare-and-swap of its own
		// (engine.Preventer: PostgreSQL, MySQL/MariaDB). One without, or
		// a forwarded service (HTTP), is left classic (docs/protocol.md,
		// "Participants that keep durability elsewhere"): their
		// transactions run classic.
		Answer: wire.Hello{Role: wire.RoleParticipant, Name: []byte(cfg.Name),
			Prevent: s.durable == nil && s.forward == nil || s.prevents},
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

// dialCoordinator starts the connections to the coordinator (one replica
// of it) at addr.
func (s *Server) dialCoordinator(addr string) *mux.Peer {
	return mux.NewPeer(addr, mux.PeerOptions{
		Conn:  mux.Options{Logger: s.cfg.Logger, NoCoalesce: s.cfg.NoCoalesce},
		Hello: wire.Hello{Role: wire.RoleParticipant, Name: []byte(s.cfg.Name)},
		// The map version as it is when each connection is made (none
		// without a map: the Hello is then as before the flag existed).
		Refresh: func(h *wire.Hello) { h.MapVersion = s.ClusterVersion() },
		// Votes go out only once the coordinator has accepted us by name.
		Check: func(h wire.Hello) error {
			if h.Role != wire.RoleCoordinator {
				return errors.New("want the coordinator")
			}
			return nil
		},
		Dial:  link.Dialer(s.cfg.TLS),
		Conns: s.cfg.ConnsToCoordinator,
	})
}

// logSpace is what a log with segments of size bytes needs to start: the
// segment being written, the one before it until retirement catches up,
// and the ones the preparer keeps ready.
func logSpace(name, dir string, size int64) datadir.LogSpace {
	return datadir.LogSpace{Name: name, Dir: dir, Segments: wal.DefaultSegmentsAhead + 2, SegmentBytes: size}
}

// WaitConnected waits until the participant has a connection to the
// coordinator (or ctx ends): with a cluster map, to every replica of every
// group the map in use serves (waitGroups).
func (s *Server) WaitConnected(ctx context.Context) error {
	if s.cluster.Load() != nil {
		return s.waitGroups(ctx)
	}
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
	if serving && s.forward != nil {
		p.Stores = append(p.Stores, s.forward.Close)
	}
	if s.ledger != nil {
		p.Stores = append(p.Stores, s.ledger.close)
	}
	p.Stores = append(p.Stores, s.closeAdded)
	return p
}

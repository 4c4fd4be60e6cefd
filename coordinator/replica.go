package coordinator

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/commitd/commitd/protocol"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/internal/datadir"
	"github.com/commitd/commitd/internal/pump"
	"github.com/commitd/commitd/internal/raftlog"
	"github.com/commitd/commitd/net/link"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/wal"
)

// A replicated coordinator (Config.Peers; docs/ha.md) runs one raft node
// on a goroutine of its own (replica.run): the shards' records become raft
// entries, a record is durable to its shard once its entry is committed
// (on a quorum), and only the leader runs shards. Each time this replica
// becomes leader it starts a reign: fresh shards restored from the
// committed records, exactly as a restarted coordinator restores its log,
// with their own pumps over a replog. When it stops leading — its term
// changed or CheckQuorum deposed it — the reign ends at once: its pumps
// stop, its shards and everything they held in flight are dropped, and
// its clients' connections are closed so that they see "unknown".

// Limits of the replication.
const (
	// maxEntryBytes bounds one raft entry (a batch of records) and raft's
	// MaxSizePerMsg, so that an append message (at most MaxSizePerMsg of
	// entries, plus one) fits in one wire.Raft frame.
	maxEntryBytes = 24 << 10
	// replicaInbox is how many raft messages wait for the raft goroutine;
	// beyond it they are dropped and counted (raft repeats what matters).
	replicaInbox = 4096
	// entryHeader: u64 term | u64 proposer | u64 first LSN | u32 n.
	entryHeader = 28
	// maxRaftMessageBytes bounds one raft message on the wire, a snapshot
	// in several frames (wire.Raft.More): what a connection may queue.
	maxRaftMessageBytes = mux.DefaultMaxPendingBytes - 64<<10
)

var errDeposed = errors.New("coordinator: no longer the leader")

func (c *Config) validateReplica() error {
	id := raftlog.Identity{ID: c.ID, Peers: c.Peers, Join: c.Join}
	if err := id.Validate(); err != nil {
		return fmt.Errorf("coordinator: --id/--peers: %w", err)
	}
	if c.Listener == nil && c.Listen != c.Peers[c.ID] {
		return fmt.Errorf("coordinator: --listen %s is not replica %d's address in --peers (%s)", c.Listen, c.ID, c.Peers[c.ID])
	}
	return nil
}

// replica is this coordinator's raft node and what it leads.
type replica struct {
	// heard is when a raft message last came from each other replica
	// (raft goroutine only): members.go's up() uses it beside raft's
	// RecentActive, which CheckQuorum clears every election timeout.
	heard map[uint64]time.Time
	s     *Server
	id    uint64
	inbox chan *pb.Message // from the front door's readers
	props chan struct{}    // capacity 1: a reign's records wait to be proposed
	ops   chan *memberOp   // admin replicas requests (members.go)

	// The configuration last applied (members.go); conns follow it: one to
	// every other member, owned by run (by openReplica before it starts).
	mem         atomic.Pointer[memberTable]
	conns       map[uint64]*mux.Peer
	confState   *pb.ConfState // owned by run: raft's, as last applied
	confChanged bool          // owned by run: snapshot at the next compact
	op          *memberOp     // owned by run: the change in progress

	// The participants as the log sets them, and the changes waiting to
	// apply (partmembers.go).
	parts partState

	// Owned by run.
	log         *raftlog.Log
	rn          *raft.RawNode
	open        map[protocol.TxnID][]byte // committed commit and staged records without a committed end or abort
	appliedTerm uint64                    // term of the last entry applied
	applied     uint64                    // index of the last entry applied
	snapIndex   uint64                    // index of the latest snapshot
	reign       *reign
	outBuf      []byte
	ended       memory // what ended or was aborted, for a new reign (window.go)

	cur     atomic.Pointer[reign]         // the reign the front door routes to; nil when not leading
	status  atomic.Pointer[replicaStatus] // published by run
	dropped atomic.Uint64                 // raft messages dropped: inbox full, not connected, too large
	// staleEntries counts raft entries applied without their records: a
	// deposed reign's, appended in a later term (apply).
	staleEntries atomic.Uint64
}

type replicaStatus struct {
	role            string
	leader          uint64
	term            uint64
	applied, snapAt uint64
}

// reign is one term of leadership: shards, their pumps and the log they
// append to. Its fields are set before it is published and not changed.
type reign struct {
	term   uint64
	shards []*engine.Shard
	pumps  []*pump.Pump
	stats  []shardStats
	log    *replog
	wg     sync.WaitGroup

	outputs []*shardOutput // outputs[i] is pumps[i]'s (their fields are its goroutine's)

	unproposed [][]byte // owned by run: payloads raft dropped, proposed again
}

// openReplica opens the raft log and makes the replica; shards come with
// leadership.
func (s *Server) openReplica() error {
	cfg := &s.cfg
	r := &replica{
		s:         s,
		id:        cfg.ID,
		conns:     make(map[uint64]*mux.Peer),
		inbox:     make(chan *pb.Message, replicaInbox),
		props:     make(chan struct{}, 1),
		ops:       make(chan *memberOp),
		open:      make(map[protocol.TxnID][]byte),
		confState: &pb.ConfState{},
		ended:     newMemory(2*cfg.Remember, 2*max(cfg.MaxTxns, 1)),
	}
	r.status.Store(&replicaStatus{role: roleName(raft.StateFollower)})
	dir := filepath.Join(cfg.DataDir, "raft")
	if cfg.FS == nil {
		// As for a lone coordinator's log (openLog): too little room for
		// the segments fails here, with the sizes.
		if err := datadir.CheckSpace(cfg.DataDir, []datadir.LogSpace{logSpace("raft log", dir, cfg.SegmentBytes)}, datadir.FreeBytes); err != nil {
			return fmt.Errorf("coordinator: %w", err)
		}
	}
	var err error
	r.log, err = raftlog.Open(dir, wal.Options{
		FS:           cfg.FS,
		SegmentBytes: cfg.SegmentBytes,
		OnSync:       s.metrics.observeSync,
		Logger:       cfg.Logger,
	}, raftlog.Identity{ID: cfg.ID, Peers: cfg.Peers, Join: cfg.Join})
	if err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	// The latest snapshot is the state up to its index (the base one, at
	// 1, holds nothing).
	sn := r.log.Snapshot()
	if err := r.restoreSnapshot(sn); err != nil {
		_ = r.log.Close()
		return err
	}
	r.rn, err = raft.NewRawNode(&raft.Config{
		Applied:         r.applied,
		ID:              cfg.ID,
		ElectionTick:    cfg.ElectionTicks,
		HeartbeatTick:   1,
		Storage:         r.log.Storage(),
		MaxSizePerMsg:   maxEntryBytes,
		MaxInflightMsgs: 256,
		// Bounds what a slow follower's appends hold in memory.
		MaxInflightBytes: 16 << 20,
		CheckQuorum:      true,
		PreVote:          true,
		// A leader removed from the group steps down at once (the admin
		// tool hands its leadership over first; this is the fallback).
		StepDownOnRemoval: true,
		ReadOnlyOption:    raft.ReadOnlySafe,
		// A reign's records are proposed only by the replica that leads
		// in the reign's term. A follower must never hand them to the
		// leader: raft would append them in the leader's term and a
		// deposed reign's commit record, for a transaction the new leader
		// already presumed aborted, would be committed (a chaos run found
		// exactly that: replica.propose ran between the step that made
		// it a follower and the check that ends its reign).
		DisableProposalForwarding: true,
		Logger:                    raftLogger{cfg.Logger},
	})
	if err != nil {
		r.closeConns()
		_ = r.log.Close()
		return fmt.Errorf("coordinator: %w", err)
	}
	// Apply what is committed already, so that a lone restart holds its
	// records before it hears from anyone.
	if err := r.handleReady(); err != nil {
		r.closeConns()
		_ = r.log.Close()
		return err
	}
	if err := r.checkStart(); err != nil {
		r.closeConns()
		_ = r.log.Close()
		return err
	}
	s.rep = r
	return nil
}

// step hands a raft message from another replica to the raft goroutine,
// or drops it when that is behind (raft repeats what matters).
func (r *replica) step(m *pb.Message) {
	select {
	case r.inbox <- m:
	default:
		r.dropped.Add(1)
	}
}

// run drives the raft node until the server stops.
func (r *replica) run() {
	cfg := &r.s.cfg
	ticker := time.NewTicker(cfg.RaftTick)
	defer ticker.Stop()
	defer r.closeConns()
	ticks := 0
	defer func() {
		if r.reign != nil {
			r.endReign()
		}
	}()
	for {
		select {
		case <-r.s.life.Stopping():
			return
		case <-ticker.C:
			r.rn.Tick()
			if ticks++; ticks%20 == 0 {
				if err := r.checkRemoved(); err != nil {
					r.s.life.Fail(err)
					return
				}
			}
		case op := <-r.ops:
			r.startOp(op)
		case op := <-r.parts.ops:
			r.proposeParts(op)
		case m := <-r.inbox:
			r.stepRaft(m)
			for more := true; more; {
				select {
				case m := <-r.inbox:
					r.stepRaft(m)
				default:
					more = false
				}
			}
		case <-r.props:
		}
		r.propose()
		if err := r.handleReady(); err != nil {
			r.s.life.Fail(err)
			return
		}
		if err := r.leadership(); err != nil {
			r.s.life.Fail(err)
			return
		}
		r.stepOp()
		r.stepParts()
	}
}

func (r *replica) stepRaft(m *pb.Message) {
	// Local message types never come from the network.
	if raft.IsLocalMsg(m.GetType()) {
		r.dropped.Add(1)
		return
	}
	if r.heard == nil {
		r.heard = make(map[uint64]time.Time)
	}
	r.heard[m.GetFrom()] = time.Now()
	// An error is a message for another group or a stale one: ignored.
	_ = r.rn.Step(m)
}

// handleReady persists, sends and applies everything raft has ready. The
// entries and hard state are durable before any message of the same Ready
// leaves (raft's README: nothing is sent before it is persisted).
func (r *replica) handleReady() error {
	for r.rn.HasReady() {
		rd := r.rn.Ready()
		if err := r.log.Save(&rd); err != nil {
			return fmt.Errorf("coordinator: raft log: %w", err)
		}
		if rd.Snapshot != nil && !raft.IsEmptySnap(rd.Snapshot) {
			// This replica was too far behind: the leader's state replaces
			// its own.
			if err := r.restoreSnapshot(rd.Snapshot); err != nil {
				return err
			}
		}
		r.send(rd.Messages)
		for _, e := range rd.CommittedEntries {
			if err := r.apply(e); err != nil {
				return err
			}
		}
		r.rn.Advance(rd)
	}
	return r.compact()
}

// compact snapshots the applied state every Config.RaftSnapshotEvery
// entries — the commit and staged records without an end: what a new
// leader restores from — so that neither the raft log on disk nor its
// copy in memory grows without bound. A quarter of that many entries is
// kept before the snapshot for followers a little behind; one further
// behind gets the snapshot.
func (r *replica) compact() error {
	// Also right after a configuration change, so that the snapshot raft
	// sends is never older than the configuration: raft refuses a snapshot
	// whose ConfState does not name the receiver (a replica just added).
	every := uint64(r.s.cfg.RaftSnapshotEvery)
	if r.applied < r.snapIndex+every && !r.confChanged || r.applied <= r.snapIndex {
		return nil
	}
	r.confChanged = false
	// The commits applied so far leave the raft log with the compaction:
	// their index entries must be durable first.
	if err := r.s.outcomes.sync(); err != nil {
		return err
	}
	if err := r.log.Compact(r.applied, r.confState, r.encodeOpen(), every/4); err != nil {
		return fmt.Errorf("coordinator: raft log: %w", err)
	}
	r.snapIndex = r.applied
	return nil
}

// encodeOpen is the snapshot's data: the members header (group,
// addresses, removed ids: raftlog.Members), then n × (u32 len, commit
// or staged record), in transaction order: every transaction a new leader
// must re-drive or resolve.
func (r *replica) encodeOpen() []byte {
	txns := make([]protocol.TxnID, 0, len(r.open))
	for id := range r.open {
		txns = append(txns, id)
	}
	slices.SortFunc(txns, func(a, b protocol.TxnID) int { return bytes.Compare(a[:], b[:]) })
	b := r.mem.Load().members().Append(nil)
	b = r.appendParts(b)
	for _, id := range txns {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(r.open[id])))
		b = append(b, r.open[id]...)
	}
	return b
}

// restoreSnapshot replaces the applied state with a snapshot's.
func (r *replica) restoreSnapshot(sn *pb.Snapshot) error {
	open := make(map[protocol.TxnID][]byte)
	m, d, ok, err := raftlog.ParseMembers(sn.GetData())
	if err != nil {
		return fmt.Errorf("coordinator: snapshot at %d: %w", sn.GetMetadata().GetIndex(), err)
	}
	parts, d, err := takeParts(d)
	if err != nil {
		return fmt.Errorf("coordinator: snapshot at %d: %w", sn.GetMetadata().GetIndex(), err)
	}
	var rec engine.Record
	for len(d) > 0 {
		if len(d) < 4 || len(d) < 4+int(binary.LittleEndian.Uint32(d)) {
			return fmt.Errorf("coordinator: snapshot at %d truncated: %w", sn.GetMetadata().GetIndex(), wal.ErrCorrupt)
		}
		l := int(binary.LittleEndian.Uint32(d))
		rec = engine.Record{}
		if err := rec.UnmarshalBinary(d[4 : 4+l]); err != nil || rec.Type != engine.RecCommit && rec.Type != engine.RecStaged {
			return fmt.Errorf("coordinator: snapshot at %d holds a bad record: %w", sn.GetMetadata().GetIndex(), wal.ErrCorrupt)
		}
		open[rec.Txn] = slices.Clone(d[4 : 4+l])
		if rec.Type == engine.RecCommit {
			r.s.outcomes.recordCommit(rec.Txn, rec.Participants)
		}
		d = d[4+l:]
	}
	r.open = open
	// The memory of ended transactions is not in the snapshot: complete
	// from now on.
	r.ended.reset()
	r.applied, r.snapIndex = sn.GetMetadata().GetIndex(), sn.GetMetadata().GetIndex()
	r.appliedTerm = sn.GetMetadata().GetTerm()
	r.restoreMembers(sn.GetMetadata().GetConfState(), m, ok)
	return r.restoreParts(parts)
}

func (r *replica) send(msgs []*pb.Message) {
	for _, m := range msgs {
		p := r.conns[m.GetTo()]
		if p == nil {
			r.dropped.Add(1)
			if m.GetType() == pb.MsgSnap {
				r.rn.ReportSnapshot(m.GetTo(), raft.SnapshotFailure)
			}
			continue
		}
		var err error
		r.outBuf, err = proto.MarshalOptions{}.MarshalAppend(r.outBuf[:0], m)
		if err != nil {
			panic(fmt.Sprintf("coordinator: encoding a raft message: %v", err))
		}
		if len(r.outBuf) > maxRaftMessageBytes {
			// A snapshot this large is not sent (appends are bounded by
			// maxEntryBytes); raft will try again.
			r.dropped.Add(1)
			r.rn.ReportUnreachable(m.GetTo())
			if m.GetType() == pb.MsgSnap {
				r.rn.ReportSnapshot(m.GetTo(), raft.SnapshotFailure)
			}
			continue
		}
		// One frame, or (a snapshot) several on the one connection, every
		// one but the last marked More. A connection that fails midway
		// takes the receiver's partial message with it.
		b := r.outBuf
		for err == nil && len(b) > wire.MaxPayload {
			err = p.Send(&wire.Raft{More: true, Msg: b[:wire.MaxPayload]})
			b = b[wire.MaxPayload:]
		}
		if err == nil {
			err = p.Send(&wire.Raft{Msg: b})
		}
		if err != nil {
			r.dropped.Add(1)
			r.rn.ReportUnreachable(m.GetTo())
		}
		if m.GetType() == pb.MsgSnap {
			// Raft waits for the snapshot's fate before it sends that
			// replica anything more: a lost one is sent again.
			if err != nil {
				r.rn.ReportSnapshot(m.GetTo(), raft.SnapshotFailure)
			} else {
				r.rn.ReportSnapshot(m.GetTo(), raft.SnapshotFinish)
			}
		}
	}
}

// apply applies one committed entry: every replica keeps the commit and
// staged records whose transaction has not ended, to restore a reign
// from; the leader that proposed it learns that its records are durable.
func (r *replica) apply(e *pb.Entry) error {
	r.appliedTerm, r.applied = e.GetTerm(), e.GetIndex()
	if e.GetType() != pb.EntryNormal {
		return r.applyConfChange(e)
	}
	d := e.GetData()
	if len(d) == 0 {
		return nil // a new leader's empty entry
	}
	if len(d) >= 8 && binary.LittleEndian.Uint64(d) == 0 {
		return r.applyTagged(e.GetIndex(), d) // not a reign's records (partmembers.go)
	}
	if len(d) < entryHeader {
		return fmt.Errorf("coordinator: raft entry %d: %d bytes: %w", e.GetIndex(), len(d), wal.ErrCorrupt)
	}
	term := binary.LittleEndian.Uint64(d)
	proposer := binary.LittleEndian.Uint64(d[8:])
	first := binary.LittleEndian.Uint64(d[16:])
	n := binary.LittleEndian.Uint32(d[24:])
	d = d[entryHeader:]
	if term != e.GetTerm() {
		// Proposed by a reign of another term than the one raft appended
		// it in: a deposed reign's records handed on by a follower
		// (proposal forwarding, off since; older logs may hold such an
		// entry). They were never durable to that reign's shards — it
		// ended — and the reign that leads in the entry's term may have
		// presumed their transactions aborted already: applying them
		// would commit what was told aborted. Every replica skips them
		// alike, as each applies the same entry.
		r.staleEntries.Add(1)
		r.s.cfg.Logger.Warn("coordinator replica skips a deposed reign's raft entry", "index", e.GetIndex(), "entry_term", e.GetTerm(), "reign_term", term, "proposer", proposer, "records", n)
		return nil
	}
	var rec engine.Record
	now := time.Now().UnixMilli()
	defer r.ended.prune(now, r.s.cfg.MaxIDAhead.Milliseconds())
	for i := range n {
		if len(d) < 4 || len(d) < 4+int(binary.LittleEndian.Uint32(d)) {
			return fmt.Errorf("coordinator: raft entry %d: record %d truncated: %w", e.GetIndex(), i, wal.ErrCorrupt)
		}
		l := int(binary.LittleEndian.Uint32(d))
		data := d[4 : 4+l]
		d = d[4+l:]
		rec = engine.Record{}
		if err := rec.UnmarshalBinary(data); err != nil {
			return fmt.Errorf("coordinator: raft entry %d: record %d: %v: %w", e.GetIndex(), i, err, wal.ErrCorrupt)
		}
		switch rec.Type {
		case engine.RecStaged:
			// A staged transaction (docs/ha.md, "Staged decisions in a
			// group"): every replica holds its record until its
			// decision, exactly as a restarted lone coordinator reads it
			// back, so that a new leader resolves it and never presumes
			// it aborted.
			r.ended.forget(rec.Txn)
			r.open[rec.Txn] = append([]byte(nil), data...)
		case engine.RecCommit:
			// For a staged transaction the commit record replaces its
			// staged record: restored alone, it is re-driven as any
			// commit is.
			r.ended.forget(rec.Txn)
			r.open[rec.Txn] = append([]byte(nil), data...)
			// Every replica indexes the commits it applies: committed
			// state, so any replica answers admin txn for a commit.
			r.s.outcomes.recordCommit(rec.Txn, rec.Participants)
		case engine.RecEnd:
			// A staged record ended by RecEnd is a staged transaction
			// whose every vote was read-only: the end is its decision,
			// and the memory restores the pair as such (window.go).
			if c, ok := r.open[rec.Txn]; ok {
				r.ended.add(rec.Txn, c, now)
			}
			delete(r.open, rec.Txn)
		case engine.RecAbort:
			// A staged transaction's logged abort: it ended aborted.
			if c, ok := r.open[rec.Txn]; ok && engine.RecordType(c[0]) != engine.RecStaged {
				return fmt.Errorf("coordinator: raft entry %d: record %d: an abort record for %v, which has a commit record: %w", e.GetIndex(), i, rec.Txn, wal.ErrCorrupt)
			}
			delete(r.open, rec.Txn)
			r.ended.add(rec.Txn, nil, now)
		case engine.RecAborted:
			// An abort marker (window.go); a commit record decides.
			if _, ok := r.open[rec.Txn]; !ok {
				r.ended.add(rec.Txn, nil, now)
			}
		default:
			return fmt.Errorf("coordinator: raft entry %d holds a %v record: %w", e.GetIndex(), rec.Type, wal.ErrCorrupt)
		}
	}
	if g := r.reign; g != nil && term == g.term && proposer == r.id && n > 0 {
		g.log.durableTo(wal.LSN(first + uint64(n) - 1))
	}
	return nil
}

// propose hands the reign's waiting records to raft, one entry per
// maxEntryBytes. A proposal raft drops (no leader for a moment, a
// transfer) is kept and proposed again on the next turn while the reign
// lasts; when it ends, its records die with it.
func (r *replica) propose() {
	g := r.reign
	if g == nil {
		return
	}
	if st := r.rn.BasicStatus(); st.RaftState != raft.StateLeader || st.GetTerm() != g.term {
		// Deposed since the last turn: leadership ends the reign next,
		// and its records die with it (raft would refuse them anyway,
		// with proposal forwarding off).
		return
	}
	for len(g.unproposed) > 0 {
		if r.rn.Propose(g.unproposed[0]) != nil {
			return
		}
		g.unproposed = g.unproposed[1:]
	}
	for {
		p := g.log.take(g.term, r.id)
		if p == nil {
			return
		}
		if r.rn.Propose(p) != nil {
			g.unproposed = append(g.unproposed, p)
			return
		}
	}
}

// leadership starts a reign once this replica leads and has applied every
// entry of earlier terms (its own term's first entry is applied), and ends
// it as soon as it no longer leads in that term.
func (r *replica) leadership() error {
	st := r.rn.BasicStatus()
	term := st.GetTerm()
	r.status.Store(&replicaStatus{role: roleName(st.RaftState), leader: st.Lead, term: term, applied: r.applied, snapAt: r.snapIndex})
	if g := r.reign; g != nil && (st.RaftState != raft.StateLeader || term != g.term) {
		r.s.cfg.Logger.Info("coordinator replica stops leading", "id", r.id, "term", g.term, "now", roleName(st.RaftState), "new_term", term)
		r.endReign()
	}
	if r.reign == nil && st.RaftState == raft.StateLeader && r.appliedTerm == term {
		if err := r.startReign(term); err != nil {
			return err
		}
		r.s.cfg.Logger.Info("coordinator replica leads", "id", r.id, "term", term, "restored", len(r.open))
	}
	return nil
}

// roleName is the role as admin status reports it.
func roleName(s raft.StateType) string {
	switch s {
	case raft.StateLeader:
		return "leader"
	case raft.StateCandidate:
		return "candidate"
	case raft.StatePreCandidate:
		return "pre-candidate"
	}
	return "follower"
}

// startReign makes fresh shards from the committed records and starts
// their pumps, as a restarted coordinator does with its log. A record the
// shards refuse stops the replica with that error (nothing was started).
//
// The shards' StartUnixMs is the time since which this replica's memory
// of ended and aborted transactions is complete (window.go), which they
// restore: they refuse only ids older than that (docs/ha.md, "The id
// window of a reign").
func (r *replica) startReign(term uint64) error {
	cfg := &r.s.cfg
	n := cfg.Shards
	scfg := cfg.shardConfig()
	scfg.StartUnixMs = r.ended.since
	scfg.RememberPresumedAborts = true
	g := &reign{
		term:   term,
		shards: make([]*engine.Shard, n),
		pumps:  make([]*pump.Pump, n),
		stats:  make([]shardStats, n),
		log:    &replog{props: r.props},
	}
	g.outputs = make([]*shardOutput, n)
	for i := range n {
		g.shards[i] = engine.NewShard(scfg)
		out := &shardOutput{s: r.s, shard: i}
		g.outputs[i] = out
		g.pumps[i] = pump.New(g.shards[i], g.log, out, cfg.Tick)
		out.pump = g.pumps[i]
		g.pumps[i].NoBatch = cfg.NoBatch
		g.pumps[i].OnLoop = func() {
			st := &g.stats[i]
			st.mu.Lock()
			st.s = g.shards[i].Stats()
			st.mu.Unlock()
		}
	}
	idx := make([]uint64, n)
	var lsn wal.LSN
	var rec engine.Record
	for _, data := range r.open {
		rec = engine.Record{}
		if err := rec.UnmarshalBinary(data); err != nil {
			panic(fmt.Sprintf("coordinator: a record apply accepted does not decode: %v", err))
		}
		k := engine.ShardFor(rec.Txn, n)
		if err := g.shards[k].Restore(rec); err != nil {
			return fmt.Errorf("coordinator: restoring a reign of term %d: %w", term, err)
		}
		idx[k]++
		lsn++
		g.pumps[k].Restored(idx[k], lsn)
	}
	lsn, err := r.ended.restore(g, idx, lsn)
	if err != nil {
		return fmt.Errorf("coordinator: restoring a reign of term %d: %w", term, err)
	}
	g.log.mu.last, g.log.mu.durable = lsn, lsn
	r.reign = g
	for i, pm := range g.pumps {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			if err := pm.Run(); err != nil && !errors.Is(err, pump.ErrStopped) {
				r.s.life.Fail(fmt.Errorf("coordinator shard %d: %w", i, err))
			}
		}()
	}
	r.cur.Store(g)
	return nil
}

// endReign stops the reign's shards and drops what they held: clients
// waiting on them see their connection close (unknown), participants
// inquire at the next leader.
func (r *replica) endReign() {
	g := r.reign
	r.reign = nil
	r.cur.Store(nil)
	for _, pm := range g.pumps {
		pm.Stop()
	}
	g.wg.Wait()
	g.log.fail(errDeposed)
	r.s.clients.closeClients()
}

// report fills a replica's part of the status and returns the shard
// statistics of the reign, if any.
func (r *replica) report(st *Status) []shardStats {
	rs := r.status.Load()
	st.Role, st.Term, st.RaftApplied, st.RaftSnapshot = rs.role, rs.term, rs.applied, rs.snapAt
	st.RaftStaleEntries = r.staleEntries.Load()
	t := r.mem.Load()
	if rs.leader != 0 {
		st.Leader = t.addrs[rs.leader]
	}
	m := t.list(rs.leader, rs.term, nil, nil)
	st.Members = &m
	if g := r.cur.Load(); g != nil {
		st.Shards = len(g.shards)
		return g.stats
	}
	return nil
}

// notLeader answers a request this replica cannot serve: try the leader.
func (r *replica) notLeader(c *mux.Conn, reqID uint64) error {
	var addr []byte
	if st := r.status.Load(); st.leader != 0 && st.leader != r.id {
		addr = []byte(r.mem.Load().addrs[st.leader])
	}
	return c.Reply(reqID, &wire.Error{Code: wire.CodeNotLeader, Message: addr})
}

// pumpFor returns the pump of the shard that owns id, or nil when this
// replica does not lead.
func (s *Server) pumpFor(id protocol.TxnID) *pump.Pump {
	pumps := s.pumps
	if s.rep != nil {
		g := s.rep.cur.Load()
		if g == nil {
			return nil
		}
		pumps = g.pumps
	}
	if len(pumps) == 1 {
		return pumps[0] // ShardFor(id, 1) is 0 for every id: skip hashing it
	}
	return pumps[engine.ShardFor(id, len(pumps))]
}

// admit checks the Hello of a connection that says it is another replica
// of this group (r nil: this coordinator runs alone and refuses it): its
// name must be the raft id of one of Config.Peers other than this one and,
// with TLS, its certificate must be valid for Config.ReplicaIdentity, or
// by default for the host of that peer's address — the identity this
// replica requires when it dials that peer. Only then does the mux let its Raft frames through
// (wire.Sender(TypeRaft) is RoleReplica).
func (r *replica) admit(c *mux.Conn, name []byte) error {
	if r == nil {
		return mux.Refuse("this coordinator is not a replica of a group (no --peers)")
	}
	id, group, err := parseReplicaName(string(name))
	t := r.mem.Load()
	addr, ok := t.addrs[id]
	switch {
	case err == nil && t.wasRemoved(id):
		return mux.Refuse("replica %d %s", id, removedNote)
	case err != nil || !ok || id == r.id:
		return mux.Refuse("replica %q is not a member of this replica's group (members: %s)", name, raftlog.PeerList(t.addrs))
	case group != 0 && t.group != 0 && group != t.group:
		return mux.Refuse("replica %d %s: it is of group %016x, this replica of group %016x (a replica that joins a group must start with --join and an empty data directory)",
			id, otherGroupNote, group, t.group)
	}
	if err := link.Identity(c, r.s.cfg.replicaIdentities(addr)); err != nil {
		return mux.Refuse("replica %d not accepted: %v", id, err)
	}
	return nil
}

// raftMessage takes a Raft frame from another replica's connection: the mux
// has checked that the connection said Hello as a replica, and admit that
// it is one of Peers.
func (d *frontDoor) raftMessage(c *mux.Conn, st *connState, f wire.Frame) error {
	s := d.s
	_, name := c.Hello()
	if s.rep == nil {
		return mux.Refuse("this coordinator is not a replica of a group")
	}
	var w wire.Raft
	if err := w.Decode(f); err != nil {
		return err
	}
	msg := w.Msg
	if w.More || st.raft != nil {
		// A message in several frames (a snapshot): gathered here, on
		// this connection's reader, within the sender's own bound.
		if len(st.raft)+len(w.Msg) > maxRaftMessageBytes {
			return fmt.Errorf("%w: a raft message of more than %d bytes", wire.ErrMalformed, maxRaftMessageBytes)
		}
		st.raft = append(st.raft, w.Msg...)
		if w.More {
			return nil
		}
		msg, st.raft = st.raft, nil
	}
	m := &pb.Message{}
	if err := proto.Unmarshal(msg, m); err != nil {
		return fmt.Errorf("undecodable raft message: %w", err)
	}
	id, _, err := parseReplicaName(name)
	if err != nil || id != m.GetFrom() || id == s.rep.id {
		// Every identity on a connection is checked (FACTS.md, rule 11).
		return mux.Refuse("raft message from %d on the connection of replica %q", m.GetFrom(), name)
	}
	if t := s.rep.mem.Load(); t.addrs[id] == "" {
		// Admitted once, no longer a member: its connection ends here.
		if t.wasRemoved(id) {
			return mux.Refuse("replica %d %s", id, removedNote)
		}
		return mux.Refuse("replica %d is not a member of this replica's group", id)
	}
	s.rep.step(m)
	return nil
}

// closeClients closes every client connection: their requests in flight
// end "unknown".
func (t *clientTable) closeClients() {
	t.mu.RLock()
	var conns []*mux.Conn
	for c := range t.ids {
		if role, _ := c.Hello(); role == wire.RoleClient {
			conns = append(conns, c)
		}
	}
	t.mu.RUnlock()
	for _, c := range conns {
		c.Close()
	}
}

// replog is a reign's log under its pumps: records appended are batched
// into raft entries by the raft goroutine, and are durable once their
// entry is committed. LSNs are the reign's own (1, 2, 3… after the
// restored records), not the raft index.
type replog struct {
	props chan struct{} // the replica's
	mu    struct {
		sync.Mutex
		last, durable wal.LSN
		batch         []byte // records waiting: n × (u32 len, record)
		n             uint32
		first         wal.LSN
		waiters       []logWaiter
		err           error
	}
}

type logWaiter struct {
	lsn wal.LSN
	w   wal.Waiter
}

// Append implements pump.Log.
func (l *replog) Append(rec []byte) (wal.LSN, error) {
	l.mu.Lock()
	if l.mu.err != nil {
		err := l.mu.err
		l.mu.Unlock()
		return 0, err
	}
	l.mu.last++
	if l.mu.n == 0 {
		l.mu.first = l.mu.last
	}
	l.mu.batch = binary.LittleEndian.AppendUint32(l.mu.batch, uint32(len(rec)))
	l.mu.batch = append(l.mu.batch, rec...)
	l.mu.n++
	lsn := l.mu.last
	l.mu.Unlock()
	select {
	case l.props <- struct{}{}:
	default:
	}
	return lsn, nil
}

// AppendLazy implements pump.Log: raft batches anyway.
func (l *replog) AppendLazy(rec []byte) (wal.LSN, error) { return l.Append(rec) }

// LastLSN implements pump.Log.
func (l *replog) LastLSN() wal.LSN {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.last
}

// Notify implements pump.Log.
func (l *replog) Notify(lsn wal.LSN, w wal.Waiter) {
	l.mu.Lock()
	if err := l.mu.err; err != nil {
		l.mu.Unlock()
		w.LogFailed(lsn, err)
		return
	}
	if lsn <= l.mu.durable {
		d := l.mu.durable
		l.mu.Unlock()
		w.LogDurable(d)
		return
	}
	l.mu.waiters = append(l.mu.waiters, logWaiter{lsn, w})
	l.mu.Unlock()
}

// take returns the next entry to propose (nil if nothing waits): up to
// maxEntryBytes of records, at least one.
func (l *replog) take(term, proposer uint64) []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.n == 0 {
		return nil
	}
	b := l.mu.batch
	cut, n := 0, uint32(0)
	for cut < len(b) {
		size := 4 + int(binary.LittleEndian.Uint32(b[cut:]))
		if n > 0 && cut+size > maxEntryBytes-entryHeader {
			break
		}
		cut += size
		n++
	}
	p := make([]byte, 0, entryHeader+cut)
	p = binary.LittleEndian.AppendUint64(p, term)
	p = binary.LittleEndian.AppendUint64(p, proposer)
	p = binary.LittleEndian.AppendUint64(p, uint64(l.mu.first))
	p = binary.LittleEndian.AppendUint32(p, n)
	p = append(p, b[:cut]...)
	l.mu.batch = append(b[:0], b[cut:]...)
	l.mu.n -= n
	l.mu.first += wal.LSN(n)
	return p
}

// durableTo: every record up to lsn is committed.
func (l *replog) durableTo(lsn wal.LSN) {
	l.mu.Lock()
	if lsn <= l.mu.durable {
		l.mu.Unlock()
		return
	}
	l.mu.durable = lsn
	k := 0
	for k < len(l.mu.waiters) && l.mu.waiters[k].lsn <= lsn {
		k++
	}
	done := append([]logWaiter(nil), l.mu.waiters[:k]...)
	l.mu.waiters = append(l.mu.waiters[:0], l.mu.waiters[k:]...)
	l.mu.Unlock()
	for _, w := range done {
		w.w.LogDurable(lsn)
	}
}

// fail ends the log: nothing appended to it will be durable.
func (l *replog) fail(err error) {
	l.mu.Lock()
	l.mu.err = err
	ws := l.mu.waiters
	l.mu.waiters = nil
	l.mu.Unlock()
	for _, w := range ws {
		w.w.LogFailed(w.lsn, err)
	}
}

// raftLogger sends the raft library's logs to the coordinator's logger:
// its chatter at debug level, warnings and errors as such.
type raftLogger struct{ l *slog.Logger }

func (g raftLogger) Debug(v ...any)                 { g.l.Debug("raft: " + fmt.Sprint(v...)) }
func (g raftLogger) Debugf(format string, v ...any) { g.l.Debug("raft: " + fmt.Sprintf(format, v...)) }
func (g raftLogger) Info(v ...any)                  { g.l.Debug("raft: " + fmt.Sprint(v...)) }
func (g raftLogger) Infof(format string, v ...any)  { g.l.Debug("raft: " + fmt.Sprintf(format, v...)) }
func (g raftLogger) Warning(v ...any)               { g.l.Warn("raft: " + fmt.Sprint(v...)) }
func (g raftLogger) Warningf(format string, v ...any) {
	g.l.Warn("raft: " + fmt.Sprintf(format, v...))
}
func (g raftLogger) Error(v ...any)                 { g.l.Error("raft: " + fmt.Sprint(v...)) }
func (g raftLogger) Errorf(format string, v ...any) { g.l.Error("raft: " + fmt.Sprintf(format, v...)) }
func (g raftLogger) Fatal(v ...any)                 { panic("raft: " + fmt.Sprint(v...)) }
func (g raftLogger) Fatalf(format string, v ...any) { panic("raft: " + fmt.Sprintf(format, v...)) }
func (g raftLogger) Panic(v ...any)                 { panic("raft: " + fmt.Sprint(v...)) }
func (g raftLogger) Panicf(format string, v ...any) { panic("raft: " + fmt.Sprintf(format, v...)) }

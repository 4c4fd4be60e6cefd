package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/commitd/commitd/wal"
)

// Record kinds.
const (
	kindEntry     = 1
	kindHardState = 2
	kindIdentity  = 3
	kindSnapshot  = 4 // received from the leader: replaces every entry
	kindCompacted = 5 // made here: entries up to its index are in it
)

// ErrIdentity is wrapped by Open's error when the data directory belongs
// to another replica or another group.
var ErrIdentity = errors.New("raftlog: data directory belongs to another replica")

// ErrRemoved is wrapped by the error of a replica that was removed from
// its group: it must not serve again. Its text reads after the replica's
// name ("replica 3 was removed from the group").
var ErrRemoved = errors.New("was removed from the group")

// MaxAddrLen bounds a peer's address in the identity record.
const MaxAddrLen = 255

// Identity is who a replica is: its id and how it came to the group.
//
// A replica that bootstraps a group (Join false) is given the group's
// first configuration, Peers (id → address, its own id included), and
// fixes the group id from it (Group). A replica that joins an existing
// group (Join true) has no configuration of its own: Peers are only the
// members it may hear from before the leader sends it one, and it learns
// the group id from the first snapshot the leader sends (Save). Either
// way, once the log holds a configuration the log's wins: Peers given at a
// restart are checked against it (Members.CheckPeers), not the other way
// round.
type Identity struct {
	ID    uint64
	Peers map[uint64]string
	Join  bool
}

// Group is the group id a bootstrapping replica fixes: FNV-64a of the
// sorted "id=addr" pairs of its first configuration, so that replicas
// bootstrapped with different peer lists have different groups. It is
// stored in the identity record and never recomputed from a later
// command line.
func (id Identity) Group() uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(id.peerList()))
	return h.Sum64()
}

// peerList is the sorted "1=a,2=b" form, for errors and the group id.
func (id Identity) peerList() string { return PeerList(id.Peers) }

// PeerList formats id → address pairs as the sorted "1=a,2=b" form of
// --peers.
func PeerList(peers map[uint64]string) string {
	ids := make([]uint64, 0, len(peers))
	for k := range peers {
		ids = append(ids, k)
	}
	slices.Sort(ids)
	var b strings.Builder
	for i, k := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%d=%s", k, peers[k])
	}
	return b.String()
}

// Validate checks the identity itself: a non-zero id that is one of the
// peers, addresses present, bounded and distinct.
func (id Identity) Validate() error {
	if id.ID == 0 {
		return errors.New("raftlog: replica id 0 is invalid (ids start at 1)")
	}
	if _, ok := id.Peers[id.ID]; !ok {
		return fmt.Errorf("raftlog: replica id %d is not among the peers %s", id.ID, id.peerList())
	}
	seen := make(map[string]uint64, len(id.Peers))
	for k, addr := range id.Peers {
		if k == 0 {
			return errors.New("raftlog: peer id 0 is invalid (ids start at 1)")
		}
		if addr == "" || len(addr) > MaxAddrLen {
			return fmt.Errorf("raftlog: peer %d's address %q must be 1 to %d bytes", k, addr, MaxAddrLen)
		}
		if other, dup := seen[addr]; dup {
			return fmt.Errorf("raftlog: peers %d and %d have the same address %s", min(k, other), max(k, other), addr)
		}
		seen[addr] = k
	}
	return nil
}

// stored is the identity record: the group id (0 while a joining replica
// has not learned it), the replica's id and, for a replica that
// bootstrapped its group, the group's first configuration (none for one
// that joined).
type stored struct {
	group uint64
	id    uint64
	peers map[uint64]string
}

func (st stored) joined() bool { return len(st.peers) == 0 }

func (st stored) String() string {
	if st.joined() {
		if st.group == 0 {
			return fmt.Sprintf("replica %d, joining a group (no snapshot from its leader yet)", st.id)
		}
		return fmt.Sprintf("replica %d of group %016x (joined)", st.id, st.group)
	}
	return fmt.Sprintf("replica %d of group %016x (bootstrapped with peers %s)", st.id, st.group, PeerList(st.peers))
}

func (st stored) appendRecord(b []byte) []byte {
	b = append(b, kindIdentity)
	b = binary.LittleEndian.AppendUint64(b, st.group)
	b = binary.LittleEndian.AppendUint64(b, st.id)
	return appendAddrs(b, st.peers)
}

// appendAddrs appends u32 n | n × (u64 id, u16 len, addr), by id.
func appendAddrs(b []byte, addrs map[uint64]string) []byte {
	ids := make([]uint64, 0, len(addrs))
	for k := range addrs {
		ids = append(ids, k)
	}
	slices.Sort(ids)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(ids)))
	for _, k := range ids {
		b = binary.LittleEndian.AppendUint64(b, k)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(addrs[k])))
		b = append(b, addrs[k]...)
	}
	return b
}

// parseAddrs reads what appendAddrs wrote (ids increasing, addresses 1 to
// MaxAddrLen bytes) and returns the rest.
func parseAddrs(b []byte) (map[uint64]string, []byte, bool) {
	if len(b) < 4 {
		return nil, nil, false
	}
	n := binary.LittleEndian.Uint32(b)
	b = b[4:]
	if uint64(n) > uint64(len(b))/10 {
		return nil, nil, false
	}
	addrs := make(map[uint64]string, n)
	var prev uint64
	for range n {
		if len(b) < 10 {
			return nil, nil, false
		}
		k := binary.LittleEndian.Uint64(b)
		l := int(binary.LittleEndian.Uint16(b[8:]))
		if len(b) < 10+l || l == 0 || l > MaxAddrLen {
			return nil, nil, false
		}
		if k <= prev {
			return nil, nil, false // ids are written in increasing order, from 1
		}
		prev = k
		addrs[k] = string(b[10 : 10+l])
		b = b[10+l:]
	}
	return addrs, b, true
}

func parseIdentity(b []byte) (stored, error) {
	bad := fmt.Errorf("raftlog: malformed identity record: %w", wal.ErrCorrupt)
	if len(b) < 1+8+8+4 {
		return stored{}, bad
	}
	st := stored{group: binary.LittleEndian.Uint64(b[1:]), id: binary.LittleEndian.Uint64(b[9:])}
	peers, rest, ok := parseAddrs(b[17:])
	if !ok || len(rest) != 0 {
		return stored{}, bad
	}
	if len(peers) > 0 {
		st.peers = peers
	}
	return st, nil
}

// firstIndex is the index of the first entry: every replica's log starts
// after the same base snapshot (see base).
const firstIndex = 2

// base is the snapshot a bootstrapped group's logs start from: index 1,
// term 1, every peer of the first configuration a voter, and the Members
// header (group id and addresses) as its data. It is what the raft
// library's Bootstrap would log as its first entries, without logging
// them: it follows from the identity record, so it is not stored, and a
// restarted replica knows its first configuration before it applies
// anything. A replica that joins has no base: its log starts with the
// leader's snapshot.
func (st stored) base() *pb.Snapshot {
	ids := make([]uint64, 0, len(st.peers))
	for k := range st.peers {
		ids = append(ids, k)
	}
	slices.Sort(ids)
	m := Members{Group: st.group, Addrs: st.peers}
	return &pb.Snapshot{Data: m.Append(nil), Metadata: &pb.SnapshotMetadata{
		Index:     proto.Uint64(firstIndex - 1),
		Term:      proto.Uint64(1),
		ConfState: &pb.ConfState{Voters: ids},
	}}
}

// Log is a replica's raft state on a WAL. Save is called by the one
// goroutine that drives the raft node; Storage is read by that node.
type Log struct {
	wal     *wal.Log
	storage *raft.MemoryStorage
	id      stored        // the identity record; its group is learned by a joiner
	hs      *pb.HardState // last saved
	fresh   bool
	buf     []byte
	lsns    []entryLSN // where each live entry is in the WAL, by index
}

type entryLSN struct {
	index uint64
	lsn   wal.LSN
}

// note records that entry index is at lsn; a rewritten index drops what
// it replaces.
func (l *Log) note(index uint64, lsn wal.LSN) {
	for len(l.lsns) > 0 && l.lsns[len(l.lsns)-1].index >= index {
		l.lsns = l.lsns[:len(l.lsns)-1]
	}
	l.lsns = append(l.lsns, entryLSN{index, lsn})
}

// Open opens (creating if needed) the WAL in dir with opts and replays it.
// A new log is given id's identity — a replica that bootstraps its group
// with id.Peers as the first configuration, or one that joins (id.Join)
// and waits for its leader's snapshot. An existing log must belong to the
// same replica id; a directory that bootstrapped a group cannot join one.
// Whether id.Peers agree with the configuration in the log is the
// caller's to check (Members.CheckPeers), once it has applied the log.
func Open(dir string, opts wal.Options, id Identity) (*Log, error) {
	if err := id.Validate(); err != nil {
		return nil, err
	}
	w, err := wal.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("raftlog: %w", err)
	}
	l := &Log{wal: w, storage: raft.NewMemoryStorage(), hs: &pb.HardState{}}
	if err := l.replay(id); err != nil {
		_ = w.Close()
		return nil, err
	}
	return l, nil
}

func (l *Log) replay(want Identity) error {
	var ents []*pb.Entry
	var hs *pb.HardState
	var have *stored
	var snap *pb.Snapshot
	base := uint64(firstIndex - 1) // the index entries follow
	err := l.wal.Replay(l.wal.Recovery().FirstLSN, func(lsn wal.LSN, data []byte) error {
		if len(data) == 0 {
			return fmt.Errorf("raftlog: empty record at LSN %d: %w", lsn, wal.ErrCorrupt)
		}
		switch data[0] {
		case kindIdentity:
			// The first record of a new log; written again before every
			// snapshot, since retiring segments may drop the first, and
			// when a joining replica learns its group.
			got, err := parseIdentity(data)
			if err != nil {
				return err
			}
			if !got.joined() && got.group != (Identity{Peers: got.peers}).Group() {
				return fmt.Errorf("raftlog: identity at LSN %d does not match its group id: %w", lsn, wal.ErrCorrupt)
			}
			if have != nil && (have.id != got.id || have.joined() != got.joined() || (have.group != 0 && have.group != got.group)) {
				return fmt.Errorf("raftlog: identities differ at LSN %d (%v, then %v): %w", lsn, have, got, wal.ErrCorrupt)
			}
			have = &got
		case kindSnapshot, kindCompacted:
			sn := &pb.Snapshot{}
			if err := proto.Unmarshal(data[1:], sn); err != nil {
				return fmt.Errorf("raftlog: snapshot at LSN %d: %v: %w", lsn, err, wal.ErrCorrupt)
			}
			i := sn.GetMetadata().GetIndex()
			if data[0] == kindSnapshot {
				ents, l.lsns = ents[:0], l.lsns[:0]
			} else {
				k := 0
				for k < len(ents) && ents[k].GetIndex() <= i {
					k++
				}
				ents = ents[k:]
				for len(l.lsns) > 0 && l.lsns[0].index <= i {
					l.lsns = l.lsns[1:]
				}
				if len(ents) > 0 && ents[0].GetIndex() != i+1 {
					return fmt.Errorf("raftlog: entries after the snapshot at LSN %d start at %d, not %d: %w", lsn, ents[0].GetIndex(), i+1, wal.ErrCorrupt)
				}
			}
			snap, base = sn, i
		case kindEntry:
			e := &pb.Entry{}
			if err := proto.Unmarshal(data[1:], e); err != nil {
				return fmt.Errorf("raftlog: entry at LSN %d: %v: %w", lsn, err, wal.ErrCorrupt)
			}
			i := e.GetIndex()
			if i <= base {
				return fmt.Errorf("raftlog: entry %d at LSN %d is inside the snapshot at %d: %w", i, lsn, base, wal.ErrCorrupt)
			}
			if len(ents) > 0 && i <= ents[len(ents)-1].GetIndex() {
				// Rewritten: drop what it replaces (ents is contiguous).
				first := ents[0].GetIndex()
				if i < first {
					ents = ents[:0]
				} else {
					ents = ents[:i-first]
				}
			}
			// After retirement, entries past a snapshot may come before
			// it in the WAL: the first entry may be past base, and the
			// snapshot record (or the end) checks where it starts.
			next := i
			if len(ents) > 0 {
				next = ents[len(ents)-1].GetIndex() + 1
			}
			if i != next {
				return fmt.Errorf("raftlog: entry %d at LSN %d leaves a gap after %d: %w", i, lsn, next-1, wal.ErrCorrupt)
			}
			ents = append(ents, e)
			l.note(i, lsn)
		case kindHardState:
			h := &pb.HardState{}
			if err := proto.Unmarshal(data[1:], h); err != nil {
				return fmt.Errorf("raftlog: hard state at LSN %d: %v: %w", lsn, err, wal.ErrCorrupt)
			}
			hs = h
		default:
			return fmt.Errorf("raftlog: unknown record kind %d at LSN %d: %w", data[0], lsn, wal.ErrCorrupt)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("raftlog: replaying: %w", err)
	}
	if have == nil {
		l.fresh = true
		l.id = stored{id: want.ID}
		if !want.Join {
			l.id.group, l.id.peers = want.Group(), want.Peers
			if err := l.storage.ApplySnapshot(l.id.base()); err != nil {
				return fmt.Errorf("raftlog: %w", err)
			}
		}
		if _, err := l.wal.AppendSync(l.id.appendRecord(nil)); err != nil {
			return fmt.Errorf("raftlog: writing identity: %w", err)
		}
		return nil
	}
	l.id = *have
	if have.id != want.ID {
		return fmt.Errorf("%w: it holds %v, started as replica %d", ErrIdentity, have, want.ID)
	}
	if want.Join && !have.joined() {
		return fmt.Errorf("%w: --join, but it holds %v; a joining replica starts with an empty data directory (restart this one without --join)", ErrIdentity, have)
	}
	if len(ents) > 0 && ents[0].GetIndex() != base+1 {
		return fmt.Errorf("raftlog: entries start at %d, after a snapshot at %d: %w", ents[0].GetIndex(), base, wal.ErrCorrupt)
	}
	if !have.joined() {
		if err := l.storage.ApplySnapshot(have.base()); err != nil {
			return fmt.Errorf("raftlog: %w", err)
		}
	}
	if snap != nil {
		if err := l.storage.ApplySnapshot(snap); err != nil {
			return fmt.Errorf("raftlog: %w", err)
		}
	}
	if hs != nil {
		last := base
		if len(ents) > 0 {
			last = ents[len(ents)-1].GetIndex()
		}
		if have.joined() && snap == nil {
			last = 0
		}
		if hs.GetCommit() > last {
			return fmt.Errorf("raftlog: hard state commits %d beyond the log: %w", hs.GetCommit(), wal.ErrCorrupt)
		}
		l.hs = hs
		if err := l.storage.SetHardState(hs); err != nil {
			return fmt.Errorf("raftlog: %w", err)
		}
	}
	if len(ents) > 0 {
		if have.joined() && snap == nil {
			return fmt.Errorf("raftlog: a joining replica's log holds entries before its first snapshot: %w", wal.ErrCorrupt)
		}
		if err := l.storage.Append(ents); err != nil {
			return fmt.Errorf("raftlog: %w", err)
		}
	}
	l.fresh = hs == nil && len(ents) == 0 && snap == nil
	return nil
}

// Group is the group id: fixed at bootstrap, learned by a joining replica
// from its first snapshot (0 until then).
func (l *Log) Group() uint64 { return l.id.group }

// Storage is what the raft node reads (raft.Config.Storage).
func (l *Log) Storage() *raft.MemoryStorage { return l.storage }

// Fresh reports whether the log held no raft state when opened: the
// replica bootstraps its group.
func (l *Log) Fresh() bool { return l.fresh }

// HardState returns the last hard state saved (empty if none).
func (l *Log) HardState() *pb.HardState { return l.hs }

// Save makes rd's entries and hard state durable — appended back to back
// so that one fdatasync covers them — and then adds them to the storage.
// It returns once they are durable, or the log's error (which poisons it:
// the replica must stop).
func (l *Log) Save(rd *raft.Ready) error {
	hs := rd.HardState
	if hs != nil && raft.IsEmptyHardState(hs) {
		hs = nil
	}
	snap := rd.Snapshot
	if snap != nil && raft.IsEmptySnap(snap) {
		snap = nil
	}
	n := len(rd.Entries)
	if hs != nil {
		n++
	}
	if snap != nil {
		n += 2
	}
	if n == 0 {
		return nil
	}
	if snap != nil {
		if err := l.adopt(snap); err != nil {
			return err
		}
	}
	var last, from wal.LSN
	k := 0
	appendOne := func(kind byte, m proto.Message) error {
		var err error
		if kind == kindIdentity {
			l.buf = l.id.appendRecord(l.buf[:0])
		} else {
			l.buf = append(l.buf[:0], kind)
			l.buf, err = proto.MarshalOptions{}.MarshalAppend(l.buf, m)
			if err != nil {
				panic(fmt.Sprintf("raftlog: encoding %T: %v", m, err))
			}
		}
		k++
		// Only the last record hurries the log: it takes the others along.
		if k < n {
			last, err = l.wal.AppendLazy(l.buf)
		} else {
			last, err = l.wal.Append(l.buf)
		}
		return err
	}
	if snap != nil {
		// Everything before it is replaced: the identity goes again first,
		// since what precedes it will be retired.
		if err := appendOne(kindIdentity, nil); err != nil {
			return fmt.Errorf("raftlog: %w", err)
		}
		from = last
		if err := appendOne(kindSnapshot, snap); err != nil {
			return fmt.Errorf("raftlog: %w", err)
		}
		l.lsns = l.lsns[:0]
	}
	for _, e := range rd.Entries {
		if err := appendOne(kindEntry, e); err != nil {
			return fmt.Errorf("raftlog: %w", err)
		}
		l.note(e.GetIndex(), last)
	}
	if hs != nil {
		if err := appendOne(kindHardState, hs); err != nil {
			return fmt.Errorf("raftlog: %w", err)
		}
	}
	if err := l.wal.Sync(last); err != nil {
		return fmt.Errorf("raftlog: %w", err)
	}
	if snap != nil {
		if err := l.storage.ApplySnapshot(snap); err != nil {
			return fmt.Errorf("raftlog: %w", err)
		}
		if err := l.wal.Retire(from); err != nil {
			return fmt.Errorf("raftlog: %w", err)
		}
	}
	if len(rd.Entries) > 0 {
		if err := l.storage.Append(rd.Entries); err != nil {
			return fmt.Errorf("raftlog: %w", err)
		}
	}
	if hs != nil {
		l.hs = proto.Clone(hs).(*pb.HardState)
		if err := l.storage.SetHardState(l.hs); err != nil {
			return fmt.Errorf("raftlog: %w", err)
		}
	}
	return nil
}

// adopt checks the group of a snapshot from the leader: a joining replica
// that has not learned its group yet takes it (the identity written with
// the snapshot records it); any other replica refuses a snapshot of
// another group.
func (l *Log) adopt(snap *pb.Snapshot) error {
	m, _, ok, err := ParseMembers(snap.GetData())
	if err != nil {
		return err
	}
	if !ok {
		if l.id.group == 0 {
			return fmt.Errorf("%w: the leader's snapshot at %d names no group (an older commitd leads?); a joining replica needs one", ErrIdentity, snap.GetMetadata().GetIndex())
		}
		return nil
	}
	switch {
	case l.id.group == 0:
		l.id.group = m.Group
	case m.Group != l.id.group:
		return fmt.Errorf("%w: a snapshot from group %016x reached %v (a replica of another group dialed this one, or it was started without --join)", ErrIdentity, m.Group, l.id)
	}
	return nil
}

// Snapshot is the latest snapshot (the base one, index 1, if none).
func (l *Log) Snapshot() *pb.Snapshot {
	sn, _ := l.storage.Snapshot() // MemoryStorage's never fails
	return sn
}

// Compact records a snapshot of the state machine at applied entry index
// (data; cs the configuration), keeps the keep entries before it for
// followers that lag a little, and retires the WAL segments that hold
// only what it replaced. Followers further behind get the snapshot.
func (l *Log) Compact(index uint64, cs *pb.ConfState, data []byte, keep uint64) error {
	snap, err := l.storage.CreateSnapshot(index, cs, data)
	if err != nil {
		return fmt.Errorf("raftlog: %w", err)
	}
	l.buf = l.id.appendRecord(l.buf[:0])
	from, err := l.wal.AppendLazy(l.buf)
	if err != nil {
		return fmt.Errorf("raftlog: %w", err)
	}
	l.buf = append(l.buf[:0], kindCompacted)
	if l.buf, err = (proto.MarshalOptions{}).MarshalAppend(l.buf, snap); err != nil {
		panic(fmt.Sprintf("raftlog: encoding a snapshot: %v", err))
	}
	if _, err := l.wal.AppendLazy(l.buf); err != nil {
		return fmt.Errorf("raftlog: %w", err)
	}
	// The hard state again: the one before may be retired.
	l.buf = append(l.buf[:0], kindHardState)
	if l.buf, err = (proto.MarshalOptions{}).MarshalAppend(l.buf, l.hs); err != nil {
		panic(fmt.Sprintf("raftlog: encoding a hard state: %v", err))
	}
	last, err := l.wal.Append(l.buf)
	if err != nil {
		return fmt.Errorf("raftlog: %w", err)
	}
	if err := l.wal.Sync(last); err != nil {
		return fmt.Errorf("raftlog: %w", err)
	}
	// Entries after the snapshot may sit before it in the WAL.
	for len(l.lsns) > 0 && l.lsns[0].index <= index {
		l.lsns = l.lsns[1:]
	}
	if len(l.lsns) > 0 {
		from = min(from, l.lsns[0].lsn)
	}
	if keep < index {
		if err := l.storage.Compact(index - keep); err != nil && !errors.Is(err, raft.ErrCompacted) {
			return fmt.Errorf("raftlog: %w", err)
		}
	}
	if err := l.wal.Retire(from); err != nil {
		return fmt.Errorf("raftlog: %w", err)
	}
	return nil
}

// Close syncs and closes the WAL.
func (l *Log) Close() error { return l.wal.Close() }

package raftlog

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/commitd/commitd/wal"
	"github.com/commitd/commitd/wal/waltest"
)

var three = map[uint64]string{1: "127.0.0.1:7401", 2: "127.0.0.1:7402", 3: "127.0.0.1:7403"}

func open(t *testing.T, fs wal.FS, id uint64, peers map[uint64]string) (*Log, error) {
	t.Helper()
	return Open("raft", wal.Options{FS: fs, SegmentBytes: 64 << 10}, Identity{ID: id, Peers: peers})
}

func mustOpen(t *testing.T, fs wal.FS) *Log {
	t.Helper()
	l, err := open(t, fs, 1, three)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func entry(term, index uint64, data string) *pb.Entry {
	return &pb.Entry{Term: proto.Uint64(term), Index: proto.Uint64(index), Type: pb.EntryNormal.Enum(), Data: []byte(data)}
}

func hardState(term, vote, commit uint64) *pb.HardState {
	return &pb.HardState{Term: proto.Uint64(term), Vote: proto.Uint64(vote), Commit: proto.Uint64(commit)}
}

// contents lists the storage's entries as "term/index:data".
func contents(t *testing.T, s *raft.MemoryStorage) []string {
	t.Helper()
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	if last < first {
		return nil
	}
	ents, err := s.Entries(first, last+1, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, pbString(e))
	}
	return out
}

func pbString(e *pb.Entry) string {
	return string(rune('0'+e.GetTerm())) + "/" + string(rune('0'+e.GetIndex())) + ":" + string(e.GetData())
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestReopenKeepsEntriesAndHardState(t *testing.T) {
	fs := waltest.NewMemFS()
	l := mustOpen(t, fs)
	if !l.Fresh() {
		t.Fatal("a new log is not fresh")
	}
	rd := raft.Ready{Entries: []*pb.Entry{entry(1, 2, "a"), entry(1, 3, "b")}, HardState: hardState(1, 1, 2)}
	if err := l.Save(&rd); err != nil {
		t.Fatal(err)
	}
	rd = raft.Ready{Entries: []*pb.Entry{entry(1, 4, "c")}}
	if err := l.Save(&rd); err != nil {
		t.Fatal(err)
	}
	// A crash keeps only what was synced: Save returned, so all of it.
	l2 := mustOpen(t, fs.Crash(rand.New(rand.NewPCG(1, 2))))
	defer l2.Close()
	if l2.Fresh() {
		t.Fatal("a reopened log with entries is fresh")
	}
	if got, want := contents(t, l2.Storage()), []string{"1/2:a", "1/3:b", "1/4:c"}; !equal(got, want) {
		t.Fatalf("entries %v, want %v", got, want)
	}
	hs, _, _ := l2.Storage().InitialState()
	if hs.GetTerm() != 1 || hs.GetVote() != 1 || hs.GetCommit() != 2 {
		t.Fatalf("hard state %v", hs)
	}
}

func TestRewrittenEntriesReplaceTheOldOnes(t *testing.T) {
	fs := waltest.NewMemFS()
	l := mustOpen(t, fs)
	for _, rd := range []raft.Ready{
		{Entries: []*pb.Entry{entry(1, 2, "a"), entry(1, 3, "b"), entry(1, 4, "c")}, HardState: hardState(1, 1, 2)},
		{Entries: []*pb.Entry{entry(2, 3, "B")}, HardState: hardState(2, 2, 2)},
		{Entries: []*pb.Entry{entry(2, 4, "C"), entry(2, 5, "D")}},
	} {
		if err := l.Save(&rd); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"1/2:a", "2/3:B", "2/4:C", "2/5:D"}
	if got := contents(t, l.Storage()); !equal(got, want) {
		t.Fatalf("live entries %v, want %v", got, want)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2 := mustOpen(t, fs)
	defer l2.Close()
	if got := contents(t, l2.Storage()); !equal(got, want) {
		t.Fatalf("replayed entries %v, want %v", got, want)
	}
}

func TestAnotherReplicaOrGroupIsRefused(t *testing.T) {
	fs := waltest.NewMemFS()
	l := mustOpen(t, fs)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := open(t, fs, 2, three); !errors.Is(err, ErrIdentity) {
		t.Errorf("another id: err = %v, want ErrIdentity", err)
	} else {
		t.Logf("another id: %v", err)
	}
	if _, err := Open("raft", wal.Options{FS: fs, SegmentBytes: 64 << 10}, Identity{ID: 1, Peers: three, Join: true}); !errors.Is(err, ErrIdentity) {
		t.Errorf("--join on a bootstrapped directory: err = %v, want ErrIdentity", err)
	} else {
		t.Logf("--join on a bootstrapped directory: %v", err)
	}
	// Other --peers open (the log's configuration wins); a member at
	// another address is what the caller's CheckPeers refuses.
	other := map[uint64]string{1: "127.0.0.1:7401", 2: "127.0.0.1:7402", 3: "127.0.0.1:9999"}
	l, err := open(t, fs, 1, other)
	if err != nil {
		t.Fatalf("other peers: %v", err)
	}
	m, _, ok, err := ParseMembers(l.Snapshot().GetData())
	if err != nil || !ok || m.Group != (Identity{Peers: three}).Group() || PeerList(m.Addrs) != PeerList(three) {
		t.Fatalf("base snapshot's members %+v %v %v, want group and addresses of the bootstrap", m, ok, err)
	}
	if err := m.CheckPeers(1, other); !errors.Is(err, ErrIdentity) {
		t.Errorf("CheckPeers(other) = %v, want ErrIdentity", err)
	} else {
		t.Logf("other peers: %v", err)
	}
	if err := m.CheckPeers(1, map[uint64]string{1: three[1], 9: "127.0.0.1:1"}); err != nil {
		t.Errorf("CheckPeers with a non-member: %v", err)
	}
	m.Removed = []uint64{1}
	if err := m.CheckPeers(1, three); !errors.Is(err, ErrRemoved) {
		t.Errorf("CheckPeers of a removed replica = %v, want ErrRemoved", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		id    uint64
		peers map[uint64]string
	}{
		{"id not a peer", 4, three},
		{"id zero", 0, three},
		{"duplicate address", 1, map[uint64]string{1: "a:1", 2: "a:1"}},
		{"empty address", 1, map[uint64]string{1: "a:1", 2: ""}},
	} {
		if _, err := open(t, waltest.NewMemFS(), c.id, c.peers); err == nil {
			t.Errorf("%s: accepted", c.name)
		} else {
			t.Logf("%s: %v", c.name, err)
		}
	}
	// The right identity still opens, and nothing was lost.
	l = mustOpen(t, fs)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestRawNodeSurvivesCrash drives a one-replica raft node over the log,
// crashes the file system and restarts: what was committed is there.
func TestRawNodeSurvivesCrash(t *testing.T) {
	fs := waltest.NewMemFS()
	single := map[uint64]string{1: "127.0.0.1:7401"}
	l, err := open(t, fs, 1, single)
	if err != nil {
		t.Fatal(err)
	}
	cfg := func(l *Log, applied uint64) *raft.Config {
		return &raft.Config{ID: 1, ElectionTick: 10, HeartbeatTick: 1, Storage: l.Storage(),
			MaxSizePerMsg: 1 << 20, MaxInflightMsgs: 256, PreVote: true, CheckQuorum: true, Applied: applied}
	}
	rn, err := raft.NewRawNode(cfg(l, 0))
	if err != nil {
		t.Fatal(err)
	}
	var applied []string
	drive := func(rn *raft.RawNode, l *Log) {
		for rn.HasReady() {
			rd := rn.Ready()
			if err := l.Save(&rd); err != nil {
				t.Fatal(err)
			}
			for _, e := range rd.CommittedEntries {
				if e.GetType() == pb.EntryNormal && len(e.GetData()) > 0 {
					applied = append(applied, string(e.GetData()))
				}
				if e.GetType() == pb.EntryConfChange {
					var cc pb.ConfChange
					if err := proto.Unmarshal(e.GetData(), &cc); err != nil {
						t.Fatal(err)
					}
					rn.ApplyConfChange(&cc)
				}
			}
			rn.Advance(rd)
		}
	}
	drive(rn, l)
	if err := rn.Campaign(); err != nil {
		t.Fatal(err)
	}
	drive(rn, l)
	for _, p := range []string{"x", "y", "z"} {
		if err := rn.Propose([]byte(p)); err != nil {
			t.Fatal(err)
		}
		drive(rn, l)
	}
	if !equal(applied, []string{"x", "y", "z"}) {
		t.Fatalf("applied %v", applied)
	}
	l2, err := open(t, fs.Crash(nil), 1, single)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	applied = nil
	rn2, err := raft.NewRawNode(cfg(l2, 0))
	if err != nil {
		t.Fatal(err)
	}
	drive(rn2, l2) // applies what was committed
	if err := rn2.Campaign(); err != nil {
		t.Fatal(err)
	}
	drive(rn2, l2)
	if !equal(applied, []string{"x", "y", "z"}) {
		t.Fatalf("after the crash, applied %v", applied)
	}
	if st := rn2.Status(); st.RaftState != raft.StateLeader || st.GetTerm() < 2 {
		t.Fatalf("after the crash: %v term %d", st.RaftState, st.GetTerm())
	}
}

// TestCompactionRetiresAndReopens: a snapshot made here replaces the
// entries up to it, the WAL segments holding only those are retired, and a
// reopened log holds the snapshot and the entries after it.
func TestCompactionRetiresAndReopens(t *testing.T) {
	fs := waltest.NewMemFS()
	l := mustOpen(t, fs)
	pad := string(make([]byte, 2000))
	for i := uint64(2); i <= 200; i++ {
		rd := raft.Ready{Entries: []*pb.Entry{entry(1, i, pad)}, HardState: hardState(1, 1, i)}
		if err := l.Save(&rd); err != nil {
			t.Fatal(err)
		}
	}
	before := fs.TotalBytes(".wal")
	cs := &pb.ConfState{Voters: []uint64{1, 2, 3}}
	if err := l.Compact(190, cs, []byte("state at 190"), 5); err != nil {
		t.Fatal(err)
	}
	if first, _ := l.Storage().FirstIndex(); first != 186 {
		t.Fatalf("first index %d after compacting at 190 keeping 5", first)
	}
	for i := uint64(201); i <= 205; i++ {
		rd := raft.Ready{Entries: []*pb.Entry{entry(1, i, "x")}, HardState: hardState(1, 1, i)}
		if err := l.Save(&rd); err != nil {
			t.Fatal(err)
		}
	}
	if after := fs.TotalBytes(".wal"); after >= before {
		t.Fatalf("the WAL holds %d bytes after compaction, %d before", after, before)
	}
	l2 := mustOpen(t, fs.Crash(nil))
	defer l2.Close()
	sn := l2.Snapshot()
	if sn.GetMetadata().GetIndex() != 190 || string(sn.GetData()) != "state at 190" {
		t.Fatalf("snapshot after reopening: index %d data %q", sn.GetMetadata().GetIndex(), sn.GetData())
	}
	first, _ := l2.Storage().FirstIndex()
	last, _ := l2.Storage().LastIndex()
	if first != 191 || last != 205 {
		t.Fatalf("entries %d..%d after reopening, want 191..205", first, last)
	}
	if hs, _, _ := l2.Storage().InitialState(); hs.GetCommit() != 205 {
		t.Fatalf("hard state %v", hs)
	}
}

// TestReceivedSnapshotReplacesEntries: a snapshot from the leader replaces
// every entry, including ones past it that the leader does not have.
func TestReceivedSnapshotReplacesEntries(t *testing.T) {
	fs := waltest.NewMemFS()
	l := mustOpen(t, fs)
	rd := raft.Ready{Entries: []*pb.Entry{entry(1, 2, "a"), entry(1, 3, "b"), entry(1, 4, "c")}, HardState: hardState(1, 1, 2)}
	if err := l.Save(&rd); err != nil {
		t.Fatal(err)
	}
	snap := &pb.Snapshot{Data: []byte("leader's state"), Metadata: &pb.SnapshotMetadata{
		Index: proto.Uint64(50), Term: proto.Uint64(3), ConfState: &pb.ConfState{Voters: []uint64{1, 2, 3}}}}
	rd = raft.Ready{Snapshot: snap, HardState: hardState(3, 2, 50)}
	if err := l.Save(&rd); err != nil {
		t.Fatal(err)
	}
	rd = raft.Ready{Entries: []*pb.Entry{entry(3, 51, "d")}, HardState: hardState(3, 2, 51)}
	if err := l.Save(&rd); err != nil {
		t.Fatal(err)
	}
	for _, lg := range []*Log{l, mustOpen(t, fs.Crash(nil))} {
		if got := contents(t, lg.Storage()); len(got) != 1 || !strings.HasSuffix(got[0], ":d") {
			t.Fatalf("entries %v, want only 51", got)
		}
		if sn := lg.Snapshot(); sn.GetMetadata().GetIndex() != 50 || string(sn.GetData()) != "leader's state" {
			t.Fatalf("snapshot %v", sn)
		}
	}
}

// TestJoinerLearnsItsGroupFromTheSnapshot: a joining replica starts with
// no configuration, takes the group of its leader's first snapshot, keeps
// it across a restart, and refuses a snapshot of another group.
func TestJoinerLearnsItsGroupFromTheSnapshot(t *testing.T) {
	fs := waltest.NewMemFS()
	join := Identity{ID: 4, Peers: map[uint64]string{1: "a:1", 4: "a:4"}, Join: true}
	openJoin := func(fs wal.FS) (*Log, error) {
		return Open("raft", wal.Options{FS: fs, SegmentBytes: 64 << 10}, join)
	}
	l, err := openJoin(fs)
	if err != nil {
		t.Fatal(err)
	}
	if l.Group() != 0 || !raft.IsEmptySnap(l.Snapshot()) {
		t.Fatalf("a fresh joiner has group %x and snapshot %v", l.Group(), l.Snapshot())
	}
	group := (Identity{Peers: three}).Group()
	m := Members{Group: group, Addrs: map[uint64]string{1: "a:1", 2: "a:2", 3: "a:3", 4: "a:4"}, Removed: []uint64{7}}
	snap := &pb.Snapshot{Data: append(m.Append(nil), "state"...), Metadata: &pb.SnapshotMetadata{
		Index: proto.Uint64(90), Term: proto.Uint64(5), ConfState: &pb.ConfState{Voters: []uint64{1, 2, 3}, Learners: []uint64{4}}}}
	if err := l.Save(&raft.Ready{Snapshot: snap, HardState: hardState(5, 0, 90)}); err != nil {
		t.Fatal(err)
	}
	if l.Group() != group {
		t.Fatalf("group %x after the snapshot, want %x", l.Group(), group)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, err = openJoin(fs.Crash(nil))
	if err != nil {
		t.Fatal(err)
	}
	got, rest, ok, err := ParseMembers(l.Snapshot().GetData())
	if l.Group() != group || err != nil || !ok || string(rest) != "state" || PeerList(got.Addrs) != PeerList(m.Addrs) || len(got.Removed) != 1 {
		t.Fatalf("after a restart: group %x, members %+v %q %v %v", l.Group(), got, rest, ok, err)
	}
	m.Group++
	snap.Data = m.Append(nil)
	snap.Metadata.Index = proto.Uint64(95)
	if err := l.Save(&raft.Ready{Snapshot: snap}); !errors.Is(err, ErrIdentity) {
		t.Fatalf("a snapshot of another group: %v, want ErrIdentity", err)
	} else {
		t.Log(err)
	}
}

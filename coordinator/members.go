package coordinator

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
	"google.golang.org/protobuf/proto"

	"github.com/commitd/commitd/internal/raftlog"
	"github.com/commitd/commitd/net/link"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/wal"
)

// Membership changes of a replica group (docs/ha.md, "Membership"): the
// configuration lives in the raft log; each replica publishes the one it
// last applied as a memberTable, dials every member of it and admits only
// its members; the leader carries out `admin replicas add|remove` as a
// memberOp on the raft goroutine.

// Limits of membership changes.
const (
	// caughtUpSlack is how far behind the leader's commit index a learner's
	// match may be when it is promoted.
	caughtUpSlack = 256
	// removedNote is what a replica's refusal says of a removed replica,
	// and what that replica looks for in its connections' errors to learn
	// that it was removed while it was away.
	removedNote = "was removed from the group"
	// otherGroupNote is what a replica's refusal says of a replica of
	// another group (one bootstrapped by mistake, without --join).
	otherGroupNote = "belongs to another group"
	// peerBackoffMax bounds the redial delay between replicas: a joining
	// replica is refused until the leader has added it, and must then
	// connect soon.
	peerBackoffMax = time.Second
)

// memberTable is the group's configuration as this replica last applied
// it. Published through replica.mem and never changed once published.
type memberTable struct {
	group uint64
	// addrs maps every replica of the configuration (voters, learners,
	// outgoing voters of a joint configuration) to its address.
	addrs                      map[uint64]string
	voters, learners, outgoing []uint64 // sorted
	removed                    []uint64 // sorted; never admitted, never reused
	// provisional: a joining replica that has no configuration yet; addrs
	// are its --peers, the replicas it accepts the leader from.
	provisional bool
}

// newTable makes the table of configuration cs, with the addresses of its
// members taken from addrs.
func newTable(group uint64, cs *pb.ConfState, addrs map[uint64]string, removed []uint64) *memberTable {
	t := &memberTable{group: group, addrs: make(map[uint64]string), removed: slices.Clone(removed)}
	for _, set := range [][]uint64{cs.GetVoters(), cs.GetLearners(), cs.GetVotersOutgoing(), cs.GetLearnersNext()} {
		for _, id := range set {
			t.addrs[id] = addrs[id]
		}
	}
	t.voters = slices.Sorted(slices.Values(cs.GetVoters()))
	t.learners = slices.Sorted(slices.Values(append(slices.Clone(cs.GetLearners()), cs.GetLearnersNext()...)))
	t.outgoing = slices.Sorted(slices.Values(cs.GetVotersOutgoing()))
	return t
}

func (t *memberTable) wasRemoved(id uint64) bool {
	_, ok := slices.BinarySearch(t.removed, id)
	return ok
}

func (t *memberTable) joint() bool { return len(t.outgoing) > 0 }

// members is the snapshot header for this table.
func (t *memberTable) members() *raftlog.Members {
	return &raftlog.Members{Group: t.group, Addrs: t.addrs, Removed: t.removed}
}

// Replica is one member of a group as `admin replicas` and `admin status`
// list it.
type Replica struct {
	ID   uint64 `json:"id"`
	Addr string `json:"addr"`
	// Role is "voter", "learner" (receives the log, does not vote) or
	// "outgoing" (a voter of the old half of a joint configuration that
	// the new half removes).
	Role string `json:"role"`
	// Match is, from the leader, the last raft index known to be in that
	// replica's log.
	Match uint64 `json:"match,omitempty"`
	// Up says, in `admin replicas`, whether the answering replica is
	// connected to it and (from the leader) has heard from it within an
	// election timeout; always true for the answering replica itself.
	Up *bool `json:"up,omitempty"`
}

// Members is the answer to `admin replicas` (and adds to replica
// changes): the group, its leader and every member.
type Members struct {
	Group    string    `json:"group"`
	Leader   uint64    `json:"leader"`
	Term     uint64    `json:"term"`
	Replicas []Replica `json:"replicas"`
	Removed  []uint64  `json:"removed,omitempty"`
}

// list describes the table; match and up, if set, give each member's
// match index and whether it is up.
func (t *memberTable) list(leader, term uint64, match map[uint64]uint64, up map[uint64]bool) Members {
	m := Members{Group: fmt.Sprintf("%016x", t.group), Leader: leader, Term: term, Removed: t.removed}
	ids := make([]uint64, 0, len(t.addrs))
	for id := range t.addrs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		role := "voter"
		switch {
		case slices.Contains(t.learners, id):
			role = "learner"
		case !slices.Contains(t.voters, id) && slices.Contains(t.outgoing, id):
			role = "outgoing"
		case t.provisional:
			role = "unknown"
		}
		rep := Replica{ID: id, Addr: t.addrs[id], Role: role, Match: match[id]}
		if up != nil {
			u := up[id]
			rep.Up = &u
		}
		m.Replicas = append(m.Replicas, rep)
	}
	return m
}

// role is replica id's role in the list ("" if it is not a member).
func (m Members) role(id uint64) string {
	for _, r := range m.Replicas {
		if r.ID == id {
			return r.Role
		}
	}
	return ""
}

// setMembers publishes t and makes the connections follow it: a
// connection to every other member, none to anyone else. Called on the
// raft goroutine (or before it starts).
func (r *replica) setMembers(t *memberTable) {
	r.mem.Store(t)
	for id, p := range r.conns {
		if _, ok := t.addrs[id]; !ok {
			delete(r.conns, id)
			// Close waits for the Peer's goroutines: a moment, and only
			// when a replica leaves the group.
			_ = p.Close()
		}
	}
	for id, addr := range t.addrs {
		if id == r.id || r.conns[id] != nil || addr == "" {
			continue
		}
		r.conns[id] = r.dial(id, addr, t.group)
	}
}

// replicaName is a replica's Hello name: its raft id and, once it knows
// it, its group id ("3/5a7c78bdaa6850a8"), so that replicas of different
// groups never exchange a raft message — a replica bootstrapped by
// mistake (without --join) next to a group whose members it names could
// otherwise take the group's entries into a configuration of its own.
func replicaName(id, group uint64) []byte {
	if group == 0 {
		return []byte(strconv.FormatUint(id, 10))
	}
	return fmt.Appendf(nil, "%d/%016x", id, group)
}

// parseReplicaName reads what replicaName wrote; group is 0 when the name
// has none (a joining replica that has not learned it, or an older
// release).
func parseReplicaName(name string) (id, group uint64, err error) {
	ids, gs, hasGroup := strings.Cut(name, "/")
	if id, err = strconv.ParseUint(ids, 10, 64); err != nil {
		return 0, 0, err
	}
	if hasGroup {
		if group, err = strconv.ParseUint(gs, 16, 64); err != nil || len(gs) != 16 {
			return 0, 0, fmt.Errorf("replica name %q: bad group id", name)
		}
	}
	return id, group, nil
}

// dial makes the connection to replica id at addr, saying it is this
// replica of group (0: not known yet).
func (r *replica) dial(id uint64, addr string, group uint64) *mux.Peer {
	cfg := &r.s.cfg
	want := strconv.FormatUint(id, 10)
	return mux.NewPeer(addr, mux.PeerOptions{
		Conn:  mux.Options{Logger: cfg.Logger, NoCoalesce: cfg.NoCoalesce},
		Hello: wire.Hello{Role: wire.RoleReplica, Name: replicaName(r.id, group)},
		// Each replica holds its own copy of the map: say which, as
		// participants and the other replicas' dials do (sawMap).
		Refresh: func(h *wire.Hello) { h.MapVersion = r.s.ClusterVersion() },
		// Raft messages go out only once the replica at addr has accepted
		// us as one of its members and said it is replica id (its answer:
		// role coordinator, its id as the name).
		Check: func(h wire.Hello) error {
			if h.Role != wire.RoleCoordinator || string(h.Name) != want {
				return fmt.Errorf("want coordinator replica %s, got %v %q", want, h.Role, h.Name)
			}
			return nil
		},
		Dial:       link.IdentityDialer(cfg.TLS, cfg.replicaIdentities(addr)),
		Conns:      1,
		BackoffMax: peerBackoffMax,
	})
}

// closeConns closes every connection to another replica (the raft
// goroutine's last act).
func (r *replica) closeConns() {
	for id, p := range r.conns {
		delete(r.conns, id)
		_ = p.Close()
	}
}

// restoreMembers sets the table from a snapshot's header (m; ok false for
// a snapshot of a release without one, whose membership was --peers).
func (r *replica) restoreMembers(cs *pb.ConfState, m raftlog.Members, ok bool) {
	if len(cs.GetVoters()) == 0 {
		// A joining replica before its first snapshot: it accepts the
		// leader from the replicas its --peers name.
		r.setMembers(&memberTable{addrs: r.s.cfg.Peers, provisional: true})
		return
	}
	if !ok {
		m = raftlog.Members{Group: r.log.Group(), Addrs: r.s.cfg.Peers}
	}
	r.confState = cs
	r.setMembers(newTable(m.Group, cs, m.Addrs, m.Removed))
}

// errRemoved is the error of a replica that is no longer a member.
func (r *replica) errRemoved(how string) error {
	return fmt.Errorf("coordinator: replica %d %w %s; its data directory cannot serve again (start a new replica with a new id, an empty directory and --join)",
		r.id, raftlog.ErrRemoved, how)
}

// applyConfChange applies a committed configuration change: raft's
// configuration, the addresses it adds (its Context), the connections. A
// replica the change removes stops.
func (r *replica) applyConfChange(e *pb.Entry) error {
	var cc pb.ConfChangeI
	var ctx []byte
	switch e.GetType() {
	case pb.EntryConfChange:
		c := &pb.ConfChange{}
		if err := proto.Unmarshal(e.GetData(), c); err != nil {
			return fmt.Errorf("coordinator: raft entry %d: configuration change: %v: %w", e.GetIndex(), err, wal.ErrCorrupt)
		}
		cc, ctx = c, c.GetContext()
	default:
		c := &pb.ConfChangeV2{}
		if err := proto.Unmarshal(e.GetData(), c); err != nil {
			return fmt.Errorf("coordinator: raft entry %d: configuration change: %v: %w", e.GetIndex(), err, wal.ErrCorrupt)
		}
		cc, ctx = c, c.GetContext()
	}
	added, err := raftlog.ParseAddrs(ctx)
	if err != nil {
		return fmt.Errorf("coordinator: raft entry %d: %w", e.GetIndex(), err)
	}
	old := r.mem.Load()
	addrs := make(map[uint64]string, len(old.addrs)+len(added))
	if !old.provisional {
		for id, a := range old.addrs {
			addrs[id] = a
		}
	}
	for id, a := range added {
		addrs[id] = a
	}
	cs := r.rn.ApplyConfChange(cc)
	r.confState = cs
	removed := slices.Clone(old.removed) // old is published: never written
	t := newTable(r.log.Group(), cs, addrs, nil)
	if !old.provisional {
		for id := range old.addrs {
			if _, still := t.addrs[id]; !still {
				removed = append(removed, id)
			}
		}
	}
	slices.Sort(removed)
	t.removed = slices.Compact(removed)
	r.setMembers(t)
	r.confChanged = true
	r.s.cfg.Logger.Info("coordinator replica group changed", "id", r.id, "index", e.GetIndex(),
		"voters", t.voters, "learners", t.learners, "outgoing", t.outgoing, "removed", t.removed)
	if _, ok := t.addrs[r.id]; !ok {
		return r.errRemoved(fmt.Sprintf("at raft index %d", e.GetIndex()))
	}
	return nil
}

// checkRemoved is called now and then on the raft goroutine: a replica
// that was removed while it was away does not apply its removal (the
// group no longer sends it anything), but every member refuses its
// connections saying so.
func (r *replica) checkRemoved() error {
	for id, p := range r.conns {
		if e := p.Stats().LastError; strings.Contains(e, removedNote) {
			return r.errRemoved(fmt.Sprintf("(replica %d refuses its connections)", id))
		}
	}
	return nil
}

// checkStart refuses to serve from a data directory whose log says this
// replica is no longer a member, or whose configuration places a member
// elsewhere than --peers does (the log's configuration wins, but a
// different address for the same replica is a mistake worth stopping for).
func (r *replica) checkStart() error {
	t := r.mem.Load()
	if t.provisional {
		return nil
	}
	m := t.members()
	if err := m.CheckPeers(r.id, r.s.cfg.Peers); err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	if _, ok := t.addrs[r.id]; !ok {
		return r.errRemoved("(its log's configuration does not hold it)")
	}
	return nil
}

// memberOp is an `admin replicas` request carried out on the raft
// goroutine: a listing, an add or a remove.
type memberOp struct {
	kind wire.AdminKind
	id   uint64
	addr string
	done chan memberResult // capacity 1

	// Owned by the raft goroutine.
	stage    opStage
	term     uint64
	deadline time.Time
}

type memberResult struct {
	list Members
	err  error
}

type opStage uint8

const (
	stageLearner  opStage = iota + 1 // AddLearnerNode proposed
	stageCatchUp                     // the learner is in the configuration; waiting for it to catch up
	stagePromote                     // AddNode (joint) proposed
	stageRemove                      // RemoveNode (joint) proposed
	stageTransfer                    // the leader is to be removed: leadership transfer under way
)

// notLeaderError answers a change sent to a replica that does not lead:
// the admin tool tries Leader (an address; "" when none is known).
type notLeaderError struct{ Leader string }

func (e *notLeaderError) Error() string {
	if e.Leader == "" {
		return "not the leader, and no leader is known"
	}
	return "not the leader; the leader is at " + e.Leader
}

var errBusy = errors.New("another membership change is in progress; wait for it (admin replicas shows the configuration) and try again")

// parseMemberArg parses an add's "ID=ADDR" or a remove's "ID".
func parseMemberArg(kind wire.AdminKind, arg []byte) (uint64, string, error) {
	s := string(arg)
	idPart, addr, hasAddr := strings.Cut(s, "=")
	id, err := strconv.ParseUint(idPart, 10, 64)
	if err != nil || id == 0 {
		return 0, "", fmt.Errorf("replica id %q: want a number from 1", idPart)
	}
	switch kind {
	case wire.AdminReplicasAdd:
		if !hasAddr || addr == "" || len(addr) > raftlog.MaxAddrLen {
			return 0, "", fmt.Errorf("want ID=ADDR with an address of 1 to %d bytes, got %q", raftlog.MaxAddrLen, s)
		}
	case wire.AdminReplicasRemove:
		if hasAddr {
			return 0, "", fmt.Errorf("want the replica's ID only, got %q", s)
		}
	}
	return id, addr, nil
}

// adminReplicas serves `admin replicas [add|remove]` on a front-door
// reader goroutine: the raft goroutine does the work, this waits for it.
func (s *Server) adminReplicas(kind wire.AdminKind, arg []byte) ([]byte, error) {
	r := s.rep
	if r == nil {
		return nil, errors.New("this coordinator runs alone (no --peers): it has no replicas to list, add or remove")
	}
	op := &memberOp{kind: kind, done: make(chan memberResult, 1)}
	if kind != wire.AdminReplicas {
		var err error
		if op.id, op.addr, err = parseMemberArg(kind, arg); err != nil {
			return nil, err
		}
	}
	select {
	case r.ops <- op:
	case <-s.life.Stopping():
		return nil, errors.New("the coordinator is stopping")
	}
	select {
	case res := <-op.done:
		if res.err != nil {
			return nil, res.err
		}
		return json.Marshal(res.list)
	case <-s.life.Stopping():
		return nil, errors.New("the coordinator is stopping; the change may or may not have been made (admin replicas shows the configuration)")
	}
}

// startOp takes a new request on the raft goroutine.
func (r *replica) startOp(op *memberOp) {
	st := r.rn.BasicStatus()
	t := r.mem.Load()
	if op.kind == wire.AdminReplicas {
		var match map[uint64]uint64
		if st.RaftState == raft.StateLeader {
			match = make(map[uint64]uint64)
			for id, pr := range r.rn.Status().Progress {
				match[id] = pr.Match
			}
		}
		up := make(map[uint64]bool, len(t.addrs))
		for id := range t.addrs {
			up[id] = r.up(id)
		}
		op.done <- memberResult{list: t.list(st.Lead, st.GetTerm(), match, up)}
		return
	}
	if st.RaftState != raft.StateLeader {
		var addr string
		if st.Lead != 0 {
			addr = t.addrs[st.Lead]
		}
		op.done <- memberResult{err: &notLeaderError{Leader: addr}}
		return
	}
	if r.op != nil || t.joint() {
		op.done <- memberResult{err: errBusy}
		return
	}
	if err := r.checkOp(op, t); err != nil {
		op.done <- memberResult{err: err}
		return
	}
	op.term = st.GetTerm()
	op.deadline = time.Now().Add(r.s.cfg.CatchUpTimeout)
	var cc *pb.ConfChangeV2
	switch {
	case op.kind == wire.AdminReplicasAdd && slices.Contains(t.learners, op.id):
		op.stage = stageCatchUp
		r.op = op
		return
	case op.kind == wire.AdminReplicasAdd:
		// A learner first: it receives the log but counts in no quorum
		// until it has caught up (docs/ha.md).
		op.stage = stageLearner
		cc = confChange(pb.ConfChangeTransition_ConfChangeTransitionAuto, pb.ConfChangeType_ConfChangeAddLearnerNode, op.id)
		cc.Context = raftlog.AppendAddrs(nil, map[uint64]string{op.id: op.addr})
	case op.id == r.id && !slices.Contains(t.learners, op.id):
		// Removing the leader: hand leadership to the most caught-up
		// other voter first; the admin tool repeats the request there.
		to := r.transferTarget(t)
		if to == 0 {
			op.done <- memberResult{err: errors.New("no other voter is up to take over the leadership; removing the leader now would stop the group")}
			return
		}
		op.stage = stageTransfer
		op.deadline = time.Now().Add(4 * time.Duration(r.s.cfg.ElectionTicks) * r.s.cfg.RaftTick)
		r.s.cfg.Logger.Info("coordinator replica hands over leadership to be removed", "id", r.id, "to", to)
		r.rn.TransferLeader(to)
		r.op = op
		return
	case slices.Contains(t.learners, op.id):
		// A learner counts in no quorum: one step is enough.
		op.stage = stageRemove
		cc = confChange(pb.ConfChangeTransition_ConfChangeTransitionAuto, pb.ConfChangeType_ConfChangeRemoveNode, op.id)
	default:
		op.stage = stageRemove
		cc = confChange(pb.ConfChangeTransition_ConfChangeTransitionJointImplicit, pb.ConfChangeType_ConfChangeRemoveNode, op.id)
	}
	if err := r.rn.ProposeConfChange(cc); err != nil {
		op.done <- memberResult{err: fmt.Errorf("raft did not take the change (%v); try again", err)}
		return
	}
	r.op = op
}

func confChange(tr pb.ConfChangeTransition, typ pb.ConfChangeType, id uint64) *pb.ConfChangeV2 {
	return &pb.ConfChangeV2{Transition: tr.Enum(), Changes: []*pb.ConfChangeSingle{{Type: typ.Enum(), NodeId: proto.Uint64(id)}}}
}

// quorum counts which of voters are up (replica.up) and how many a
// majority of them is.
func (r *replica) quorum(voters []uint64) (up, need int, down []uint64) {
	for _, id := range voters {
		if r.up(id) {
			up++
		} else {
			down = append(down, id)
		}
	}
	return up, len(voters)/2 + 1, down
}

// checkOp refuses a change that cannot be made, or must not be.
func (r *replica) checkOp(op *memberOp, t *memberTable) error {
	// Any change is an entry the current voters must commit (and a removal
	// then commits under both the old and the new voters).
	if up, need, down := r.quorum(t.voters); up < need {
		return fmt.Errorf("the group has no quorum now: voters %v are down, %d of %d up, %d needed; no change can commit until enough of them are back",
			down, up, len(t.voters), need)
	}
	_, member := t.addrs[op.id]
	if op.kind == wire.AdminReplicasAdd {
		switch {
		case t.wasRemoved(op.id):
			return fmt.Errorf("replica %d was removed from the group; ids are never reused: give the new replica another id", op.id)
		case member && slices.Contains(t.learners, op.id) && t.addrs[op.id] == op.addr:
			return nil // a learner an earlier add left behind: wait for it again, then promote
		case member:
			return fmt.Errorf("replica %d is already a member (%s at %s)", op.id, t.list(0, 0, nil, nil).role(op.id), t.addrs[op.id])
		}
		for id, a := range t.addrs {
			if a == op.addr {
				return fmt.Errorf("address %s is replica %d's; remove that one first", op.addr, id)
			}
		}
		return nil
	}
	if !member {
		return fmt.Errorf("replica %d is not a member of the group (members: %s)", op.id, raftlog.PeerList(t.addrs))
	}
	if slices.Contains(t.learners, op.id) {
		return nil // a learner counts in no quorum
	}
	// The voters left must be able to form a quorum: a majority of them
	// must be up (heard from within an election timeout).
	left := slices.DeleteFunc(slices.Clone(t.voters), func(id uint64) bool { return id == op.id })
	if len(left) == 0 {
		return fmt.Errorf("replica %d is the only voter; a group needs one", op.id)
	}
	if up, need, down := r.quorum(left); up < need {
		return fmt.Errorf("removing replica %d would leave voters %v of which %v are down: %d up, %d needed for a quorum — no quorum possible; remove a down replica instead, or bring one back first",
			op.id, left, down, up, need)
	}
	return nil
}

// up reports whether replica id is up as far as this one can tell: it is
// this one, or a connection to it is open and — when this replica leads —
// raft heard from it within an election timeout (RecentActive) or a raft
// message came from it within two. The connection catches a replica that
// just stopped (raft would count it active for up to an election
// timeout); the rest one cut off without its connection closing.
// RecentActive alone is not enough: with CheckQuorum the leader clears it
// for every follower at each election timeout, so for the heartbeat round
// after that every follower looked down (a removal was refused as "no
// quorum possible" about once in ten tries).
func (r *replica) up(id uint64) bool {
	if id == r.id {
		return true
	}
	if p := r.conns[id]; p == nil || p.Stats().Connected == 0 {
		return false
	}
	if r.rn.BasicStatus().RaftState != raft.StateLeader {
		return true
	}
	if r.rn.Status().Progress[id].RecentActive {
		return true
	}
	election := r.s.cfg.RaftTick * time.Duration(r.s.cfg.ElectionTicks)
	t, ok := r.heard[id]
	return ok && time.Since(t) < 2*election
}

// transferTarget is the other voter, up, with the highest match.
func (r *replica) transferTarget(t *memberTable) uint64 {
	var best, match uint64
	for id, pr := range r.rn.Status().Progress {
		if id == r.id || !slices.Contains(t.voters, id) || !r.up(id) {
			continue
		}
		if best == 0 || pr.Match > match {
			best, match = id, pr.Match
		}
	}
	return best
}

// stepOp advances the change in progress, on the raft goroutine after
// every turn.
func (r *replica) stepOp() {
	op := r.op
	if op == nil {
		return
	}
	st := r.rn.BasicStatus()
	t := r.mem.Load()
	finish := func(err error) {
		r.op = nil
		res := memberResult{err: err}
		if err == nil {
			res.list = t.list(st.Lead, st.GetTerm(), nil, nil)
		}
		op.done <- res
	}
	if op.stage == stageTransfer {
		switch {
		case st.RaftState != raft.StateLeader && st.Lead != 0 && st.Lead != r.id:
			finish(&notLeaderError{Leader: t.addrs[st.Lead]})
		case time.Now().After(op.deadline):
			finish(errors.New("the leadership transfer did not complete; try again"))
		}
		return
	}
	if st.RaftState != raft.StateLeader || st.GetTerm() != op.term {
		finish(fmt.Errorf("leadership changed during the change; it may or may not have been made — check admin replicas and try again"))
		return
	}
	switch op.stage {
	case stageLearner:
		if slices.Contains(t.learners, op.id) {
			op.stage = stageCatchUp
		} else if time.Now().After(op.deadline) {
			finish(fmt.Errorf("replica %d was not added: the change did not commit within %v; check admin replicas and try again", op.id, r.s.cfg.CatchUpTimeout))
		}
	case stageCatchUp:
		pr := r.rn.Status().Progress[op.id]
		commit := r.rn.Status().GetCommit()
		if pr.State == tracker.StateReplicate && pr.Match+caughtUpSlack >= commit {
			cc := confChange(pb.ConfChangeTransition_ConfChangeTransitionJointImplicit, pb.ConfChangeType_ConfChangeAddNode, op.id)
			if err := r.rn.ProposeConfChange(cc); err != nil {
				finish(fmt.Errorf("replica %d caught up, but raft did not take its promotion (%v); it stays a learner: remove it and add it again", op.id, err))
				return
			}
			op.stage = stagePromote
			return
		}
		if time.Now().After(op.deadline) {
			why := ""
			if p := r.conns[op.id]; p != nil && p.Stats().LastError != "" {
				why = " (connection: " + p.Stats().LastError + ")"
			}
			finish(fmt.Errorf("replica %d at %s has not caught up within %v (match %d of %d)%s: it stays a learner, which counts in no quorum; check that it runs at that address with --join, an empty data directory and --peers naming the current members, then repeat the add (it resumes) or remove it (admin replicas remove %d)",
				op.id, t.addrs[op.id], r.s.cfg.CatchUpTimeout, pr.Match, commit, why, op.id))
		}
	case stagePromote:
		if slices.Contains(t.voters, op.id) && !t.joint() {
			finish(nil)
		} else if time.Now().After(op.deadline.Add(r.s.cfg.CatchUpTimeout)) {
			finish(fmt.Errorf("the promotion of replica %d has not completed; check admin replicas", op.id))
		}
	case stageRemove:
		if _, ok := t.addrs[op.id]; !ok && !t.joint() {
			finish(nil)
		} else if time.Now().After(op.deadline) {
			finish(fmt.Errorf("the removal of replica %d has not completed; check admin replicas", op.id))
		}
	}
}

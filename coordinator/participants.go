package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/protocol"
)

// Participants added and removed while the coordinator runs (`commitd admin
// participants add|remove NAME=ADDR`).
//
// The set is one immutable value behind an atomic pointer: the front door
// (admission, Hello) and the pumps (Deliver) read it on their hot paths
// without a lock, and a change swaps in a new one.
//
// It persists in <data>/participants, rewritten whole (temporary file,
// fsync, rename, fsync of the directory) before a change is acknowledged:
// once that file exists, it wins over --participant, which is only the
// initial list. It is not a record in the coordinator's log because the log
// retires its segments once every commit in them has ended: a membership
// record there would be retired with them, or would pin them forever. (A
// replica of a group keeps them in its raft log instead, whose snapshots
// carry them: partmembers.go.)
//
// Removal is decided on each shard's own goroutine (pump.Do), where the
// shard is the truth about what is in flight: the participant is first
// refused to new begins, then each shard in turn is asked whether any
// transaction in flight names it and, in the same turn, told to send it no
// more prepares (a begin already admitted when the name was withdrawn
// aborts as if its prepare could not be sent, which is always safe). If
// any shard still names it, the removal is undone and refused; otherwise
// it is persisted and its connections closed.

// participantSet is the coordinator's participants: peers by name, and the
// interned names the front door hands to the shards.
type participantSet struct {
	peers map[string]*peer
	names map[string]string
}

// participantsFile is the file in the data directory that holds the
// participants once they have been changed at run time.
const participantsFile = "participants"

// participantsDoc is participantsFile's content.
type participantsDoc struct {
	Participants map[string]string `json:"participants"`
}

// loadParticipants reads the persisted participants, if any (ok false when
// they were never changed at run time).
func loadParticipants(dataDir string) (map[string]string, bool, error) {
	path := filepath.Join(dataDir, participantsFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("coordinator: reading participants: %w", err)
	}
	var doc participantsDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, false, fmt.Errorf("coordinator: %s is damaged: %v", path, err)
	}
	if len(doc.Participants) == 0 {
		return nil, false, fmt.Errorf("coordinator: %s names no participant", path)
	}
	for name, addr := range doc.Participants {
		if err := checkParticipant(name, addr); err != nil {
			return nil, false, fmt.Errorf("coordinator: %s: %v", path, err)
		}
	}
	return doc.Participants, true, nil
}

// saveParticipants persists the participants, durably, before a change is
// acknowledged.
func saveParticipants(dataDir string, ps map[string]string) error {
	b, err := json.MarshalIndent(participantsDoc{Participants: ps}, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(dataDir, participantsFile)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(dataDir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// checkParticipant refuses a name or address no participant could have.
func checkParticipant(name, addr string) error {
	if name == "" || len(name) > protocol.MaxNameLen {
		return fmt.Errorf("participant name %q must be 1 to %d bytes", name, protocol.MaxNameLen)
	}
	if strings.ContainsAny(name, "=, \t\n") {
		return fmt.Errorf("participant name %q may not hold '=', ',' or spaces", name)
	}
	if addr == "" {
		return fmt.Errorf("participant %q has no address", name)
	}
	return nil
}

// ParseParticipant reads NAME=ADDR as an operator types it.
func ParseParticipant(arg string) (name, addr string, err error) {
	name, addr, ok := strings.Cut(arg, "=")
	if !ok {
		return "", "", fmt.Errorf("malformed participant %q: want NAME=ADDR, such as bank3=10.0.0.3:7401", arg)
	}
	if err := checkParticipant(name, addr); err != nil {
		return "", "", err
	}
	return name, addr, nil
}

// set returns the current participants.
func (s *Server) set() *participantSet { return s.pset.Load() }

// addrs returns the participants' addresses by name.
func (ps *participantSet) addrs() map[string]string {
	m := make(map[string]string, len(ps.peers))
	for name, p := range ps.peers {
		m[name] = p.addr
	}
	return m
}

// with returns a copy of ps with p added (or, p.addr empty, name removed).
func (ps *participantSet) with(name string, p *peer) *participantSet {
	n := &participantSet{peers: maps.Clone(ps.peers), names: maps.Clone(ps.names)}
	if p == nil {
		delete(n.peers, name)
		delete(n.names, name)
	} else {
		n.peers[name] = p
		n.names[name] = name
	}
	return n
}

// ParticipantsReport is the answer to `admin participants add|remove`: the
// coordinator's participants afterwards, by name.
type ParticipantsReport struct {
	Participants map[string]string `json:"participants"`
}

// checkAdd refuses an add (arg NAME=ADDR) that cannot be made to the
// participants cur, by name: a bad form, a name already known (at any
// address: remove it first to move it), an address another name has.
func checkAdd(cur map[string]string, arg string) (name, addr string, err error) {
	name, addr, err = ParseParticipant(arg)
	if err != nil {
		return "", "", invalid("%v", err)
	}
	if a, ok := cur[name]; ok {
		return "", "", invalid("participant %q is already known, at %s (remove it first to move it)", name, a)
	}
	for other, a := range cur {
		if a == addr {
			return "", "", invalid("address %s is already participant %q's", addr, other)
		}
	}
	return name, addr, nil
}

// checkRemove refuses a removal (arg NAME, or NAME=ADDR) that cannot be
// made from the participants cur: an unknown name, the last one.
func checkRemove(cur map[string]string, arg string) (string, error) {
	name := arg
	if name == "" {
		return "", invalid("remove which participant? give its NAME")
	}
	if n, _, ok := strings.Cut(name, "="); ok {
		name = n // NAME=ADDR is accepted as well
	}
	if _, ok := cur[name]; !ok {
		return "", invalid("participant %q is not one of this coordinator's participants", name)
	}
	if len(cur) == 1 {
		return "", invalid("participant %q is the coordinator's last: at least one is required", name)
	}
	return name, nil
}

// changeParticipants serves `admin participants add|remove`: a replica of a
// group changes them through its raft log (partmembers.go).
func (s *Server) changeParticipants(ctx context.Context, kind wire.AdminKind, arg []byte) (ParticipantsReport, error) {
	if s.rep != nil {
		return s.changeReplicated(ctx, kind, string(arg))
	}
	s.partsMu.Lock()
	defer s.partsMu.Unlock()
	var err error
	if kind == wire.AdminParticipantsAdd {
		err = s.addParticipant(string(arg))
	} else {
		err = s.removeParticipant(ctx, string(arg))
	}
	return ParticipantsReport{Participants: s.set().addrs()}, err
}

func (s *Server) addParticipant(arg string) error {
	cur := s.set()
	name, addr, err := checkAdd(cur.addrs(), arg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	// A name removed before may still be barred at the shards.
	if err := s.eachShard(ctx, func(o *shardOutput, _ int) { delete(o.gone, name) }); err != nil {
		return err
	}
	next := cur.addrs()
	next[name] = addr
	if err := saveParticipants(s.cfg.DataDir, next); err != nil {
		return fmt.Errorf("persisting participants: %w", err)
	}
	p := newPeer(s, name, addr)
	s.addedMu.Lock()
	s.added = append(s.added, p)
	s.addedMu.Unlock()
	s.pset.Store(cur.with(name, p))
	s.cfg.Logger.Info("participant added", "name", name, "addr", addr)
	return nil
}

func (s *Server) removeParticipant(ctx context.Context, name string) error {
	cur := s.set()
	name, err := checkRemove(cur.addrs(), name)
	if err != nil {
		return err
	}
	p := cur.peers[name]
	// First without barring anything: a busy participant is refused
	// without a begin aborted on its account.
	if n, err := s.naming(ctx, name, false); err != nil {
		return err
	} else if n > 0 {
		return invalid("participant %q has %d transactions in flight or in doubt (see commitd admin in-doubt): remove it once they are settled", name, n)
	}
	// Withdraw the name from new begins, then bar it at every shard in
	// the same turn that checks it is free there.
	s.pset.Store(&participantSet{peers: cur.peers, names: cur.with(name, nil).names})
	undo := func() {
		s.pset.Store(cur)
		uctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
		defer cancel()
		_ = s.eachShard(uctx, func(o *shardOutput, _ int) { delete(o.gone, name) })
	}
	n, err := s.naming(ctx, name, true)
	if err == nil && n > 0 {
		err = invalid("participant %q has %d transactions in flight or in doubt (see commitd admin in-doubt): remove it once they are settled", name, n)
	}
	if err == nil {
		next := cur.addrs()
		delete(next, name)
		if err = saveParticipants(s.cfg.DataDir, next); err != nil {
			err = fmt.Errorf("persisting participants: %w", err)
		}
	}
	if err != nil {
		undo()
		return err
	}
	s.pset.Store(cur.with(name, nil))
	p.mux.Close()
	// And the connections it dialed in: it reconnects, and is refused as
	// an unknown participant, which its log says.
	s.door.participants.Range(func(k, v any) bool {
		if v.(string) == name {
			k.(*mux.Conn).Close()
		}
		return true
	})
	s.cfg.Logger.Info("participant removed", "name", name, "addr", p.addr)
	return nil
}

// naming counts the transactions in flight that name participant, over
// the shards; bar also tells each shard, in the same turn, to send it no
// more prepares.
func (s *Server) naming(ctx context.Context, name string, bar bool) (int, error) {
	total := 0
	err := s.eachShard(ctx, func(o *shardOutput, i int) {
		total += s.shards[i].Naming(name)
		if bar {
			if o.gone == nil {
				o.gone = make(map[string]bool)
			}
			o.gone[name] = true
		}
	})
	return total, err
}

// eachShard runs fn on every shard's pump goroutine in turn.
func (s *Server) eachShard(ctx context.Context, fn func(o *shardOutput, i int)) error {
	for i, p := range s.pumps {
		o := s.outputs[i]
		if err := p.Do(ctx, func() { fn(o, i) }); err != nil {
			return fmt.Errorf("asking shard %d: %w", i, err)
		}
	}
	return nil
}

// closeAdded closes the connections to the participants added at run time
// (those of the start are in parts().Peers); removing one closed it
// already, and closing twice is harmless.
func (s *Server) closeAdded() error {
	s.addedMu.Lock()
	added := slices.Clone(s.added)
	s.addedMu.Unlock()
	for _, p := range added {
		p.mux.Close()
	}
	return nil
}

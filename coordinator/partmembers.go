package coordinator

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/wal"
)

// Participant changes of a replica group (`admin participants add|remove`
// on a replicated coordinator; docs/ha.md, "Participants").
//
// The participants are state of the raft log, as the replicas are: a
// change is a raft entry that the leader proposes and every replica
// applies in log order — its participant table and its connections to
// participants change when the entry applies — and every snapshot carries
// the table (after the members header), so a replica that catches up from
// a snapshot, or restarts from one, knows them. The answer comes once the
// entry is committed and applied at the leader.
//
// Until the first change the log holds no table and each replica uses its
// --participant list (they are given the same one). The first change's
// entry carries the proposer's list as its base, so from then on every
// replica applies the same table whatever its flags say: the log wins, and
// a replica whose flags differ says so in its log at start.
//
// Whether a change applies is decided at apply time, from the log alone,
// so every replica decides alike: an add of a name already there at
// another address, or of an address another name has, is refused; a
// removal of an unknown name or of the last participant is refused, and so
// is one while a commit record without an end (a commit not yet
// acknowledged by every participant) names the participant. What the log
// cannot see — transactions in flight at the leader that have no record
// yet — the leader checks before it proposes, on its reign's shards, as a
// lone coordinator does (participants.go): it withdraws the name from new
// begins, bars it at every shard in the same turn that counts what names
// it there, and proposes only if nothing does; a refusal undoes the bar.

// Tagged raft entries: a normal entry whose first 8 bytes are zero holds
// no reign's records (a reign's batch starts with its term, never 0); its
// byte 8 says what it holds.
const (
	taggedHeader = 9
	// tagParticipants is a participant change (partChange).
	tagParticipants byte = 1
)

// partSection starts the participants section of a snapshot's data, right
// after the members header; a commit record's length is never this.
const partSection = 0xFFFFFFFE

// partChange is one participant change as its raft entry holds it:
//
//	u64 0 | u8 tagParticipants | u8 op (1 add, 2 remove) | u64 proposer | u64 seq |
//	u16 len, name | u16 len, addr | table (the base)
//
// and a table is u32 n | n × (u16 len, name | u16 len, addr), in name order.
type partChange struct {
	remove     bool
	name, addr string
	// proposer and seq let the leader that proposed it find the admin
	// request waiting for it.
	proposer, seq uint64
	// base is the proposer's participants before the change: the table the
	// change applies to while the log holds none (the first change).
	base map[string]string
}

func (c *partChange) marshal() []byte {
	b := make([]byte, 8, 64)
	b = append(b, tagParticipants)
	op := byte(1)
	if c.remove {
		op = 2
	}
	b = append(b, op)
	b = binary.LittleEndian.AppendUint64(b, c.proposer)
	b = binary.LittleEndian.AppendUint64(b, c.seq)
	b = appendStr(b, c.name)
	b = appendStr(b, c.addr)
	return appendTable(b, c.base)
}

func (c *partChange) unmarshal(d []byte) error {
	if len(d) < taggedHeader+17 || d[8] != tagParticipants || d[9] < 1 || d[9] > 2 {
		return wal.ErrCorrupt
	}
	c.remove = d[9] == 2
	c.proposer = binary.LittleEndian.Uint64(d[10:])
	c.seq = binary.LittleEndian.Uint64(d[18:])
	d = d[26:]
	var ok bool
	if c.name, d, ok = takeStr(d); !ok {
		return wal.ErrCorrupt
	}
	if c.addr, d, ok = takeStr(d); !ok {
		return wal.ErrCorrupt
	}
	if c.base, d, ok = takeTable(d); !ok || len(d) != 0 {
		return wal.ErrCorrupt
	}
	return nil
}

func appendStr(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func takeStr(d []byte) (string, []byte, bool) {
	if len(d) < 2 || len(d) < 2+int(binary.LittleEndian.Uint16(d)) {
		return "", nil, false
	}
	n := int(binary.LittleEndian.Uint16(d))
	return string(d[2 : 2+n]), d[2+n:], true
}

func appendTable(b []byte, t map[string]string) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(t)))
	for _, name := range slices.Sorted(maps.Keys(t)) {
		b = appendStr(b, name)
		b = appendStr(b, t[name])
	}
	return b
}

func takeTable(d []byte) (map[string]string, []byte, bool) {
	if len(d) < 4 {
		return nil, nil, false
	}
	n := binary.LittleEndian.Uint32(d)
	d = d[4:]
	if uint64(n) > uint64(len(d))/4 {
		return nil, nil, false
	}
	t := make(map[string]string, n)
	for range n {
		var name, addr string
		var ok bool
		if name, d, ok = takeStr(d); !ok {
			return nil, nil, false
		}
		if addr, d, ok = takeStr(d); !ok {
			return nil, nil, false
		}
		if checkParticipant(name, addr) != nil {
			return nil, nil, false
		}
		t[name] = addr
	}
	return t, d, true
}

// partState is a replica's participant table and the changes it waits for.
type partState struct {
	// table is the participants as the log last set them; nil while the
	// log holds none (no change yet). Owned by run (by openReplica before
	// it starts).
	table map[string]string
	ops   chan *partOp // admin requests to propose, to run

	// Owned by run: the changes this replica proposed, by seq.
	seq     uint64
	waiting map[uint64]*partOp

	// mu guards withdrawn and every replacement of Server.pset on a
	// replica: the admin request withdraws a name (its goroutine), apply
	// replaces the set (the raft goroutine).
	mu        sync.Mutex
	withdrawn string // a name being removed: refused to new begins
}

// partOp is an admin participant change handed to the raft goroutine.
type partOp struct {
	change partChange
	term   uint64     // the reign whose shards the leader checked
	done   chan error // capacity 1: nil once applied, or why not
}

// errRefusedAtApply marks a change the log refused when it applied.
type errRefusedAtApply struct{ msg string }

func (e *errRefusedAtApply) Error() string { return e.msg }

// startParticipants returns the participants a replica starts with: the
// log's table if it holds one, else --participant. Called by Start once
// openReplica has applied what is committed.
func (r *replica) startParticipants() map[string]string {
	r.parts.ops = make(chan *partOp)
	r.parts.waiting = make(map[uint64]*partOp)
	flags := r.s.cfg.Participants
	if r.parts.table == nil {
		return flags
	}
	if !maps.Equal(r.parts.table, flags) {
		r.s.cfg.Logger.Info("participants as the replicated log last set them (admin participants), not --participant",
			"log", fmtTable(r.parts.table), "flags", fmtTable(flags))
	}
	return maps.Clone(r.parts.table)
}

func fmtTable(t map[string]string) string {
	var b strings.Builder
	for i, name := range slices.Sorted(maps.Keys(t)) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(name + "=" + t[name])
	}
	return b.String()
}

// changeReplicated serves `admin participants add|remove` on a replica, on
// the admin connection's reader goroutine.
func (s *Server) changeReplicated(ctx context.Context, kind wire.AdminKind, arg string) (ParticipantsReport, error) {
	r := s.rep
	s.partsMu.Lock()
	defer s.partsMu.Unlock()
	g := r.cur.Load()
	if g == nil {
		return ParticipantsReport{}, &errAdmin{code: wire.CodeNotLeader}
	}
	c := partChange{remove: kind == wire.AdminParticipantsRemove, proposer: r.id}
	cur := s.set().addrs()
	var err error
	if c.remove {
		c.name, err = checkRemove(cur, arg)
	} else {
		c.name, c.addr, err = checkAdd(cur, arg)
	}
	if err != nil {
		return ParticipantsReport{}, err
	}
	c.base = cur
	if c.remove {
		err = s.removeReplicated(ctx, g, &c)
	} else {
		// A name removed before may still be barred at this reign's shards.
		err = g.eachShard(ctx, func(o *shardOutput, _ *engine.Shard) { delete(o.gone, c.name) })
		if err == nil {
			err = s.proposeParticipants(ctx, g, &c)
		}
	}
	if err == nil {
		s.cfg.Logger.Info("participants changed through the replicated log", "remove", c.remove, "name", c.name, "addr", c.addr)
	}
	return ParticipantsReport{Participants: s.set().addrs()}, err
}

// removeReplicated checks at the leader's shards that nothing in flight
// names the participant, bars it, and proposes the removal; a refusal
// undoes the bar.
func (s *Server) removeReplicated(ctx context.Context, g *reign, c *partChange) error {
	r := s.rep
	inFlight := func(n int) error {
		return invalid("participant %q has %d transactions in flight or in doubt (see commitd admin in-doubt): remove it once they are settled", c.name, n)
	}
	// First without barring anything: a busy participant is refused
	// without a begin aborted on its account.
	if n, err := g.naming(ctx, c.name, false); err != nil {
		return err
	} else if n > 0 {
		return inFlight(n)
	}
	r.withdraw(c.name)
	n, err := g.naming(ctx, c.name, true)
	if err == nil && n > 0 {
		err = inFlight(n)
	}
	if err == nil {
		err = s.proposeParticipants(ctx, g, c)
	}
	if err != nil {
		r.withdraw("")
		uctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
		defer cancel()
		_ = g.eachShard(uctx, func(o *shardOutput, _ *engine.Shard) { delete(o.gone, c.name) })
		return err
	}
	r.withdraw("")
	return nil
}

// proposeParticipants hands the change to the raft goroutine and waits
// until it is applied here (or refused, or leadership is lost). It is
// proposed only while reign g — whose shards the leader checked — lasts.
//
// The wait has no deadline of its own: the raft goroutine answers once the
// entry applies or reign g ends (stepParts), so the answer is never "may
// or may not" within the reign. That matters to a removal: its bar may be
// undone only once the entry can no longer apply while g's shards run (a
// later reign starts only after applying every earlier entry).
func (s *Server) proposeParticipants(ctx context.Context, g *reign, c *partChange) error {
	op := &partOp{change: *c, term: g.term, done: make(chan error, 1)}
	select {
	case s.rep.parts.ops <- op:
	case <-s.life.Stopping():
		return errors.New("the coordinator is stopping")
	case <-ctx.Done():
		return fmt.Errorf("the raft goroutine did not take the change: %w", ctx.Err())
	}
	select {
	case err := <-op.done:
		var ra *errRefusedAtApply
		if errors.As(err, &ra) {
			return invalid("%s", ra.msg)
		}
		return err
	case <-s.life.Stopping():
		return errors.New("the coordinator is stopping; the change may or may not have been made (admin status lists the participants)")
	}
}

// proposeParts proposes an admin change, on the raft goroutine.
func (r *replica) proposeParts(op *partOp) {
	g := r.reign
	if g == nil {
		op.done <- &errAdmin{code: wire.CodeNotLeader}
		return
	}
	if g.term != op.term {
		op.done <- errors.New("leadership changed while the change was checked; try again")
		return
	}
	r.parts.seq++
	op.change.seq = r.parts.seq
	if err := r.rn.Propose(op.change.marshal()); err != nil {
		op.done <- fmt.Errorf("raft did not take the change (%v); try again", err)
		return
	}
	r.parts.waiting[op.change.seq] = op
}

// stepParts fails the changes waiting for an entry that can no longer be
// applied in their term, on the raft goroutine after every turn.
func (r *replica) stepParts() {
	if len(r.parts.waiting) == 0 {
		return
	}
	for seq, op := range r.parts.waiting {
		if g := r.reign; g == nil || g.term != op.term {
			delete(r.parts.waiting, seq)
			op.done <- errors.New("leadership changed during the change; it may or may not have been made — check admin status and try again")
		}
	}
}

// applyTagged applies a tagged entry (d is the whole entry's data).
func (r *replica) applyTagged(index uint64, d []byte) error {
	if len(d) < taggedHeader || d[8] != tagParticipants {
		return fmt.Errorf("coordinator: raft entry %d: unknown tagged entry: %w", index, wal.ErrCorrupt)
	}
	var c partChange
	if err := c.unmarshal(d); err != nil {
		return fmt.Errorf("coordinator: raft entry %d: malformed participant change: %w", index, err)
	}
	why := r.applyParticipants(&c)
	if why != "" {
		r.s.cfg.Logger.Info("participant change refused at apply", "index", index, "remove", c.remove, "name", c.name, "why", why)
	} else {
		r.s.cfg.Logger.Info("participant change applied", "index", index, "remove", c.remove, "name", c.name, "addr", c.addr)
	}
	if c.proposer == r.id {
		if op := r.parts.waiting[c.seq]; op != nil {
			delete(r.parts.waiting, c.seq)
			if why != "" {
				op.done <- &errRefusedAtApply{msg: why}
			} else {
				op.done <- nil
			}
		}
	}
	return nil
}

// applyParticipants applies a change to the log's table, or says why it
// does not apply. It reads only the log's state (the table, the commit
// records without an end), so every replica decides alike.
func (r *replica) applyParticipants(c *partChange) (why string) {
	base := r.parts.table
	if base == nil {
		base = c.base
	}
	var err error
	if c.remove {
		_, err = checkRemove(base, c.name)
		if err == nil {
			if n := r.openNaming(c.name); n > 0 {
				err = fmt.Errorf("participant %q is named by %d commits not yet acknowledged by every participant or staged transactions not yet decided (see commitd admin in-doubt): remove it once they are settled", c.name, n)
			}
		}
	} else if a, ok := base[c.name]; !ok || a != c.addr {
		// The same add again (a retry) changes nothing and is no error.
		_, _, err = checkAdd(base, c.name+"="+c.addr)
	}
	if err != nil {
		return err.Error()
	}
	next := maps.Clone(base)
	if c.remove {
		delete(next, c.name)
	} else {
		next[c.name] = c.addr
	}
	r.setParticipants(next)
	return ""
}

// openNaming counts the commit records without an end, and the staged
// records without a decision, that name participant.
func (r *replica) openNaming(participant string) int {
	n := 0
	var rec engine.Record
	for _, data := range r.open {
		rec = engine.Record{}
		if err := rec.UnmarshalBinary(data); err != nil {
			panic(fmt.Sprintf("coordinator: a record apply accepted does not decode: %v", err))
		}
		if slices.Contains(rec.Participants, participant) {
			n++
		}
	}
	return n
}

// setParticipants makes t the log's table and the server's participants:
// a peer for each new name or address, the connections of those gone
// closed. On the raft goroutine, or before it starts (then Start makes the
// set from the table).
func (r *replica) setParticipants(t map[string]string) {
	r.parts.table = t
	s := r.s
	r.parts.mu.Lock()
	cur := s.set()
	if cur == nil {
		r.parts.mu.Unlock()
		return
	}
	next := &participantSet{peers: make(map[string]*peer, len(t)), names: make(map[string]string, len(t))}
	var added []*peer
	for name, addr := range t {
		p := cur.peers[name]
		if p == nil || p.addr != addr {
			p = newPeer(s, name, addr)
			added = append(added, p)
		}
		next.peers[name] = p
		if name != r.parts.withdrawn {
			next.names[name] = name
		}
	}
	s.addedMu.Lock()
	s.added = append(s.added, added...)
	s.addedMu.Unlock()
	s.pset.Store(next)
	r.parts.mu.Unlock()
	for name, p := range cur.peers {
		if next.peers[name] == p {
			continue
		}
		p.mux.Close()
		// And the connections it dialed in: it reconnects, and is refused
		// as an unknown participant (or, moved, is taken at its new name).
		s.door.participants.Range(func(k, v any) bool {
			if v.(string) == name {
				k.(*mux.Conn).Close()
			}
			return true
		})
	}
}

// withdraw refuses name to new begins ("": none), keeping its peer.
func (r *replica) withdraw(name string) {
	r.parts.mu.Lock()
	defer r.parts.mu.Unlock()
	r.parts.withdrawn = name
	cur := r.s.set()
	next := &participantSet{peers: cur.peers, names: make(map[string]string, len(cur.peers))}
	for n := range cur.peers {
		if n != name {
			next.names[n] = n
		}
	}
	r.s.pset.Store(next)
}

// appendParts appends the snapshot's participants section, if the log
// holds a table.
func (r *replica) appendParts(b []byte) []byte {
	if r.parts.table == nil {
		return b
	}
	b = binary.LittleEndian.AppendUint32(b, partSection)
	return appendTable(b, r.parts.table)
}

// takeParts reads a snapshot's participants section, if it has one, and
// returns the data after it: the table (nil: the log held none then).
func takeParts(d []byte) (map[string]string, []byte, error) {
	if len(d) < 4 || binary.LittleEndian.Uint32(d) != partSection {
		return nil, d, nil
	}
	t, rest, ok := takeTable(d[4:])
	if !ok {
		return nil, nil, fmt.Errorf("malformed participants section: %w", wal.ErrCorrupt)
	}
	return t, rest, nil
}

// restoreParts sets the table from a snapshot (t nil: it held none, and
// neither did the log at that index).
func (r *replica) restoreParts(t map[string]string) error {
	if t == nil {
		if r.parts.table != nil {
			// The log's state is a function of its index: a table once set
			// is in every later snapshot, and raft sends none older.
			return fmt.Errorf("coordinator: a snapshot without participants after the log held some: %w", wal.ErrCorrupt)
		}
		return nil
	}
	r.setParticipants(t)
	return nil
}

// eachShard runs fn on each of the reign's shards' pump goroutines in turn.
func (g *reign) eachShard(ctx context.Context, fn func(o *shardOutput, sh *engine.Shard)) error {
	for i, p := range g.pumps {
		o, sh := g.outputs[i], g.shards[i]
		if err := p.Do(ctx, func() { fn(o, sh) }); err != nil {
			return fmt.Errorf("asking shard %d: %w", i, err)
		}
	}
	return nil
}

// naming counts the reign's transactions in flight that name participant;
// bar also tells each shard, in the same turn, to send it no more
// prepares.
func (g *reign) naming(ctx context.Context, name string, bar bool) (int, error) {
	total := 0
	err := g.eachShard(ctx, func(o *shardOutput, sh *engine.Shard) {
		total += sh.Naming(name)
		if bar {
			if o.gone == nil {
				o.gone = make(map[string]bool)
			}
			o.gone[name] = true
		}
	})
	return total, err
}

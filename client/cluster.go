package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"

	"github.com/commitd/commitd/cluster"
	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/protocol"
	"github.com/google/uuid"
)

// ErrNoGroup is returned for an id whose group the cluster map does not
// list, or lists as retired: no coordinator group would take it.
var ErrNoGroup = errors.New("commitd client: the id's group is not in the cluster map")

// Cluster is a client of a cluster of coordinator groups (docs/scale.md):
// one Client per group, and the map that says which group a new
// transaction goes to. A transaction's group is stamped in its id
// (NewID), so Run and Outcome need no lookup and a new map never moves an
// old transaction.
type Cluster struct {
	opts     Options    // immutable
	reloadMu sync.Mutex // one Options.ClusterReload at a time (refresh)
	mu       struct {
		sync.RWMutex
		m      *cluster.Map
		groups map[uint16]*Client // every group of m that is not retired
	}
}

// DialCluster connects to every group of m that is not retired, and
// waits until each has a connection up (Dial's rules, per group).
func DialCluster(m *cluster.Map, opts Options) (*Cluster, error) {
	c := &Cluster{opts: opts}
	c.mu.m, c.mu.groups = m, make(map[uint16]*Client, len(m.Groups))
	if err := c.dialNew(m); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// dialNew dials every group of m not yet dialed, and closes the clients
// of groups m retired or dropped. Called with mu held for writing, or
// before c is shared.
func (c *Cluster) dialNew(m *cluster.Map) error {
	keep := make(map[uint16]bool, len(m.Groups))
	for _, g := range m.Groups {
		if g.State == cluster.Retired {
			continue
		}
		keep[g.ID] = true
		if c.mu.groups[g.ID] != nil {
			continue
		}
		addrs := make([]string, len(g.Replicas))
		for i, r := range g.Replicas {
			addrs[i] = r.Addr
		}
		cl, err := Dial(strings.Join(addrs, ","), c.opts)
		if err != nil {
			return fmt.Errorf("group %d: %w", g.ID, err)
		}
		c.mu.groups[g.ID] = cl
	}
	for id, cl := range c.mu.groups {
		if !keep[id] {
			cl.Close()
			delete(c.mu.groups, id)
		}
	}
	return nil
}

// Replace puts m in place of the map in use, if m may follow it
// (cluster.Map.CanFollow): new groups are dialed, retired ones closed.
// Transactions already running are not disturbed.
func (c *Cluster) Replace(m *cluster.Map) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := m.CanFollow(c.mu.m); err != nil {
		return err
	}
	if err := c.dialNew(m); err != nil {
		return err
	}
	c.mu.m = m
	return nil
}

// Map returns the map in use.
func (c *Cluster) Map() *cluster.Map {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.mu.m
}

// NewID makes the id of a new transaction: a UUIDv7 stamped with the
// group the map's weights pick.
func (c *Cluster) NewID() (uuid.UUID, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return id, err
	}
	return cluster.Stamp(id, c.Map().Pick(rand.Uint64())), nil
}

// group returns the client of id's group.
func (c *Cluster) group(id uuid.UUID) (*Client, error) {
	g := cluster.GroupOf(id)
	c.mu.RLock()
	cl := c.mu.groups[g]
	c.mu.RUnlock()
	if cl == nil {
		return nil, fmt.Errorf("%w: %v names group %d", ErrNoGroup, id, g)
	}
	return cl, nil
}

// maxFollow bounds how many times one Run takes a newer map and tries
// again: maps change by hand, rarely, so a second refusal under the map
// just taken means the groups and the file disagree, which waiting on a
// loop would not mend.
const maxFollow = 2

// ErrWrongGroup marks a *WrongGroupError (errors.Is).
var ErrWrongGroup = errors.New("commitd client: refused by the cluster map")

// WrongGroupError is a Begin a group refused because of the cluster map
// (cluster.Refusal): the id names another group, or the map the group
// holds drains or retires it. Nothing was started.
type WrongGroupError struct {
	Txn        uuid.UUID
	Refusal    cluster.Refusal
	MapVersion uint64 // the version of the map this client sent it under
	// Reload is why no newer map was had (Options.ClusterReload failed),
	// or nil: none was asked for, or the one had was no newer.
	Reload error
}

func (e *WrongGroupError) Error() string {
	var why string
	if e.Refusal.Owner != e.Refusal.Group {
		why = fmt.Sprintf("it belongs to group %d", e.Refusal.Owner)
	} else {
		why = fmt.Sprintf("the group is %s", e.Refusal.State)
	}
	theirs := fmt.Sprintf("in its cluster map version %d", e.Refusal.Version)
	if e.Refusal.Version == 0 {
		theirs = "(it reads no cluster map)" // a --group without --cluster
	}
	msg := fmt.Sprintf("commitd client: group %d refused %v: %s %s (this client's: version %d)",
		e.Refusal.Group, e.Txn, why, theirs, e.MapVersion)
	if e.Reload != nil {
		msg += "; no newer map: " + e.Reload.Error()
	}
	return msg
}

// Is makes errors.Is(err, ErrWrongGroup) true.
func (e *WrongGroupError) Is(target error) bool { return target == ErrWrongGroup }

// MapFile is an Options.ClusterReload that re-reads the map file at path.
func MapFile(path string) func(context.Context) (*cluster.Map, error) {
	return func(context.Context) (*cluster.Map, error) { return cluster.Load(path) }
}

// Run runs a transaction at the group stamped in id (made by NewID), with
// Client.Run's results. An id of a group the map does not list (or an
// unstamped one) is Rejected as invalid: nothing is sent.
//
// A group that refuses the Begin because of its map (it drains or is
// retired, or the id is another group's: the client's map is older than
// the group's, or wrong) started nothing: Run returns Rejected with a
// *WrongGroupError naming both map versions — unless Options.ClusterReload
// gives a newer map, in which case Run puts it in use and runs the
// transaction again under a new id, stamped by that map. Result.Txn is
// the id that ran: the caller's, or the new one.
func (c *Cluster) Run(ctx context.Context, id uuid.UUID, branches []Branch) (Result, error) {
	for follow := 0; ; follow++ {
		seen := c.Map().Version
		cl, err := c.group(id)
		if err != nil {
			return Result{Txn: id, Outcome: Rejected, Cause: protocol.CauseInvalid, Detail: err.Error()}, nil
		}
		res, err := cl.Run(ctx, id, branches)
		if err != nil || res.Outcome != Rejected || res.Cause != protocol.CauseInvalid {
			return res, err
		}
		ref, ok := cluster.ParseRefusal(res.Detail)
		if !ok {
			return res, nil
		}
		wrong := &WrongGroupError{Txn: id, Refusal: ref, MapVersion: seen}
		if c.opts.ClusterReload == nil || follow == maxFollow {
			return res, wrong
		}
		newer, err := c.refresh(ctx, seen)
		if !newer {
			wrong.Reload = err
			return res, wrong
		}
		// A new id, never this one sent to another group: the id names
		// its group. Every participant sends its vote, ack and inquiries
		// for it to the group stamped in it, and only that group may
		// presume it aborted; run at another group, its participants
		// would ask a group that never saw it — which is refused, or,
		// were it ever answered, a presumed abort of what another group
		// committed. The refused Begin started nothing, so a new id
		// loses nothing.
		if id, err = c.NewID(); err != nil {
			return res, err
		}
	}
}

// refresh puts in use a map newer than version seen, and says whether
// one is now in use: one that another caller put in use meanwhile, or
// one Options.ClusterReload returns. Callers refused at once wait for one
// reload rather than each reading the file.
func (c *Cluster) refresh(ctx context.Context, seen uint64) (bool, error) {
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	if c.Map().Version > seen {
		return true, nil
	}
	m, err := c.opts.ClusterReload(ctx)
	if err != nil {
		return false, err
	}
	if m.Version <= seen {
		return false, nil
	}
	if err := c.Replace(m); err != nil {
		return false, err
	}
	return true, nil
}

// Outcome asks id's group where the transaction stands (Client.Outcome).
func (c *Cluster) Outcome(ctx context.Context, id uuid.UUID) (protocol.TxnStatus, error) {
	cl, err := c.group(id)
	if err != nil {
		return protocol.TxnStatus{}, err
	}
	return cl.Outcome(ctx, id)
}

// Close closes every group's connections.
func (c *Cluster) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, cl := range c.mu.groups {
		cl.Close()
		delete(c.mu.groups, id)
	}
	return nil
}

// ReloadCluster asks the coordinator or participant at addr to re-read
// the cluster map file it was started with (--cluster), as SIGHUP does,
// and returns the version it uses afterwards. A map the server refused
// (it does not parse, or may not follow the one in use), or a server
// started without --cluster, is a *RefusedError saying why in one line;
// the server keeps the map it had. addr is one process: each replica of
// a group holds its own copy of the map, so each is asked on its own.
func ReloadCluster(ctx context.Context, addr string, tlsCfg *tls.Config) (cluster.Reloaded, error) {
	var r cluster.Reloaded
	err := adminOne(ctx, addr, "cluster reload", &wire.AdminRequest{Kind: wire.AdminClusterReload}, tlsCfg, &r)
	return r, err
}

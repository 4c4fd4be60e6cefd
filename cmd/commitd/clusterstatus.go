package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/cluster"
	"github.com/commitd/commitd/coordinator"
)

// This file is `commitd admin status --cluster FILE` (docs/scale.md): every
// replica of every group of a cluster map is asked for its status at once,
// and each group is reported by its leader's view (a lone replica's own),
// with the sums over the groups that answered. A replica or a whole group
// that does not answer is reported, not fatal: an operator asks exactly
// when something is down.

// ClusterStatus is the report of `admin status --cluster`, as its --json
// form prints it.
type ClusterStatus struct {
	// MapVersion is the version of the map file the report was made
	// from.
	MapVersion uint64        `json:"map_version"`
	Groups     []GroupStatus `json:"groups"`
	// Total sums the groups whose leader (or lone replica) answered;
	// GroupsDown counts those that are not in it.
	Total      GroupTotals `json:"total"`
	GroupsDown int         `json:"groups_down"`
}

// GroupStatus is one group of the map as its replicas answered.
type GroupStatus struct {
	Group  uint16 `json:"group"`
	State  string `json:"state"` // the map's: active, draining, retired
	Weight uint32 `json:"weight"`
	// Leader is the address of the replica whose view Totals is (the
	// leader of the highest term that answered, or the lone replica), ""
	// when none; Term is its raft term (0 for a lone replica).
	Leader string `json:"leader"`
	Term   uint64 `json:"term,omitempty"`
	// MapVersion is the cluster map version the leader says it uses (0:
	// it does not say — a coordinator given no map, or one that does not
	// report it).
	MapVersion uint64 `json:"map_version,omitempty"`
	// Totals is the leader's view; zero when Down.
	Totals GroupTotals `json:"totals"`
	// Down says why the group has no view: no replica answered, or none
	// leads. "" when it has one.
	Down     string          `json:"down,omitempty"`
	Replicas []ReplicaStatus `json:"replicas"`
}

// GroupTotals are the counters `admin status --cluster` reports per group
// and in total. Committed, Aborted, Unknown and Rejected count since the
// reporting process started; InFlight and Unacknowledged are what it
// holds now (Unacknowledged: commit decided, not yet acknowledged by every
// participant — the coordinator's in_doubt).
type GroupTotals struct {
	InFlight       int    `json:"in_flight"`
	Committed      uint64 `json:"committed"`
	Aborted        uint64 `json:"aborted"`
	Unknown        uint64 `json:"unknown"`
	Rejected       uint64 `json:"rejected"`
	Unacknowledged int    `json:"unacknowledged"`
}

// ReplicaStatus is one replica's answer, or why there is none.
type ReplicaStatus struct {
	ID   uint64 `json:"id"`
	Addr string `json:"addr"`
	Role string `json:"role,omitempty"` // leader, follower, ...; "" for a lone coordinator
	Term uint64 `json:"term,omitempty"`
	// MapVersion is the cluster map version the replica says it uses, if
	// it says.
	MapVersion uint64 `json:"map_version,omitempty"`
	Error      string `json:"error,omitempty"`
}

// replicaAnswer is a coordinator's admin status as this report reads it:
// with the cluster map version a coordinator that reads the map reports
// (map_version; the outer field wins should coordinator.Status carry one
// too).
type replicaAnswer struct {
	coordinator.Status
	MapVersion uint64 `json:"map_version,omitempty"`
}

func (t *GroupTotals) add(u GroupTotals) {
	t.InFlight += u.InFlight
	t.Committed += u.Committed
	t.Aborted += u.Aborted
	t.Unknown += u.Unknown
	t.Rejected += u.Rejected
	t.Unacknowledged += u.Unacknowledged
}

func totalsOf(st *coordinator.Status) GroupTotals {
	return GroupTotals{InFlight: st.InFlight, Committed: st.Committed, Aborted: st.Aborted,
		Unknown: st.Unknown, Rejected: st.Rejected, Unacknowledged: st.InDoubt}
}

// askCluster asks every replica of every group of m that is not retired
// for its status, all at once, each within perReplica, and builds the
// report. It never fails: what does not answer is reported as such.
func askCluster(ctx context.Context, m *cluster.Map, tlsCfg *tls.Config, perReplica time.Duration) ClusterStatus {
	cs := ClusterStatus{MapVersion: m.Version}
	type answer struct {
		st  replicaAnswer
		err error
	}
	answers := make([][]answer, len(m.Groups))
	var wg sync.WaitGroup
	for gi, g := range m.Groups {
		answers[gi] = make([]answer, len(g.Replicas))
		if g.State == cluster.Retired {
			continue // it owns nothing any more; its replicas may be gone
		}
		for ri, r := range g.Replicas {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(ctx, perReplica)
				defer cancel()
				a := &answers[gi][ri]
				a.err = client.Admin(ctx, r.Addr, "status", tlsCfg, &a.st)
			}()
		}
	}
	wg.Wait()
	for gi, g := range m.Groups {
		gs := GroupStatus{Group: g.ID, State: g.State.String(), Weight: g.Weight}
		sts := make([]*coordinator.Status, len(g.Replicas))
		for ri, r := range g.Replicas {
			a := answers[gi][ri]
			rs := ReplicaStatus{ID: r.ID, Addr: r.Addr}
			switch {
			case g.State == cluster.Retired:
				rs.Error = "not asked: the group is retired"
			case a.err != nil:
				rs.Error = a.err.Error()
			default:
				rs.Role, rs.Term, rs.MapVersion = a.st.Role, a.st.Term, a.st.MapVersion
				sts[ri] = &answers[gi][ri].st.Status
			}
			gs.Replicas = append(gs.Replicas, rs)
		}
		lead, why := leaderOf(sts)
		switch {
		case g.State == cluster.Retired:
			// Neither counted nor down: nothing is expected of it.
		case lead < 0:
			gs.Down = why
			cs.GroupsDown++
		default:
			gs.Leader, gs.Term, gs.Totals = g.Replicas[lead].Addr, sts[lead].Term, totalsOf(sts[lead])
			gs.MapVersion = answers[gi][lead].st.MapVersion
			cs.Total.add(gs.Totals)
		}
		cs.Groups = append(cs.Groups, gs)
	}
	return cs
}

// leaderOf picks the replica whose view stands for the group, from each
// replica's status (nil: no answer): a lone coordinator's own (it has no
// role), else the leader of the highest term — a deposed leader that has
// not yet heard of the next term still says "leader". It returns -1 and
// why when there is none.
func leaderOf(sts []*coordinator.Status) (int, string) {
	lead, answered := -1, 0
	for i, st := range sts {
		if st == nil {
			continue
		}
		answered++
		if len(sts) == 1 && st.Role == "" {
			return i, ""
		}
		if st.Role == "leader" && (lead < 0 || st.Term > sts[lead].Term) {
			lead = i
		}
	}
	switch {
	case lead >= 0:
		return lead, ""
	case answered == 0:
		return -1, "no replica answered"
	}
	return -1, fmt.Sprintf("%d of %d replicas answered, none leads", answered, len(sts))
}

// writeClusterStatus prints the report as a table: one line per group,
// the total, and one line per replica that did not answer.
func writeClusterStatus(w io.Writer, cs ClusterStatus) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "cluster map version %d: %d groups, %d down\n", cs.MapVersion, len(cs.Groups), cs.GroupsDown)
	fmt.Fprintln(tw, "group\tstate\tweight\tin flight\tcommitted\taborted\tunknown\trejected\tunacknowledged\tterm\tmap\tleader\t")
	row := func(name, state, weight string, t GroupTotals, term, mapVersion, leader string) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t\n", name, state, weight,
			t.InFlight, t.Committed, t.Aborted, t.Unknown, t.Rejected, t.Unacknowledged, term, mapVersion, leader)
	}
	for _, g := range cs.Groups {
		if g.State == cluster.Retired.String() {
			fmt.Fprintf(tw, "%d\t%s\t%d\t-\t-\t-\t-\t-\t-\t-\t-\tnot asked\t\n", g.Group, g.State, g.Weight)
			continue
		}
		if g.Down != "" {
			fmt.Fprintf(tw, "%d\t%s\t%d\t-\t-\t-\t-\t-\t-\t-\t-\tDOWN: %s\t\n", g.Group, g.State, g.Weight, g.Down)
			continue
		}
		term := "-"
		if g.Term > 0 {
			term = fmt.Sprint(g.Term)
		}
		mv := "-"
		if g.MapVersion > 0 {
			mv = fmt.Sprint(g.MapVersion)
		}
		row(fmt.Sprint(g.Group), g.State, fmt.Sprint(g.Weight), g.Totals, term, mv, g.Leader)
	}
	row("total", "", "", cs.Total, "", "", "")
	if err := tw.Flush(); err != nil {
		return err
	}
	var b strings.Builder
	for _, g := range cs.Groups {
		for _, r := range g.Replicas {
			if r.Error != "" && g.State != cluster.Retired.String() {
				fmt.Fprintf(&b, "group %d replica %d (%s): %s\n", g.Group, r.ID, r.Addr, r.Error)
			}
			if r.MapVersion != 0 && r.MapVersion != cs.MapVersion {
				fmt.Fprintf(&b, "group %d replica %d (%s) uses cluster map version %d; this file is version %d\n",
					g.Group, r.ID, r.Addr, r.MapVersion, cs.MapVersion)
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// runClusterStatus is `admin status --cluster FILE [--json]`: the report
// goes to w; the error is nil even when groups are down (the report says
// so), unless every group is.
func runClusterStatus(ctx context.Context, w io.Writer, mapFile string, asJSON bool, tlsCfg *tls.Config) error {
	m, err := cluster.Load(mapFile)
	if err != nil {
		return fmt.Errorf("--cluster: %w", err)
	}
	// A replica that is paused or cut off answers nothing: give each a
	// share of the whole timeout so the report comes while others answer.
	per := 3 * time.Second
	if d, ok := ctx.Deadline(); ok {
		per = min(per, time.Until(d))
	}
	cs := askCluster(ctx, m, tlsCfg, per)
	if asJSON {
		b, err := json.MarshalIndent(cs, "", "  ")
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "%s\n", b); err != nil {
			return err
		}
	} else if err := writeClusterStatus(w, cs); err != nil {
		return err
	}
	live := 0
	for _, g := range cs.Groups {
		if g.State != cluster.Retired.String() {
			live++
		}
	}
	if cs.GroupsDown == live {
		return fmt.Errorf("no group of %s answered", mapFile)
	}
	return nil
}

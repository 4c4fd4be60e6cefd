package bench

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/cluster"
	"github.com/google/uuid"
)

// This file is the load against a cluster of coordinator groups
// (Config.Cluster, docs/scale.md): each id is stamped with a group chosen
// by the weights of the map the cluster client holds at that moment (a map
// replaced during the run — client.Cluster.Replace — takes effect at the
// next id), and every outcome is recorded twice: in the run's figures and
// in its group's (Report.Groups).

// GroupReport is one coordinator group's share of a cluster run.
type GroupReport struct {
	Group         uint16  `json:"group"`
	Committed     int64   `json:"committed"`
	Aborted       int64   `json:"aborted"`
	Unknown       int64   `json:"unknown"`
	Rejected      int64   `json:"rejected"`
	Errors        int64   `json:"errors"`
	CommittedPerS float64 `json:"committed_per_s"` // over the whole measured run
	P50ms         float64 `json:"p50_ms"`          // committed transactions'
	P99ms         float64 `json:"p99_ms"`
	// CPUusPerTxn is the group's coordinator CPU (every replica that
	// Config.SampleGroup counts) per transaction of the group answered;
	// 0 without SampleGroup or when the group could not be read at both
	// ends of the run.
	CPUusPerTxn float64 `json:"cpu_us_per_txn,omitempty"`
}

// groupRecorders holds a recorder per group that has had a transaction,
// made on first use: a group added during the run gets one when its first
// id is stamped.
type groupRecorders struct {
	recs [cluster.MaxGroup + 1]atomic.Pointer[recorder]
}

func (g *groupRecorders) of(group uint16) *recorder {
	if r := g.recs[group].Load(); r != nil {
		return r
	}
	g.recs[group].CompareAndSwap(nil, newRecorder())
	return g.recs[group].Load()
}

// stampedID returns a fresh id for w's next transaction: stamped with a
// group by the cluster map's weights when the run drives a cluster.
func (r *runner) stampedID(w *worker, now time.Time) (uuid.UUID, uint16) {
	id := w.ids.next(now)
	if r.cfg.Cluster == nil {
		return id, 0
	}
	g := r.cfg.Cluster.Map().Pick(w.ids.rng.Uint64())
	return cluster.Stamp(id, g), g
}

// run sends the transaction to the coordinator, or to its group's.
func (r *runner) run(ctx context.Context, id uuid.UUID, branches []client.Branch) (client.Result, error) {
	if r.cfg.Cluster != nil {
		res, err := r.cfg.Cluster.Run(ctx, id, branches)
		if errors.Is(err, client.ErrWrongGroup) {
			// A group refused it by its map (res.Detail says why): counted
			// as rejected, as any refusal that started nothing. The bench
			// sets no ClusterReload — it takes maps on SIGHUP — so the
			// result is always for id, which the ack log records.
			err = nil
		}
		return res, err
	}
	return r.cfg.Client.Run(ctx, id, branches)
}

// groupSamples reads every group of the cluster's current map
// (Config.SampleGroup); a group that cannot be read is left out.
func (r *runner) groupSamples(ctx context.Context) map[uint16]ServerSample {
	if r.cfg.Cluster == nil || r.cfg.SampleGroup == nil {
		return nil
	}
	out := map[uint16]ServerSample{}
	for _, g := range r.cfg.Cluster.Map().Groups {
		if g.State == cluster.Retired {
			continue
		}
		if s, err := r.cfg.SampleGroup(ctx, g.ID); err == nil {
			out[g.ID] = s
		}
	}
	return out
}

// groupReports builds Report.Groups, in group order, from the per-group
// recorders and the samples taken when measuring began and ended. A group
// absent from first (added during the run) counts from zero: its
// processes started during the run.
func (r *runner) groupReports(elapsed time.Duration, first, last map[uint16]ServerSample) []GroupReport {
	var out []GroupReport
	for g := range r.groups.recs {
		rec := r.groups.recs[g].Load()
		if rec == nil {
			continue
		}
		rep := rec.report()
		gr := GroupReport{Group: uint16(g), Committed: rep.Committed, Aborted: rep.Aborted, Unknown: rep.Unknown,
			Rejected: rep.Rejected, Errors: rep.Errors, CommittedPerS: float64(rep.Committed) / elapsed.Seconds(),
			P50ms: rep.P50ms, P99ms: rep.P99ms}
		if l, ok := last[uint16(g)]; ok {
			answered := float64(max(1, rep.Committed+rep.Aborted+rep.Unknown+rep.Rejected))
			gr.CPUusPerTxn = (l.CPUSeconds - first[uint16(g)].CPUSeconds) * 1e6 / answered
		}
		out = append(out, gr)
	}
	return out
}

// groupSummary is Summary's per-group table.
func (r Report) groupSummary(b []byte) []byte {
	if len(r.Groups) == 0 {
		return b
	}
	b = fmt.Appendf(b, "groups        %-6s %10s %9s %8s %8s %8s %8s %10s\n", "group", "committed", "/s", "p50", "p99", "aborted", "unknown", "µs CPU/txn")
	var sum GroupReport
	for _, g := range r.Groups {
		b = fmt.Appendf(b, "              %-6d %10d %9.0f %8.2f %8.2f %8d %8d %10.1f\n",
			g.Group, g.Committed, g.CommittedPerS, g.P50ms, g.P99ms, g.Aborted, g.Unknown, g.CPUusPerTxn)
		sum.Committed += g.Committed
		sum.Aborted += g.Aborted
		sum.Unknown += g.Unknown
	}
	return fmt.Appendf(b, "              %-6s %10d %9.0f %8.2f %8.2f %8d %8d\n",
		"total", sum.Committed, r.CommittedPerS, r.P50ms, r.P99ms, sum.Aborted, sum.Unknown)
}

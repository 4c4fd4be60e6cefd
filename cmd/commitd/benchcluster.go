package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/commitd/commitd/bench"
	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/cluster"
	"github.com/commitd/commitd/coordinator"
)

// This file is what `commitd bench --cluster FILE` adds to bench: the
// coordinators' counters read per group, and the map re-read on SIGHUP.

// sampleGroup sums the runtime counters of every replica of group g that
// answers: a group's cost is its followers' work too. It fails only when
// none answers.
func sampleGroup(ctx context.Context, m *cluster.Map, g uint16, tlsCfg *tls.Config) (bench.ServerSample, error) {
	grp, ok := m.Group(g)
	if !ok {
		return bench.ServerSample{}, fmt.Errorf("group %d is not in the cluster map", g)
	}
	var sum bench.ServerSample
	var errs []error
	for _, r := range grp.Replicas {
		var st coordinator.Status
		if err := client.Admin(ctx, r.Addr, "status", tlsCfg, &st); err != nil {
			errs = append(errs, fmt.Errorf("group %d replica %d: %w", g, r.ID, err))
			continue
		}
		sum.Mallocs += st.Mallocs
		sum.HeapBytes += st.HeapBytes
		sum.CPUSeconds += st.CPUSeconds
	}
	if len(errs) == len(grp.Replicas) {
		return sum, errors.Join(errs...)
	}
	return sum, nil
}

// sampleCluster sums sampleGroup over every group of m that is not
// retired: the report's "coordinator" line is then every coordinator
// process of the cluster together.
func sampleCluster(ctx context.Context, m *cluster.Map, tlsCfg *tls.Config) (bench.ServerSample, error) {
	var sum bench.ServerSample
	for _, g := range m.Groups {
		if g.State == cluster.Retired {
			continue
		}
		s, err := sampleGroup(ctx, m, g.ID, tlsCfg)
		if err != nil {
			return sum, err
		}
		sum.Mallocs += s.Mallocs
		sum.HeapBytes += s.HeapBytes
		sum.CPUSeconds += s.CPUSeconds
	}
	return sum, nil
}

// reloadOnHangup re-reads path on every SIGHUP and puts the map in use
// (client.Cluster.Replace: a newer version, no group dropped undrained);
// a file that does not parse or may not follow is reported on stderr and
// the map in use is kept. The returned function stops it.
func reloadOnHangup(path string, cc *client.Cluster) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-done:
				return
			case <-hup:
			}
			m, err := cluster.Load(path)
			if err == nil {
				err = cc.Replace(m)
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "\ncommitd bench: SIGHUP: keeping cluster map version %d: %v\n", cc.Map().Version, err)
				continue
			}
			fmt.Fprintf(os.Stderr, "\ncommitd bench: SIGHUP: cluster map version %d in use (%d groups)\n", m.Version, len(m.Groups))
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
		<-finished
	}
}

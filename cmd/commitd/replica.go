package main

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/commitd/commitd/coordinator"
)

// peerList collects --peers ID=ADDR,ID=ADDR,...: every replica of a
// replicated coordinator, by raft id, at its --listen address.
type peerList map[uint64]string

func (p peerList) String() string {
	var parts []string
	for id, a := range p {
		parts = append(parts, fmt.Sprintf("%d=%s", id, a))
	}
	return strings.Join(parts, ",")
}

func (p peerList) Set(v string) error {
	for _, item := range strings.Split(v, ",") {
		ids, addr, ok := strings.Cut(strings.TrimSpace(item), "=")
		id, err := strconv.ParseUint(ids, 10, 64)
		if !ok || err != nil || id == 0 || addr == "" {
			return fmt.Errorf("want ID=ADDR with ID from 1, got %q", item)
		}
		if _, dup := p[id]; dup {
			return fmt.Errorf("replica %d named twice", id)
		}
		p[id] = addr
	}
	return nil
}

// replicaFlags registers --id, --peers and the raft timing flags on fs and
// returns what fills them in cfg after parsing.
func replicaFlags(fs *flag.FlagSet, cfg *coordinator.Config) func() error {
	peers := peerList{}
	fs.Uint64Var(&cfg.ID, "id", 0, "this replica's id in --peers (replicated coordinator)")
	fs.Var(peers, "peers", "every replica of a replicated coordinator as ID=ADDR,ID=ADDR,... at its --listen address, this one's included (off: a lone coordinator). "+
		"On an empty --data it bootstraps the group's configuration, the same on every replica; afterwards the configuration in the raft log wins "+
		"(changed with admin replicas add|remove), so a replica restarts with its original --peers, and only a member --peers puts at another address is refused. "+
		"With --join: the members it may hear from while it waits to be added")
	fs.BoolVar(&cfg.Join, "join", false, "replicated: join an existing group instead of bootstrapping one: start with an empty --data, then run admin replicas add ID=ADDR at the group's leader; never bootstraps a configuration")
	fs.DurationVar(&cfg.RaftTick, "raft-tick", 50*time.Millisecond, "replicated: raft clock period (a leader's heartbeat)")
	fs.IntVar(&cfg.ElectionTicks, "election-ticks", 10, "replicated: raft ticks without a leader before an election (randomised up to twice as many)")
	fs.StringVar(&cfg.ReplicaIdentity, "replica-identity", "", "replicated, with TLS: the other replicas' certificates must be valid for this, dialing in and dialed (a DNS name or IP in its SANs, or its CN; default: the host of each replica's --peers address)")
	return func() error {
		if len(peers) == 0 {
			if cfg.ID != 0 {
				return usageError{fmt.Errorf("--id %d without --peers", cfg.ID)}
			}
			if cfg.Join {
				return usageError{errors.New("--join without --peers (the group's replicas it may hear from) and --id")}
			}
			if cfg.ReplicaIdentity != "" {
				return usageError{fmt.Errorf("--replica-identity %s without --peers: a lone coordinator has no replicas", cfg.ReplicaIdentity)}
			}
			return nil
		}
		if cfg.ID == 0 {
			return usageError{fmt.Errorf("--peers needs --id (one of %s)", peers)}
		}
		if _, ok := peers[cfg.ID]; !ok {
			return usageError{fmt.Errorf("--id %d is not in --peers %s", cfg.ID, peers)}
		}
		listenSet := false
		fs.Visit(func(f *flag.Flag) { listenSet = listenSet || f.Name == "listen" })
		if !listenSet {
			cfg.Listen = peers[cfg.ID]
		}
		cfg.Peers = peers
		return nil
	}
}

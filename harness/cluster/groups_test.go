package cluster_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	commitdcluster "github.com/commitd/commitd/cluster"
	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/commitd/commitd/participant"
	"github.com/commitd/commitd/participant/bank"
)

// Two coordinator groups share two bank participants (docs/scale.md): the
// client stamps each transaction with a group by the map's weights, each
// group runs only its own, and the participants send every vote, ack and
// inquiry to the transaction's group. Group 1 is stopped under load and
// restarted: what the participants held in doubt for it is settled by
// group 1 alone — group 2 is never asked about a group-1 transaction
// (which it would have to presume aborted) — and money is conserved.
func TestTwoGroupsShareParticipants(t *testing.T) {
	const accounts, balance = 100, 1000
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	coordLn := []net.Listener{listen(), listen()}
	partLn := []net.Listener{listen(), listen()}
	m, err := commitdcluster.Parse(strings.NewReader(fmt.Sprintf(
		"version 1\ngroup 1 replicas 1=%s weight 1\ngroup 2 replicas 1=%s weight 1\n",
		coordLn[0].Addr(), coordLn[1].Addr())), "test")
	if err != nil {
		t.Fatal(err)
	}
	coordCfg := func(g uint16, ln net.Listener, dir string) coordinator.Config {
		return coordinator.Config{Listener: ln, DataDir: dir, Group: g, Shards: 2, SegmentBytes: 1 << 20,
			Participants:   map[string]string{"p1": partLn[0].Addr().String(), "p2": partLn[1].Addr().String()},
			PrepareTimeout: 500 * time.Millisecond, Logger: nodetest.Quiet()}
	}
	dir1 := t.TempDir()
	// Each side dials the other: start them all, then wait.
	startCoord := func(cfg coordinator.Config) *coordinator.Server {
		c, err := coordinator.Start(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	coords := []*coordinator.Server{startCoord(coordCfg(1, coordLn[0], dir1)), startCoord(coordCfg(2, coordLn[1], t.TempDir()))}
	parts := make([]*participant.Server, 2)
	for i := range parts {
		p, err := participant.Start(participant.Config{
			Name: fmt.Sprintf("p%d", i+1), Listener: partLn[i], DataDir: t.TempDir(), Cluster: m,
			Resource: bank.New(accounts, balance), SegmentBytes: 1 << 20,
			InquireAfter: 50 * time.Millisecond, InquireMax: 200 * time.Millisecond, Logger: nodetest.Quiet(),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		parts[i] = p
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range coords {
		if err := c.WaitConnected(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range parts {
		if err := p.WaitConnected(ctx); err != nil {
			t.Fatal(err)
		}
	}
	cl, err := client.DialCluster(m, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	// Transfers of 1 from p1's account i to p2's, and back, from 8 callers,
	// until stop: group 1 is stopped under this load.
	stop := make(chan struct{})
	done := make(chan [2]int, 8)
	for c := range 8 {
		go func() {
			var n [2]int // committed, not committed
			for i := 0; ; i++ {
				select {
				case <-stop:
					done <- n
					return
				default:
				}
				id, err := cl.NewID()
				if err != nil {
					t.Error(err)
				}
				from, to := 0, 1
				if i%2 == 1 {
					from, to = 1, 0
				}
				acct := uint32((c*13 + i) % accounts)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				res, _ := cl.Run(ctx, id, []client.Branch{
					{Participant: fmt.Sprintf("p%d", from+1), Work: bank.AppendWork(nil, acct, -1)},
					{Participant: fmt.Sprintf("p%d", to+1), Work: bank.AppendWork(nil, acct, 1)},
				})
				cancel()
				if res.Outcome == client.Committed {
					n[0]++
				} else {
					n[1]++
				}
			}
		}()
	}
	nodetest.Eventually(t, "both groups committing", func() bool {
		return coords[0].Status().Committed > 50 && coords[1].Status().Committed > 50
	})
	coords[0].Close()
	<-coords[0].Done()
	time.Sleep(300 * time.Millisecond) // the participants inquire about group 1's meanwhile
	coordLn[0] = nil
	close(stop)
	committed := 0
	for range 8 {
		n := <-done
		committed += n[0]
	}
	// Group 1 back on its address and its log: it settles its own.
	ln, err := net.Listen("tcp", m.Groups[0].Replicas[0].Addr)
	if err != nil {
		t.Fatal(err)
	}
	coords[0] = startCoord(coordCfg(1, ln, dir1))
	nodetest.Eventually(t, "nothing in doubt anywhere", func() bool {
		for _, p := range parts {
			if p.AccountsSummary().Prepared != 0 {
				return false
			}
		}
		for _, c := range coords {
			if st := c.Status(); st.InDoubt != 0 || st.InFlight != 0 {
				return false
			}
		}
		return true
	})
	total := int64(0)
	for i, p := range parts {
		a := p.AccountsSummary()
		total += a.Total
		var st participant.Status
		nodetest.Report(t, partLn[i].Addr().String(), "status", &st)
		if st.UnknownGroup != 0 {
			t.Errorf("p%d dropped %d messages of a group not in the map", i+1, st.UnknownGroup)
		}
	}
	if total != 2*accounts*balance {
		t.Fatalf("money: %d, want %d", total, 2*accounts*balance)
	}
	for i, c := range coords {
		if st := c.Status(); st.OtherGroup != 0 || st.Group != uint16(i+1) {
			t.Fatalf("group %d: status group %d, %d messages about another group's transactions", i+1, st.Group, st.OtherGroup)
		}
	}
	if committed < 100 {
		t.Fatalf("%d committed", committed)
	}
	t.Logf("%d committed; group 1 then 2: %d, %d committed since their starts", committed, coords[0].Status().Committed, coords[1].Status().Committed)
}

package coordinator_test

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/internal/node/nodetest"
	"github.com/commitd/commitd/protocol"
)

// liveHeap is the heap in use right after a collection.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// A coordinator fed aborts as fast as clients can send them keeps its heap
// bounded: every transaction names a participant it has no connection to,
// so each aborts at once (unreachable) and is remembered for Remember —
// without a bound on what a shard holds, memory grew with the rate of
// aborts (5.8 M in 40 s left 281 MB). Remember is long here so that
// nothing is forgotten during the test: only MaxTxns can bound it.
func TestFloodOfQuickAbortsKeepsHeapBounded(t *testing.T) {
	const (
		maxTxns     = 20_000
		callers     = 64
		heapMiB     = 16 // what the coordinator may keep, MiB
		minTxns     = 3 * maxTxns
		rememberFor = 10 * time.Minute
		// The flood is counted, not timed, so that a slow machine (the
		// race detector, shared cores) floods as far as a fast one; the
		// limit only stops a hung run.
		limit = 2 * time.Minute
	)
	dead := nodetest.FreeAddr(t) // nothing listens there
	c, err := coordinator.Start(coordinator.Config{
		Listen:       "127.0.0.1:0",
		DataDir:      t.TempDir(),
		Participants: map[string]string{"p3": dead},
		Shards:       2,
		Remember:     rememberFor,
		MaxTxns:      maxTxns,
		SegmentBytes: 1 << 20,
		Logger:       nodetest.Quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	cl, err := client.Dial(c.Addr().String(), client.Options{Conns: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })

	before := liveHeap()
	var aborted, overloaded atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			bs := []client.Branch{{Participant: "p3", Work: []byte("work")}}
			for ctx.Err() == nil && aborted.Load()+overloaded.Load() < minTxns {
				res, err := cl.Run(ctx, newID(), bs)
				switch {
				case err != nil && ctx.Err() != nil:
					return
				case err != nil:
					t.Errorf("run: %v", err)
					return
				case res.Outcome == client.Aborted && res.Cause == protocol.CauseUnreachable:
					aborted.Add(1)
				case res.Outcome == client.Rejected && res.Cause == protocol.CauseOverloaded:
					overloaded.Add(1)
				default:
					t.Errorf("result %v (cause %v), want aborted (unreachable) or rejected (overloaded)", res, res.Cause)
					return
				}
			}
		})
	}
	wg.Wait()
	flood := time.Since(start).Round(time.Millisecond)
	after := liveHeap()
	grew := int64(after) - int64(before)
	st := c.Status()
	t.Logf("%v flood, %d callers: %d aborted, %d rejected as overloaded (%.0f/s); live heap %.1f MiB before, %.1f MiB after (%+.1f MiB); coordinator in flight %d",
		flood, callers, aborted.Load(), overloaded.Load(), float64(aborted.Load()+overloaded.Load())/flood.Seconds(),
		mib(before), mib(after), float64(grew)/(1<<20), st.InFlight)
	if aborted.Load()+overloaded.Load() < minTxns {
		t.Fatalf("only %d transactions in %v: the flood did not reach %d (3× the bound %d), so it proves nothing", aborted.Load()+overloaded.Load(), flood, minTxns, maxTxns)
	}
	if aborted.Load() > maxTxns {
		t.Errorf("%d transactions aborted, remembered for %v: more than MaxTxns %d were admitted", aborted.Load(), rememberFor, maxTxns)
	}
	if grew > heapMiB<<20 {
		t.Errorf("the live heap grew %.1f MiB during the flood; want at most %d MiB", float64(grew)/(1<<20), heapMiB)
	}
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

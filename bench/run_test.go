package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/client/clienttest"
	"github.com/commitd/commitd/harness/chaos"
	"github.com/google/uuid"
)

// fake starts a stand-in coordinator (decide as in clienttest.Start) and
// a client connected to it.
func fake(t testing.TB, decide func(uuid.UUID) client.Outcome) (*clienttest.Coordinator, *client.Client) {
	t.Helper()
	c, err := clienttest.Start(decide)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	cl, err := client.Dial(c.Addr, client.Options{Conns: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return c, cl
}

var twoBanks = Workload{Names: []string{"p1", "p2"}, Accounts: 1000, PerTxn: 2}

// TestIDs checks the ids a caller makes: valid version 7 UUIDs in the RFC
// variant, stamped with the time given, distinct across callers seeded
// separately, and ordered by time within a caller.
func TestIDs(t *testing.T) {
	seen := map[uuid.UUID]bool{}
	base := time.Date(2026, 11, 26, 5, 0, 0, 0, time.UTC)
	for c := range 50 {
		var src idSource
		src.seed()
		var prev uuid.UUID
		for i := range 200 {
			now := base.Add(time.Duration(i) * 300 * time.Microsecond)
			id := src.next(now)
			if id.Version() != 7 || id.Variant() != uuid.RFC4122 {
				t.Fatalf("%v: version %v variant %v", id, id.Version(), id.Variant())
			}
			if sec, nsec := id.Time().UnixTime(); sec*1000+nsec/1e6 != now.UnixMilli() {
				t.Fatalf("%v carries %d ms, want %d", id, sec*1000+nsec/1e6, now.UnixMilli())
			}
			if seen[id] {
				t.Fatalf("caller %d made %v twice", c, id)
			}
			seen[id] = true
			if i > 0 && bytes.Compare(prev[:8], id[:8]) >= 0 {
				t.Fatalf("%v does not sort after %v, 300 µs earlier", id, prev)
			}
			prev = id
		}
	}
	// The random half differs between ids stamped with the same instant.
	var src idSource
	src.seed()
	if a, b := src.next(base), src.next(base); a == b {
		t.Fatalf("two ids at one instant are equal: %v", a)
	}
}

// TestRunLogsEveryOutcome runs the load generator against a stand-in
// coordinator that answers a mix of outcomes, with an ack log: every
// transaction must be counted once under the outcome it was told and
// logged once, well-formed for the chaos checker, with that outcome.
func TestRunLogsEveryOutcome(t *testing.T) {
	decide := func(id uuid.UUID) client.Outcome {
		switch id[15] % 8 {
		case 0:
			return client.Aborted
		case 1:
			return client.Rejected
		}
		return client.Committed
	}
	coord, cl := fake(t, decide)
	ack := &countingWriter{} // written by the ack log's goroutine only, read after Run
	const txns = 5000
	rep, err := Run(context.Background(), Config{Client: cl, Work: twoBanks, Concurrency: 32, Txns: txns, Seed: 7, AckLog: ack})
	if err != nil {
		t.Fatal(err)
	}
	if got := rep.Committed + rep.Aborted + rep.Rejected; got != txns || rep.Unknown != 0 || rep.Errors != 0 {
		t.Fatalf("report: %+v; want %d transactions, all answered", rep, txns)
	}
	if coord.Begins() != txns {
		t.Fatalf("the coordinator saw %d Begins, want %d", coord.Begins(), txns)
	}
	told := map[client.Outcome]int64{}
	ids := map[uuid.UUID]bool{}
	err = chaos.EachAck(bytes.NewReader(ack.Bytes()), func(a chaos.Ack) error {
		if ids[a.Txn] {
			return fmt.Errorf("%v logged twice", a.Txn)
		}
		ids[a.Txn] = true
		if a.Txn.Version() != 7 {
			return fmt.Errorf("%v is not a version 7 id", a.Txn)
		}
		if a.Participants != "p1,p2" && a.Participants != "p2,p1" {
			return fmt.Errorf("%v: participants %q", a.Txn, a.Participants)
		}
		want := decide(a.Txn)
		if a.Told.String() != want.String() {
			return fmt.Errorf("%v logged %v, the coordinator said %v", a.Txn, a.Told, want)
		}
		told[want]++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(ack.Bytes(), []byte("\n")) {
		t.Fatal("the ack log does not end with a whole line")
	}
	if len(ids) != txns || told[client.Committed] != rep.Committed || told[client.Aborted] != rep.Aborted || told[client.Rejected] != rep.Rejected {
		t.Fatalf("logged %d lines %v; report %+v", len(ids), told, rep)
	}
	// Every transaction not committed is counted under its cause, and the
	// summary names the causes.
	causes := map[string]int64{}
	for _, c := range rep.Causes {
		causes[c.String()] += c.Count
	}
	if len(causes) != 2 || causes["aborted voted-no at p1"] != rep.Aborted || causes["rejected invalid"] != rep.Rejected {
		t.Fatalf("causes %v; report aborted %d rejected %d", causes, rep.Aborted, rep.Rejected)
	}
	if sum := rep.Summary(); !strings.Contains(sum, "aborted voted-no at p1") || !strings.Contains(sum, "rejected invalid") {
		t.Fatalf("the summary names no cause:\n%s", sum)
	}
	// Rounds gather the lines of concurrent callers: far fewer writes than
	// lines (a write per transaction is what the ack log exists to avoid).
	t.Logf("%d lines in %d writes", txns, ack.writes)
	if ack.writes > txns/2 {
		t.Fatalf("%d lines took %d writes", txns, ack.writes)
	}
}

// countingWriter is a bytes.Buffer that counts Write calls.
type countingWriter struct {
	bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

// failWriter fails every write.
type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("no space left on device") }

// TestRunStopsOnAckLogError: a run whose ack log cannot be written stops
// early and says so.
func TestRunStopsOnAckLogError(t *testing.T) {
	_, cl := fake(t, nil)
	start := time.Now()
	_, err := Run(context.Background(), Config{Client: cl, Work: twoBanks, Concurrency: 4, Duration: time.Minute, AckLog: failWriter{}})
	if err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("Run: %v, want the ack log's error", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("the run went on for %v after its ack log failed", d)
	}
}

// TestRunAllocs checks that the load generator allocates nothing per
// transaction (client, runner, ack log, ids; the stand-in coordinator in
// this process too): heap allocations over a whole run of 20,000
// transactions, setup included, must stay far below one per transaction.
// It bites without -race (go test ./bench/).
func TestRunAllocs(t *testing.T) {
	_, cl := fake(t, nil)
	cfg := Config{Client: cl, Work: twoBanks, Concurrency: 64, Seed: 3, AckLog: io.Discard}
	cfg.Txns = 2000 // warm the pools
	if _, err := Run(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	const txns = 20_000
	cfg.Txns = txns
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	rep, err := Run(context.Background(), cfg)
	runtime.ReadMemStats(&after)
	if err != nil || rep.Committed != txns {
		t.Fatalf("%d committed, %v", rep.Committed, err)
	}
	perTxn := float64(after.Mallocs-before.Mallocs) / txns
	t.Logf("%.3f allocations per transaction, setup included", perTxn)
	if perTxn > 0.25 && !raceEnabled {
		t.Fatalf("%.3f allocations per transaction, want about 0", perTxn)
	}
}

// TestWarmupIsNotMeasured: transactions of the warmup are logged but in no
// figure, the coordinator's counters are read when it ends, and the
// figures cover only the measured part.
func TestWarmupIsNotMeasured(t *testing.T) {
	coord, cl := fake(t, nil)
	ack := &countingWriter{}
	var mu sync.Mutex
	samples := 0
	var firstAt time.Time
	start := time.Now()
	rep, err := Run(context.Background(), Config{
		Client: cl, Work: twoBanks, Concurrency: 8, Seed: 3, AckLog: ack,
		Warmup: 400 * time.Millisecond, Duration: 400 * time.Millisecond,
		Sample: func(context.Context) (ServerSample, error) {
			mu.Lock()
			defer mu.Unlock()
			samples++
			if samples == 1 {
				firstAt = time.Now()
			}
			return ServerSample{Mallocs: uint64(samples)}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	lines := int64(bytes.Count(ack.Bytes(), []byte("\n")))
	measured := rep.Committed + rep.Aborted + rep.Unknown + rep.Rejected + rep.Errors
	t.Logf("%d begins, %d logged, %d measured over %.2f s", coord.Begins(), lines, measured, rep.Seconds)
	if measured == 0 || measured >= lines || lines < coord.Begins()-8 {
		t.Fatalf("measured %d of %d logged transactions (%d begins): the warmup should be logged, not measured", measured, lines, coord.Begins())
	}
	if rep.Seconds < 0.3 || rep.Seconds > 0.7 {
		t.Fatalf("measured over %.2f s, want the 0.4 s after the warmup", rep.Seconds)
	}
	if d := firstAt.Sub(start); d < 350*time.Millisecond {
		t.Fatalf("the coordinator's counters were first read %v after the start, before the warmup ended", d)
	}
	if _, err := Run(context.Background(), Config{Client: cl, Work: twoBanks, Txns: 10, Warmup: time.Second}); err == nil {
		t.Fatal("a warmup without a duration was accepted")
	}
}

// TestRunRejectsNegativeSettings: a negative count is a mistake, not a
// request for the default.
func TestRunRejectsNegativeSettings(t *testing.T) {
	_, cl := fake(t, nil)
	for _, cfg := range []Config{
		{Concurrency: -5, Txns: 10},
		{MaxInFlight: -1, Rate: 100, Txns: 10},
		{Txns: -1, Duration: time.Second},
		{Txns: 10, Duration: -time.Second},
	} {
		cfg.Client, cfg.Work = cl, twoBanks
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("%+v was accepted", cfg)
		}
	}
}

// TestCallTimeoutBoundsEachTransaction: with CallTimeout a transaction
// whose answer never comes ends Unknown (logged as such) and the caller
// goes on, so a coordinator that stops answering does not hold the run.
func TestCallTimeoutBoundsEachTransaction(t *testing.T) {
	release := make(chan struct{})
	// It answers nothing until the test ends (a paused coordinator).
	_, cl := fake(t, func(uuid.UUID) client.Outcome { <-release; return client.Committed })
	t.Cleanup(func() { close(release) }) // runs before the fake closes
	ack := &countingWriter{}
	const txns = 6
	rep, err := Run(context.Background(), Config{Client: cl, Work: twoBanks, Concurrency: 2, Txns: txns,
		CallTimeout: 50 * time.Millisecond, Seed: 1, AckLog: ack})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Unknown != txns || rep.Committed != 0 {
		t.Fatalf("report %+v: want %d unknown", rep, txns)
	}
	n := 0
	err = chaos.EachAck(bytes.NewReader(ack.Bytes()), func(a chaos.Ack) error {
		n++
		if a.Told != chaos.ToldUnknown {
			return fmt.Errorf("%v logged %v, want unknown", a.Txn, a.Told)
		}
		return nil
	})
	if err != nil || n != txns {
		t.Fatalf("ack log: %d lines, %v", n, err)
	}
	if _, err := Run(context.Background(), Config{Client: cl, Work: twoBanks, Txns: 1, CallTimeout: -time.Second}); err == nil {
		t.Fatal("a negative call timeout was accepted")
	}
}

// TestTraceRatio: TraceRatio sends about that share of the transactions
// with a trace context, and 0 none.
func TestTraceRatio(t *testing.T) {
	for _, ratio := range []float64{0, 0.5, 1} {
		c, cl := fake(t, nil)
		const n = 2000
		rep, err := Run(context.Background(), Config{Client: cl, Work: twoBanks, Concurrency: 20, Txns: n, Seed: 3, TraceRatio: ratio})
		if err != nil || rep.Committed != n {
			t.Fatalf("ratio %v: %+v, %v", ratio, rep, err)
		}
		if got, want := float64(c.Traced()), ratio*n; got < want-0.1*n || got > want+0.1*n || (ratio == 0) != (got == 0) {
			t.Errorf("ratio %v: %v of %d begins traced", ratio, got, n)
		}
	}
}

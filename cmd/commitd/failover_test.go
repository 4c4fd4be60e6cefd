package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/harness/chaos"
	"github.com/commitd/commitd/participant/bank"
)

// TestFailoverOfProcesses runs a replicated coordinator of three processes
// with the default election settings (and staged decisions, the default)
// and two bank participants under a
// steady load, kill -9s the leader again and again (restarting it each
// time), and measures each failover: from the kill to the first commit of
// a transaction begun after it. It checks that every failover is over
// within 5 s and, at the end, that nothing is left prepared and no money
// was made or lost. Then it pauses the leader (SIGSTOP) for a while and
// wakes it (SIGCONT): the others carry on, and the woken one must not act
// on what it believed. Last it kills the leader and stops the load at
// once, and times until no participant holds a transaction in doubt. The
// normal suite does 3 kills, 2 pauses of 2 s and 2 settles;
// COMMITD_FAILOVER_FAULTS, COMMITD_FAILOVER_STOPS, COMMITD_FAILOVER_PAUSE
// and COMMITD_FAILOVER_SETTLES change them (docs/benchmarks.md).
func TestFailoverOfProcesses(t *testing.T) {
	faults, stops, settles, pause := 3, 2, 2, 2*time.Second
	if v := os.Getenv("COMMITD_FAILOVER_SETTLES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatal(err)
		}
		settles = n
	}
	if v := os.Getenv("COMMITD_FAILOVER_FAULTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatal(err)
		}
		faults = n
	}
	if v := os.Getenv("COMMITD_FAILOVER_STOPS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatal(err)
		}
		stops = n
	}
	if v := os.Getenv("COMMITD_FAILOVER_PAUSE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatal(err)
		}
		pause = d
	}
	dir := t.TempDir()
	rc := [3]string{freeAddr(t), freeAddr(t), freeAddr(t)}
	p1, p2 := freeAddr(t), freeAddr(t)
	list := strings.Join(rc[:], ",")
	peers := fmt.Sprintf("1=%s,2=%s,3=%s", rc[0], rc[1], rc[2])
	const accounts = 100
	procs := map[string]*exec.Cmd{}
	var procsMu sync.Mutex
	start := func(name string, args ...string) {
		cmd := exec.Command(binary, append(args, "--log-level", "error")...)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procsMu.Lock()
		procs[name] = cmd
		procsMu.Unlock()
	}
	t.Cleanup(func() {
		procsMu.Lock()
		defer procsMu.Unlock()
		for _, cmd := range procs {
			cmd.Process.Signal(syscall.SIGCONT) // a paused one would never stop
			cmd.Process.Signal(os.Interrupt)
			cmd.Wait()
		}
	})
	startReplica := func(id int) {
		start(fmt.Sprint("c", id), "coordinator", "--id", fmt.Sprint(id), "--peers", peers, "--listen", rc[id-1],
			"--data", filepath.Join(dir, fmt.Sprint("c", id)), "--participant", "p1="+p1+",p2="+p2,
			"--segment-size", "8MiB", "--shards", "1")
	}
	start("p1", "participant", "--name", "p1", "--listen", p1, "--data", filepath.Join(dir, "p1"), "--coordinator", list,
		"--accounts", fmt.Sprint(accounts), "--inquire-after", "200ms", "--inquire-max", "1s", "--segment-size", "8MiB")
	start("p2", "participant", "--name", "p2", "--listen", p2, "--data", filepath.Join(dir, "p2"), "--coordinator", list,
		"--accounts", fmt.Sprint(accounts), "--inquire-after", "200ms", "--inquire-max", "1s", "--segment-size", "8MiB")
	for id := 1; id <= 3; id++ {
		startReplica(id)
	}
	for _, a := range append(rc[:], p1, p2) {
		waitListening(t, a)
	}
	waitCommitting(t, list, "p1", "p2")

	cl, err := client.Dial(list, client.Options{DialTimeout: 15 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// The load: a few callers moving 1 between random accounts. Each
	// commit's begin time is kept.
	var mu sync.Mutex
	var commits []time.Time // begin times of committed transactions, in completion order
	// load starts 8 callers that run until stop is closed.
	load := func(stop chan struct{}, wg *sync.WaitGroup) {
		for c := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(c), uint64(time.Now().UnixNano())))
				for {
					select {
					case <-stop:
						return
					default:
					}
					a, b := rng.IntN(accounts), rng.IntN(accounts)
					begun := time.Now()
					// A caller gives up after a second: a paused leader
					// answers nothing, and the client moves on after a
					// timeout.
					ctx, cancel := context.WithTimeout(context.Background(), time.Second)
					res, _ := cl.Run(ctx, uuid.Must(uuid.NewV7()), []client.Branch{
						{Participant: "p1", Work: bank.AppendWork(nil, uint32(a), -1)},
						{Participant: "p2", Work: bank.AppendWork(nil, uint32(b), 1)},
					})
					cancel()
					if res.Outcome == client.Committed {
						mu.Lock()
						commits = append(commits, begun)
						mu.Unlock()
					} else if res.Outcome != client.Aborted {
						time.Sleep(5 * time.Millisecond)
					}
				}
			}()
		}
	}
	stopLoad := make(chan struct{})
	var wg sync.WaitGroup
	load(stopLoad, &wg)
	// prepared is what the participants hold in doubt.
	prepared := func() (n int, total int64) {
		for _, p := range []string{p1, p2} {
			var a struct {
				Total    int64
				Prepared int
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := client.Admin(ctx, p, "accounts", nil, &a)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			n += a.Prepared
			total += a.Total
		}
		return n, total
	}
	leader := func() int {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if i, _, err := chaos.Leader(context.Background(), rc[:], 200*time.Millisecond); err == nil {
				return i + 1
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatal("no leader within 10 s")
		return 0
	}
	var times, stopTimes []time.Duration
	for f := range faults + stops {
		time.Sleep(300 * time.Millisecond) // commits flow
		l := leader()
		if f == 0 {
			// A replicated coordinator stages (--staged, the default):
			// these kills land between staged records, votes and replies.
			if st := coordStatus(t, rc[l-1]); st.Staged == 0 {
				t.Fatalf("the leader ran no transaction staged: %+v", st)
			}
		}
		procsMu.Lock()
		cmd := procs[fmt.Sprint("c", l)]
		procsMu.Unlock()
		mu.Lock()
		seen := len(commits)
		mu.Unlock()
		killed := time.Now()
		stop := f >= faults
		if stop {
			// Paused, not dead: the others elect a leader; when it
			// wakes it must not act on what it believed (the money
			// check at the end would see it).
			if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
		} else {
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			cmd.Wait()
		}
		var took time.Duration
		for took == 0 {
			if time.Since(killed) > 5*time.Second {
				t.Fatalf("no commit within 5 s of killing leader %d", l)
			}
			mu.Lock()
			for _, begun := range commits[seen:] {
				if begun.After(killed) {
					took = time.Since(killed) // polled every millisecond
				}
			}
			seen = len(commits)
			mu.Unlock()
			time.Sleep(time.Millisecond)
		}
		if stop {
			stopTimes = append(stopTimes, took)
			time.Sleep(pause - took)
			if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
			continue
		}
		times = append(times, took)
		startReplica(l)
		waitListening(t, rc[l-1])
	}
	close(stopLoad)
	wg.Wait()
	if len(times) > 0 {
		slices.Sort(times)
		p := func(q float64) time.Duration { return times[min(len(times)-1, int(q*float64(len(times))))] }
		t.Logf("%d leader kills: failover (kill -9 → first commit begun after it) median %v, p99 %v, max %v, all %v",
			len(times), p(0.5), p(0.99), times[len(times)-1], times)
	}
	t.Logf("%d leader pauses of %v (SIGSTOP → first commit begun after it): %v", len(stopTimes), pause, stopTimes)

	// In doubt after a leader's loss: load, kill the leader, stop the
	// load at once, and time until no participant holds a transaction
	// prepared (they inquire, the new leader answers).
	var settle []time.Duration
	for range settles {
		stop := make(chan struct{})
		var lwg sync.WaitGroup
		load(stop, &lwg)
		time.Sleep(300 * time.Millisecond)
		l := leader()
		procsMu.Lock()
		cmd := procs[fmt.Sprint("c", l)]
		procsMu.Unlock()
		killed := time.Now()
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		close(stop)
		cmd.Wait()
		for {
			if n, _ := prepared(); n == 0 {
				break
			}
			if time.Since(killed) > 15*time.Second {
				t.Fatal("participants still in doubt 15 s after the leader was killed")
			}
			time.Sleep(5 * time.Millisecond)
		}
		settle = append(settle, time.Since(killed))
		lwg.Wait()
		startReplica(l)
		waitListening(t, rc[l-1])
	}
	if len(settle) > 0 {
		t.Logf("%d leader kills with the load stopped: in doubt settled after %v", len(settle), settle)
	}

	// Settle, then count the money.
	deadline := time.Now().Add(15 * time.Second)
	for {
		n, sum := prepared()
		if n == 0 && sum == 2*accounts*1000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 15 s: %d prepared, total %d, want 0 and %d", n, sum, 2*accounts*1000)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

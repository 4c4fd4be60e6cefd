package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/client/clienttest"
)

// fakeEnv makes the test binary a stand-in coordinator (see TestMain).
const fakeEnv = "COMMITD_BENCH_FAKE_COORDINATOR"

// TestMain runs the tests, or, with fakeEnv set, serves as the stand-in
// coordinator of BenchmarkRunner in a child process: it prints its address
// and serves until its standard input is closed.
func TestMain(m *testing.M) {
	if os.Getenv(fakeEnv) != "" {
		os.Exit(serveFake())
	}
	os.Exit(m.Run())
}

func serveFake() int {
	c, err := clienttest.Start(nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(c.Addr)
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes it, or dies
	c.Close()
	return 0
}

// startFakeProcess starts the stand-in coordinator in a child process and
// returns its address; cleanup stops it.
func startFakeProcess(b *testing.B) string {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fakeEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	addr, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatalf("the stand-in coordinator said nothing: %v", err)
	}
	return addr[:len(addr)-1]
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRunner is the load generator's own cost per transaction as
// `commitd bench --concurrency 1000` spends it (two connections, two
// participants per transaction), against a stand-in coordinator in a
// child process, so that only the client side is counted: cpu-µs/txn is
// this process's user and system CPU over the run, allocs/op its heap
// allocations (the run's setup spread over b.N). "ack" adds an ack log to
// a file, as --ack-log does.
func BenchmarkRunner(b *testing.B) {
	for _, ack := range []bool{false, true} {
		name := "noack"
		if ack {
			name = "ack"
		}
		b.Run(name, func(b *testing.B) {
			cl, err := client.Dial(startFakeProcess(b), client.Options{Conns: 2})
			if err != nil {
				b.Fatal(err)
			}
			defer cl.Close()
			cfg := Config{Client: cl, Work: twoBanks, Concurrency: 1000, Txns: int64(b.N), Seed: 1}
			if ack {
				f, err := os.Create(b.TempDir() + "/acks.log")
				if err != nil {
					b.Fatal(err)
				}
				defer f.Close()
				cfg.AckLog = f
			}
			b.ReportAllocs()
			cpu := cpuTime()
			b.ResetTimer()
			rep, err := Run(context.Background(), cfg)
			b.StopTimer()

			cpu = cpuTime() - cpu
			if err != nil {
				b.Fatal(err)
			}
			if rep.Committed != int64(b.N) {
				b.Fatalf("%d committed of %d", rep.Committed, b.N)
			}
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/txn")
		})
	}
}

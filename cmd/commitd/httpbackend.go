package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/commitd/commitd/participant"
	"github.com/commitd/commitd/participant/httpres"
	"github.com/commitd/commitd/participant/remote"
	"github.com/commitd/commitd/protocol"
)

// httpFlags are the participant's flags for --backend http.
type httpFlags struct {
	url                              string
	prepareTimeout, callTimeout, max time.Duration
}

func (h *httpFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&h.url, "url", "", "http: the service's base URL; the participant calls URL/prepare, /commit, /abort and /prepared (docs/http-participant.md)")
	fs.DurationVar(&h.prepareTimeout, "prepare-timeout", 2*time.Second, "http: a prepare not answered this long is a NO vote (and an abort is sent)")
	fs.DurationVar(&h.callTimeout, "call-timeout", 10*time.Second, "http: bound on one commit, abort or /prepared call (a failed commit or abort is retried)")
	fs.DurationVar(&h.max, "retry-max", 5*time.Second, "http: the cap of the backoff between attempts of a commit or abort the service did not take")
}

// crashEnv names the test hook that kills the participant between a
// service's answer to a prepare and the participant recording it: the
// value N makes the Nth YES kill the process (SIGKILL) before the vote
// reaches the participant's machine. Tests only (docs/testing.md).
const crashEnv = "COMMITD_TEST_CRASH_AFTER_YES"

// resource checks the flags and builds the forwarding resource.
func (h *httpFlags) resource(scanEvery time.Duration, logger *slog.Logger) (*remote.Resource, error) {
	if h.url == "" {
		return nil, usageError{errors.New("--backend http needs --url, the service's base URL")}
	}
	if h.prepareTimeout <= 0 || h.callTimeout <= 0 || h.max <= 0 || scanEvery <= 0 {
		return nil, usageError{errors.New("--prepare-timeout, --call-timeout, --retry-max and --scan-every must be positive")}
	}
	c, err := httpres.New(h.url, logger)
	if err != nil {
		return nil, usageError{err}
	}
	opts := remote.Options{
		PrepareTimeout: h.prepareTimeout, CallTimeout: h.callTimeout, RetryMax: h.max,
		ScanEvery: scanEvery, Logger: logger,
	}
	if v := os.Getenv(crashEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%s=%q: want a count", crashEnv, v)
		}
		var yes atomic.Int64
		opts.AfterPrepare = func(_ protocol.TxnID, v protocol.Vote) {
			if v == protocol.VoteYes {
				if yes.Add(1) >= int64(n) {
					_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				}
			}
		}
	}
	return remote.New(c, opts), nil
}

// The participant server attaches, reports and closes a resource of this
// interface: a mismatch must not compile.
var _ participant.Forwarding = (*remote.Resource)(nil)

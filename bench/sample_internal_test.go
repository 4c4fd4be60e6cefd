package bench

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A coordinator that is down for a moment (restarting) is waited for; one
// that stays down fails the read once the retries run out.
func TestSampleSettledWaitsOutABlip(t *testing.T) {
	down := errors.New("cannot reach the coordinator")
	calls := 0
	s, err := sampleSettled(func(context.Context) (ServerSample, error) {
		if calls++; calls < 3 {
			return ServerSample{}, down
		}
		return ServerSample{Mallocs: 7}, nil
	})
	if err != nil || s.Mallocs != 7 || calls != 3 {
		t.Fatalf("after two failures: %+v, %v, %d calls", s, err, calls)
	}
	was := sampleRetryFor
	sampleRetryFor = 300 * time.Millisecond
	defer func() { sampleRetryFor = was }()
	start := time.Now()
	if _, err := sampleSettled(func(context.Context) (ServerSample, error) { return ServerSample{}, down }); !errors.Is(err, down) {
		t.Fatalf("a coordinator that stays down: %v, want its error", err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("gave up after %v, before the retries ran out", d)
	}
}

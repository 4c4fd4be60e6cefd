package mux

import (
	"log/slog"
	"sync"
	"time"
)

// limiter rate-limits a stream of warnings: a peer in a reconnect loop, or
// a flood of connections refused at a full server, must not flood the log.
// It lets one line through per period and counts the ones it drops, and
// the next line that passes says how many were dropped.
type limiter struct {
	every time.Duration // 0: log everything

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// logEvery is the period of the limiters of a Server and a Peer.
const logEvery = time.Second

// log logs msg at Warn level with args, unless a line passed less than
// every ago.
func (l *limiter) log(lg *slog.Logger, msg string, args ...any) {
	if l.every > 0 {
		l.mu.Lock()
		now := time.Now()
		if now.Sub(l.last) < l.every {
			l.suppressed++
			l.mu.Unlock()
			return
		}
		l.last = now
		n := l.suppressed
		l.suppressed = 0
		l.mu.Unlock()
		if n > 0 {
			args = append(args, "suppressed", n)
		}
	}
	lg.Warn(msg, args...)
}

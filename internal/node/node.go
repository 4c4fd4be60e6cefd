package node

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commitd/commitd/internal/datadir"
	"github.com/commitd/commitd/internal/obs"
	"github.com/commitd/commitd/internal/pump"
	"github.com/commitd/commitd/net/mux"
	"github.com/commitd/commitd/wal"
)

// RetireEvery is how often the retirer looks at the pumps' low water. Retire
// does directory fsyncs (~16 ms per segment on a disk mounted with discard),
// so it runs off the commit path and rarely; a segment retired a second late
// costs nothing but disk space.
const RetireEvery = time.Second

// Parts are the pieces of a running server that stopping it must stop or
// release, listed in the order Close takes them; nil fields are skipped.
// The order is the point of this type, and each step says why it comes
// where it does.
type Parts struct {
	// Listener is closed first: no new connection arrives while the rest
	// stops.
	Listener net.Listener
	// Drain, if set, runs right after the listener is closed and before
	// anything stops (the coordinator lets transactions in flight finish).
	Drain func()
	// Pumps drive the machines. Serve runs each on a goroutine of its own;
	// Close stops them before the connections close, so that no machine
	// steps a message whose answer can no longer leave, and before the log
	// closes, so that nothing is appended to a closed log.
	Pumps []*pump.Pump
	// PumpName(i) names pump i in the error that stops the server when its
	// log fails ("coordinator shard 3", "participant p1").
	PumpName func(i int) string
	// Mux is the server for the connections that dialed in. Serve serves
	// the listener with it.
	Mux *mux.Server
	// Peers are the connections the server dialed out (to participants, or
	// to the coordinator).
	Peers []*mux.Peer
	// HTTP is the observability endpoint, closed once every goroutine has
	// returned so that /healthz answers until the very end.
	HTTP *obs.Server
	// Stores are closed in order after every goroutine has returned and
	// before the log (the participant's resource and ledger): nothing
	// writes to them any more, and they sync what they hold.
	Stores []func() error
	// Log is the protocol log, closed (which syncs it) after everything
	// that appends to it has stopped. Without one (a replicated
	// coordinator keeps its own) nothing is retired.
	Log *wal.Log
	// Lock is the data directory's lock, released last: another process
	// may open the directory only once every file in it is closed.
	Lock *datadir.Lock
}

// Config names a server and says what runs before each retirement.
type Config struct {
	// Name prefixes the errors and logs of the server ("coordinator",
	// "participant").
	Name string
	// Logger receives the line that says why the server stops; it carries
	// whatever attributes identify the server.
	Logger *slog.Logger
	// BeforeRetire, if set, runs before each retirement of log segments;
	// an error stops the server and nothing is retired. The participant
	// syncs its ledger here, so no decision drops out of both logs.
	BeforeRetire func() error
}

// Lifecycle is one server's run state: its goroutines, how it stops (Close,
// or Fail after a fatal error), and what it reports once stopped (Done,
// Err). Both servers had their own copy of this; one copy keeps the
// shutdown order and the fsync-failure rule in one place.
type Lifecycle struct {
	cfg Config // immutable

	// parts is written by Serve before any goroutine starts and read by
	// Close, which only a Serve'd server reaches (Fail runs on goroutines
	// Serve started).
	parts Parts

	stop     chan struct{}         // closed by Close: loops return
	done     chan struct{}         // closed when Close has finished
	wg       sync.WaitGroup        // every goroutine started by Serve and Go
	failOnce sync.Once             // the first Fail wins
	failErr  atomic.Pointer[error] // the first fatal error
	closing  atomic.Bool           // set once by the Close that runs the shutdown
}

// New returns a Lifecycle that has not started anything.
func New(cfg Config) *Lifecycle {
	return &Lifecycle{cfg: cfg, stop: make(chan struct{}), done: make(chan struct{})}
}

// Listen returns the listener to use: ln if it is set (tests and the demo
// listen first so that every address is known), else a new one on addr.
// serve is what the server accepts on: raw, wrapped in TLS when tlsCfg is
// set; raw is what Addr reports and Close closes.
func Listen(ln net.Listener, addr string, tlsCfg *tls.Config) (raw, serve net.Listener, err error) {
	if raw = ln; raw == nil {
		if raw, err = net.Listen("tcp", addr); err != nil {
			return nil, nil, fmt.Errorf("listen on %s: %w", addr, err)
		}
	}
	serve = raw
	if tlsCfg != nil {
		serve = tls.NewListener(raw, tlsCfg)
	}
	return raw, serve, nil
}

// Serve starts the server's goroutines: one per pump, the mux server
// accepting on ln, and the retirer. From then on Close stops them and
// releases every part. Serve is called once, at the end of a successful
// start.
func (l *Lifecycle) Serve(p Parts, ln net.Listener) {
	l.parts = p
	for i, pm := range p.Pumps {
		l.Go(func() {
			if err := pm.Run(); err != nil && !errors.Is(err, pump.ErrStopped) {
				l.Fail(fmt.Errorf("%s: %w", p.PumpName(i), err))
			}
		})
	}
	l.Go(func() { p.Mux.Serve(ln) })
	if p.Log != nil {
		l.Go(l.retireLoop)
	}
}

// Go runs fn on a goroutine that Close waits for; fn returns once Stopping
// is closed.
func (l *Lifecycle) Go(fn func()) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		fn()
	}()
}

// Stopping is closed when Close begins stopping the goroutines.
func (l *Lifecycle) Stopping() <-chan struct{} { return l.stop }

// Closing reports whether Close has begun: the front doors then turn new
// work away.
func (l *Lifecycle) Closing() bool { return l.closing.Load() }

// Done is closed when the server has stopped, after Close or a fatal error.
func (l *Lifecycle) Done() <-chan struct{} { return l.done }

// Err is the fatal error that stopped the server, if any.
func (l *Lifecycle) Err() error {
	if p := l.failErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Fail stops the server after a fatal error, which Err then returns: a log
// that failed a write or an fsync must not acknowledge anything more
// (FACTS.md, rule 5), and the only safe way on is to recover from disk.
// Only the first error is kept. Close runs on a goroutine of its own, since
// Fail is called from goroutines Close waits for.
func (l *Lifecycle) Fail(err error) {
	l.failOnce.Do(func() {
		l.failErr.Store(&err)
		l.cfg.Logger.Error(l.cfg.Name+" stopping", "err", err)
		go l.Close()
	})
}

// Close stops the server, in the order Parts lists, and returns what closing
// the stores and the log reported. A second Close waits for the first and
// returns nil.
func (l *Lifecycle) Close() error {
	if !l.closing.CompareAndSwap(false, true) {
		<-l.done
		return nil
	}
	p := &l.parts
	p.Listener.Close()
	if p.Drain != nil {
		p.Drain()
	}
	close(l.stop)
	for _, pm := range p.Pumps {
		pm.Stop()
	}
	p.Mux.Close()
	for _, peer := range p.Peers {
		peer.Close()
	}
	l.wg.Wait()
	p.HTTP.Close()
	err := closeStores(p)
	p.Lock.Release()
	close(l.done)
	return err
}

// Abandon releases what a start that failed had acquired, in Close's order:
// nothing runs yet, so there is nothing to stop.
func Abandon(p Parts) {
	if p.Listener != nil {
		p.Listener.Close()
	}
	for _, peer := range p.Peers {
		peer.Close()
	}
	p.HTTP.Close()
	_ = closeStores(&p) // the start's own error is the one to report
	p.Lock.Release()
}

// closeStores closes the stores and then the log, joining their errors.
func closeStores(p *Parts) error {
	var errs []error
	for _, c := range p.Stores {
		errs = append(errs, c())
	}
	var err error
	if p.Log != nil {
		err = p.Log.Close()
	}
	if len(errs) == 0 {
		return err
	}
	return errors.Join(append(errs, err)...)
}

// retireLoop retires, every RetireEvery, the log segments below the oldest
// record any pump still needs. It stops on Close, or on a failure, which
// stops the server.
func (l *Lifecycle) retireLoop() {
	t := time.NewTicker(RetireEvery)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		low := wal.LSN(^uint64(0))
		for _, pm := range l.parts.Pumps {
			low = min(low, pm.Needed())
		}
		// low is 0 while a machine has published no low water since the
		// start (it has not stepped): everything restored may be needed.
		// Retire(0) retires nothing but still reports a failed log, so it
		// is called anyway; the hook, which prepares for a retirement, is
		// not. (Retiring "up to infinity" here once dropped a participant's
		// only durable copy of its balances; see harness/chaos
		// TestIdleRestartKeepsTheLog.)
		if low != 0 && l.cfg.BeforeRetire != nil {
			if err := l.cfg.BeforeRetire(); err != nil {
				l.Fail(err)
				return
			}
		}
		if err := l.parts.Log.Retire(low); err != nil {
			if errors.Is(err, wal.ErrFailed) {
				// The log failed, here or earlier (preparing a segment,
				// writing a batch): its error says where.
				l.Fail(fmt.Errorf("%s: %w", l.cfg.Name, err))
			} else {
				l.Fail(fmt.Errorf("%s: retiring log segments: %w", l.cfg.Name, err))
			}
			return
		}
	}
}

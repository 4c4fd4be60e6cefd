package bench

import (
	"io"
	"runtime"
	"sync"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/protocol"
	"github.com/google/uuid"
)

// maxAckQueue bounds the bytes of ack lines queued for the writer (about
// 80,000 lines). Callers that find it full wait for the next round, so a
// stalled disk slows the load down instead of growing memory without end.
const maxAckQueue = 4 << 20

// keepAckBuffer is the largest round buffer kept for reuse after a burst.
const keepAckBuffer = 256 << 10

// ackLog writes the ack log in rounds (see Config.AckLog). Callers queue
// their lines (add); one writer goroutine, woken by the first line queued
// after a round, yields once and then hands everything queued to w in one
// Write call. No line waits in a user-space buffer across rounds, so with
// w an *os.File a line is in the kernel (one write(2)) by the end of the
// first round that begins after it is queued.
type ackLog struct {
	w    io.Writer     // immutable; used only by the writer goroutine
	fail func()        // immutable; called once, on the first write error
	wake chan struct{} // cap 1: something was queued while the queue was empty
	stop chan struct{} // closed by close: write what is queued and return
	done chan struct{} // closed when the writer goroutine has returned

	mu struct {
		sync.Mutex
		queue []byte // lines queued since the last round took them
		err   error  // the first write error; later lines are dropped
	}
	room *sync.Cond // on mu: a round took the queue, or the log failed

	spare []byte // owned by the writer goroutine: the last round's buffer
}

// newAckLog starts the writer goroutine; close stops it. fail is called
// (once, on the writer goroutine) if a write fails.
func newAckLog(w io.Writer, fail func()) *ackLog {
	a := &ackLog{w: w, fail: fail, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	a.room = sync.NewCond(&a.mu)
	go a.run()
	return a
}

// add queues one line (ending in a newline), waiting while the queue is
// full. It does not wait for the write.
func (a *ackLog) add(line []byte) {
	a.mu.Lock()
	for len(a.mu.queue) >= maxAckQueue && a.mu.err == nil {
		a.room.Wait()
	}
	if a.mu.err != nil {
		a.mu.Unlock()
		return
	}
	was := len(a.mu.queue)
	a.mu.queue = append(a.mu.queue, line...)
	a.mu.Unlock()
	if was == 0 {
		// The writer took everything before this line, so it is idle or
		// writing: either way it must be told. A wake-up already pending
		// covers this line too.
		select {
		case a.wake <- struct{}{}:
		default:
		}
	}
}

// close writes what is queued, stops the writer and returns the first
// write error. Every add must have returned before close is called.
func (a *ackLog) close() error {
	close(a.stop)
	<-a.done
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.mu.err
}

// run is the writer goroutine.
func (a *ackLog) run() {
	defer close(a.done)
	for {
		select {
		case <-a.wake:
			// Yield once first, as mux's writer does: callers that are
			// runnable now add their lines to this round instead of each
			// waking a round of its own (a write per transaction). With
			// nothing else runnable Gosched returns at once.
			runtime.Gosched()
			a.round()
		case <-a.stop:
			a.round() // the lines queued before close
			return
		}
	}
}

// round writes everything queued with one Write call.
func (a *ackLog) round() {
	a.mu.Lock()
	buf, failed := a.mu.queue, a.mu.err != nil
	a.mu.queue = a.spare[:0]
	a.mu.Unlock()
	a.room.Broadcast()
	if len(buf) == 0 || failed {
		a.spare = buf[:0]
		return
	}
	_, err := a.w.Write(buf)
	if cap(buf) > keepAckBuffer {
		buf = nil
	}
	a.spare = buf[:0]
	if err != nil {
		a.mu.Lock()
		a.mu.err = err
		a.mu.queue = nil
		a.mu.Unlock()
		a.room.Broadcast()
		a.fail()
	}
}

// appendAck appends one ack log line: "<uuid> <outcome> <p>,<p>...\n".
func appendAck(b []byte, id uuid.UUID, o protocol.Outcome, branches []client.Branch) []byte {
	b = appendUUID(b, id)
	b = append(b, ' ')
	b = append(b, o.String()...)
	b = append(b, ' ')
	for i, br := range branches {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, br.Participant...)
	}
	return append(b, '\n')
}

// appendUUID appends id in its canonical form (8-4-4-4-12 lowercase hex)
// without the allocation of id.String().
func appendUUID(b []byte, id uuid.UUID) []byte {
	const hex = "0123456789abcdef"
	for i, c := range id {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, hex[c>>4], hex[c&0xf])
	}
	return b
}

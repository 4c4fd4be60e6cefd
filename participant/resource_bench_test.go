package participant

import (
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/protocol"
)

// lockedGuarded is guarded as it was before the pump's goroutine owned it
// (main at 43fbf42): a mutex around every call, so that admin queries
// could read the resource from other goroutines. Kept as the "before" of
// BenchmarkGuarded.
type lockedGuarded struct {
	mu sync.Mutex
	g  *guarded
}

func (l *lockedGuarded) Prepare(txn protocol.TxnID, work []byte) protocol.Vote {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.g.Prepare(txn, work)
}

func (l *lockedGuarded) Commit(txn protocol.TxnID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.g.Commit(txn)
}

// BenchmarkGuarded is a bank branch's prepare and, 2,048 transactions
// later, its commit, through guarded with and without the mutex it had.
func BenchmarkGuarded(b *testing.B) {
	const accounts, inFlight = 100_000, 2048
	for _, impl := range []string{"locked", "owned"} {
		b.Run(impl, func(b *testing.B) {
			var res interface {
				Prepare(protocol.TxnID, []byte) protocol.Vote
				Commit(protocol.TxnID)
			} = newGuarded(bank.New(accounts, 1<<40))
			if impl == "locked" {
				res = &lockedGuarded{g: res.(*guarded)}
			}
			rng := rand.New(rand.NewPCG(1, 2))
			works := make([][]byte, 1<<16)
			ids := make([]protocol.TxnID, 1<<16)
			for i := range works {
				works[i] = bank.AppendWork(nil, uint32(rng.IntN(accounts)), int64(rng.IntN(21)-10)|1)
				binary.BigEndian.PutUint64(ids[i][:], uint64(i)<<16|0x7000)
				binary.LittleEndian.PutUint64(ids[i][8:], rng.Uint64())
			}
			var ring [inFlight]protocol.TxnID
			var yes [inFlight]bool
			i := 0
			for b.Loop() {
				k := i % inFlight
				if yes[k] {
					res.Commit(ring[k])
				}
				ring[k] = ids[i&(len(ids)-1)]
				yes[k] = res.Prepare(ring[k], works[i&(len(works)-1)]) == protocol.VoteYes
				i++
			}
		})
	}
}

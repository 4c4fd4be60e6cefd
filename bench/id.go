package bench

import (
	crand "crypto/rand"
	"encoding/binary"
	"math/rand/v2"
	"time"

	"github.com/google/uuid"
)

// idSource makes one caller's transaction ids: version 7 UUIDs (RFC 9562,
// time-ordered, as protocol.TxnID asks) whose random bits come from a PCG
// seeded once from crypto/rand, instead of uuid.NewV7's crypto/rand read
// and process-wide lock per id. The ids must be unique, not secret: 62
// random bits per id from independently seeded generators, under a
// timestamp with 1/4096 ms resolution, make a collision vanishingly
// unlikely. The workload's own generator stays separate, so --seed still
// repeats the workload exactly while the ids differ from run to run.
//
// An idSource is owned by one caller.
type idSource struct {
	rng rand.PCG
}

// seed seeds the generator from crypto/rand.
func (s *idSource) seed() {
	var seed [16]byte
	_, _ = crand.Read(seed[:]) // never fails (crypto/rand crashes the program instead)
	s.rng.Seed(binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:]))
}

// next returns a fresh id stamped with now:
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                    unix_ts_ms (48 bits) ...                   |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|       ... unix_ts_ms      |  ver=7  | sub-ms fraction (12 bits) |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|var=10|                 random (62 bits) ...                   |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                          ... random                           |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// The fraction is RFC 9562's method 3 (extra clock precision in rand_a).
func (s *idSource) next(now time.Time) uuid.UUID {
	ns := now.UnixNano()
	ms := ns / 1e6
	frac := (ns - ms*1e6) * 4096 / 1e6 // 0..4095
	var id uuid.UUID
	binary.BigEndian.PutUint64(id[0:8], uint64(ms)<<16|0x7000|uint64(frac))
	binary.BigEndian.PutUint64(id[8:16], s.rng.Uint64()>>2|1<<63)
	return id
}

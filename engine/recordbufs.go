package engine

// recordBufs lends out the buffers of records a machine builds whole
// (a participant's checkpoints: a resource snapshot, the bank's 800 KB at
// 100,000 accounts), reused as the outbox reuses transaction structs
// (outbox.reuse): a buffer in the pending Ready, or in the last one handed
// out, may still be read by the caller, so it is lent again only once
// that Ready is superseded by the next. Two checkpoints in one Ready get
// two buffers. A fresh buffer for every checkpoint cost an allocation of
// its full size — zeroed, and regrown (copied) whenever a checkpoint
// outgrew the one before — and the garbage collector's work to free it.
type recordBufs struct {
	free    [][]byte // lendable
	pending [][]byte // in records of the pending Ready
	out     [][]byte // in records of the last Ready handed out
}

// get returns an empty buffer of capacity at least hint: the last one
// given back, or a new one if that is too small (the small one is
// dropped: a snapshot that grew once usually stays grown).
func (b *recordBufs) get(hint int) []byte {
	if n := len(b.free); n > 0 {
		buf := b.free[n-1]
		b.free[n-1] = nil
		b.free = b.free[:n-1]
		if cap(buf) >= hint {
			return buf[:0]
		}
	}
	return make([]byte, 0, hint)
}

// use records that buf is in a record of the pending Ready.
func (b *recordBufs) use(buf []byte) { b.pending = append(b.pending, buf) }

// unused gives back buf, got but put in no record.
func (b *recordBufs) unused(buf []byte) { b.free = append(b.free, buf) }

// handOut runs as the pending Ready is handed out: the buffers of the one
// before are lendable again, and the pending Ready's become the handed-out
// one's.
func (b *recordBufs) handOut() {
	b.free = append(b.free, b.out...)
	clear(b.out)
	b.out, b.pending = b.pending, b.out[:0]
}

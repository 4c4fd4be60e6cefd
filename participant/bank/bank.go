package bank

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/protocol"
)

// WorkLen is the size of one branch's work: u32 account, i64 amount,
// little endian.
const WorkLen = 12

// MaxAccounts bounds the accounts of a bank (and of a snapshot).
const MaxAccounts = 1 << 24

// ErrBadSnapshot is returned by Load for a snapshot it cannot read.
var ErrBadSnapshot = errors.New("bank: bad snapshot")

// AppendWork appends the work "add amount to account" to dst.
func AppendWork(dst []byte, account uint32, amount int64) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, account)
	return binary.LittleEndian.AppendUint64(dst, uint64(amount))
}

// DecodeWork reads work written by AppendWork; ok is false if work is not
// exactly WorkLen bytes.
func DecodeWork(work []byte) (account uint32, amount int64, ok bool) {
	if len(work) != WorkLen {
		return 0, 0, false
	}
	return binary.LittleEndian.Uint32(work), int64(binary.LittleEndian.Uint64(work[4:])), true
}

// hold is what a YES-prepared transaction has reserved.
type hold struct {
	account uint32
	amount  int64
	// after is the account's balance once the hold commits: its balance
	// at the lock plus amount. Only the holder's commit changes a locked
	// account's balance (and Load drops every hold), so it stays exact,
	// and Commit stores it without first loading the balance — by then
	// usually a cache miss that stalls, where a store does not.
	after int64
}

// Bank is a set of accounts with committed balances and, per account, at
// most one prepared transaction's hold.
type Bank struct {
	balances []int64
	// locked has bit a set while account a is held by a prepared
	// transaction (holds says which). A bitset rather than the holder's
	// id per account: 100,000 accounts take 12.5 KB, which stays in cache,
	// where 16 bytes an account (1.6 MB) cost a cache miss per prepare
	// and per commit.
	locked []uint64
	holds  holdTable // which transaction holds what (holds.go)
	total  int64     // sum of balances, kept as they change
}

var _ engine.Resource = (*Bank)(nil)

// New returns a bank of accounts accounts (at most MaxAccounts), each
// holding balance.
func New(accounts int, balance int64) *Bank {
	if accounts < 0 || accounts > MaxAccounts {
		panic(fmt.Sprintf("bank: %d accounts", accounts))
	}
	b := &Bank{holds: newHoldTable()}
	b.reset(accounts)
	for i := range b.balances {
		b.balances[i] = balance
	}
	b.total = int64(accounts) * balance
	return b
}

func (b *Bank) reset(accounts int) {
	b.balances = make([]int64, accounts)
	b.locked = make([]uint64, (accounts+63)/64)
	b.holds.reset()
	b.total = 0
}

// Prepare votes on one branch: no for malformed work, an unknown account,
// an account locked by another transaction, an overdraft, or a
// transaction that already holds a lock here; read-only for amount 0;
// otherwise it locks the account, reserves the amount and votes yes.
func (b *Bank) Prepare(txn protocol.TxnID, work []byte) protocol.Vote {
	acct, amount, ok := DecodeWork(work)
	if !ok || int64(acct) >= int64(len(b.balances)) {
		return protocol.VoteNo
	}
	if amount == 0 {
		return protocol.VoteReadOnly
	}
	slot, h, dup := b.holds.find(&txn) // one probe: the slot is kept for lock
	if dup {
		return protocol.VoteNo
	}
	if b.isLocked(acct) {
		return protocol.VoteNo
	}
	nb := b.balances[acct] + amount
	if nb < 0 || (amount > 0) != (nb > b.balances[acct]) {
		return protocol.VoteNo // overdraft, or overflow
	}
	b.lock(slot, h, &txn, hold{account: acct, amount: amount, after: nb})
	return protocol.VoteYes
}

// lock takes h's account for txn, whose free slot in holds find returned.
func (b *Bank) lock(slot int, hash uint32, txn *protocol.TxnID, h hold) {
	b.locked[h.account/64] |= 1 << (h.account % 64)
	b.holds.put(slot, hash, txn, h)
}

// Commit applies a prepared transaction's amount and unlocks its account.
// It panics if txn holds nothing: the participant commits only what it
// prepared.
func (b *Bank) Commit(txn protocol.TxnID) {
	h, ok := b.holds.take(&txn)
	if !ok {
		panic(fmt.Sprintf("bank: commit of %v, which holds nothing", txn))
	}
	b.balances[h.account] = h.after // = balance + amount: see hold
	b.total += h.amount
	b.unlock(h)
}

// Abort unlocks a prepared transaction's account; it does nothing for a
// transaction that holds nothing.
func (b *Bank) Abort(txn protocol.TxnID) {
	if h, ok := b.holds.take(&txn); ok {
		b.unlock(h)
	}
}

func (b *Bank) isLocked(acct uint32) bool { return b.locked[acct/64]&(1<<(acct%64)) != 0 }

// unlock frees the account of h, already taken out of holds.
func (b *Bank) unlock(h hold) {
	b.locked[h.account/64] &^= 1 << (h.account % 64)
}

// Restore re-establishes a prepared hold during recovery, without the
// checks of Prepare (the hold existed before the crash). It panics on work
// Prepare would not have accepted or a lock already taken: the log and the
// snapshot disagree.
func (b *Bank) Restore(txn protocol.TxnID, work []byte) {
	acct, amount, ok := DecodeWork(work)
	if !ok || int64(acct) >= int64(len(b.balances)) || amount == 0 {
		panic(fmt.Sprintf("bank: restore of %v with work %x", txn, work))
	}
	slot, h, dup := b.holds.find(&txn)
	if dup || b.isLocked(acct) {
		panic(fmt.Sprintf("bank: restore of %v: account %d already locked", txn, acct))
	}
	b.lock(slot, h, &txn, hold{account: acct, amount: amount, after: b.balances[acct] + amount})
}

// Snapshot appends the committed balances (not the holds) to dst:
// u32 count, then count × i64, little endian.
func (b *Bank) Snapshot(dst []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(b.balances)))
	for _, v := range b.balances {
		dst = binary.LittleEndian.AppendUint64(dst, uint64(v))
	}
	return dst
}

// Load replaces every balance with a snapshot's and drops every hold.
func (b *Bank) Load(snapshot []byte) error {
	if len(snapshot) < 4 {
		return fmt.Errorf("%w: %d bytes", ErrBadSnapshot, len(snapshot))
	}
	n := binary.LittleEndian.Uint32(snapshot)
	if n > MaxAccounts || uint64(len(snapshot)-4) != 8*uint64(n) {
		return fmt.Errorf("%w: %d accounts in %d bytes", ErrBadSnapshot, n, len(snapshot))
	}
	b.reset(int(n))
	for i := range b.balances {
		v := int64(binary.LittleEndian.Uint64(snapshot[4+8*i:]))
		if v < 0 {
			return fmt.Errorf("%w: account %d has balance %d", ErrBadSnapshot, i, v)
		}
		b.balances[i] = v
		b.total += v
	}
	return nil
}

// Total is the sum of the committed balances.
func (b *Bank) Total() int64 { return b.total }

// Balance is one account's committed balance; it panics on a bad account.
func (b *Bank) Balance(account uint32) int64 { return b.balances[account] }

// Accounts is the number of accounts.
func (b *Bank) Accounts() int { return len(b.balances) }

// Locked is the number of accounts locked by prepared transactions.
func (b *Bank) Locked() int { return b.holds.n }

// AppendPrepared appends to dst the transactions that hold a prepared
// (YES) state — a lock — here, in no particular order.
func (b *Bank) AppendPrepared(dst []protocol.TxnID) []protocol.TxnID {
	return b.holds.appendIDs(dst)
}

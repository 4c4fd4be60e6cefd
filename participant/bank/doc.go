// Package bank is the bank-account resource used by tests, demos and
// benchmarks: integer balances, no-wait account locks held from prepare to
// decision. It implements engine.Resource.
//
// A branch's work is one signed amount for one account (AppendWork,
// DecodeWork): negative debits, positive credits, zero reads. A transfer is
// a transaction whose branches' amounts sum to zero, so the total across
// all banks is conserved whatever is committed or aborted, as long as each
// transaction is atomic.
//
// Locking is no-wait: a prepare that finds its account locked by another
// prepared transaction votes no at once, so there are no deadlocks and no
// waiting inside the participant. A Bank is not safe for concurrent use;
// the participant's driving goroutine owns it.
package bank

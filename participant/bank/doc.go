// Package bank is the bank-account resource used by tests, demos and
// benchmarks: integer balances, no-wait account locks held from prepare to
// decision.
package bank

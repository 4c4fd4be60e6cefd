// Package pump drives one engine state machine against the write-ahead log:
// it feeds the machine its inputs (messages, ticks, "durable up to index i"),
// appends the records the machine emits, and hands the machine's messages
// and replies to an Output. It is the "dumb pump" of STYLE.md: every
// protocol decision, including what must wait for durability, is the
// machine's; the pump only moves data. Both servers (coordinator shards and
// the participant) use it.
package pump

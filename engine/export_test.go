package engine

import "github.com/commitd/commitd/protocol"

// Test-only access to the deliberately broken variants, so that the
// simulation can show it catches each.

// SetParticipantBugs makes p vote YES before its prepared record is
// durable and/or ack a commit before its committed record is durable.
func SetParticipantBugs(p *Participant, voteBeforeDurable, ackBeforeDurable bool) {
	p.bugVoteBeforeDurable = voteBeforeDurable
	p.bugAckBeforeDurable = ackBeforeDurable
}

// SetDurableResourceBugs makes p, a participant with a durable resource,
// vote YES (one-phase: committed) as soon as its resource has started the
// prepare and/or ack a commit as soon as its resource has started it, not
// when the resource reports either durable.
func SetDurableResourceBugs(p *Participant, voteEarly, ackEarly bool) {
	p.bugResVoteEarly = voteEarly
	p.bugResAckEarly = ackEarly
}

// SetReuseBug makes p answer a prepare for an id it already has as a copy
// of the one it handled, whatever its work: the code before the fix of
// issue 13 (a reused id committed half a transaction).
func SetReuseBug(p *Participant, reuseYes bool) { p.bugReuseYes = reuseYes }

// ParticipantKnows reports whether p has id in hand or remembers it
// decided: a prepare for it would not be prepared as a new transaction.
func ParticipantKnows(p *Participant, id protocol.TxnID) bool {
	_, st := p.find(id)
	return st != 0
}

// SetShardBugs makes s send commit decisions and the client's reply
// before the commit record is durable.
func SetShardBugs(s *Shard, decideBeforeDurable bool) {
	s.bugDecideBeforeDurable = decideBeforeDurable
}

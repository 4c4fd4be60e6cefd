package raftlog

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/commitd/commitd/wal"
)

// Members is what a replica needs to know about its group besides raft's
// own ConfState (which holds ids only): the group id and every member's
// address. It heads the data of every snapshot (Append), so a replica
// that catches up from a snapshot — a joining one above all — learns the
// group and the addresses with the configuration; configuration changes
// after the snapshot carry the addresses they add in their Context
// (AppendAddrs).
type Members struct {
	// Group is fixed when the group is bootstrapped (Identity.Group).
	Group uint64
	// Addrs maps every replica of the configuration (voters, learners and,
	// in a joint configuration, outgoing voters) to its address.
	Addrs map[uint64]string
	// Removed lists, sorted, the ids removed from the group: a removed id
	// is never admitted again nor reused for a new replica.
	Removed []uint64
}

// membersMagic starts the Members header of a snapshot's data. The data
// of a snapshot made before the header existed starts with the u32 length
// of a record, which is never this.
const membersMagic = 0xFFFFFFFF

// Append appends the header:
//
//	u32 0xFFFFFFFF | u64 group | u32 n | n × (u64 id, u16 len, addr) | u32 r | r × u64 removed id
func (m *Members) Append(b []byte) []byte {
	b = binary.LittleEndian.AppendUint32(b, membersMagic)
	b = binary.LittleEndian.AppendUint64(b, m.Group)
	b = appendAddrs(b, m.Addrs)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(m.Removed)))
	for _, id := range m.Removed {
		b = binary.LittleEndian.AppendUint64(b, id)
	}
	return b
}

// ParseMembers reads the header at the start of a snapshot's data and
// returns the data after it. ok is false when the data has no header (a
// snapshot made by an older release: every byte is the state machine's).
func ParseMembers(data []byte) (m Members, rest []byte, ok bool, err error) {
	if len(data) < 4 || binary.LittleEndian.Uint32(data) != membersMagic {
		return Members{}, data, false, nil
	}
	bad := fmt.Errorf("raftlog: malformed members header in a snapshot: %w", wal.ErrCorrupt)
	if len(data) < 12 {
		return Members{}, nil, false, bad
	}
	m.Group = binary.LittleEndian.Uint64(data[4:])
	var good bool
	m.Addrs, rest, good = parseAddrs(data[12:])
	if !good || len(rest) < 4 {
		return Members{}, nil, false, bad
	}
	n := binary.LittleEndian.Uint32(rest)
	rest = rest[4:]
	if uint64(n) > uint64(len(rest))/8 {
		return Members{}, nil, false, bad
	}
	for range n {
		m.Removed = append(m.Removed, binary.LittleEndian.Uint64(rest))
		rest = rest[8:]
	}
	if !slices.IsSorted(m.Removed) {
		return Members{}, nil, false, bad
	}
	return m, rest, true, nil
}

// AppendAddrs encodes the addresses a configuration change adds (its
// Context): u32 n | n × (u64 id, u16 len, addr).
func AppendAddrs(b []byte, addrs map[uint64]string) []byte { return appendAddrs(b, addrs) }

// ParseAddrs decodes what AppendAddrs wrote, and nothing more.
func ParseAddrs(b []byte) (map[uint64]string, error) {
	if len(b) == 0 {
		return nil, nil
	}
	addrs, rest, ok := parseAddrs(b)
	if !ok || len(rest) != 0 {
		return nil, fmt.Errorf("raftlog: malformed addresses in a configuration change: %w", wal.ErrCorrupt)
	}
	return addrs, nil
}

// CheckPeers compares a command line's --peers with the configuration the
// log holds, which wins: peers that are not members (removed since, or
// never added) are ignored, but a member that --peers places at another
// address, or this replica's own address, is a mismatch that matters —
// the other replicas dial the address in the log. A replica the log says
// was removed must not serve again.
func (m *Members) CheckPeers(self uint64, peers map[uint64]string) error {
	if slices.Contains(m.Removed, self) {
		return fmt.Errorf("raftlog: replica %d %w %016x; its data directory cannot serve again (start a new replica with a new id, an empty directory and --join)", self, ErrRemoved, m.Group)
	}
	for id, addr := range peers {
		if have, ok := m.Addrs[id]; ok && have != addr {
			return fmt.Errorf("%w: --peers puts replica %d at %s, but the group's configuration (in the log, which wins) has it at %s; the members are %s",
				ErrIdentity, id, addr, have, PeerList(m.Addrs))
		}
	}
	return nil
}

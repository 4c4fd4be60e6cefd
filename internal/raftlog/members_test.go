package raftlog

import (
	"bytes"
	"testing"
)

// FuzzParseMembers: a snapshot's Members header and a change's addresses
// come from other replicas and from disk: any bytes give a header, "no
// header", or an error — never a panic — and what parses encodes back to
// the same bytes.
func FuzzParseMembers(f *testing.F) {
	m := Members{Group: 7, Addrs: map[uint64]string{1: "a:1", 2: "b:2"}, Removed: []uint64{3, 9}}
	f.Add(append(m.Append(nil), "records"...))
	f.Add(AppendAddrs(nil, map[uint64]string{4: "127.0.0.1:7404"}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, rest, ok, err := ParseMembers(data)
		if err == nil && ok {
			again := append(m.Append(nil), rest...)
			if !bytes.Equal(again, data) {
				t.Fatalf("%x parsed as %+v and encodes as %x", data, m, again)
			}
		}
		if addrs, err := ParseAddrs(data); err == nil && len(data) > 0 {
			if again := AppendAddrs(nil, addrs); !bytes.Equal(again, data) {
				t.Fatalf("%x parsed as %v and encodes as %x", data, addrs, again)
			}
		}
		_, _ = parseIdentity(append([]byte{kindIdentity}, data...))
	})
}

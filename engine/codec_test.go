package engine

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/commitd/commitd/protocol"
)

var codecTxn = protocol.TxnID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}

func validRecords() []Record {
	return []Record{
		{Type: RecCommit, Txn: codecTxn, Participants: []string{"a", "bank-2"}},
		{Type: RecCommit, Txn: codecTxn, Participants: []string{"p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", strings.Repeat("x", protocol.MaxNameLen)}},
		{Type: RecEnd, Txn: codecTxn},
		{Type: RecPrepared, Txn: codecTxn, Work: []byte("work")},
		{Type: RecPrepared, Txn: codecTxn, Work: bytes.Repeat([]byte{7}, protocol.MaxWorkLen)},
		{Type: RecCommitted, Txn: codecTxn},
		{Type: RecCommitted, Txn: codecTxn, Work: []byte{1}},
		{Type: RecAborted, Txn: codecTxn},
		{Type: RecCheckpoint, Data: []byte("snapshot")},
		{Type: RecCheckpoint},
		{Type: RecStaged, Txn: codecTxn, Participants: []string{"a", "bank-2"}},
		{Type: RecAbort, Txn: codecTxn},
		{Type: RecPrevented, Txn: codecTxn},
	}
}

func TestRecordRoundTrip(t *testing.T) {
	for _, r := range validRecords() {
		b, err := r.AppendBinary([]byte("prefix"))
		if err != nil {
			t.Fatalf("encode %v: %v", r.Type, err)
		}
		if string(b[:6]) != "prefix" {
			t.Fatalf("encode %v clobbered the prefix", r.Type)
		}
		var got Record
		if err := got.UnmarshalBinary(b[6:]); err != nil {
			t.Fatalf("decode %v: %v", r.Type, err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Fatalf("round trip: got %+v, want %+v", got, r)
		}
		// Every strict prefix and every extension is rejected.
		for n := range len(b) - 6 {
			if err := got.UnmarshalBinary(b[6 : 6+n]); !errors.Is(err, ErrBadRecord) {
				t.Fatalf("%v truncated to %d bytes: err %v", r.Type, n, err)
			}
		}
		if err := got.UnmarshalBinary(append(b[6:], 0)); !errors.Is(err, ErrBadRecord) {
			t.Fatalf("%v with a trailing byte: err %v", r.Type, err)
		}
	}
}

func TestRecordBounds(t *testing.T) {
	bad := []Record{
		{Type: 0},
		{Type: RecPrevented + 1},
		{Type: RecCommit, Txn: codecTxn},
		{Type: RecStaged, Txn: codecTxn, Participants: []string{"a"}},
		{Type: RecStaged, Txn: codecTxn, Participants: make([]string, protocol.MaxBranches+1)},
		{Type: RecCommit, Txn: codecTxn, Participants: make([]string, protocol.MaxBranches+1)},
		{Type: RecCommit, Txn: codecTxn, Participants: []string{""}},
		{Type: RecCommit, Txn: codecTxn, Participants: []string{strings.Repeat("x", protocol.MaxNameLen+1)}},
		{Type: RecPrepared, Txn: codecTxn, Work: make([]byte, protocol.MaxWorkLen+1)},
		{Type: RecCommitted, Txn: codecTxn, Work: make([]byte, protocol.MaxWorkLen+1)},
	}
	for _, r := range bad {
		b, err := r.AppendBinary([]byte("x"))
		if !errors.Is(err, ErrBadRecord) || string(b) != "x" {
			t.Errorf("encode %+v: err %v, appended %d bytes", r.Type, err, len(b)-1)
		}
	}
	// Hand-made encodings that break a bound.
	hdr := append([]byte{byte(RecCommit)}, codecTxn[:]...)
	for name, b := range map[string][]byte{
		"11 participants": append(append([]byte{}, hdr...), 11),
		"0 participants":  append(append([]byte{}, hdr...), 0),
		"staged, 1 name":  append(append([]byte{byte(RecStaged)}, codecTxn[:]...), 1, 1, 'a'),
		"empty name":      append(append([]byte{}, hdr...), 1, 0),
		"long name":       append(append(append([]byte{}, hdr...), 1, protocol.MaxNameLen+1), make([]byte, protocol.MaxNameLen+1)...),
		"long work":       append(append(append([]byte{byte(RecPrepared)}, codecTxn[:]...), 0x01, 0x10), make([]byte, protocol.MaxWorkLen+1)...),
		"unknown type":    append([]byte{99}, codecTxn[:]...),
		"short":           {byte(RecEnd), 1, 2},
	} {
		var r Record
		if err := r.UnmarshalBinary(b); !errors.Is(err, ErrBadRecord) {
			t.Errorf("%s: err %v", name, err)
		}
		if !reflect.DeepEqual(r, Record{}) {
			t.Errorf("%s: record not left zero: %+v", name, r)
		}
	}
}

func TestRecordDecodeCopies(t *testing.T) {
	r := Record{Type: RecPrepared, Txn: codecTxn, Work: []byte("abc")}
	b, _ := r.MarshalBinary()
	var got Record
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	clear(b)
	if string(got.Work) != "abc" {
		t.Fatalf("decoded work aliases the input: %q", got.Work)
	}
}

func TestRecordEncodeAllocs(t *testing.T) {
	r := Record{Type: RecCommit, Txn: codecTxn, Participants: []string{"a", "b"}}
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() { buf, _ = r.AppendBinary(buf[:0]) }); n != 0 {
		t.Fatalf("AppendBinary allocates %v times", n)
	}
}

func FuzzRecordDecode(f *testing.F) {
	for _, r := range validRecords() {
		b, _ := r.MarshalBinary()
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{byte(RecCommit)})
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Record
		if err := r.UnmarshalBinary(b); err != nil {
			return
		}
		// Whatever decodes re-encodes to exactly the same bytes.
		out, err := r.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded record does not encode: %v (%+v)", err, r)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("re-encoding differs:\n in  %x\n out %x", b, out)
		}
	})
}

func TestShardFor(t *testing.T) {
	counts := make([]int, 4)
	for i := range 4000 {
		var id protocol.TxnID
		id[15], id[14] = byte(i), byte(i>>8)
		s := ShardFor(id, 4)
		if s != ShardFor(id, 4) {
			t.Fatal("not deterministic")
		}
		counts[s]++
	}
	for i, c := range counts {
		if c < 800 || c > 1200 {
			t.Fatalf("shard %d got %d of 4000 sequential ids: %v", i, c, counts)
		}
	}
	if ShardFor(codecTxn, 1) != 0 {
		t.Fatal("one shard")
	}
}

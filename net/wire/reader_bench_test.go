package wire

import (
	"bytes"
	"io"
	"testing"

	"github.com/commitd/commitd/protocol"
)

// BenchmarkReaderNext is the reader's cost per frame for a stream of
// votes arriving in large reads (a busy connection): framing and header
// checks, not the payload's.
func BenchmarkReaderNext(b *testing.B) {
	var stream []byte
	v := Vote{Txn: txn, From: []byte("bank-1"), Vote: protocol.VoteYes}
	for range 1000 {
		stream, _ = AppendFrame(stream, 0, &v)
	}
	src := bytes.NewReader(stream)
	r := NewReader(src, 0)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if _, err := r.Next(); err != nil {
			if err != io.EOF {
				b.Fatal(err)
			}
			src.Reset(stream)
			r.Reset(src)
			continue
		}
		n++
	}
	if n == 0 {
		b.Fatal("no frame read")
	}
}

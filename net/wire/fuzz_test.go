package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzDecodeFrame feeds arbitrary bytes to the parser, and the same bytes
// split in two at a range of positions through the streaming Reader. It
// checks that nothing panics, that every way of reading finds the same
// frames and the same error, and that every frame whose payload is valid
// re-encodes to exactly its own bytes.
func FuzzDecodeFrame(f *testing.F) {
	for _, s := range samples() {
		b, err := AppendFrame(nil, s.reqID, s.msg)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	all, _ := AppendFrame(nil, 0, &Ack{Txn: txn, From: []byte("x")})
	all, _ = AppendFrame(all, 5, &Begin{Txn: txn, Branches: []Branch{{Participant: []byte("p"), Work: []byte("w")}}})
	f.Add(all)
	f.Add(header(MaxFrameSize, Version, TypeVote, 0, 0))
	f.Add(header(20, 2, TypeVote, 0, 0))
	f.Add([]byte("garbage that is not a frame at all"))

	f.Fuzz(func(t *testing.T, data []byte) {
		// Reference: ParseFrame over the whole input.
		var want []Frame
		var wantErr error
		rest := data
		for {
			fr, n, err := ParseFrame(rest)
			if err != nil {
				wantErr = err
				if err == io.ErrUnexpectedEOF && len(rest) == 0 {
					wantErr = io.EOF
				}
				break
			}
			if n != fr.Size() || n > MaxFrameSize {
				t.Fatalf("n = %d, frame size %d", n, fr.Size())
			}
			want = append(want, fr)
			rest = rest[n:]
			checkFrame(t, data, fr)
		}

		// The streaming Reader, whole and split in two.
		splits := []int{0, len(data)}
		if len(data) <= 64 {
			for i := 1; i < len(data); i++ {
				splits = append(splits, i)
			}
		} else {
			for _, d := range []int{1, 2, 3, 7, HeaderSize - 1, HeaderSize, HeaderSize + 1} {
				splits = append(splits, d, len(data)-d)
			}
			splits = append(splits, len(data)/2, len(data)/3)
		}
		// The smallest buffer, so that the fuzzer also drives its growth.
		r := NewReader(nil, minReadBuffer)
		for _, at := range splits {
			r.Reset(io.MultiReader(bytes.NewReader(data[:at]), bytes.NewReader(data[at:])))
			for i := 0; ; i++ {
				fr, err := r.Next()
				if err != nil {
					if !sameErr(err, wantErr) {
						t.Fatalf("split %d: reader err %v, ParseFrame err %v", at, err, wantErr)
					}
					if i != len(want) {
						t.Fatalf("split %d: reader found %d frames, ParseFrame %d", at, i, len(want))
					}
					break
				}
				if i >= len(want) {
					t.Fatalf("split %d: reader found more frames than ParseFrame", at)
				}
				w := want[i]
				if fr.Type != w.Type || fr.Flags != w.Flags || fr.ReqID != w.ReqID || !bytes.Equal(fr.Payload, w.Payload) {
					t.Fatalf("split %d: frame %d differs", at, i)
				}
			}
		}
	})
}

// sameErr compares a Reader error with ParseFrame's: the same sentinel, or
// both "ran out of bytes".
func sameErr(got, want error) bool {
	for _, s := range []error{ErrFrameTooLarge, ErrVersion, ErrMalformed} {
		if errors.Is(want, s) {
			return errors.Is(got, s)
		}
	}
	return got == want
}

// checkFrame decodes fr and, if it is valid, checks that encoding it again
// gives the same bytes.
func checkFrame(t *testing.T, data []byte, fr Frame) {
	m := newOf(fr.Type)
	cerr := Check(fr)
	derr := m.Decode(fr)
	if (cerr == nil) != (derr == nil) {
		t.Fatalf("Check = %v but Decode = %v", cerr, derr)
	}
	if derr != nil {
		if !errors.Is(derr, ErrMalformed) {
			t.Fatalf("Decode error %v is not ErrMalformed", derr)
		}
		return
	}
	enc, err := AppendFrame(nil, fr.ReqID, m)
	if err != nil {
		t.Fatalf("re-encoding a decoded %v: %v", fr.Type, err)
	}
	if raw := AppendRaw(nil, fr); !bytes.Equal(enc, raw) {
		t.Fatalf("%v: decode∘encode differs:\n got %x\nwant %x", fr.Type, enc, raw)
	}
}

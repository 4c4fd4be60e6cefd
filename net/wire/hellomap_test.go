package wire

import (
	"errors"
	"testing"
)

// A Hello that sets the map flag must carry a map version, and a
// non-zero one (a sender without a map sends no flag); a Hello without the
// flag is byte for byte what it was before the flag existed.
func TestHelloMapVersion(t *testing.T) {
	plain, err := (&Hello{Role: RoleParticipant, Name: []byte("p1")}).AppendFrame(nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	with, err := (&Hello{Role: RoleParticipant, Name: []byte("p1"), MapVersion: 9}).AppendFrame(nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(with) != len(plain)+8 {
		t.Fatalf("a Hello with a map version is %d bytes, without %d: want 8 more", len(with), len(plain))
	}
	fp, _, err := ParseFrame(plain)
	if err != nil || fp.Flags != 0 {
		t.Fatalf("plain Hello: flags %#x, %v", fp.Flags, err)
	}
	// The flag without the version: truncated.
	fp.Flags |= FlagMap
	var h Hello
	if err := h.Decode(fp); !errors.Is(err, ErrMalformed) {
		t.Fatalf("the map flag without a version: %v", err)
	}
	// The flag with version 0.
	zero := append([]byte(nil), with...)
	clear(zero[len(zero)-8:])
	fz, _, err := ParseFrame(zero)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Decode(fz); !errors.Is(err, ErrMalformed) {
		t.Fatalf("map version 0 with the flag: %v", err)
	}
	fw, _, _ := ParseFrame(with)
	if err := h.Decode(fw); err != nil || h.MapVersion != 9 {
		t.Fatalf("decode: %+v, %v", h, err)
	}
	if err := h.Decode(fp.withoutMap()); err != nil || h.MapVersion != 0 {
		t.Fatalf("a plain Hello decoded into one that had a version: %+v, %v", h, err)
	}
}

func (f Frame) withoutMap() Frame { f.Flags &^= FlagMap; return f }

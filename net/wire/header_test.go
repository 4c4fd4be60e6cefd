package wire

import "testing"

// headerOK, the reader's one-lookup check, accepts exactly the headers
// checkHeader accepts: every type byte, every combination of the defined
// flag bits and some undefined ones, request ids zero and not.
func TestHeaderOKMatchesCheckHeader(t *testing.T) {
	flagSets := []Flags{1 << 6, 1 << 7, 1 << 15, 0xffff}
	for f := Flags(0); f < 1<<6; f++ {
		flagSets = append(flagSets, f)
	}
	for ty := range 256 {
		for _, fl := range flagSets {
			for _, id := range []uint64{0, 1, 1 << 63} {
				want := checkHeader(Type(ty), fl, id) == nil
				if got := headerOK(Type(ty), fl, id); got != want {
					t.Fatalf("type %d flags %#x id %d: headerOK %v, checkHeader accepts %v", ty, fl, id, got, want)
				}
			}
		}
	}
}

package waltest_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/commitd/commitd/wal/waltest"
)

func TestCrashKeepsOnlyWhatWasSynced(t *testing.T) {
	fs := waltest.NewMemFS()
	if err := fs.MkdirAll("/d"); err != nil {
		t.Fatal(err)
	}
	f, err := fs.Create("/d/a")
	if err != nil {
		t.Fatal(err)
	}
	mustWrite := func(p string, off int64) {
		t.Helper()
		if _, err := f.WriteAt([]byte(p), off); err != nil {
			t.Fatal(err)
		}
	}
	mustWrite("synced", 0)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	// The file's name is not durable yet: a crash loses the whole file.
	if got := fs.Crash(nil).Files(); len(got) != 0 {
		t.Fatalf("file survived without a directory sync: %v", got)
	}

	fs = waltest.NewMemFS()
	_ = fs.MkdirAll("/d")
	f, _ = fs.Create("/d/a")
	mustWrite("synced", 0)
	_ = f.Sync()
	_ = fs.SyncDir("/d")
	mustWrite("+unsynced tail", 6)
	if err := fs.Rename("/d/a", "/d/b"); err != nil { // not made durable
		t.Fatal(err)
	}
	after := fs.Crash(nil)
	got, err := after.ReadFile("/d/a")
	if err != nil || string(got) != "synced" {
		t.Fatalf("after crash: %q, %v (files %v)", got, err, after.Files())
	}
	if _, err := f.WriteAt([]byte("x"), 0); !errors.Is(err, waltest.ErrCrashed) {
		t.Fatalf("write after crash: %v", err)
	}
}

func TestCrashTearsUnsyncedWritesAsAPrefix(t *testing.T) {
	sawPartial, sawAll, sawNone := false, false, false
	for seed := range uint64(1000) {
		fs := waltest.NewMemFS()
		_ = fs.MkdirAll("/d")
		f, _ := fs.Create("/d/a")
		_, _ = f.WriteAt(bytes.Repeat([]byte{1}, 100), 0)
		_ = f.Sync()
		_ = fs.SyncDir("/d")
		_, _ = f.WriteAt(bytes.Repeat([]byte{2}, 50), 100)
		_, _ = f.WriteAt(bytes.Repeat([]byte{3}, 50), 150)
		got, _ := fs.Crash(rand.New(rand.NewPCG(seed, 0))).ReadFile("/d/a")
		if !bytes.Equal(got[:100], bytes.Repeat([]byte{1}, 100)) {
			t.Fatalf("seed %d: synced data damaged", seed)
		}
		// What follows is a prefix of the writes in order, then maybe junk:
		// never a 3 unless all the 2s made it.
		tail := got[100:]
		n2 := 0
		for n2 < len(tail) && tail[n2] == 2 {
			n2++
		}
		if n2 < 50 && bytes.IndexByte(tail[n2:], 3) >= 0 && bytes.Count(tail[n2:], []byte{3}) > 8 {
			t.Fatalf("seed %d: second write survived without the first: %v", seed, tail)
		}
		switch {
		case n2 == 0: // nothing of the writes, maybe junk
			sawNone = true
		case bytes.Equal(tail, append(bytes.Repeat([]byte{2}, 50), bytes.Repeat([]byte{3}, 50)...)):
			sawAll = true
		default:
			sawPartial = true
		}
	}
	if !sawPartial || !sawAll || !sawNone {
		t.Fatalf("crash outcomes not varied: partial %v all %v none %v", sawPartial, sawAll, sawNone)
	}
}

func TestInjectAndFailNth(t *testing.T) {
	fs := waltest.NewMemFS()
	_ = fs.MkdirAll("/d")
	fs.Inject(waltest.FailNth(waltest.OpCreate, 2, waltest.ErrNoSpace, false))
	if _, err := fs.Create("/d/a"); err != nil {
		t.Fatal(err)
	}
	if _, err := fs.Create("/d/b"); !errors.Is(err, waltest.ErrNoSpace) {
		t.Fatalf("second create: %v", err)
	}
	if _, err := fs.Create("/d/c"); err != nil {
		t.Fatalf("third create (not sticky): %v", err)
	}
	if got := fs.Files(); len(got) != 2 {
		t.Fatalf("a failed create had an effect: %v", got)
	}
}

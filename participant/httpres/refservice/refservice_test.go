package refservice

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	t1 = "0190a1b2-0000-7000-8000-000000000001"
	t2 = "0190a1b2-0000-7000-8000-000000000002"
)

// The journal brings back every answered change; a torn last line (a
// crash mid-write) is cut, a damaged line before it refuses to start.
func TestJournalReplay(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	s, err := Open(path, map[string]int64{"alice": 10, "bob": 0})
	if err != nil {
		t.Fatal(err)
	}
	mustYes := func(s *Store, txn, work string) {
		t.Helper()
		if yes, why, err := s.Prepare(txn, []byte(work)); !yes || err != nil {
			t.Fatalf("prepare %s: %v %q %v", txn, yes, why, err)
		}
	}
	mustYes(s, t1, `{"account":"alice","delta":-4}`)
	mustYes(s, t2, `opaque bytes`)
	const t3 = "0190a1b2-0000-7000-8000-000000000003"
	mustYes(s, t3, ``) // empty work: omitted from its journal line
	if err := s.Commit(t1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// A crash mid-write leaves half a line.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"op":"commit","txn":"` + t2[:10])
	f.Close()
	s, err = Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := s.Snapshot()
	if st.Balances["alice"] != 6 || st.Total != 6 || len(st.Prepared) != 2 || st.Prepared[0] != t2 || st.Prepared[1] != t3 || len(st.Committed) != 1 {
		t.Fatalf("after replay: %+v", st)
	}
	// Still prepared after the replay: the commit is taken, and a late
	// duplicate of the prepare is refused.
	if err := s.Commit(t3); err != nil {
		t.Fatal(err)
	}
	if yes, why, _ := s.Prepare(t3, nil); yes || why != "already committed" {
		t.Fatalf("prepare after commit: %v %q", yes, why)
	}
	if err := s.Abort(t2); err != nil {
		t.Fatal(err)
	}
	s.Close()
	data, _ := os.ReadFile(path)
	if strings.Contains(string(data), t2[:10]+"\n") || !strings.HasSuffix(string(data), "\n") {
		t.Fatalf("torn line not cut:\n%s", data)
	}
	lines := strings.SplitAfter(string(data), "\n")
	lines[1] = "garbage\n"
	os.WriteFile(path, []byte(strings.Join(lines, "")), 0o644)
	if _, err := Open(path, nil); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("damaged journal: %v, want an error naming line 2", err)
	}
}

func TestPrepareRules(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "journal"), map[string]int64{"alice": 5})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if yes, _, _ := s.Prepare(t1, []byte(`{"account":"nobody","delta":-1}`)); yes {
		t.Fatal("a debit of an account that does not exist was prepared")
	}
	if yes, _, _ := s.Prepare(t1, []byte(`{"account":"carol","delta":3}`)); !yes {
		t.Fatal("a credit was refused")
	}
	if err := s.Commit(t1); err != nil {
		t.Fatal(err)
	}
	if yes, why, _ := s.Prepare(t1, []byte(`{"account":"carol","delta":3}`)); yes || why != "already committed" {
		t.Fatalf("prepare after commit: %v %q", yes, why)
	}
	if err := s.Commit(t2); err == nil {
		t.Fatal("a commit of a transaction never prepared was taken")
	}
	st, _ := s.Snapshot()
	if st.Balances["carol"] != 3 || st.Total != 8 {
		t.Fatalf("%+v", st)
	}
}

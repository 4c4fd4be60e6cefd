package statements

import (
	"errors"
	"strings"
	"testing"

	"github.com/commitd/commitd/protocol"
)

const file = `# stock
[reserve]
params = int text
rows = 1
sql = UPDATE stock SET qty = qty - ?
	WHERE sku = ? AND qty >= 0

[touch]
params =
rows = 0..
sql = UPDATE stock SET qty = qty
`

func TestParse(t *testing.T) {
	s, err := Parse(strings.NewReader(file), "f")
	if err != nil {
		t.Fatal(err)
	}
	all := s.All()
	if len(all) != 2 || all[0].Name != "reserve" || all[1].Name != "touch" {
		t.Fatalf("%+v", all)
	}
	r := all[0]
	if r.SQL != "UPDATE stock SET qty = qty - ?\nWHERE sku = ? AND qty >= 0" || len(r.Params) != 2 || r.Params[0] != Int || r.Params[1] != Text || r.MinRows != 1 || r.MaxRows != 1 || r.Line != 2 {
		t.Fatalf("%+v", r)
	}
	if all[1].MinRows != 0 || all[1].MaxRows != -1 || len(all[1].Params) != 0 {
		t.Fatalf("%+v", all[1])
	}
	if err := r.CheckRows(1); err != nil {
		t.Fatal(err)
	}
	if err := r.CheckRows(0); err == nil || !strings.Contains(err.Error(), `"reserve" affected 0 rows, want 1`) {
		t.Fatalf("CheckRows(0): %v", err)
	}
	if err := all[1].CheckRows(1 << 40); err != nil {
		t.Fatal(err)
	}
}

// TestParseErrors: every damaged file is refused, naming its line.
func TestParseErrors(t *testing.T) {
	for _, c := range []struct{ text, want string }{
		{"", "defines no statement"},
		{"params = int\n", "f:1: params before the first [name]"},
		{"[a]\nparams =\nrows = 1\n", `f:1: statement "a" has no sql`},
		{"[a]\nparams = int float\n", `f:2: parameter type "float"`},
		{"[a]\nrows = 2..1\n", `f:2: rows "2..1"`},
		{"[a]\nrows = -1\n", `f:2: rows "-1"`},
		{"[a]\nrows = x\n", `f:2: rows "x"`},
		{"[a b]\n", "f:1: statement name"},
		{"[a\n", "f:1: a statement header is [name]"},
		{"[a]\nsql = x\nsql = y\n", `f:3: statement "a" sets sql twice`},
		{"[a]\nfoo = 1\n", `f:2: unknown key "foo"`},
		{"[a]\njust words\n", `f:2: want [name] or key = value`},
		{"[a]\n  continued\n", "f:2: an indented line continues only an sql value"},
		{"[a]\nparams =\nrows = 1\nsql = x\n[a]\n", `f:5: statement "a" is defined twice (first at line 1)`},
		{"[a]\nparams =\nrows = 1\nsql =\n", `f:1: statement "a" has empty sql`},
	} {
		_, err := Parse(strings.NewReader(c.text), "f")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want an error with %q", c.text, err, c.want)
		}
	}
}

func TestWorkRoundTrip(t *testing.T) {
	w, err := AppendWork(nil, "reserve", IntArg(-5), TextArg("x'; DROP TABLE stock; --"))
	if err != nil {
		t.Fatal(err)
	}
	name, args, err := DecodeWork(w)
	if err != nil || name != "reserve" || len(args) != 2 || args[0] != IntArg(-5) || args[1] != TextArg("x'; DROP TABLE stock; --") {
		t.Fatalf("%q %+v %v", name, args, err)
	}
	// Every strict prefix is refused, and so is a trailing byte.
	for i := range len(w) {
		if _, _, err := DecodeWork(w[:i]); !errors.Is(err, ErrBadWork) {
			t.Fatalf("prefix %d: %v", i, err)
		}
	}
	if _, _, err := DecodeWork(append(w, 0)); !errors.Is(err, ErrBadWork) {
		t.Fatalf("trailing byte: %v", err)
	}
	if _, err := AppendWork(nil, "bad name"); err == nil {
		t.Fatal("a bad name was encoded")
	}
	if _, err := AppendWork(nil, "a", TextArg(strings.Repeat("x", protocol.MaxWorkLen))); err == nil {
		t.Fatal("a work beyond MaxWorkLen was encoded")
	}
}

// TestBindRefusesHostileWork: unknown names, wrong counts and types,
// garbage — each an error saying why, never a statement.
func TestBindRefusesHostileWork(t *testing.T) {
	s, err := Parse(strings.NewReader(file), "f")
	if err != nil {
		t.Fatal(err)
	}
	mk := func(name string, args ...Arg) []byte {
		w, err := AppendWork(nil, name, args...)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	st, vals, err := s.Bind(mk("reserve", IntArg(2), TextArg("'; DROP TABLE stock; --")))
	if err != nil || st.Name != "reserve" || vals[0] != int64(2) || vals[1] != "'; DROP TABLE stock; --" {
		t.Fatalf("%v %v %v", st, vals, err)
	}
	for _, c := range []struct {
		work []byte
		want string
	}{
		{mk("drop_all"), `unknown statement "drop_all"`},
		{mk("reserve", IntArg(2)), `statement "reserve" takes 2 arguments, the work has 1`},
		{mk("reserve", IntArg(2), TextArg("a"), TextArg("b")), "takes 2 arguments, the work has 3"},
		{mk("reserve", TextArg("2"), TextArg("a")), `argument 1 of statement "reserve" must be int, the work has text`},
		{[]byte("UPDATE stock SET qty = 0"), "not a statement work"},
		{[]byte{'S', 3, 'a', ';', 'b', 0}, "characters other than"},
		{[]byte{'S', 1, 'a', 1, 'x'}, "unknown type"},
		{nil, "not a statement work"},
	} {
		_, _, err := s.Bind(c.work)
		if !errors.Is(err, ErrBadWork) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want %q", c.work, err, c.want)
		}
	}
}

func FuzzDecodeWork(f *testing.F) {
	w, _ := AppendWork(nil, "reserve", IntArg(1), TextArg("abc"))
	f.Add(w)
	f.Add([]byte{'S'})
	f.Fuzz(func(t *testing.T, work []byte) {
		name, args, err := DecodeWork(work)
		if err != nil {
			return
		}
		again, err := AppendWork(nil, name, args...)
		if err != nil || string(again) != string(work) {
			t.Fatalf("%x decoded to %q %+v, encodes to %x (%v)", work, name, args, again, err)
		}
	})
}

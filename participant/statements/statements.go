package statements

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/commitd/commitd/protocol"
)

// Limits on a statement file, so a damaged or hostile file cannot make
// the participant allocate without bound.
const (
	MaxStatements = 1000    // statements in one file
	MaxFileBytes  = 1 << 20 // size of the file
	MaxSQLBytes   = 64 << 10
	MaxNameLen    = 64 // bytes of a statement's name
	MaxArgs       = 64 // parameters of one statement
)

// Magic is the first byte of a statement work.
const Magic = 'S'

// Type is a parameter's type.
type Type uint8

// The parameter types. Int is a signed 64-bit integer, Text a string of
// up to 65535 bytes; the database converts them to the column's type.
const (
	Int  Type = 'i'
	Text Type = 't'
)

func (t Type) String() string {
	switch t {
	case Int:
		return "int"
	case Text:
		return "text"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Arg is one argument of a statement work.
type Arg struct {
	Type Type
	Int  int64
	Text string
}

// IntArg and TextArg make arguments.
func IntArg(v int64) Arg { return Arg{Type: Int, Int: v} }

// TextArg makes a text argument.
func TextArg(s string) Arg { return Arg{Type: Text, Text: s} }

// value is the argument as a driver value.
func (a Arg) value() any {
	if a.Type == Int {
		return a.Int
	}
	return a.Text
}

// ErrBadWork is wrapped by every error DecodeWork and Bind return for a
// work that is not a valid statement work.
var ErrBadWork = errors.New("statements: bad work")

// AppendWork appends the work naming statement name with args to dst.
// It fails if the name or an argument is out of bounds or the work
// would exceed protocol.MaxWorkLen.
func AppendWork(dst []byte, name string, args ...Arg) ([]byte, error) {
	if err := checkName(name); err != nil {
		return dst, err
	}
	if len(args) > MaxArgs {
		return dst, fmt.Errorf("statements: %d arguments, at most %d", len(args), MaxArgs)
	}
	start := len(dst)
	dst = append(dst, Magic, byte(len(name)))
	dst = append(dst, name...)
	dst = append(dst, byte(len(args)))
	for i, a := range args {
		switch a.Type {
		case Int:
			dst = append(dst, byte(Int))
			dst = binary.BigEndian.AppendUint64(dst, uint64(a.Int))
		case Text:
			if len(a.Text) > 0xffff {
				return dst[:start], fmt.Errorf("statements: argument %d is %d bytes, at most 65535", i+1, len(a.Text))
			}
			dst = append(dst, byte(Text))
			dst = binary.BigEndian.AppendUint16(dst, uint16(len(a.Text)))
			dst = append(dst, a.Text...)
		default:
			return dst[:start], fmt.Errorf("statements: argument %d has no type", i+1)
		}
	}
	if len(dst)-start > protocol.MaxWorkLen {
		return dst[:start], fmt.Errorf("statements: the work is %d bytes, at most %d", len(dst)-start, protocol.MaxWorkLen)
	}
	return dst, nil
}

// DecodeWork reads a statement work. The arguments' text is copied out of
// work.
func DecodeWork(work []byte) (name string, args []Arg, err error) {
	bad := func(why string) (string, []Arg, error) {
		return "", nil, fmt.Errorf("%w: %s", ErrBadWork, why)
	}
	if len(work) < 3 || work[0] != Magic {
		return bad("not a statement work (want 'S', a name and arguments)")
	}
	n := int(work[1])
	if n == 0 || n > MaxNameLen || len(work) < 2+n+1 {
		return bad("the statement name's length is out of bounds")
	}
	name = string(work[2 : 2+n])
	if checkName(name) != nil {
		return bad(fmt.Sprintf("statement name %q has characters other than A-Z a-z 0-9 . _ -", name))
	}
	p := work[2+n:]
	k := int(p[0])
	p = p[1:]
	if k > MaxArgs {
		return bad(fmt.Sprintf("%d arguments, at most %d", k, MaxArgs))
	}
	args = make([]Arg, 0, k)
	for i := range k {
		if len(p) == 0 {
			return bad(fmt.Sprintf("argument %d is missing", i+1))
		}
		switch Type(p[0]) {
		case Int:
			if len(p) < 9 {
				return bad(fmt.Sprintf("argument %d is cut short", i+1))
			}
			args = append(args, IntArg(int64(binary.BigEndian.Uint64(p[1:9]))))
			p = p[9:]
		case Text:
			if len(p) < 3 {
				return bad(fmt.Sprintf("argument %d is cut short", i+1))
			}
			l := int(binary.BigEndian.Uint16(p[1:3]))
			if len(p) < 3+l {
				return bad(fmt.Sprintf("argument %d is cut short", i+1))
			}
			args = append(args, TextArg(string(p[3:3+l])))
			p = p[3+l:]
		default:
			return bad(fmt.Sprintf("argument %d has unknown type %d", i+1, p[0]))
		}
	}
	if len(p) != 0 {
		return bad(fmt.Sprintf("%d bytes after the last argument", len(p)))
	}
	return name, args, nil
}

// Statement is one registered statement.
type Statement struct {
	Name    string
	SQL     string
	Params  []Type
	MinRows int64
	MaxRows int64 // -1: no upper bound
	Line    int   // where its [name] header is in the file
}

// CheckRows reports whether n affected rows is what the statement
// declared, with an error saying what was expected if not.
func (st *Statement) CheckRows(n int64) error {
	if n < st.MinRows || (st.MaxRows >= 0 && n > st.MaxRows) {
		return fmt.Errorf("statement %q affected %d rows, want %s", st.Name, n, st.rowsString())
	}
	return nil
}

func (st *Statement) rowsString() string {
	switch {
	case st.MinRows == 0 && st.MaxRows < 0:
		return "any"
	case st.MinRows == st.MaxRows:
		return strconv.FormatInt(st.MinRows, 10)
	case st.MaxRows < 0:
		return fmt.Sprintf("%d..", st.MinRows)
	}
	return fmt.Sprintf("%d..%d", st.MinRows, st.MaxRows)
}

// Set is the statements of one file, immutable once parsed: safe for use
// by any number of goroutines.
type Set struct {
	byName map[string]*Statement
	list   []*Statement
}

// All returns the statements in file order.
func (s *Set) All() []*Statement { return s.list }

// Bind decodes a work, finds its statement and checks its arguments
// against the statement's parameters. It returns the statement and the
// arguments as driver values, or an error (wrapping ErrBadWork) that says
// what is wrong — the reason of the NO vote.
func (s *Set) Bind(work []byte) (*Statement, []any, error) {
	name, args, err := DecodeWork(work)
	if err != nil {
		return nil, nil, err
	}
	st := s.byName[name]
	if st == nil {
		return nil, nil, fmt.Errorf("%w: unknown statement %q", ErrBadWork, name)
	}
	if len(args) != len(st.Params) {
		return nil, nil, fmt.Errorf("%w: statement %q takes %d arguments, the work has %d", ErrBadWork, name, len(st.Params), len(args))
	}
	vals := make([]any, len(args))
	for i, a := range args {
		if a.Type != st.Params[i] {
			return nil, nil, fmt.Errorf("%w: argument %d of statement %q must be %v, the work has %v", ErrBadWork, i+1, name, st.Params[i], a.Type)
		}
		vals[i] = a.value()
	}
	return st, vals, nil
}

// Load reads and parses a statement file.
func Load(path string) (*Set, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("statements: %w", err)
	}
	defer f.Close()
	return Parse(f, path)
}

// Parse parses a statement file; file names it in errors.
func Parse(r io.Reader, file string) (*Set, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("statements: reading %s: %w", file, err)
	}
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("statements: %s is larger than %d bytes", file, MaxFileBytes)
	}
	s := &Set{byName: map[string]*Statement{}}
	var cur *Statement
	seen := map[string]bool{} // keys of cur
	lastKey := ""
	errAt := func(line int, format string, a ...any) error {
		return fmt.Errorf("statements: %s:%d: %s", file, line, fmt.Sprintf(format, a...))
	}
	finish := func() error {
		if cur == nil {
			return nil
		}
		for _, k := range []string{"params", "rows", "sql"} {
			if !seen[k] {
				return errAt(cur.Line, "statement %q has no %s", cur.Name, k)
			}
		}
		if strings.TrimSpace(cur.SQL) == "" {
			return errAt(cur.Line, "statement %q has empty sql", cur.Name)
		}
		s.list = append(s.list, cur)
		s.byName[cur.Name] = cur
		return nil
	}
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	sc.Buffer(make([]byte, 0, 4096), MaxFileBytes)
	line := 0
	for sc.Scan() {
		line++
		raw := sc.Text()
		text := strings.TrimSpace(raw)
		switch {
		case text == "" || strings.HasPrefix(text, "#"):
			continue
		case raw[0] == ' ' || raw[0] == '\t':
			// A continuation of the value above: only sql spans lines.
			if cur == nil || lastKey != "sql" {
				return nil, errAt(line, "an indented line continues only an sql value")
			}
			cur.SQL += "\n" + text
			if len(cur.SQL) > MaxSQLBytes {
				return nil, errAt(line, "statement %q: sql longer than %d bytes", cur.Name, MaxSQLBytes)
			}
			continue
		case strings.HasPrefix(text, "["):
			if err := finish(); err != nil {
				return nil, err
			}
			name, ok := strings.CutSuffix(text[1:], "]")
			if !ok {
				return nil, errAt(line, "a statement header is [name], got %q", text)
			}
			if err := checkName(name); err != nil {
				return nil, errAt(line, "%v", err)
			}
			if s.byName[name] != nil {
				return nil, errAt(line, "statement %q is defined twice (first at line %d)", name, s.byName[name].Line)
			}
			if len(s.list) >= MaxStatements {
				return nil, errAt(line, "more than %d statements", MaxStatements)
			}
			cur, seen, lastKey = &Statement{Name: name, Line: line}, map[string]bool{}, ""
			continue
		}
		key, val, ok := strings.Cut(text, "=")
		if !ok {
			return nil, errAt(line, "want [name] or key = value, got %q", text)
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		if cur == nil {
			return nil, errAt(line, "%s before the first [name]", key)
		}
		if seen[key] {
			return nil, errAt(line, "statement %q sets %s twice", cur.Name, key)
		}
		switch key {
		case "params":
			for _, f := range strings.Fields(val) {
				switch f {
				case "int":
					cur.Params = append(cur.Params, Int)
				case "text":
					cur.Params = append(cur.Params, Text)
				default:
					return nil, errAt(line, "parameter type %q: want int or text", f)
				}
			}
			if len(cur.Params) > MaxArgs {
				return nil, errAt(line, "%d parameters, at most %d", len(cur.Params), MaxArgs)
			}
		case "rows":
			lo, hi, err := parseRows(val)
			if err != nil {
				return nil, errAt(line, "%v", err)
			}
			cur.MinRows, cur.MaxRows = lo, hi
		case "sql":
			cur.SQL = val
			if len(cur.SQL) > MaxSQLBytes {
				return nil, errAt(line, "statement %q: sql longer than %d bytes", cur.Name, MaxSQLBytes)
			}
		default:
			return nil, errAt(line, "unknown key %q: want params, rows or sql", key)
		}
		seen[key], lastKey = true, key
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("statements: reading %s: %w", file, err)
	}
	if err := finish(); err != nil {
		return nil, err
	}
	if len(s.list) == 0 {
		return nil, fmt.Errorf("statements: %s defines no statement", file)
	}
	return s, nil
}

// parseRows reads "N", "N..M", "N.." or "any".
func parseRows(v string) (lo, hi int64, err error) {
	bad := fmt.Errorf("rows %q: want N, N..M, N.. or any", v)
	if v == "any" {
		return 0, -1, nil
	}
	a, b, isRange := strings.Cut(v, "..")
	lo, err = strconv.ParseInt(a, 10, 64)
	if err != nil || lo < 0 {
		return 0, 0, bad
	}
	if !isRange {
		return lo, lo, nil
	}
	if b == "" {
		return lo, -1, nil
	}
	hi, err = strconv.ParseInt(b, 10, 64)
	if err != nil || hi < lo {
		return 0, 0, bad
	}
	return lo, hi, nil
}

func checkName(name string) error {
	if name == "" || len(name) > MaxNameLen {
		return fmt.Errorf("statement name %q must be 1 to %d bytes", name, MaxNameLen)
	}
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("statement name %q: only A-Z a-z 0-9 . _ -", name)
		}
	}
	return nil
}

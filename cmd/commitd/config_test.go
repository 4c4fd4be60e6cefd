package main

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testFlags is a flag set shaped like a server's: scalars of each kind, a
// repeatable list and a Func flag with its own validation.
type testFlags struct {
	fs           *flag.FlagSet
	listen, data string
	shards       int
	tick         time.Duration
	batch        bool
	segment      int64
	participants participantList
}

func newTestFlags() *testFlags {
	t := &testFlags{fs: newFlags("coordinator"), participants: participantList{}}
	t.fs.StringVar(&t.listen, "listen", "127.0.0.1:7400", "address")
	t.fs.StringVar(&t.data, "data", "", "data directory")
	t.fs.IntVar(&t.shards, "shards", 0, "engine shards")
	t.fs.DurationVar(&t.tick, "tick", 10*time.Millisecond, "clock period")
	t.fs.BoolVar(&t.batch, "batch", true, "batch")
	segmentSizeFlag(t.fs, &t.segment, "segment size")
	t.fs.Var(t.participants, "participant", "NAME=ADDR (repeat, or comma-separate)")
	return t
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "commitd.conf")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigSetsFlags(t *testing.T) {
	p := writeConfig(t, "\ufeff# a coordinator, saved with a byte-order mark\n"+
		"\n"+
		"listen = 10.0.0.1:7400\r\n"+ // a file written on Windows
		"  data=/var/lib/commitd   # where the log lives\n"+
		"shards = 4\n"+
		"tick = 5ms\n"+
		"batch = false\n"+
		"segment-size = 8MiB\n"+
		"participant = a=10.0.0.2:7401\n"+
		"participant = b=10.0.0.3:7401,c=10.0.0.4:7401\n")
	f := newTestFlags()
	if err := parse(f.fs, []string{"--config", p}); err != nil {
		t.Fatal(err)
	}
	if f.listen != "10.0.0.1:7400" || f.data != "/var/lib/commitd" || f.shards != 4 || f.tick != 5*time.Millisecond ||
		f.batch || f.segment != 8<<20 || len(f.participants) != 3 || f.participants["c"] != "10.0.0.4:7401" {
		t.Fatalf("flags after the config: %+v", f)
	}
}

// TestConfigCommandLineWins: a flag on the command line replaces the
// file's lines for it — for a repeatable flag the whole list, so that a
// command line can narrow a file's participants rather than add to them.
func TestConfigCommandLineWins(t *testing.T) {
	p := writeConfig(t, "listen = 10.0.0.1:7400\nshards = 4\nparticipant = a=10.0.0.2:7401\nparticipant = b=10.0.0.3:7401\n")
	f := newTestFlags()
	// --config after the flags it overrides, to show order does not matter.
	if err := parse(f.fs, []string{"--shards", "2", "--participant", "z=127.0.0.1:1", "--config", p}); err != nil {
		t.Fatal(err)
	}
	if f.shards != 2 || f.listen != "10.0.0.1:7400" || len(f.participants) != 1 || f.participants["z"] != "127.0.0.1:1" {
		t.Fatalf("flags: shards %d listen %s participants %v", f.shards, f.listen, f.participants)
	}
}

func TestConfigQuoting(t *testing.T) {
	p := writeConfig(t, `data = "/srv/my data # not a comment"`+"\n"+
		`listen = "127.0.0.1:9" # a comment after a quoted value`+"\n")
	f := newTestFlags()
	if err := parse(f.fs, []string{"--config", p}); err != nil {
		t.Fatal(err)
	}
	if f.data != "/srv/my data # not a comment" || f.listen != "127.0.0.1:9" {
		t.Fatalf("data %q listen %q", f.data, f.listen)
	}
	// A '#' inside a word (a password in a DSN) is part of the value.
	p = writeConfig(t, "data = /srv/a#b\n")
	f = newTestFlags()
	if err := parse(f.fs, []string{"--config", p}); err != nil || f.data != "/srv/a#b" {
		t.Fatalf("data %q, err %v", f.data, err)
	}
}

// TestConfigBadInput: every mistake refuses to start with one line that
// names the file and line, as a usage error (exit status 2).
func TestConfigBadInput(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"listen = 127.0.0.1:1\n\nsharts = 4\n", `commitd.conf:3: unknown key "sharts"`},
		{"config = other.conf\n", `commitd.conf:1: unknown key "config"`},
		{"shards = many\n", `commitd.conf:1: shards = many: parse error`},
		{"# c\nsegment-size = 8Q\n", `commitd.conf:2: segment-size = 8Q: "8Q": want a byte count`},
		{"participant = p1\n", `commitd.conf:1: participant = p1: want NAME=ADDR`},
		{"participant = a=x:1\nparticipant = a=y:1\n", `commitd.conf:2: participant = a=y:1: participant "a" named twice`},
		{"shards = 1\nlisten = x:1\nshards = 2\n", "commitd.conf:3: shards given twice (first on line 1)"},
		{"listen 127.0.0.1:1\n", `commitd.conf:1: "listen 127.0.0.1:1": want KEY = VALUE`},
		{"[coordinator]\n", "commitd.conf:1: \"[coordinator]\": sections are not part of the format"},
		{"--listen = x:1\n", `commitd.conf:1: key "--listen": write the flag's name without dashes`},
		{"listen =\n", "commitd.conf:1: listen: no value"},
		{"listen = # nothing\n", "commitd.conf:1: listen: no value"},
		{"data = \"/srv\n", "commitd.conf:1: data: unterminated or bad quoted value"},
		{"data = \"/srv\" x\n", "commitd.conf:1: data: \"x\" after the quoted value"},
	} {
		f := newTestFlags()
		err := parse(f.fs, []string{"--config", writeConfig(t, tc.text)})
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("%q: error %v, want a usage error", tc.text, err)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
			t.Errorf("%q: error %q, want one line with %q", tc.text, msg, tc.want)
		}
	}
	f := newTestFlags()
	if err := parse(f.fs, []string{"--config", filepath.Join(t.TempDir(), "missing.conf")}); err == nil || !strings.Contains(err.Error(), "missing.conf") {
		t.Errorf("a missing file: %v", err)
	}
	big := writeConfig(t, strings.Repeat("# padding\n", maxConfigBytes/10+1))
	if err := parse(newTestFlags().fs, []string{"--config", big}); err == nil || !strings.Contains(err.Error(), "not a config file") {
		t.Errorf("a file over %d bytes: %v", maxConfigBytes, err)
	}
}

// TestConfigOfProcesses runs the real binary with config files: every
// command that takes flags takes --config, and bad input exits 2 with one
// line naming the file and line.
func TestConfigOfProcesses(t *testing.T) {
	bad := writeConfig(t, "# a typo on line 3\n\nlisten-adress = 127.0.0.1:1\n")
	for _, cmd := range [][]string{{"coordinator"}, {"participant"}, {"bench"}, {"admin", "status"}} {
		r := commitd(t, 20*time.Second, append(cmd, "--config", bad)...)
		oneLineError(t, r, `commitd.conf:3: unknown key "listen-adress": not a flag of commitd `+strings.Join(cmd, " "))
		if r.code != 2 {
			t.Errorf("%v: exit status %d, want 2", cmd, r.code)
		}
	}
	// A config that passes the coordinator's checks after parsing (here:
	// participants named, --participant-identity for one of them) reaches
	// the logger's, which the command line's --log-level fails on purpose:
	// nothing is started, and the error proves the file was taken.
	good := writeConfig(t, "data = "+t.TempDir()+"\nparticipant = p1=127.0.0.1:1\nparticipant = p2=127.0.0.1:2\nparticipant-identity = p2=p2.test\n")
	r := commitd(t, 20*time.Second, "coordinator", "--config", good, "--log-level", "loud")
	oneLineError(t, r, "--log-level")
	r = commitd(t, 20*time.Second, "coordinator", "--config", good, "--participant-identity", "p9=p9.test", "--log-level", "loud")
	oneLineError(t, r, `--participant-identity for "p9", which no --participant names`)
	help := commitd(t, 20*time.Second, "participant", "-h")
	if help.code != 0 || !strings.Contains(help.stderr, "-config") {
		t.Errorf("participant -h does not list --config: %d %q", help.code, help.stderr)
	}
}

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
)

// errUsage marks an error already explained to the user.
var errUsage = errors.New("usage")

// usageError is a bad command line: reported in one line, exit status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() + " (see -h)" }

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) < 1 {
		usage()
		fmt.Fprintln(os.Stderr, "commitd: no command given")
		return 2
	}
	var err error
	switch args[0] {
	case "coordinator":
		err = runCoordinator(args[1:])
	case "participant":
		err = runParticipant(args[1:])
	case "demo":
		err = runDemo(args[1:])
	case "bench":
		err = runBench(args[1:])
	case "admin":
		err = runAdmin(args[1:])
	case "version", "-version", "--version":
		fmt.Println(version())
		return 0
	case "help", "-h", "--help":
		usage()
		return 0
	default:
		fmt.Fprintf(os.Stderr, "commitd: unknown command %q (want coordinator, participant, demo, bench, admin or version)\n", args[0])
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	case errors.Is(err, errNoRecord):
		return 3
	}
	fmt.Fprintf(os.Stderr, "commitd %s: %v\n", args[0], err)
	if _, ok := err.(usageError); ok {
		return 2
	}
	return 1
}

func usage() {
	fmt.Fprint(os.Stderr, `commitd — a two-phase-commit transaction coordinator

  commitd coordinator --listen ADDR --data DIR --participant NAME=ADDR ... [--shards N] [--http ADDR]
  commitd participant --name NAME --listen ADDR --data DIR --coordinator ADDR [--accounts N] [--balance B] [--http ADDR]
  commitd demo        [--duration D]
  commitd bench       --coordinator ADDR --participants NAME=ADDR,... [--concurrency N] [--duration D | --txns N] ...
  commitd admin status   --coordinator ADDR
  commitd admin accounts --participant ADDR
  commitd admin outcomes --participant ADDR
  commitd admin txn ID   --coordinator ADDR
  commitd admin in-doubt --coordinator ADDR
  commitd admin retry ID|PARTICIPANT --coordinator ADDR
  commitd admin resolve ID --commit|--abort --reason TEXT --participant ADDR
  commitd admin replicas [add ID=ADDR | remove ID] --coordinator ADDRS
  commitd version

Run "commitd COMMAND -h" (or "commitd admin REQUEST -h") for a command's flags.
`)
}

// version describes this binary: the module's version (or "(devel)" when
// built from a work tree), the commit and its time when the build recorded
// them (a "+dirty" commit had uncommitted changes), and the Go release.
func version() string {
	bi, _ := debug.ReadBuildInfo()
	return formatVersion(bi, runtime.Version())
}

// formatVersion is version for the build information bi (nil if the binary
// carries none) and the Go release goVersion.
func formatVersion(bi *debug.BuildInfo, goVersion string) string {
	v, vcs := "unknown", ""
	if bi != nil {
		v = bi.Main.Version
		var rev, at, dirty string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				at = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "+dirty"
				}
			}
		}
		if rev != "" {
			vcs = fmt.Sprintf(" commit %s%s", rev, dirty)
			if at != "" {
				vcs += " of " + at
			}
		}
	}
	return fmt.Sprintf("commitd %s%s, %s %s/%s", v, vcs, goVersion, runtime.GOOS, runtime.GOARCH)
}

// newFlags returns a flag set that reports errors instead of exiting and
// prints its flags only when asked (-h): a mistake gets one line.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("commitd "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parse parses args, then the --config file for the flags args did not
// set; a bad command line or config file becomes a usageError.
func parse(fs *flag.FlagSet, args []string) error {
	config := registerConfig(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stderr)
			fmt.Fprintf(os.Stderr, "usage of %s:\n", fs.Name())
			fs.PrintDefaults()
			return err
		}
		return usageError{err}
	}
	if config != nil && *config != "" {
		if err := loadConfig(fs, *config); err != nil {
			return usageError{err}
		}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}

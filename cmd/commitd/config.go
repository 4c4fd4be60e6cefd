package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// A config file (--config FILE) holds a command's flags as KEY = VALUE
// lines, for deployments whose command lines grow long (a coordinator
// with many participants):
//
//	# commitd coordinator on db1
//	listen      = 10.0.0.1:7400
//	data        = /var/lib/commitd/coordinator
//	participant = accounts=10.0.0.2:7401
//	participant = orders=10.0.0.3:7401
//	log-level   = "warn"   # a comment
//
// A key is a flag's name without dashes, and its value goes through the
// flag's own parser, so the file accepts exactly what the command line
// does and every flag a command gains is a key with no change here. A
// value may be double-quoted (Go syntax), and must be to hold " #",
// which otherwise starts a comment. A key whose flag says "repeat" in its
// help may be given on many lines; any other key once. A flag given on
// the command line wins: the file's lines for it are not used at all
// (for a repeatable flag too, so the command line can replace a list).
//
// An unknown key, a bad value, a key given twice or a line that is not
// KEY = VALUE refuses to start, naming the file and line.

// configFlagName is the flag that names a command's config file; parse
// adds it to every command's flag set.
const configFlagName = "config"

// maxConfigBytes bounds a config file read into memory: a config is a
// few hundred lines; anything near this size is the wrong file.
const maxConfigBytes = 1 << 20

// repeatUsage matches the help of a flag that accumulates its values:
// the same word tells the operator in -h and this parser.
var repeatUsage = regexp.MustCompile(`\brepeat\b`)

// registerConfig adds --config to fs (unless the command has its own) and
// returns where its value lands.
func registerConfig(fs *flag.FlagSet) *string {
	if fs.Lookup(configFlagName) != nil {
		return nil
	}
	return fs.String(configFlagName, "", "a file of KEY = VALUE lines, one for each flag of this command (the flag's name without dashes; # starts a comment); flags on the command line win (docs/deploy.md)")
}

// loadConfig sets fs's flags from the config file at path, except those
// already set on the command line. Its errors name path and line.
func loadConfig(fs *flag.FlagSet, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	if len(b) > maxConfigBytes {
		return fmt.Errorf("--config %s: larger than %d bytes: not a config file", path, maxConfigBytes)
	}
	// An editor's byte-order mark is not part of the first key.
	b = bytes.TrimPrefix(b, []byte("\ufeff"))
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	firstLine := map[string]int{}
	for i, line := range strings.Split(string(b), "\n") {
		n := i + 1
		key, value, err := configLine(line)
		if err != nil {
			return fmt.Errorf("%s:%d: %w", path, n, err)
		}
		if key == "" {
			continue
		}
		fl := fs.Lookup(key)
		if fl == nil || key == configFlagName {
			return fmt.Errorf("%s:%d: unknown key %q: not a flag of %s", path, n, key, fs.Name())
		}
		if first, dup := firstLine[key]; dup && !repeatUsage.MatchString(fl.Usage) {
			return fmt.Errorf("%s:%d: %s given twice (first on line %d); only a flag whose help says \"repeat\" may be", path, n, key, first)
		} else if !dup {
			firstLine[key] = n
		}
		if onCommandLine[key] {
			continue
		}
		if err := fs.Set(key, value); err != nil {
			return fmt.Errorf("%s:%d: %s = %s: %v", path, n, key, value, err)
		}
	}
	return nil
}

// configLine splits one line of a config file into its key and value; a
// blank or comment line has the key "".
func configLine(line string) (key, value string, err error) {
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' {
		return "", "", nil
	}
	key, value, ok := strings.Cut(line, "=")
	key, value = strings.TrimSpace(key), strings.TrimSpace(value)
	if !ok || key == "" || strings.ContainsAny(key, " \t\"") {
		if strings.HasPrefix(line, "[") {
			return "", "", fmt.Errorf("%q: sections are not part of the format; want KEY = VALUE", line)
		}
		return "", "", fmt.Errorf("%q: want KEY = VALUE", line)
	}
	if strings.HasPrefix(key, "-") {
		return "", "", fmt.Errorf("key %q: write the flag's name without dashes", key)
	}
	if strings.HasPrefix(value, `"`) {
		q, err := strconv.QuotedPrefix(value)
		if err != nil {
			return "", "", fmt.Errorf("%s: unterminated or bad quoted value %s", key, value)
		}
		if rest := strings.TrimSpace(value[len(q):]); rest != "" && rest[0] != '#' {
			return "", "", fmt.Errorf("%s: %q after the quoted value", key, rest)
		}
		value, _ = strconv.Unquote(q)
		return key, value, nil
	}
	// An unquoted value ends at a comment: " #" (a '#' inside a word, as
	// in a password, stays).
	for i := 1; i < len(value); i++ {
		if value[i] == '#' && (value[i-1] == ' ' || value[i-1] == '\t') {
			value = strings.TrimSpace(value[:i])
			break
		}
	}
	if value == "" || value[0] == '#' {
		return "", "", errors.New(key + ": no value (write \"\" for an empty one)")
	}
	return key, value, nil
}

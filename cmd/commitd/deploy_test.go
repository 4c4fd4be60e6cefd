package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// The files under deploy/ (docs/deploy.md) are checked against the binary
// they deploy: the config files and the systemd units' command lines go
// through its flag parser, every metric the alerts and the dashboard name
// is in a real /metrics scrape, and the image builds and runs.

const deployDir = "../../deploy"

// needTool returns the path of a tool the deploy tests need, or skips the
// test when it is missing outside CI (make test installs it: deploy-tools).
func needTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing: make deploy-tools installs it", name)
		}
		t.Skipf("%s is not installed here (make deploy-tools installs it): skipping", name)
	}
	return path
}

// parsedUpToLogger runs commitd with args and a bad --log-level: a command
// line (and config file) that passes every check made before the logger's
// fails there, and nothing is started.
func parsedUpToLogger(t *testing.T, args ...string) {
	t.Helper()
	r := commitd(t, 20*time.Second, append(args, "--log-level", "loud")...)
	oneLineError(t, r, "--log-level")
	if r.code != 1 {
		t.Fatalf("commitd %v: exit status %d, want 1 (the logger's error)", args, r.code)
	}
}

// TestDeployExamples: the example config files of the three-machine setup
// are what the binary accepts, and agree with each other.
func TestDeployExamples(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(deployDir, "examples", "*.conf"))
	if err != nil || len(files) < 6 {
		t.Fatalf("examples: %v %v", files, err)
	}
	var peers, participants []string
	var names []string
	for _, f := range files {
		cmd, _, _ := strings.Cut(filepath.Base(f), "-")
		parsedUpToLogger(t, cmd, "--config", f, "--data", t.TempDir())
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var ps []string
		for n, line := range strings.Split(string(b), "\n") {
			key, value, err := configLine(line)
			if err != nil {
				t.Fatalf("%s:%d: %v", f, n+1, err)
			}
			switch {
			case cmd == "coordinator" && key == "peers":
				peers = append(peers, value)
			case cmd == "coordinator" && key == "participant":
				ps = append(ps, value)
			case cmd == "participant" && key == "name":
				names = append(names, value)
			}
		}
		if cmd == "coordinator" {
			participants = append(participants, strings.Join(ps, ","))
		}
	}
	if len(peers) != 3 || peers[0] != peers[1] || peers[1] != peers[2] {
		t.Errorf("the replicas' peers differ: %q", peers)
	}
	if len(participants) != 3 || participants[0] != participants[1] || participants[1] != participants[2] {
		t.Errorf("the replicas' participants differ: %q", participants)
	}
	for _, n := range names {
		if !strings.Contains(participants[0], n+"=") {
			t.Errorf("participant %q is not in the coordinators' list %s", n, participants[0])
		}
	}
}

// unit is a systemd unit file: section → key → values in order.
type unit map[string]map[string][]string

func readUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u, section := unit{}, ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: %q", path, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

// TestSystemdUnits: each unit keeps its sandbox, runs a command line the
// binary accepts with the example config, and passes systemd's own check.
func TestSystemdUnits(t *testing.T) {
	for _, tc := range []struct{ unit, instance string }{
		{"commitd-coordinator@.service", "1"},
		{"commitd-participant@.service", "accounts"},
	} {
		t.Run(tc.unit, func(t *testing.T) {
			path := filepath.Join(deployDir, "systemd", tc.unit)
			svc := readUnit(t, path)["Service"]
			for key, want := range map[string]string{
				"ProtectSystem": "strict", "ProtectHome": "yes", "NoNewPrivileges": "yes",
				"PrivateTmp": "yes", "PrivateDevices": "yes", "Restart": "on-failure",
				"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "SystemCallFilter": "@system-service",
				"CapabilityBoundingSet": "", "User": "commitd",
			} {
				if !slices.Contains(svc[key], want) {
					t.Errorf("%s=%s missing (has %q)", key, want, svc[key])
				}
			}
			if n, err := strconv.Atoi(strings.Join(svc["LimitNOFILE"], "")); err != nil || n < 16384 {
				t.Errorf("LimitNOFILE=%v: want at least 16384", svc["LimitNOFILE"])
			}
			// The command line, with the instance's example config and a
			// temporary directory for the state directory.
			cmdline := strings.Fields(strings.ReplaceAll(strings.Join(svc["ExecStart"], ""), "%i", tc.instance))
			if len(cmdline) < 2 || cmdline[0] != "/usr/local/bin/commitd" {
				t.Fatalf("ExecStart %q", cmdline)
			}
			state := "/var/lib/" + strings.ReplaceAll(strings.Join(svc["StateDirectory"], ""), "%i", tc.instance)
			args := cmdline[1:]
			var sawConfig, sawData bool
			for i := 0; i+1 < len(args); i++ {
				switch args[i] {
				case "--config":
					sawConfig = true
					base := strings.TrimPrefix(args[i+1], "/etc/commitd/")
					args[i+1] = filepath.Join(deployDir, "examples", base)
				case "--data":
					sawData = true
					if args[i+1] != state {
						t.Errorf("--data %s is not the StateDirectory, %s", args[i+1], state)
					}
					args[i+1] = t.TempDir()
				}
			}
			if !sawConfig || !sawData {
				t.Fatalf("ExecStart %q: want --config and --data", cmdline)
			}
			parsedUpToLogger(t, args...)

			analyze, err := exec.LookPath("systemd-analyze")
			if err != nil {
				t.Skip("systemd-analyze is not installed here: the unit's own check is skipped")
			}
			// systemd-analyze checks that ExecStart's program exists: the
			// unit, instantiated, runs the binary under test.
			dir := t.TempDir()
			inst := filepath.Join(dir, strings.Replace(tc.unit, "@", "@"+tc.instance, 1))
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(inst, []byte(strings.ReplaceAll(string(b), "/usr/local/bin/commitd", binary)), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := runQuiet(analyze, "verify", "--man=no", inst)
			if err != nil || out != "" {
				t.Errorf("systemd-analyze verify: %v\n%s", err, out)
			}
			// The exposure score systemd computes from the sandbox (0 best,
			// 10 worst; "OK" up to 3.9): 1.1 when written.
			out, err = runQuiet(analyze, "security", "--offline=yes", "--man=no", inst)
			m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindStringSubmatch(out)
			if err != nil || m == nil {
				t.Fatalf("systemd-analyze security: %v\n%s", err, out)
			}
			if score, _ := strconv.ParseFloat(m[1], 64); score > 2 {
				t.Errorf("exposure %.1f, want at most 2.0: a hardening setting was lost\n%s", score, out)
			}
		})
	}
}

// runQuiet runs a command and returns its standard output and error
// together.
func runQuiet(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// TestPrometheusRules: promtool's own checks of the alert rules and the
// sample configuration, and the rules' unit tests (alerts fire on the
// series they watch, and stay quiet otherwise).
func TestPrometheusRules(t *testing.T) {
	promtool := needTool(t, "promtool")
	dir := filepath.Join(deployDir, "prometheus")
	for _, args := range [][]string{
		{"check", "rules", "alerts.yml"},
		{"check", "config", "prometheus.yml"},
		{"test", "rules", "alerts_test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// metricName matches the series names a PromQL expression uses from
// commitd's exporters (Prometheus's own "up" aside).
var metricName = regexp.MustCompile(`\b(?:commitd|go|process)_[a-z0-9_]+\b`)

// TestAlertsAndDashboardMetricsExist starts a coordinator (a group of one
// replica, which exports a lone coordinator's series and raft's), a bank
// participant and an HTTP participant from config files, commits through
// them, and checks that every series the alert rules and the dashboard
// name is in their /metrics — and that the dashboard shows every commitd
// series they export.
func TestAlertsAndDashboardMetricsExist(t *testing.T) {
	ref := refserviceBinary(t)
	dir := t.TempDir()
	coord, bankAddr, webAddr, svc := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	chttp, bhttp, whttp := freeAddr(t), freeAddr(t), freeAddr(t)
	conf := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	startProc(t, ref, nil, "--listen", svc, "--data", filepath.Join(dir, "svc.journal"), "--accounts", "alice=100")
	startProc(t, binary, nil, "participant", "--config", conf("bank.conf", fmt.Sprintf(
		"name = bank\nlisten = %s\nhttp = %s\ndata = %s\ncoordinator = %s\naccounts = 100\nlog-level = error\n",
		bankAddr, bhttp, filepath.Join(dir, "bank"), coord)))
	startProc(t, binary, nil, "participant", "--config", conf("web.conf", fmt.Sprintf(
		"name = web\nlisten = %s\nhttp = %s\ndata = %s\ncoordinator = %s\nbackend = http\nurl = http://%s\nlog-level = error\n",
		webAddr, whttp, filepath.Join(dir, "web"), coord, svc)))
	startProc(t, binary, nil, "coordinator", "--config", conf("coordinator.conf", fmt.Sprintf(
		"id = 1\npeers = 1=%s\nhttp = %s\ndata = %s\nparticipant = bank=%s\nparticipant = web=%s\nlog-level = error\n",
		coord, chttp, filepath.Join(dir, "c"), bankAddr, webAddr)))
	for _, addr := range []string{svc, bankAddr, webAddr, coord, chttp, bhttp, whttp} {
		waitListening(t, addr)
	}
	waitCommitting(t, coord, "bank")

	exported := map[string]bool{}
	for _, addr := range []string{chttp, bhttp, whttp} {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s/metrics: %v %s", addr, err, resp.Status)
		}
		for _, line := range strings.Split(string(body), "\n") {
			if line == "" || line[0] == '#' {
				continue
			}
			name, _, _ := strings.Cut(line, " ")
			name, _, _ = strings.Cut(name, "{")
			exported[name] = true
		}
	}

	// The alert rules: YAML of the rule-file shape, each rule complete.
	b, err := os.ReadFile(filepath.Join(deployDir, "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	var exprs []string
	alerts := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts++
			if _, err := time.ParseDuration(r.For); err != nil || r.Alert == "" || r.Expr == "" ||
				r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %q: want alert, expr, for, a severity, a summary and a description", r.Alert)
			}
			exprs = append(exprs, r.Expr)
		}
	}
	if alerts < 8 {
		t.Errorf("alerts.yml has %d alerts", alerts)
	}

	// The dashboard: JSON, each panel with a title and its queries.
	b, err = os.ReadFile(filepath.Join(deployDir, "grafana", "commitd.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("commitd.json: %v", err)
	}
	var dashExprs []string
	for _, p := range dash.Panels {
		if p.Title == "" || (p.Type != "row" && len(p.Targets) == 0) {
			t.Errorf("dashboard panel %q (%s): no title or no query", p.Title, p.Type)
		}
		for _, q := range p.Targets {
			dashExprs = append(dashExprs, q.Expr)
		}
	}

	shown := map[string]bool{}
	for i, e := range append(exprs, dashExprs...) {
		where := "alerts.yml"
		if i >= len(exprs) {
			where = "commitd.json"
		}
		for _, name := range metricName.FindAllString(e, -1) {
			shown[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")] = true
			if !exported[name] {
				t.Errorf("%s names %s, which no server exports (expression %q)", where, name, e)
			}
		}
	}
	// Every commitd series in the dashboard, counting a histogram's
	// _bucket, _sum and _count as one.
	for name := range exported {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		if strings.HasPrefix(name, "commitd_") && !shown[base] && !slices.ContainsFunc(dashExprs, func(e string) bool { return strings.Contains(e, base) }) {
			t.Errorf("the dashboard does not show %s", name)
		}
	}
}

// TestImage builds the container image with deploy/build-image.sh and a
// container builder from Debian's packages (buildah; make deploy-tools
// installs it), then runs the binary in it: its version, and a participant
// whose files on the data volume belong to the image's unprivileged user.
// buildah runs it with chroot isolation: this machine lets no OCI runtime
// set a container's limits, and the image's point here is its contents.
func TestImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a container image")
	}
	buildah := needTool(t, "buildah")
	tag := fmt.Sprintf("localhost/commitd-test:%d", os.Getpid())
	build := exec.Command(filepath.Join(deployDir, "build-image.sh"), tag)
	build.Env = append(os.Environ(), "CONTAINER_BUILDER=buildah")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build-image.sh: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command(buildah, "rmi", "-f", tag).Run() })
	out, err := exec.Command(buildah, "inspect", "--format", "{{.OCIv1.Config.User}}|{{.OCIv1.Config.Entrypoint}}|{{.OCIv1.Config.Volumes}}", tag).CombinedOutput()
	if got := strings.TrimSpace(string(out)); err != nil || got != "65532:65532|[/usr/local/bin/commitd]|map[/var/lib/commitd:{}]" {
		t.Fatalf("image config: %q %v", got, err)
	}
	ctr, err := exec.Command(buildah, "from", tag).Output()
	if err != nil {
		t.Fatalf("buildah from: %v", err)
	}
	name := strings.TrimSpace(string(ctr))
	t.Cleanup(func() { exec.Command(buildah, "rm", name).Run() })
	run := func(volume string, args ...string) *exec.Cmd {
		a := []string{"run", "--isolation", "chroot"}
		if volume != "" {
			a = append(a, "-v", volume+":/var/lib/commitd")
		}
		return exec.Command(buildah, append(append(a, name, "--", "/usr/local/bin/commitd"), args...)...)
	}
	if out, err := run("", "version").CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "commitd ") {
		t.Fatalf("commitd version in the image: %v %q", err, out)
	}
	// A participant on a volume: its files are the unprivileged user's.
	vol := t.TempDir()
	if err := os.Chmod(vol, 0o777); err != nil {
		t.Fatal(err)
	}
	p := run(vol, "participant", "--data", "/var/lib/commitd/p", "--listen", freeAddr(t), "--coordinator", "127.0.0.1:1", "--accounts", "10", "--log-level", "error")
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	seed := filepath.Join(vol, "p", "bank.json")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(seed); err == nil {
			break
		}
		if time.Now().After(deadline) {
			p.Process.Kill()
			p.Wait()
			t.Fatal("the participant in the image wrote no bank.json in 30 s")
		}
		time.Sleep(50 * time.Millisecond) // polling for a file, not a guess at readiness
	}
	p.Process.Signal(os.Interrupt)
	p.Wait()
	fi, err := os.Stat(seed)
	if err != nil {
		t.Fatal(err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Uid != 65532 {
		t.Errorf("bank.json: %+v, want it written by the image's user, uid 65532", fi.Sys())
	}
}

// TestDeployDocFlags: every flag docs/deploy.md names (as --flag) is a
// flag of some commitd command, and every KEY = VALUE line in its code
// blocks is a flag of the coordinator or the participant: the document
// cannot drift from the binary unnoticed.
func TestDeployDocFlags(t *testing.T) {
	flags := map[string]map[string]bool{}
	for _, cmd := range [][]string{
		{"coordinator"}, {"participant"}, {"bench"}, {"demo"},
		{"admin", "status"}, {"admin", "txn"}, {"admin", "in-doubt"}, {"admin", "retry"}, {"admin", "resolve"},
		{"admin", "replicas"}, {"admin", "participants"}, {"admin", "accounts"}, {"admin", "outcomes"},
	} {
		r := commitd(t, 20*time.Second, append(cmd, "-h")...)
		set := map[string]bool{}
		for _, m := range regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`).FindAllStringSubmatch(r.stderr, -1) {
			set[m[1]] = true
		}
		if len(set) == 0 {
			t.Fatalf("commitd %v -h lists no flags: %q", cmd, r.stderr)
		}
		flags[strings.Join(cmd, " ")] = set
	}
	b, err := os.ReadFile("../../docs/deploy.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	any := func(name string) bool {
		for _, set := range flags {
			if set[name] {
				return true
			}
		}
		return false
	}
	// Other programs' flags go: from a program's name to the end of its
	// code span, or of its line.
	ours := regexp.MustCompile("(useradd|systemctl|docker|buildah|podman|openssl|go build) [^`\n]*").ReplaceAllString(doc, "")
	named := 0
	for _, m := range regexp.MustCompile("--([a-z][a-z0-9-]+)").FindAllStringSubmatch(ours, -1) {
		named++
		if !any(m[1]) {
			t.Errorf("docs/deploy.md names --%s, which no commitd command takes", m[1])
		}
	}
	if named < 10 {
		t.Errorf("docs/deploy.md names %d flags: did the pattern break?", named)
	}
	var examples string // every example config, to find the document's excerpt in
	files, _ := filepath.Glob(filepath.Join(deployDir, "examples", "*.conf"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		examples += "\n" + string(b)
	}
	inBlock, keys := false, 0
	for n, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inBlock = !inBlock
			continue
		}
		if !inBlock || !regexp.MustCompile(`^[a-z][a-z0-9-]* += `).MatchString(line) {
			continue
		}
		key, _, err := configLine(line)
		if err != nil {
			t.Errorf("docs/deploy.md:%d: %v", n+1, err)
			continue
		}
		keys++
		if !flags["coordinator"][key] && !flags["participant"][key] {
			t.Errorf("docs/deploy.md:%d: key %q is not a flag of the coordinator or the participant", n+1, key)
		}
		if !strings.Contains(examples, "\n"+line+"\n") {
			t.Errorf("docs/deploy.md:%d: %q is in no file of deploy/examples: the excerpt drifted", n+1, line)
		}
	}
	if keys < 5 {
		t.Errorf("docs/deploy.md has %d config lines in its code blocks: did the pattern break?", keys)
	}
}

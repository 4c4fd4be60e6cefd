package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// The names of what a Net creates carry the creating process's id, so a
// later run can tell leftovers of a crashed run (their creator is gone)
// from those of a run going on beside it.
const (
	nsPrefix   = "commitd-chaos-" // network namespaces: commitd-chaos-PID-N-ROLE
	linkPrefix = "cc"             // the root namespace's veth: ccPID-N
	netPrefix  = "10.213."        // private /24s, used only inside a Net
	// nsPort is where every process listens: each has its own address.
	nsPort = 7400
	// ipBound bounds every ip command.
	ipBound = 15 * time.Second
)

var netSeq atomic.Int64 // numbers the Nets of this process

// leftoverLink matches the root links NewNet names, and nothing else.
var leftoverLink = regexp.MustCompile(`^` + linkPrefix + `[0-9]+-[0-9]+$`)

// Net is a private network for a Cluster: each process in its own network
// namespace, linked by a veth pair to a bridge in a hub namespace, which
// the root namespace (the test, the bench) reaches through one more veth
// pair. Addresses come from one 10.213.X.0/24 that lives only on these
// links. Partition cuts a process off by setting its link's hub end down:
// its packets are dropped silently, as on a real network that splits, and
// TCP sees nothing until it is healed.
//
// All fields are set by NewNet and not changed after.
type Net struct {
	base     string            // commitd-chaos-PID-N
	hub      string            // the hub namespace
	rootLink string            // the root namespace's end of the veth to the hub
	subnet   string            // "10.213.X."
	ns       map[string]string // process name → its namespace
	hubLink  map[string]string // process name → its veth's end in the hub
	addr     map[string]string // process name → its IP
}

// NetSupport says why a Net cannot be built here, or nil if it can be
// tried: it needs root and the ip command.
func NetSupport() error {
	if os.Geteuid() != 0 {
		return errors.New("not root (network namespaces need CAP_SYS_ADMIN)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("no ip command (iproute2): %v", err)
	}
	return nil
}

// ip runs the ip command with args, within ipBound.
func ip(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ipBound)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("chaos: ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// NewNet builds a private network for processes named names, after
// removing what crashed earlier runs left behind. On error nothing of it
// is left.
func NewNet(names []string) (_ *Net, err error) {
	if err := NetSupport(); err != nil {
		return nil, err
	}
	CleanLeftovers()
	pid, seq := os.Getpid(), netSeq.Add(1)
	n := &Net{
		base:     fmt.Sprintf("%s%d-%d", nsPrefix, pid, seq),
		rootLink: fmt.Sprintf("%s%d-%d", linkPrefix, pid, seq),
		ns:       map[string]string{},
		hubLink:  map[string]string{},
		addr:     map[string]string{},
	}
	n.hub = n.base + "-hub"
	if n.subnet, err = freeSubnet(pid + int(seq)); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	steps := [][]string{
		{"netns", "add", n.hub},
		{"-n", n.hub, "link", "set", "lo", "up"},
		{"-n", n.hub, "link", "add", "br0", "type", "bridge"},
		{"-n", n.hub, "link", "set", "br0", "up"},
		{"link", "add", n.rootLink, "type", "veth", "peer", "name", "uplink", "netns", n.hub},
		{"-n", n.hub, "link", "set", "uplink", "master", "br0"},
		{"-n", n.hub, "link", "set", "uplink", "up"},
		{"addr", "add", n.subnet + "1/24", "dev", n.rootLink},
		{"link", "set", n.rootLink, "up"},
	}
	for i, name := range names {
		ns, link, addr := fmt.Sprintf("%s-%d", n.base, i), fmt.Sprintf("v%d", i), fmt.Sprintf("%s%d", n.subnet, 10+i)
		n.ns[name], n.hubLink[name], n.addr[name] = ns, link, addr
		steps = append(steps,
			[]string{"netns", "add", ns},
			[]string{"-n", ns, "link", "set", "lo", "up"},
			[]string{"-n", n.hub, "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns},
			[]string{"-n", n.hub, "link", "set", link, "master", "br0"},
			[]string{"-n", n.hub, "link", "set", link, "up"},
			[]string{"-n", ns, "addr", "add", addr + "/24", "dev", "eth0"},
			[]string{"-n", ns, "link", "set", "eth0", "up"},
		)
	}
	for _, s := range steps {
		if _, err := ip(s...); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// freeSubnet picks a 10.213.X.0/24 that no address in the root namespace
// is on (another run's, say), starting from one derived from hint.
func freeSubnet(hint int) (string, error) {
	out, err := ip("-o", "-4", "addr", "show")
	if err != nil {
		return "", err
	}
	for i := range 250 {
		s := fmt.Sprintf("%s%d.", netPrefix, 1+(hint+i)%250)
		if !strings.Contains(out, " "+s) {
			return s, nil
		}
	}
	return "", errors.New("chaos: every 10.213.X.0/24 is in use")
}

// Name is the Net's namespaces' common prefix.
func (n *Net) Name() string { return n.base }

// Subnet is the Net's addresses, as 10.213.X.0/24.
func (n *Net) Subnet() string { return n.subnet + "0/24" }

// Namespace is the network namespace of the process named name.
func (n *Net) Namespace(name string) string { return n.ns[name] }

// Addr is the listening address of the process named name.
func (n *Net) Addr(name string) string {
	return net.JoinHostPort(n.addr[name], strconv.Itoa(nsPort))
}

// Check shows that each namespace reaches the root namespace: it listens
// on the root's address and connects from each namespace with bin (a
// commitd admin query, which fails, after connecting).
func (n *Net) Check(bin string) error {
	ln, err := net.Listen("tcp", n.subnet+"1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	for name, ns := range n.ns {
		accepted := make(chan error, 1)
		go func() {
			c, err := ln.Accept()
			if err == nil {
				c.Close()
			}
			accepted <- err
		}()
		ctx, cancel := context.WithTimeout(context.Background(), ipBound)
		// Its exit status is that of a failed query: the accept tells.
		exec.CommandContext(ctx, "ip", "netns", "exec", ns, bin, "admin", "status", "--coordinator", ln.Addr().String()).Run()
		cancel()
		select {
		case err := <-accepted:
			if err != nil {
				return err
			}
		case <-time.After(time.Second):
			ln.Close() // ends the Accept
			<-accepted
			return fmt.Errorf("chaos: nothing from %s's namespace %s reached %v", name, ns, ln.Addr())
		}
	}
	return nil
}

// Partition cuts the process named name off the network (up false) or
// heals it (up true).
func (n *Net) Partition(name string, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	_, err := ip("-n", n.hub, "link", "set", n.hubLink[name], state)
	return err
}

// Close removes every namespace and link of the Net. Its processes must
// have stopped: a namespace lives on while a process is in it.
func (n *Net) Close() error {
	var errs []error
	// Deleting the hub deletes the veths with an end in it, the root's too.
	for _, ns := range append([]string{n.hub}, mapValues(n.ns)...) {
		if nsExists(ns) {
			if _, err := ip("netns", "del", ns); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if linkExists(n.rootLink) {
		if _, err := ip("link", "del", n.rootLink); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func mapValues(m map[string]string) []string {
	var vs []string
	for _, v := range m {
		vs = append(vs, v)
	}
	return vs
}

func nsExists(ns string) bool {
	_, err := os.Stat("/run/netns/" + ns)
	return err == nil
}

func linkExists(link string) bool {
	_, err := os.Stat("/sys/class/net/" + link)
	return err == nil
}

// leftoverOwner parses the creator's process id out of a name made by
// NewNet (after prefix: PID-...), and says whether that process is gone.
func leftoverOwner(name, prefix string) (pid int, gone bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return 0, false
	}
	digits, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(digits)
	if err != nil || pid <= 0 || pid == os.Getpid() {
		return 0, false
	}
	// Signal 0 checks that the process exists.
	err = syscall.Kill(pid, 0)
	return pid, errors.Is(err, syscall.ESRCH)
}

// CleanLeftovers removes the namespaces and root links that Nets of runs
// now gone left behind (a run killed before its cleanup), and kills the
// commitd processes still in those namespaces. Those of live runs are left
// alone. It is best effort: what it cannot remove, it leaves.
func CleanLeftovers() {
	out, err := ip("netns", "list")
	if err != nil {
		return
	}
	for _, line := range strings.Split(out, "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		ns := fields[0]
		if _, gone := leftoverOwner(ns, nsPrefix); !gone {
			continue
		}
		if pids, err := ip("netns", "pids", ns); err == nil {
			for _, f := range strings.Fields(pids) {
				if p, err := strconv.Atoi(f); err == nil {
					syscall.Kill(p, syscall.SIGKILL)
				}
			}
		}
		ip("netns", "del", ns)
	}
	links, err := os.ReadDir("/sys/class/net")
	if err != nil {
		return
	}
	for _, l := range links {
		name := l.Name()
		if !leftoverLink.MatchString(name) {
			continue
		}
		if _, gone := leftoverOwner(name, linkPrefix); gone {
			ip("link", "del", name)
		}
	}
}

package chaos

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// dial connects from namespace ns to addr within timeout (bash's
// /dev/tcp: no binary to build).
func dial(ns, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	host, port, _ := net.SplitHostPort(addr)
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "bash", "-c",
		fmt.Sprintf("exec 3<>/dev/tcp/%s/%s", host, port)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

// TestNetPartition builds a Net of two processes and shows that each
// namespace reaches the other and the root namespace, that a partitioned
// one reaches nothing and nothing reaches it, that healing restores both,
// and that Close leaves nothing behind. Where namespaces cannot be made
// (not root, no iproute2) it says why and skips: TestChaos then runs
// without partitions.
func TestNetPartition(t *testing.T) {
	n, err := NewNet([]string{"a", "b"})
	if err != nil {
		t.Skipf("network namespaces unavailable here: %v", err)
	}
	// A machine that lets a namespace be made may still refuse to run
	// anything in it (ip netns exec remounts /sys); that, too, is the
	// machine's limit, not the Net's, and TestChaos then runs on loopback.
	if _, err := exec.LookPath("bash"); err != nil {
		n.Close()
		t.Skipf("no bash to dial with: %v", err)
	}
	if out, err := exec.Command("ip", "netns", "exec", n.Namespace("a"), "true").CombinedOutput(); err != nil {
		n.Close()
		t.Skipf("cannot run a command in a network namespace here: %v: %s", err, out)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			n.Close()
		}
	})
	// A listener in the root namespace, on the Net's address there.
	root, err := net.Listen("tcp", n.subnet+"1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	go func() {
		for {
			c, err := root.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	// A listener in b's namespace: bash holding a port is awkward, so b's
	// side is checked by dialling from a to b's address with nothing
	// listening: reachable means refused at once, cut off means a timeout.
	// A cut-off dial is told by its timeout, so the checks that expect no
	// answer wait 2 s; the ones that expect an answer wait up to 20 s, since
	// on a loaded machine starting `ip netns exec bash` alone can take
	// seconds (this test failed once at load 8-10 on 2 cores, its message
	// lost).
	reach := func(from, to string) error { return dial(n.Namespace(from), to, 20*time.Second) }
	cutOff := func(from, to string) error { return dial(n.Namespace(from), to, 2*time.Second) }
	refusedOrOK := func(err error) bool {
		return err == nil || strings.Contains(err.Error(), "refused")
	}
	if err := reach("a", root.Addr().String()); err != nil {
		t.Fatalf("a cannot reach the root namespace: %v", err)
	}
	if err := reach("b", root.Addr().String()); err != nil {
		t.Fatalf("b cannot reach the root namespace: %v", err)
	}
	if err := reach("a", n.Addr("b")); !refusedOrOK(err) {
		t.Fatalf("a cannot reach b: %v", err)
	}

	if err := n.Partition("b", false); err != nil {
		t.Fatal(err)
	}
	if err := cutOff("b", root.Addr().String()); err == nil {
		t.Fatalf("partitioned b still reaches the root namespace")
	}
	if err := cutOff("a", n.Addr("b")); refusedOrOK(err) {
		t.Fatalf("a still reaches partitioned b: %v", err)
	}
	if err := reach("a", root.Addr().String()); err != nil {
		t.Fatalf("a lost the root namespace when b was partitioned: %v", err)
	}
	if err := n.Partition("b", true); err != nil {
		t.Fatal(err)
	}
	if err := reach("b", root.Addr().String()); err != nil {
		t.Fatalf("healed b cannot reach the root namespace: %v", err)
	}
	if err := reach("a", n.Addr("b")); !refusedOrOK(err) {
		t.Fatalf("a cannot reach healed b: %v", err)
	}

	root.Close()
	closed = true
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{n.hub, n.Namespace("a"), n.Namespace("b")} {
		if nsExists(ns) {
			t.Errorf("namespace %s left after Close", ns)
		}
	}
	if linkExists(n.rootLink) {
		t.Errorf("link %s left after Close", n.rootLink)
	}
}

// TestCleanLeftovers shows that the namespaces and links of a run that is
// gone are removed, and those of a live run (this one) are not.
func TestCleanLeftovers(t *testing.T) {
	if err := NetSupport(); err != nil {
		t.Skipf("network namespaces unavailable here: %v", err)
	}
	// A process id that is gone: a child that has exited.
	child := exec.Command("true")
	if err := child.Run(); err != nil {
		t.Fatal(err)
	}
	dead := child.Process.Pid
	gone := fmt.Sprintf("%s%d-1-hub", nsPrefix, dead)
	goneLink := fmt.Sprintf("%s%d-1", linkPrefix, dead)
	live := fmt.Sprintf("%s%d-999-hub", nsPrefix, os.Getpid())
	if _, err := ip("netns", "add", gone); err != nil {
		t.Skipf("network namespaces unavailable here: %v", err)
	}
	t.Cleanup(func() {
		for _, ns := range []string{gone, live} {
			if nsExists(ns) {
				ip("netns", "del", ns)
			}
		}
		if linkExists(goneLink) {
			ip("link", "del", goneLink)
		}
	})
	if _, err := ip("netns", "add", live); err != nil {
		t.Fatal(err)
	}
	if _, err := ip("link", "add", goneLink, "type", "veth", "peer", "name", "eth0", "netns", gone); err != nil {
		t.Fatal(err)
	}
	CleanLeftovers()
	if nsExists(gone) {
		t.Errorf("leftover namespace %s not removed", gone)
	}
	if linkExists(goneLink) {
		t.Errorf("leftover link %s not removed", goneLink)
	}
	if !nsExists(live) {
		t.Errorf("namespace %s of a live run removed", live)
	}
}

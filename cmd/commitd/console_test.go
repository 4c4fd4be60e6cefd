package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/participant/bank"
	"github.com/google/uuid"
)

// chromiumPath is where Debian's chromium package puts the browser
// (`make chromium` installs it; `make test` runs that first).
const chromiumPath = "/usr/bin/chromium"

// TestConsole loads the web console in a real browser — headless
// Chromium, driven by chromedp — under a running cluster of processes
// (a coordinator with --http and two bank participants) and load: the
// committed count on the page moves between two reads, the latency
// percentiles appear, the participants show connected, a participant
// that stops answering leaves transactions in the in-flight list (and
// prepared on the other participant's own page), a
// committed transaction's id typed into the lookup form shows
// "committed", and a malformed id shows the API's error. With
// COMMITD_CONSOLE_SCREENSHOTS=DIR (make console-screenshots) it saves the
// page as DIR/console-*.png. Without Chromium it skips, except in CI,
// where `make test` has installed it and its absence is a failure.
func TestConsole(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no browser at %s (make chromium installs it from Debian's packages): %v", chromiumPath, err)
		}
		t.Skipf("no browser at %s: run make chromium (apt-get install chromium) to run the console's browser test", chromiumPath)
	}
	dir := t.TempDir()
	coord, httpAddr, p1, p2, p1HTTP := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	start := func(args ...string) *exec.Cmd {
		cmd := exec.Command(binary, append(args, "--log-level", "error")...)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGCONT)
			_ = cmd.Process.Signal(os.Interrupt)
			_ = cmd.Wait()
		})
		return cmd
	}
	start("participant", "--name", "p1", "--listen", p1, "--data", filepath.Join(dir, "p1"), "--coordinator", coord, "--accounts", "1000",
		"--http", p1HTTP)
	part2 := start("participant", "--name", "p2", "--listen", p2, "--data", filepath.Join(dir, "p2"), "--coordinator", coord, "--accounts", "1000")
	start("coordinator", "--listen", coord, "--data", filepath.Join(dir, "c"), "--participant", "p1="+p1+",p2="+p2,
		"--http", httpAddr, "--prepare-timeout", "2s")
	for _, addr := range []string{p1, p2, coord, httpAddr, p1HTTP} {
		waitListening(t, addr)
	}
	waitCommitting(t, coord, "p1", "p2")

	// Load: a few callers moving one unit between the participants, in a
	// loop, until the test ends; the ids that committed are kept.
	cl, err := client.Dial(coord, client.Options{DialTimeout: 15 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	loadCtx, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { stopLoad(); wg.Wait() }()
	var mu sync.Mutex
	var committed []uuid.UUID
	for c := range 4 {
		wg.Go(func() {
			for i := 0; loadCtx.Err() == nil; i++ {
				acct := uint32((c*250 + i) % 1000)
				id := uuid.Must(uuid.NewV7())
				ctx, cancel := context.WithTimeout(loadCtx, 10*time.Second)
				res, err := cl.Run(ctx, id, []client.Branch{
					{Participant: "p1", Work: bank.AppendWork(nil, acct, -1)},
					{Participant: "p2", Work: bank.AppendWork(nil, acct, 1)}})
				cancel()
				if err == nil && res.Outcome == client.Committed {
					mu.Lock()
					committed = append(committed, id)
					mu.Unlock()
				}
				time.Sleep(2 * time.Millisecond) // a modest rate: the page must show it, not the machine's peak
			}
		})
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.NoSandbox, // as root, Chromium refuses to start with its sandbox
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 1400),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	// No timeout on the browser's own context (chromedp.Run: it would
	// stop the browser); each step has its own below.
	ctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s: %v", chromiumPath, err)
	}

	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	get := func(what string, a any) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		var err error
		switch a := a.(type) {
		case *string:
			*a, err = chromedp.Run(sctx, chromedp.Text(chromedp.CSS(what), chromedp.NodeVisible))
		case *[]byte:
			*a, err = chromedp.Run(sctx, chromedp.FullScreenshot(100)) // quality 100: PNG
		case *[]string:
			*a, err = chromedp.Run(sctx, chromedp.Evaluate[[]string](what))
		case *jsString:
			a.s, err = chromedp.Run(sctx, chromedp.Evaluate[string](what))
		default:
			panic(fmt.Sprintf("get %T", a))
		}
		if err != nil {
			t.Fatalf("reading %s: %v", what, err)
		}
	}
	// text reads an element's text; waitText polls it until ok accepts it.
	text := func(sel string) string {
		t.Helper()
		var s string
		get(sel, &s)
		return s
	}
	waitText := func(what, sel string, ok func(string) bool) string {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			s := text(sel)
			if ok(s) {
				return s
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s reads %q after 30 s", what, sel, s)
			}
			time.Sleep(200 * time.Millisecond) // the page polls once a second
		}
	}
	count := func(s string) (int64, bool) {
		n, err := strconv.ParseInt(strings.ReplaceAll(s, ",", ""), 10, 64)
		return n, err == nil
	}
	shots := os.Getenv("COMMITD_CONSOLE_SCREENSHOTS")
	screenshot := func(name string) {
		t.Helper()
		if shots == "" {
			return
		}
		var png []byte
		get("a screenshot", &png)
		path := filepath.Join(shots, "console-"+name+".png")
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("saved %s", path)
	}

	// Every exception the page's script throws, and every refusal of the
	// page's Content-Security-Policy (something not from this server), is
	// a failure.
	msgCtx, stopMsgs := context.WithCancel(ctx)
	msgs := chromedp.Console(msgCtx)
	var pageMu sync.Mutex
	var pageErrs []string
	msgsDone := make(chan struct{})
	go func() {
		defer close(msgsDone)
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.IsException() || m.Source == "security" {
				pageMu.Lock()
				pageErrs = append(pageErrs, m.String()+" at "+m.URL)
				pageMu.Unlock()
			}
		}
	}()
	defer func() { stopMsgs(); <-msgsDone }()

	do("loading the console", chromedp.Navigate("http://"+httpAddr+"/"), chromedp.WaitVisible(chromedp.CSS("#committed-total")))
	first := waitText("the committed count appears", "#committed-total", func(s string) bool { n, ok := count(s); return ok && n > 0 })
	n1, _ := count(first)
	second := waitText("the committed count moves", "#committed-total", func(s string) bool { n, ok := count(s); return ok && n > n1 })
	t.Logf("committed on the page: %s, then %s", first, second)
	waitText("the latency percentiles appear", "#latency-now", func(s string) bool { return strings.Count(s, "ms") == 3 })
	waitText("the participants show connected", "#participants tbody", func(s string) bool {
		return strings.Contains(s, "p1") && strings.Contains(s, "p2") && strings.Count(s, "connected") == 2 && !strings.Contains(s, "disconnected")
	})
	waitText("the rate chart draws", "#committed-rate", func(s string) bool { return !strings.HasPrefix(s, "0/s last second") && s != "–" })
	if g := text("#group-summary"); !strings.Contains(g, "runs alone") {
		t.Fatalf("group of a lone coordinator: %q", g)
	}
	// No API call failed: the banner that lists failures is hidden.
	var banner jsString
	get(`document.getElementById("banner").hidden ? "" : document.getElementById("banner").textContent`, &banner)
	if banner.s != "" {
		t.Fatalf("the page reports failures: %q", banner.s)
	}
	if shots != "" {
		// For the pictures only: enough load for a few points of the
		// latency chart (one per 10 s).
		time.Sleep(35 * time.Second)
	}
	screenshot("overview")

	// A participant that does not answer: its transactions stay in
	// flight, waiting for its vote, and the in-flight list shows them.
	if err := part2.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// Votes are awaited for a few milliseconds under any load: a second
	// or more is p2's silence.
	waited := regexp.MustCompile(`\b[1-9]\.\d s\b`)
	waitText("transactions wait in flight for p2", "#inflight tbody", func(s string) bool {
		return strings.Contains(s, "p2: vote awaited") && waited.MatchString(s)
	})
	if n, ok := count(text("#inflight-count")); !ok || n < 1 {
		t.Fatalf("in flight while p2 is stopped: %q", text("#inflight-count"))
	}
	screenshot("in-flight")
	// Meanwhile p1 holds them prepared, waiting for the decision: its own
	// page shows them.
	do("loading p1's page", chromedp.Navigate("http://"+p1HTTP+"/"), chromedp.WaitVisible(chromedp.CSS("#committed-total")))
	waitText("p1's page names it", "#name", func(s string) bool { return s == "p1" })
	waitText("p1 holds transactions prepared", "#indoubt tbody", func(s string) bool {
		return strings.Contains(s, "prepared") && strings.Contains(s, "the coordinator's decision")
	})
	waitText("p1 is connected to the coordinator", "#coordinators tbody", func(s string) bool {
		return strings.Contains(s, coord) && strings.Contains(s, "connected") && !strings.Contains(s, "disconnected")
	})
	screenshot("participant")
	if err := part2.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	do("back to the coordinator's console", chromedp.Navigate("http://"+httpAddr+"/"), chromedp.WaitVisible(chromedp.CSS("#committed-total")))

	mu.Lock()
	id := committed[len(committed)/2]
	mu.Unlock()
	lookup := func(id string) {
		t.Helper()
		do("looking up "+id,
			chromedp.SetValue(chromedp.CSS("#lookup-id"), id),
			chromedp.Click(chromedp.CSS("#lookup-button")))
	}
	lookup(id.String())
	waitText("a committed transaction looks up committed", "#lookup-result", func(s string) bool {
		return strings.Contains(s, id.String()) && strings.Contains(s, "committed") && strings.Contains(s, "p1") && strings.Contains(s, "p2")
	})
	if st := text("#lookup-state"); st != "committed" {
		t.Fatalf("lookup of %v: state %q, want committed", id, st)
	}
	screenshot("lookup")

	lookup("not-a-transaction")
	msg := waitText("a malformed id shows the error", "#lookup-result", func(s string) bool { return strings.Contains(s, "malformed transaction id") })
	if !strings.Contains(msg, `"not-a-transaction"`) {
		t.Fatalf("the error does not name what was typed: %q", msg)
	}
	unknown := uuid.Must(uuid.NewV7()).String()
	lookup(unknown)
	waitText("an unknown id says so", "#lookup-result", func(s string) bool {
		return strings.Contains(s, "unknown transaction id") && strings.Contains(s, "not-found")
	})

	// The page loaded nothing from elsewhere: every resource it fetched
	// came from the coordinator's --http address.
	var urls []string
	get(`performance.getEntriesByType("resource").map(e => e.name)`, &urls)
	for _, u := range urls {
		if !strings.HasPrefix(u, "http://"+httpAddr+"/") {
			t.Errorf("the page fetched %s, not from the coordinator", u)
		}
	}
	if len(urls) < 3 {
		t.Errorf("the page fetched only %v", urls)
	}
	pageMu.Lock()
	defer pageMu.Unlock()
	for _, e := range pageErrs {
		t.Errorf("the page: %s", e)
	}
}

// jsString is a string a script evaluates to (get's *string reads an
// element's text).
type jsString struct{ s string }

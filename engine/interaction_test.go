package engine_test

import (
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/commitd/commitd/engine"
	"github.com/commitd/commitd/protocol"
)

var update = flag.Bool("update", false, "rewrite engine/testdata/*.txt with the current output")

// TestInteraction runs the golden scenario scripts in testdata/*.txt. Each
// script is a list of blocks
//
//	command args...
//	----
//	output (what the machines did, one line each)
//	<blank line>
//
// with '#' comment lines between blocks. The output is compared with the
// file; `go test ./engine -run Interaction -update` rewrites it.
//
// Commands (node is "coord" or a participant name):
//
//	shard [prepare-timeout=N] [redeliver-min=N] [redeliver-max=N] [remember=N] [tick-us=N] [ahead-ms=N] [start-ms=N]
//	participant NAME... [inquire-after=N] [inquire-max=N] [remember=N] [checkpoint-every=N] [durable=1]
//	                                durable=1: a durable resource (a database): no records;
//	                                commit and abort finish later ("finish", "fail"), and it
//	                                survives a crash, reporting what it holds prepared on restore
//	begin TXN NAME=WORK... [tag=N] [at=MS] [id-ms=MS] [staged=1]
//	                                client → coord; work yes|no|ro|wait|any text (yes);
//	                                wait: the resource answers later ("resolve");
//	                                at: the front door's wall time (Message.UnixMs);
//	                                id-ms: TXN is a UUIDv7 with this time (still printed TXN)
//	                                staged=1: a staged decision (Message.Staged)
//	resolve NODE TXN yes|no|ro      the resource answers a pending prepare (MsgResPrepared)
//	finish NODE TXN                 a durable resource finishes the commit/abort it started
//	fail NODE TXN                   a durable resource fails the commit/abort it started
//	indoubt NODE TXN                a durable resource's scan finds TXN prepared
//	deliver [FILTER...]             deliver matching in-flight messages, in order
//	drop [FILTER...]                lose matching in-flight messages
//	dup [FILTER...]                 duplicate matching in-flight messages (copies go last)
//	durable NODE [INDEX]            records up to INDEX (default: all appended) are durable
//	tick NODE|all [N]               advance clocks N ticks (default 1)
//	crash NODE [keep=K]             lose the machine, its resource, its records below low
//	                                water and its non-durable records except the first K;
//	                                messages in flight to it are lost
//	restore NODE [start-ms=N]       a new machine rebuilt from what its log kept
//	                                (start-ms: the coordinator's wall time at its start)
//	log NODE | stats NODE | inflight
//
// FILTER: type=prepare|vote|decision|ack|inquire, txn=T, from=NODE, to=NODE, n=COUNT.
func TestInteraction(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			runScript(t, file)
		})
	}
}

type block struct {
	comments []string
	cmd      string
	want     string
	line     int
}

func parseScript(t *testing.T, file string) []block {
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	var blocks []block
	var cur block
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		switch {
		case strings.TrimSpace(l) == "":
			continue
		case strings.HasPrefix(l, "#"):
			cur.comments = append(cur.comments, l)
			continue
		}
		cur.cmd, cur.line = l, i+1
		if i+1 >= len(lines) || lines[i+1] != "----" {
			t.Fatalf("%s:%d: command without ----", file, i+1)
		}
		i += 2
		var out []string
		for ; i < len(lines) && lines[i] != ""; i++ {
			out = append(out, lines[i])
		}
		cur.want = strings.Join(out, "\n")
		blocks = append(blocks, cur)
		cur = block{}
	}
	if len(cur.comments) > 0 {
		blocks = append(blocks, cur) // trailing comments
	}
	return blocks
}

func runScript(t *testing.T, file string) {
	blocks := parseScript(t, file)
	w := newWorld()
	var out strings.Builder
	failed := false
	for i := range blocks {
		b := &blocks[i]
		for _, c := range b.comments {
			out.WriteString(c + "\n")
		}
		if b.cmd == "" {
			continue
		}
		got := strings.TrimRight(w.run(b.cmd), "\n")
		if got == "" {
			got = "ok"
		}
		if !*update && got != b.want && !failed {
			failed = true
			t.Errorf("%s:%d: %s\n--- got\n%s\n--- want\n%s", file, b.line, b.cmd, got, b.want)
		}
		fmt.Fprintf(&out, "%s\n----\n%s\n\n", b.cmd, got)
	}
	if *update {
		if err := os.WriteFile(file, []byte(strings.TrimRight(out.String(), "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// --- the world: one shard, named participants, a network, logs ---

type logRec struct {
	rec     engine.Record
	durable bool
}

type node struct {
	name  string
	shard *engine.Shard
	part  *engine.Participant
	res   *scriptRes
	log   []logRec // this incarnation's records, index i+1
	down  bool
	low   uint64 // low water as last printed
	pcfg  engine.ParticipantConfig
}

type world struct {
	scfg     engine.ShardConfig
	nodes    map[string]*node
	order    []string // node names, coord first
	inflight []engine.Message
	from     []string // sender of inflight[i]
	out      *strings.Builder
}

func newWorld() *world {
	w := &world{nodes: map[string]*node{}, out: &strings.Builder{}}
	return w
}

func (w *world) printf(format string, args ...any) { fmt.Fprintf(w.out, format+"\n", args...) }

func txnName(id protocol.TxnID) string {
	if id == v7ID(id[15], int64(binary.BigEndian.Uint64(id[:8])>>16)) {
		return "t" + strconv.Itoa(int(id[15])) // a script's UUIDv7 (id-ms)
	}
	for _, b := range id[:15] {
		if b != 0 {
			return id.String()
		}
	}
	return "t" + strconv.Itoa(int(id[15]))
}

// v7ID is script transaction n as a UUIDv7 with time ms: the time, the
// version and the variant, and n in the last byte.
func v7ID(n byte, ms int64) protocol.TxnID {
	var id protocol.TxnID
	binary.BigEndian.PutUint64(id[:8], uint64(ms)<<16)
	id[6] = 0x70
	id[8] = 0x80
	id[15] = n
	return id
}

func txnID(name string) protocol.TxnID {
	n, err := strconv.Atoi(strings.TrimPrefix(name, "t"))
	if err != nil || !strings.HasPrefix(name, "t") || n < 0 || n > 255 {
		panic(fmt.Sprintf("bad txn name %q (want t0..t255)", name))
	}
	return protocol.TxnID{15: byte(n)}
}

func fmtMsg(m engine.Message, from string) string {
	to := m.To
	if to == "" {
		to = "coord"
	}
	s := fmt.Sprintf("%v %s %s→%s", m.Type, txnName(m.Txn), from, to)
	switch m.Type {
	case engine.MsgPrepare:
		s += fmt.Sprintf(" work=%s", m.Work)
		if m.OnePhase {
			s += " one-phase"
		}
		if m.Staged {
			s += " staged"
		}
	case engine.MsgVote:
		s += " " + m.Vote.String()
	case engine.MsgDecision:
		s += " " + m.Decision.String()
	}
	return s
}

func fmtRec(r engine.Record) string {
	s := fmt.Sprintf("%v %s", r.Type, txnName(r.Txn))
	switch r.Type {
	case engine.RecCommit, engine.RecStaged:
		s += " [" + strings.Join(r.Participants, " ") + "]"
	case engine.RecPrepared, engine.RecCommitted:
		if len(r.Work) > 0 {
			s += " work=" + string(r.Work)
		}
	case engine.RecCheckpoint:
		s = fmt.Sprintf("checkpoint (%d bytes)", len(r.Data))
	}
	return s
}

// pump drains a node's Ready and prints it: records appended, messages
// put in flight, replies, applied decisions, low water.
func (w *world) pump(n *node, lastLow *uint64) {
	for {
		var rd engine.Ready
		switch {
		case n.shard != nil && n.shard.HasReady():
			rd = n.shard.Ready()
		case n.part != nil && n.part.HasReady():
			rd = n.part.Ready()
		default:
			return
		}
		for i, r := range rd.Records {
			idx := rd.FirstIndex + uint64(i)
			if idx != uint64(len(n.log)+1) {
				panic(fmt.Sprintf("%s: record index %d, log has %d", n.name, idx, len(n.log)))
			}
			// Round-trip through the codec, as a real log would.
			b, err := r.MarshalBinary()
			if err != nil {
				panic(err)
			}
			var back engine.Record
			if err := back.UnmarshalBinary(b); err != nil {
				panic(err)
			}
			n.log = append(n.log, logRec{rec: back})
			lazy := ""
			if rd.Lazy {
				lazy = " (lazy)"
			}
			w.printf("%s: append #%d %s%s", n.name, idx, fmtRec(r), lazy)
		}
		for _, a := range rd.Applied {
			w.printf("%s: applied %s %v", n.name, txnName(a.Txn), a.Decision)
		}
		for _, m := range rd.Messages {
			m.Work = append([]byte(nil), m.Work...)
			w.inflight = append(w.inflight, m)
			w.from = append(w.from, n.name)
			w.printf("%s: send %s", n.name, fmtMsg(m, n.name))
		}
		for _, r := range rd.Replies {
			s := fmt.Sprintf("%s: reply %s %v", n.name, txnName(r.Txn), r.Outcome)
			switch {
			case r.Detail != "" && r.Cause != protocol.CauseInvalid:
				s += fmt.Sprintf(" (%v: %s)", r.Cause, r.Detail)
			case r.Detail != "":
				s += fmt.Sprintf(" (%s)", r.Detail)
			case r.Cause != 0:
				s += fmt.Sprintf(" (%v %s)", r.Cause, r.Participant)
			}
			if r.Tag != 0 {
				s += fmt.Sprintf(" tag=%d", r.Tag)
			}
			w.printf("%s", s)
		}
		if rd.LowWater != *lastLow {
			*lastLow = rd.LowWater
			w.printf("%s: low-water %d", n.name, rd.LowWater)
		}
	}
}

func (w *world) node(name string) *node {
	n := w.nodes[name]
	if n == nil {
		panic(fmt.Sprintf("no node %q", name))
	}
	if n.down && name != "" {
		panic(fmt.Sprintf("node %q is down", name))
	}
	return n
}

type args struct {
	pos []string
	kv  map[string]string
}

func parseArgs(fields []string) args {
	a := args{kv: map[string]string{}}
	for _, f := range fields {
		if k, v, ok := strings.Cut(f, "="); ok {
			a.kv[k] = v
		} else {
			a.pos = append(a.pos, f)
		}
	}
	return a
}

func (a args) int(k string, def int) int {
	v, ok := a.kv[k]
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		panic(fmt.Sprintf("%s=%q: %v", k, v, err))
	}
	return n
}

func (w *world) run(cmd string) (out string) {
	w.out = &strings.Builder{}
	defer func() {
		if r := recover(); r != nil {
			w.printf("PANIC: %v", r)
		}
		out = w.out.String()
	}()
	fields := strings.Fields(cmd)
	verb, a := fields[0], parseArgs(fields[1:])
	switch verb {
	case "shard":
		w.scfg = engine.ShardConfig{
			PrepareTimeoutTicks: a.int("prepare-timeout", 0), RedeliverMinTicks: a.int("redeliver-min", 0),
			RedeliverMaxTicks: a.int("redeliver-max", 0), RememberTicks: a.int("remember", 0),
			TickMicros: a.int("tick-us", 0), MaxIDAheadMs: a.int("ahead-ms", 0), StartUnixMs: int64(a.int("start-ms", 0)),
		}
		w.nodes["coord"] = &node{name: "coord", shard: engine.NewShard(w.scfg), low: 1}
		w.order = append([]string{"coord"}, w.order...)
	case "participant":
		for _, name := range a.pos {
			cfg := engine.ParticipantConfig{
				Name: name, InquireAfterTicks: a.int("inquire-after", 0), InquireMaxTicks: a.int("inquire-max", 0),
				RememberTicks: a.int("remember", 0), CheckpointEvery: a.int("checkpoint-every", 0),
				DurableResource: a.int("durable", 0) == 1,
			}
			n := &node{name: name, pcfg: cfg, low: 1}
			n.res = &scriptRes{name: name, w: w, durable: cfg.DurableResource}
			n.part = engine.NewParticipant(cfg, n.res)
			w.nodes[name] = n
			w.order = append(w.order, name)
		}
	case "begin":
		m := engine.Message{Type: engine.MsgBegin, Txn: txnID(a.pos[0]), Tag: uint64(a.int("tag", 0)),
			UnixMs: int64(a.int("at", 0)), Staged: a.int("staged", 0) == 1}
		if ms, ok := a.kv["id-ms"]; ok {
			v, _ := strconv.ParseInt(ms, 10, 64)
			m.Txn = v7ID(m.Txn[15], v)
		}
		for _, f := range fields[2:] {
			if p, work, ok := strings.Cut(f, "="); ok && p != "tag" && p != "at" && p != "id-ms" && p != "staged" {
				m.Branches = append(m.Branches, engine.Branch{Participant: p, Work: []byte(work)})
			}
		}
		w.step("coord", m, "client")
	case "deliver", "drop", "dup", "notsent":
		w.network(verb, a)
	case "durable":
		n := w.node(a.pos[0])
		idx := uint64(len(n.log))
		if len(a.pos) > 1 {
			v, _ := strconv.Atoi(a.pos[1])
			idx = uint64(v)
		}
		for i := range n.log[:idx] {
			n.log[i].durable = true
		}
		w.printf("%s: durable ≤ #%d", n.name, idx)
		if n.shard != nil {
			n.shard.Durable(idx)
		} else {
			n.part.Durable(idx)
		}
		w.pumpNode(n)
	case "tick":
		count := 1
		if len(a.pos) > 1 {
			count, _ = strconv.Atoi(a.pos[1])
		}
		names := a.pos[:1]
		if a.pos[0] == "all" {
			names = w.order
		}
		for range count {
			for _, name := range names {
				n := w.nodes[name]
				if n.down {
					continue
				}
				if n.shard != nil {
					n.shard.Tick()
				} else {
					n.part.Tick()
				}
				w.pumpNode(n)
			}
		}
	case "resolve", "finish", "fail", "indoubt":
		w.resResult(verb, a.pos)
	case "crash":
		w.crash(w.node(a.pos[0]), a.int("keep", 0))
	case "restore":
		if ms, ok := a.kv["start-ms"]; ok {
			w.scfg.StartUnixMs, _ = strconv.ParseInt(ms, 10, 64)
		}
		w.restore(a.pos[0])
	case "log":
		n := w.nodes[a.pos[0]]
		for i, r := range n.log {
			mark := ""
			if r.durable {
				mark = " (durable)"
			}
			w.printf("#%d %s%s", i+1, fmtRec(r.rec), mark)
		}
	case "stats":
		n := w.node(a.pos[0])
		if n.shard != nil {
			w.printf("%s", nonZero(n.shard.Stats()))
		} else {
			w.printf("%s", nonZero(n.part.Stats()))
			w.printf("resource: %s", n.res.state())
		}
	case "inflight":
		if len(w.inflight) == 0 {
			w.printf("nothing in flight")
		}
		for i, m := range w.inflight {
			w.printf("%s", fmtMsg(m, w.from[i]))
		}
	default:
		panic(fmt.Sprintf("unknown command %q", verb))
	}
	return ""
}

func (w *world) pumpNode(n *node) { w.pump(n, &n.low) }

func (w *world) step(to string, m engine.Message, from string) {
	n := w.nodes[to]
	if n == nil || n.down {
		w.printf("lost %s (%s is down)", fmtMsg(m, from), to)
		return
	}
	if n.shard != nil {
		n.shard.Step(m)
	} else {
		n.part.Step(m)
	}
	w.pumpNode(n)
}

func dest(m engine.Message) string {
	if m.To == "" {
		return "coord"
	}
	return m.To
}

func (w *world) network(verb string, a args) {
	match := func(m engine.Message, from string) bool {
		if v, ok := a.kv["type"]; ok && m.Type.String() != v {
			return false
		}
		if v, ok := a.kv["txn"]; ok && txnName(m.Txn) != v {
			return false
		}
		if v, ok := a.kv["from"]; ok && from != v {
			return false
		}
		if v, ok := a.kv["to"]; ok && dest(m) != v {
			return false
		}
		return true
	}
	limit := a.int("n", -1)
	var keep, take []engine.Message
	var keepFrom, takeFrom []string
	for i, m := range w.inflight {
		if limit != 0 && match(m, w.from[i]) {
			take, takeFrom = append(take, m), append(takeFrom, w.from[i])
			limit--
		} else {
			keep, keepFrom = append(keep, m), append(keepFrom, w.from[i])
		}
	}
	switch verb {
	case "drop":
		w.inflight, w.from = keep, keepFrom
		for i, m := range take {
			w.printf("dropped %s", fmtMsg(m, takeFrom[i]))
		}
	case "notsent":
		// The coordinator's server could not send these (no connection):
		// they are dropped and each prepare's shard is told.
		w.inflight, w.from = keep, keepFrom
		for i, m := range take {
			w.printf("not sent %s", fmtMsg(m, takeFrom[i]))
			if m.Type == engine.MsgPrepare {
				w.step("coord", engine.Message{Type: engine.MsgNotSent, Txn: m.Txn, From: m.To}, "server")
			}
		}
	case "dup":
		for i, m := range take {
			w.inflight = append(w.inflight, m)
			w.from = append(w.from, takeFrom[i])
			w.printf("duplicated %s", fmtMsg(m, takeFrom[i]))
		}
	case "deliver":
		w.inflight, w.from = keep, keepFrom
		for i, m := range take {
			w.printf("%s", fmtMsg(m, takeFrom[i]))
			w.step(dest(m), m, takeFrom[i])
		}
	}
}

func (w *world) crash(n *node, keep int) {
	var kept []logRec
	lost := 0
	for i, r := range n.log {
		switch {
		case uint64(i+1) < n.low:
			// Below low water: the log has dropped it.
		case r.durable:
			kept = append(kept, r)
		case keep > 0:
			keep--
			kept = append(kept, r)
		default:
			lost++
		}
	}
	n.log = kept
	n.down = true
	n.shard, n.part = nil, nil
	w.printf("%s: crashed; log keeps %d records from #%d, lost %d", n.name, len(kept), n.low, lost)
	// Connections to it reset: whatever was in flight to it is gone.
	var msgs []engine.Message
	var from []string
	for i, m := range w.inflight {
		if dest(m) == n.name {
			w.printf("lost %s", fmtMsg(m, w.from[i]))
			continue
		}
		msgs, from = append(msgs, m), append(from, w.from[i])
	}
	w.inflight, w.from = msgs, from
}

func (w *world) restore(name string) {
	n := w.nodes[name]
	if !n.down {
		panic(name + " is not down")
	}
	n.down = false
	old := n.log
	n.log = nil
	w.printf("%s: restart from %d log records", name, len(old))
	n.low = 1
	if name == "coord" {
		n.shard = engine.NewShard(w.scfg)
	} else {
		if !n.pcfg.DurableResource {
			n.res = &scriptRes{name: name, w: w}
		}
		// A durable resource (a database) survived the crash, without
		// the work that was in flight from the old process.
		clear(n.res.ops)
		clear(n.res.pending)
		n.part = engine.NewParticipant(n.pcfg, n.res)
	}
	for _, r := range old {
		w.printf("%s: restore #%d %s", name, len(n.log)+1, fmtRec(r.rec))
		n.log = append(n.log, logRec{rec: r.rec, durable: true})
		var err error
		if n.shard != nil {
			err = n.shard.Restore(r.rec)
		} else {
			err = n.part.Restore(r.rec)
		}
		if err != nil {
			w.printf("%s: restore error: %v", name, err)
		}
	}
	w.pumpNode(n)
	if n.part != nil && n.pcfg.DurableResource {
		// The startup scan: what the resource holds prepared.
		for _, id := range n.res.heldSorted() {
			w.printf("%s: scan finds %s prepared", name, txnName(id))
			w.step(name, engine.Message{Type: engine.MsgResInDoubt, Txn: id, To: name}, name)
		}
	}
}

// resResult feeds a node the result of its resource's asynchronous work.
func (w *world) resResult(verb string, pos []string) {
	n := w.node(pos[0])
	r := n.res
	id := txnID(pos[1])
	m := engine.Message{Txn: id, To: n.name}
	switch verb {
	case "resolve":
		if !r.pending[id] {
			panic(fmt.Sprintf("%s: no pending prepare for %s", n.name, pos[1]))
		}
		delete(r.pending, id)
		m.Type = engine.MsgResPrepared
		switch pos[2] {
		case "yes":
			m.Vote = protocol.VoteYes
			r.hold(id)
		case "no":
			m.Vote = protocol.VoteNo
		case "ro":
			m.Vote = protocol.VoteReadOnly
		default:
			panic("resolve: want yes, no or ro")
		}
		w.printf("%s: resource answers %s → %v", n.name, pos[1], m.Vote)
	case "finish", "fail":
		d, ok := r.ops[id]
		if !ok {
			panic(fmt.Sprintf("%s: no commit or abort in flight for %s", n.name, pos[1]))
		}
		delete(r.ops, id)
		m.Type, m.Decision = engine.MsgResFailed, d
		if verb == "finish" {
			m.Type = engine.MsgResFinished
			delete(r.held, id)
			if d == protocol.DecisionCommit {
				r.committed = append(r.committed, txnName(id))
			}
		}
		w.printf("%s: resource %s %s: %s", n.name, d, pos[1], map[string]string{"finish": "finished", "fail": "failed"}[verb])
	case "indoubt":
		r.hold(id)
		m.Type = engine.MsgResInDoubt
		w.printf("%s: scan finds %s prepared", n.name, pos[1])
	}
	w.step(n.name, m, n.name)
}

// scriptRes is a Resource whose votes are its work: "no" votes no, "ro"
// read-only, anything else yes. It prints every call. Its committed state
// is the list of committed transactions.
//
// Work "wait" answers VotePending: the script answers later with
// "resolve". A durable scriptRes only starts commits and aborts (the
// script ends them with "finish" or "fail") and outlives its machine.
type scriptRes struct {
	name      string
	w         *world
	durable   bool
	held      map[protocol.TxnID]bool
	committed []string
	pending   map[protocol.TxnID]bool              // prepares not answered yet
	ops       map[protocol.TxnID]protocol.Decision // durable: commits/aborts started
}

func (r *scriptRes) hold(txn protocol.TxnID) {
	if r.held == nil {
		r.held = map[protocol.TxnID]bool{}
	}
	r.held[txn] = true
}

func (r *scriptRes) heldSorted() []protocol.TxnID {
	var ids []protocol.TxnID
	for id := range r.held {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return string(ids[i][:]) < string(ids[j][:]) })
	return ids
}

func (r *scriptRes) Prepare(txn protocol.TxnID, work []byte) protocol.Vote {
	v := protocol.VoteYes
	switch string(work) {
	case "no":
		v = protocol.VoteNo
	case "ro":
		v = protocol.VoteReadOnly
	case "wait":
		v = protocol.VotePending
		if r.pending == nil {
			r.pending = map[protocol.TxnID]bool{}
		}
		r.pending[txn] = true
	}
	if v == protocol.VoteYes {
		r.hold(txn)
	}
	r.w.printf("%s: resource prepare %s → %v", r.name, txnName(txn), v)
	return v
}

func (r *scriptRes) start(txn protocol.TxnID, d protocol.Decision) {
	if r.ops == nil {
		r.ops = map[protocol.TxnID]protocol.Decision{}
	}
	if _, busy := r.ops[txn]; busy {
		panic(fmt.Sprintf("%s: %v of %s while another is in flight", r.name, d, txnName(txn)))
	}
	r.ops[txn] = d
	r.w.printf("%s: resource %v %s started", r.name, d, txnName(txn))
}

func (r *scriptRes) Commit(txn protocol.TxnID) {
	if !r.held[txn] {
		panic(fmt.Sprintf("%s: commit of %s, which holds nothing", r.name, txnName(txn)))
	}
	if r.durable {
		r.start(txn, protocol.DecisionCommit)
		return
	}
	delete(r.held, txn)
	r.committed = append(r.committed, txnName(txn))
	r.w.printf("%s: resource commit %s", r.name, txnName(txn))
}

func (r *scriptRes) Abort(txn protocol.TxnID) {
	if r.durable {
		r.start(txn, protocol.DecisionAbort)
		return
	}
	delete(r.held, txn)
	r.w.printf("%s: resource abort %s", r.name, txnName(txn))
}

func (r *scriptRes) Restore(txn protocol.TxnID, work []byte) {
	r.hold(txn)
	r.w.printf("%s: resource restore %s work=%s", r.name, txnName(txn), work)
}

func (r *scriptRes) Snapshot(dst []byte) []byte {
	return append(dst, strings.Join(r.committed, ",")...)
}

func (r *scriptRes) Load(b []byte) error {
	r.held = nil
	r.committed = nil
	if len(b) > 0 {
		r.committed = strings.Split(string(b), ",")
	}
	r.w.printf("%s: resource load committed=[%s]", r.name, b)
	return nil
}

func (r *scriptRes) state() string {
	var held []string
	for id := range r.held {
		held = append(held, txnName(id))
	}
	sort.Strings(held)
	return fmt.Sprintf("committed=[%s] held=[%s]", strings.Join(r.committed, " "), strings.Join(held, " "))
}

// nonZero prints a stats struct's non-zero fields.
func nonZero(v any) string {
	rv := reflect.ValueOf(v)
	var parts []string
	for i := range rv.NumField() {
		if f := rv.Field(i); !f.IsZero() {
			parts = append(parts, fmt.Sprintf("%s=%v", rv.Type().Field(i).Name, f))
		}
	}
	return strings.Join(parts, " ")
}

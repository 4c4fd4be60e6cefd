package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/net/wire"
	"github.com/commitd/commitd/participant"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/protocol"
	"github.com/commitd/commitd/wal"
	"github.com/google/uuid"
)

// TestAdminOutcomesOfABigLedger asks `admin outcomes` of a participant
// whose ledger holds 200,000 decisions (~13 MB of JSON, a few minutes of a
// chaos run). Found by TestChaos: the reply was queued on the connection
// all at once, over the connection's 4 MiB bound, and the participant cut
// its own admin client off as a slow peer.
func TestAdminOutcomesOfABigLedger(t *testing.T) {
	const n = 200_000
	dir := t.TempDir()
	// The ledger's format (participant/ledger.go): one 17-byte record per
	// decision, the transaction id then the decision.
	lg, err := wal.Open(filepath.Join(dir, "ledger"), wal.Options{SegmentBytes: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	var rec [17]byte
	for i := range n {
		id := uuid.Must(uuid.NewV7())
		copy(rec[:16], id[:])
		rec[16] = byte(protocol.DecisionCommit)
		if i%3 == 0 {
			rec[16] = byte(protocol.DecisionAbort)
		}
		if _, err := lg.Append(rec[:]); err != nil {
			t.Fatal(err)
		}
	}
	if err := lg.Sync(lg.LastLSN()); err != nil {
		t.Fatal(err)
	}
	if err := lg.Close(); err != nil {
		t.Fatal(err)
	}
	p, err := participant.Start(participant.Config{
		Name: "p1", Listen: "127.0.0.1:0", DataDir: dir, Coordinator: "127.0.0.1:1",
		Resource: bank.New(10, 10), Logger: quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var outs []participant.Outcome
	if err := client.Admin(ctx, p.Addr().String(), "outcomes", nil, &outs); err != nil {
		t.Fatal(err)
	}
	if len(outs) != n {
		t.Fatalf("%d outcomes, want %d", len(outs), n)
	}

	// A reader that is slow to start (a loaded machine, a slow link) gets
	// the whole reply too: the server waits for it rather than queueing
	// the reply past its bound.
	nc, err := net.Dial("tcp", p.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var req []byte
	req, _ = wire.AppendFrame(req, 0, &wire.Hello{Role: wire.RoleAdmin})
	req, _ = wire.AppendFrame(req, 1, &wire.AdminRequest{Kind: wire.AdminOutcomes})
	if _, err := nc.Write(req); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the server's socket buffer fills
	nc.SetReadDeadline(time.Now().Add(60 * time.Second))
	br := bufio.NewReaderSize(nc, wire.MaxFrameSize)
	var body []byte
	for {
		hdr, err := br.Peek(wire.HeaderSize)
		if err != nil {
			t.Fatalf("after %d bytes of the reply: %v", len(body), err)
		}
		size, err := wire.FrameLen(hdr)
		if err != nil {
			t.Fatal(err)
		}
		b, err := br.Peek(size)
		if err != nil {
			t.Fatalf("after %d bytes of the reply: %v", len(body), err)
		}
		f, _, err := wire.ParseFrame(b)
		if err != nil {
			t.Fatal(err)
		}
		var resp wire.AdminResponse
		if err := resp.Decode(f); err != nil {
			t.Fatalf("frame %v: %v", f.Type, err)
		}
		body = append(body, resp.JSON...)
		br.Discard(size)
		if !resp.More {
			break
		}
	}
	outs = nil
	if err := json.Unmarshal(body, &outs); err != nil || len(outs) != n {
		t.Fatalf("slow reader: %d outcomes, want %d (%v)", len(outs), n, err)
	}
}

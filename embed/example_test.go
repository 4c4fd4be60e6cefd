package embed_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/embed"
	"github.com/google/uuid"
)

// Inventory is a warehouse's stock, reserved at prepare and taken at
// commit: an embed.Resource. A branch's work is "ITEM:COUNT".
type Inventory struct {
	mu       sync.Mutex // the participant calls from one goroutine; Stock reads from others
	stock    map[string]int
	reserved map[string]int
	holds    map[embed.TxnID]reservation
}

type reservation struct {
	item  string
	count int
}

// NewInventory returns a warehouse holding stock.
func NewInventory(stock map[string]int) *Inventory {
	return &Inventory{stock: stock, reserved: map[string]int{}, holds: map[embed.TxnID]reservation{}}
}

func parseWork(work []byte) (reservation, bool) {
	item, n, ok := strings.Cut(string(work), ":")
	count, err := strconv.Atoi(n)
	return reservation{item, count}, ok && err == nil && count > 0
}

// Prepare reserves the stock, or votes no.
func (inv *Inventory) Prepare(txn embed.TxnID, work []byte) embed.Vote {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	r, ok := parseWork(work)
	if !ok || inv.stock[r.item]-inv.reserved[r.item] < r.count {
		return embed.No
	}
	inv.reserved[r.item] += r.count
	inv.holds[txn] = r
	return embed.Yes
}

// Commit takes the reserved stock.
func (inv *Inventory) Commit(txn embed.TxnID) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	r := inv.holds[txn]
	inv.stock[r.item] -= r.count
	inv.reserved[r.item] -= r.count
	delete(inv.holds, txn)
}

// Abort releases the reservation.
func (inv *Inventory) Abort(txn embed.TxnID) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	r := inv.holds[txn]
	inv.reserved[r.item] -= r.count
	delete(inv.holds, txn)
}

// Restore re-reserves after a crash, from the work the log kept.
func (inv *Inventory) Restore(txn embed.TxnID, work []byte) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	r, _ := parseWork(work) // it was prepared, so it parsed
	inv.reserved[r.item] += r.count
	inv.holds[txn] = r
}

// Snapshot appends the stock as JSON.
func (inv *Inventory) Snapshot(dst []byte) []byte {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	b, _ := json.Marshal(inv.stock)
	return append(dst, b...)
}

// Load replaces the stock; there are no reservations in a snapshot.
func (inv *Inventory) Load(snap []byte) error {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	inv.stock = map[string]int{}
	clear(inv.reserved)
	clear(inv.holds)
	return json.Unmarshal(snap, &inv.stock)
}

// Holds is the number of orders reserved and not yet decided here.
func (inv *Inventory) Holds() int {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	return len(inv.holds)
}

// Stock is what is on the shelf (for the rest of your program).
func (inv *Inventory) Stock(item string) int {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	return inv.stock[item]
}

// Two warehouses each embed a participant; an order reserves widgets in
// both at once, or in neither.
func Example_inventory() {
	dir, err := os.MkdirTemp("", "inventory")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))

	// Addresses first: the coordinator and the participants name each other.
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			log.Fatal(err)
		}
		return ln
	}
	cln, eastLn, westLn := listen(), listen(), listen()

	// The coordinator would normally be its own process:
	//   commitd coordinator --participant east=ADDR,west=ADDR --data DIR
	coord, err := coordinator.Start(coordinator.Config{
		Listener: cln, DataDir: filepath.Join(dir, "coordinator"), SegmentBytes: 1 << 20, Logger: quiet,
		Participants: map[string]string{"east": eastLn.Addr().String(), "west": westLn.Addr().String()},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer coord.Close()

	// Each warehouse service embeds its participant.
	east := NewInventory(map[string]int{"widget": 10})
	west := NewInventory(map[string]int{"widget": 4})
	for name, wh := range map[string]struct {
		ln  net.Listener
		inv *Inventory
	}{"east": {eastLn, east}, "west": {westLn, west}} {
		p, err := embed.Start(embed.Config{
			Name: name, Listener: wh.ln, DataDir: filepath.Join(dir, name),
			Coordinator: cln.Addr().String(), Resource: wh.inv, SegmentBytes: 1 << 20, Logger: quiet,
		})
		if err != nil {
			log.Fatal(err)
		}
		defer p.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := p.WaitConnected(ctx); err != nil {
			log.Fatal(err)
		}
		cancel()
	}

	// The coordinator dials each warehouse too (its prepares go that way):
	// wait for those connections as well before the first order.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if err := coord.WaitConnected(ctx); err != nil {
		log.Fatal(err)
	}
	cancel()

	// An order is one transaction with a branch per warehouse.
	cl, err := client.Dial(cln.Addr().String(), client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer cl.Close()
	order := func(eastCount, westCount int) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := cl.Run(ctx, uuid.Must(uuid.NewV7()), []client.Branch{
			{Participant: "east", Work: fmt.Appendf(nil, "widget:%d", eastCount)},
			{Participant: "west", Work: fmt.Appendf(nil, "widget:%d", westCount)},
		})
		if err != nil {
			log.Fatal(err)
		}
		// The client hears the outcome once the decision is durable at
		// the coordinator; it reaches the warehouses a moment later.
		for east.Holds()+west.Holds() > 0 {
			time.Sleep(time.Millisecond)
		}
		fmt.Printf("order %d+%d: %v; stock east %d, west %d\n", eastCount, westCount, res.Outcome, east.Stock("widget"), west.Stock("widget"))
	}
	order(3, 3) // both warehouses have enough
	order(3, 3) // west has 1 left: neither warehouse gives any
	order(7, 1)
	// Output:
	// order 3+3: committed; stock east 7, west 1
	// order 3+3: aborted; stock east 7, west 1
	// order 7+1: committed; stock east 0, west 0
}

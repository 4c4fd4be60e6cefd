package client_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"

	"github.com/commitd/commitd/client"
	"github.com/commitd/commitd/harness/cluster"
	"github.com/commitd/commitd/participant/bank"
	"github.com/google/uuid"
)

// Move 10 from account 7 at participant p1 to account 42 at participant
// p2: both changes happen, or neither does.
func ExampleClient_Run() {
	// A coordinator and two bank participants, in this process, on loopback.
	dir, _ := os.MkdirTemp("", "commitd-example-")
	defer os.RemoveAll(dir)
	c, err := cluster.Start(cluster.Options{Dir: dir, Participants: 2, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	cl, err := client.Dial(c.CoordinatorAddr, client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer cl.Close()

	res, err := cl.Run(context.Background(), uuid.Must(uuid.NewV7()), []client.Branch{
		{Participant: "p1", Work: bank.AppendWork(nil, 7, -10)},
		{Participant: "p2", Work: bank.AppendWork(nil, 42, +10)},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Outcome)

	// An overdraft: p1's account 8 holds 1000, so this one aborts.
	res, _ = cl.Run(context.Background(), uuid.Must(uuid.NewV7()), []client.Branch{
		{Participant: "p1", Work: bank.AppendWork(nil, 8, -5000)},
		{Participant: "p2", Work: bank.AppendWork(nil, 43, +5000)},
	})
	fmt.Println(res.Outcome, res.Cause, res.Participant)
	// Output:
	// committed
	// aborted voted-no p1
}

// Ask, any time later, what became of a transaction: after a Run that
// returned Unknown, say. The coordinator answers from its outcome index
// long after it has forgotten the transaction itself.
func ExampleClient_Outcome() {
	dir, _ := os.MkdirTemp("", "commitd-example-")
	defer os.RemoveAll(dir)
	c, err := cluster.Start(cluster.Options{Dir: dir, Participants: 2, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	cl, err := client.Dial(c.CoordinatorAddr, client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer cl.Close()

	id := uuid.Must(uuid.NewV7())
	_, _ = cl.Run(context.Background(), id, []client.Branch{
		{Participant: "p1", Work: bank.AppendWork(nil, 8, -5000)}, // more than account 8 holds
		{Participant: "p2", Work: bank.AppendWork(nil, 43, +5000)},
	})
	st, err := cl.Outcome(context.Background(), id)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(st.State, st.Cause, st.Participant)

	st, _ = cl.Outcome(context.Background(), uuid.Must(uuid.NewV7())) // never run
	fmt.Println(st.State)
	// Output:
	// aborted voted-no p1
	// not-found
}

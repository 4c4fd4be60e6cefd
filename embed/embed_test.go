package embed

import (
	"context"
	"strings"
	"testing"
)

type nopService struct{}

func (nopService) Prepare(context.Context, TxnID, []byte) (Vote, error) { return Yes, nil }
func (nopService) Commit(context.Context, TxnID) error                  { return nil }
func (nopService) Abort(context.Context, TxnID) error                   { return nil }
func (nopService) Prepared(context.Context) ([]TxnID, error)            { return nil, nil }

type nopResource struct{}

func (nopResource) Prepare(TxnID, []byte) Vote { return Yes }
func (nopResource) Commit(TxnID)               {}
func (nopResource) Abort(TxnID)                {}
func (nopResource) Restore(TxnID, []byte)      {}
func (nopResource) Snapshot(dst []byte) []byte { return dst }
func (nopResource) Load([]byte) error          { return nil }

func TestStartNeedsOneKindOfData(t *testing.T) {
	base := Config{Name: "p", DataDir: t.TempDir(), Coordinator: "127.0.0.1:1"}
	for _, c := range []Config{base, {Name: "p", DataDir: base.DataDir, Coordinator: base.Coordinator, Resource: nopResource{}, Service: nopService{}}} {
		if _, err := Start(c); err == nil || !strings.Contains(err.Error(), "exactly one") {
			t.Fatalf("Start = %v", err)
		}
	}
	// A bad config is the participant's error, and the Service's
	// goroutines are stopped.
	if _, err := Start(Config{DataDir: base.DataDir, Coordinator: base.Coordinator, Service: nopService{}}); err == nil {
		t.Fatal("a participant without a name started")
	}
}

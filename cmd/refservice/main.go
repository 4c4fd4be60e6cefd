// Command refservice runs the reference service of docs/http-participant.md
// (participant/httpres/refservice): an account store behind the HTTP
// participant contract, with its state in one journal file.
//
//	refservice --listen 127.0.0.1:8081 --data /var/lib/shop.journal --accounts alice=100,bob=100
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/commitd/commitd/participant/httpres/refservice"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "refservice:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("refservice", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8081", "address to serve the contract on")
	data := fs.String("data", "", "journal file (created, with --accounts, if missing; required)")
	accounts := fs.String("accounts", "", "starting balances of a new journal, as NAME=AMOUNT,NAME=AMOUNT")
	logTrace := fs.Bool("log-traceparent", false, "log each call's W3C traceparent header (sent by a participant that traces, docs/tracing.md)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *data == "" || fs.NArg() > 0 {
		return errors.New("usage: refservice --data FILE [--listen ADDR] [--accounts NAME=AMOUNT,...]")
	}
	balances := map[string]int64{}
	for _, kv := range strings.Split(*accounts, ",") {
		if kv == "" {
			continue
		}
		name, amount, ok := strings.Cut(kv, "=")
		n, err := strconv.ParseInt(amount, 10, 64)
		if !ok || name == "" || err != nil || n < 0 {
			return fmt.Errorf("--accounts: want NAME=AMOUNT with AMOUNT ≥ 0, got %q", kv)
		}
		balances[name] = n
	}
	store, err := refservice.Open(*data, balances)
	if err != nil {
		return err
	}
	defer store.Close()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	h := refservice.Handler(store)
	if *logTrace {
		h = logTraceparent(h)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(os.Stderr, "refservice: serving on http://%s, journal %s\n", ln.Addr(), *data)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// logTraceparent logs the traceparent header of each call that has one:
// where a service of one's own would start its span as the header's child,
// the reference service shows what it was sent.
func logTraceparent(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tp := r.Header.Get("traceparent"); tp != "" {
			fmt.Fprintf(os.Stderr, "refservice: %s %s traceparent=%q\n", r.Method, r.URL.Path, tp)
		}
		h.ServeHTTP(w, r)
	})
}

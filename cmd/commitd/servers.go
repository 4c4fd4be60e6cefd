package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/commitd/commitd/cluster"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/commitd/commitd/coordinator"
	"github.com/commitd/commitd/participant"
	"github.com/commitd/commitd/participant/bank"
	"github.com/commitd/commitd/participant/mysql"
	"github.com/commitd/commitd/participant/postgres"
	"github.com/commitd/commitd/participant/statements"
	"github.com/commitd/commitd/protocol"
	"github.com/commitd/commitd/wal"
)

// participantList collects repeated --participant NAME=ADDR flags (or one
// comma-separated list).
type participantList map[string]string

func (p participantList) String() string {
	var parts []string
	for n, a := range p {
		parts = append(parts, n+"="+a)
	}
	return strings.Join(parts, ",")
}

func (p participantList) Set(v string) error {
	for _, item := range strings.Split(v, ",") {
		name, addr, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok || name == "" || addr == "" {
			return fmt.Errorf("want NAME=ADDR, got %q", item)
		}
		if _, dup := p[name]; dup {
			return fmt.Errorf("participant %q named twice", name)
		}
		p[name] = addr
	}
	return nil
}

// identityList collects repeated identity flags (or one comma-separated
// list).
type identityList []string

func (l *identityList) String() string { return strings.Join(*l, ",") }

func (l *identityList) Set(v string) error {
	for _, id := range strings.Split(v, ",") {
		if id = strings.TrimSpace(id); id == "" {
			return fmt.Errorf("empty identity in %q", v)
		}
		*l = append(*l, id)
	}
	return nil
}

// tlsFlags are the mutual-TLS flags every server and tool takes.
type tlsFlags struct {
	cert, key, ca string
}

func (t *tlsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&t.cert, "tls-cert", "", "PEM certificate of this process (enables mutual TLS; needs --tls-key and --tls-ca)")
	fs.StringVar(&t.key, "tls-key", "", "PEM private key for --tls-cert")
	fs.StringVar(&t.ca, "tls-ca", "", "PEM CA certificate: peers must present a certificate it signed")
}

// config builds a mutual-TLS configuration, or nil when TLS is off.
func (t *tlsFlags) config() (*tls.Config, error) {
	if t.cert == "" && t.key == "" && t.ca == "" {
		return nil, nil
	}
	if t.cert == "" || t.key == "" || t.ca == "" {
		return nil, errors.New("mutual TLS needs all of --tls-cert, --tls-key and --tls-ca")
	}
	cert, err := tls.LoadX509KeyPair(t.cert, t.key)
	if err != nil {
		return nil, fmt.Errorf("loading TLS key pair: %w", err)
	}
	pem, err := os.ReadFile(t.ca)
	if err != nil {
		return nil, fmt.Errorf("reading TLS CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", t.ca)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		RootCAs:      pool,
		MinVersion:   tls.VersionTLS13,
	}, nil
}

// segmentSizeFlag registers --segment-size, a byte count with an optional
// binary unit (K/KiB, M/MiB, G/GiB), into *size.
func segmentSizeFlag(fs *flag.FlagSet, size *int64, usage string) {
	fs.Func("segment-size", usage, func(v string) error {
		n, err := parseSize(v)
		*size = n
		return err
	})
}

// parseSize parses "67108864", "64MiB", "64M", "512KiB", "1G".
func parseSize(v string) (int64, error) {
	num := strings.TrimRight(v, "KMGiB")
	unit := int64(1)
	switch strings.TrimSuffix(strings.TrimSuffix(v[len(num):], "B"), "i") {
	case "":
	case "K":
		unit = 1 << 10
	case "M":
		unit = 1 << 20
	case "G":
		unit = 1 << 30
	default:
		return 0, fmt.Errorf("%q: want a byte count like 67108864, 64MiB or 512KiB", v)
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > (1<<40)/unit {
		return 0, fmt.Errorf("%q: want a byte count like 67108864, 64MiB or 512KiB", v)
	}
	return n * unit, nil
}

// largestRecord is the longest protocol record besides a checkpoint: a
// prepared or committed record with the most work (engine/codec.go: type,
// transaction id, u16 length, work).
const largestRecord = 1 + 16 + 2 + protocol.MaxWorkLen

// checkSegmentSize refuses a --segment-size whose segments cannot hold the
// largest record the server writes (the log would fail at the first such
// record, long after starting): largestRecord, or for a bank participant
// also a checkpoint of its balances.
func checkSegmentSize(size int64, record int) error {
	record = max(record, largestRecord)
	if least := wal.SegmentBytesFor(record); size != 0 && size < least {
		return fmt.Errorf("--segment-size %d: a segment must hold the largest record, %d bytes here, with its headers: at least %d", size, record, least)
	}
	return nil
}

// checkpointLen is the length of a bank participant's checkpoint record
// holding accounts balances and no prepared transaction (engine/codec.go
// and engine/participant.go: type, id, u32 length, then u32 snapshot
// length, the bank's u32 count and 8 bytes per account, u32 prepared).
func checkpointLen(accounts int) int { return 1 + 16 + 4 + 4 + 4 + 8*accounts + 4 }

func logger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

// serveUntilSignal waits for SIGINT/SIGTERM (then closes the server
// gracefully) or for the server to stop by itself after a fatal error.
func serveUntilSignal(done <-chan struct{}, closeFn func() error, errFn func() error) error {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	select {
	case <-sig:
		return closeFn()
	case <-done:
		return errFn()
	}
}

func runCoordinator(args []string) error {
	fs := newFlags("coordinator")
	cfg := coordinator.Config{Participants: participantList{}}
	var tf tlsFlags
	var trf traceFlags
	var logLevel string
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:7400", "address for clients, participants and admin queries")
	fs.StringVar(&cfg.DataDir, "data", "", "data directory (required)")
	fs.Var(participantList(cfg.Participants), "participant", "a participant as NAME=ADDR (repeat, or comma-separate): the initial list; once admin participants add|remove has changed it, the list persisted in --data (a replica's raft log) wins")
	fs.IntVar(&cfg.Shards, "shards", 0, "engine shards, one goroutine each (default GOMAXPROCS)")
	fs.StringVar(&cfg.HTTP, "http", "", "address for /metrics, /debug/pprof/ and /healthz (off if empty)")
	fs.DurationVar(&cfg.Tick, "tick", 10*time.Millisecond, "protocol clock period")
	fs.DurationVar(&cfg.PrepareTimeout, "prepare-timeout", 2*time.Second, "abort a transaction missing a vote this long")
	fs.DurationVar(&cfg.RedeliverMin, "redeliver-min", 100*time.Millisecond, "first redelivery of an unacknowledged commit")
	fs.DurationVar(&cfg.RedeliverMax, "redeliver-max", 2*time.Second, "redelivery backoff cap")
	fs.DurationVar(&cfg.Remember, "remember", 5*time.Second, "how long a finished transaction's outcome is kept (for late messages and to refuse a reused id); begins with UUIDv7 ids older than this less -max-id-ahead are rejected")
	fs.DurationVar(&cfg.MaxIDAhead, "max-id-ahead", 0, "how far ahead of this clock a begin's UUIDv7 id time may be (client clock skew); at most half of -remember (default 1s, or a quarter of -remember if less)")
	fs.DurationVar(&cfg.OutcomeRetention, "outcome-retention", coordinator.DefaultOutcomeRetention, "how long the outcome index keeps each transaction's outcome for admin txn and client.Outcome (unless -outcome-max-bytes is reached first)")
	fs.Int64Var(&cfg.OutcomeMaxBytes, "outcome-max-bytes", coordinator.DefaultOutcomeMaxBytes, "most bytes of outcome-index entries kept (~33 per transaction); the oldest go first beyond it")
	fs.IntVar(&cfg.MaxTxns, "max-txns", 1<<20, "most transactions held at once, in flight and remembered; beyond it a begin is rejected as overloaded")
	fs.Func("group", "this coordinator group's number, 1-4095, in a cluster of several (docs/scale.md): it takes only transactions whose ids carry it (default: the only group, any id)", func(v string) error {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil || n == 0 || n > cluster.MaxGroup {
			return fmt.Errorf("want a number from 1 to %d", cluster.MaxGroup)
		}
		cfg.Group = uint16(n)
		return nil
	})
	var clusterFile string
	fs.StringVar(&clusterFile, "cluster", "", "with --group: the cluster's map file (docs/scale.md); the group refuses new transactions while the map drains or retires it, and SIGHUP re-reads the file")
	groupCommit := fs.Bool("group-commit", true, "one fdatasync for many log records (false: one per record)")
	coalesce := fs.Bool("coalesce", true, "one write for every queued frame on a connection (false: one per frame)")
	batch := fs.Bool("batch", true, "step every queued input before flushing (false: step and flush one input at a time)")
	staged := fs.Bool("staged", true, "staged decisions: tell the client committed after one round trip and one fsync when every participant can prevent (false: classic two-phase commit)")
	fs.IntVar(&cfg.ConnsPerParticipant, "conns", 2, "connections to each participant")
	fs.IntVar(&cfg.MaxClients, "max-clients", 10000, "client connections; a few more are kept for participants and admin tools")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	segmentSizeFlag(fs, &cfg.SegmentBytes, "size of each log segment file, e.g. 8MiB (default 64MiB); the log needs 4 of them free to start")
	replicas := replicaFlags(fs, &cfg)
	tf.register(fs)
	trf.register(fs)
	cfg.ParticipantIdentities = map[string]string{}
	fs.Func("participant-identity", "with TLS, NAME=ID: participant NAME's certificate must be valid for ID (a DNS name or IP in its SANs, or its CN); default: NAME or the host of its address (repeat)", func(v string) error {
		name, id, ok := strings.Cut(v, "=")
		if !ok || name == "" || id == "" {
			return fmt.Errorf("want NAME=ID, got %q", v)
		}
		cfg.ParticipantIdentities[name] = id
		return nil
	})
	fs.Var((*identityList)(&cfg.AdminIdentities), "admin-identity", "with TLS, a certificate identity allowed to read admin reports and, on a replica, change the group's members (repeat; default: any certificate the CA signed)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if len(cfg.Participants) == 0 {
		return usageError{errors.New("coordinator: at least one participant (--participant NAME=ADDR) is required")}
	}
	for name := range cfg.ParticipantIdentities {
		if _, ok := cfg.Participants[name]; !ok {
			return usageError{fmt.Errorf("--participant-identity for %q, which no --participant names", name)}
		}
	}
	if err := replicas(); err != nil {
		return err
	}
	cfg.NoBatch, cfg.NoGroupCommit, cfg.NoCoalesce = !*batch, !*groupCommit, !*coalesce
	cfg.Classic = !*staged
	if err := checkSegmentSize(cfg.SegmentBytes, 0); err != nil {
		return usageError{err}
	}
	var err error
	if cfg.Logger, err = logger(logLevel); err != nil {
		return err
	}
	if cfg.TLS, err = tf.config(); err != nil {
		return err
	}
	var stopTracing func()
	if cfg.TracerProvider, stopTracing, err = trf.start("commitd-coordinator"); err != nil {
		return err
	}
	defer stopTracing()
	if clusterFile != "" {
		if cfg.Group == 0 {
			return usageError{errors.New("--cluster needs --group")}
		}
		if cfg.Cluster, err = cluster.Load(clusterFile); err != nil {
			return fmt.Errorf("--cluster: %w", err)
		}
		cfg.ClusterFile = clusterFile
	}
	s, err := coordinator.Start(cfg)
	if err != nil {
		return err
	}
	if clusterFile == "" {
		return serveUntilSignal(s.Done(), s.Close, s.Err)
	}
	return serveReloading(s.Done(), s.Close, s.Err, func() {
		r, err := s.ReloadClusterFile() // as admin cluster reload
		logReload(cfg.Logger, clusterFile, r.MapVersion, err)
	})
}

func runParticipant(args []string) error {
	fs := newFlags("participant")
	var cfg participant.Config
	var tf tlsFlags
	var accounts int
	var balance int64
	var logLevel string
	fs.StringVar(&cfg.Name, "name", "", "this participant's name, as the coordinator knows it (default: from --listen's port, p<PORT>)")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:7401", "address the coordinator and admin tools connect to")
	fs.StringVar(&cfg.DataDir, "data", "", "data directory (required)")
	fs.StringVar(&cfg.Coordinator, "coordinator", "", "the coordinator's address, or every replica's as ADDR1,ADDR2,ADDR3 (required, unless --cluster)")
	var clusterFile string
	fs.StringVar(&clusterFile, "cluster", "", "instead of --coordinator, the map of a cluster of coordinator groups (docs/scale.md): each transaction's votes, acks and inquiries go to the group its id names; what is held of a retired group is aborted; SIGHUP re-reads the file")
	fs.IntVar(&accounts, "accounts", 1000, "bank accounts (seeded only when the data directory is new)")
	fs.Int64Var(&balance, "balance", 1000, "starting balance of each account")
	fs.StringVar(&cfg.HTTP, "http", "", "address for /metrics, /debug/pprof/ and /healthz (off if empty)")
	fs.DurationVar(&cfg.Tick, "tick", 10*time.Millisecond, "protocol clock period")
	fs.DurationVar(&cfg.InquireAfter, "inquire-after", time.Second, "ask the coordinator about a prepared transaction after this long")
	fs.DurationVar(&cfg.InquireMax, "inquire-max", 5*time.Second, "inquiry backoff cap")
	fs.IntVar(&cfg.CheckpointEvery, "checkpoint-every", 10000, "decided transactions between checkpoints")
	fs.DurationVar(&cfg.LedgerRetention, "ledger-retention", participant.DefaultLedgerRetention, "how long the ledger keeps each decision for admin outcomes (retired by segment once older and out of the protocol log)")
	groupCommit := fs.Bool("group-commit", true, "one fdatasync for many log records (false: one per record)")
	coalesce := fs.Bool("coalesce", true, "one write for every queued frame on a connection (false: one per frame)")
	batch := fs.Bool("batch", true, "step every queued input before flushing (false: step and flush one input at a time)")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	backend := fs.String("backend", "bank", "where the data lives: bank (accounts in memory, made durable by the participant's log), postgres (a PostgreSQL database, through PREPARE TRANSACTION), mysql (a MySQL/MariaDB database, through XA) or http (a service at --url, docs/http-participant.md)")
	var hf httpFlags
	hf.register(fs)
	var pg postgres.Config
	var my mysql.Config
	var dsn, statementsFile string
	fs.StringVar(&dsn, "dsn", "", "postgres: the database, e.g. postgres://user@127.0.0.1:5432/db (needs max_prepared_transactions > 0); mysql: user:password@tcp(127.0.0.1:3306)/db (docs/mysql.md)")
	fs.StringVar(&statementsFile, "statements", "", "postgres, mysql: a file of named, parameterized statements; a branch's work names one and its arguments instead of a bank transfer (docs/mysql.md, docs/postgres.md)")
	fs.IntVar(&my.MaxConns, "mysql-max-conns", 32, "mysql: connections preparing branches or finishing decisions at once")
	fs.IntVar(&my.MaxPrepared, "mysql-max-prepared", 256, "mysql: transactions held prepared at once, each keeping its session (the server's max_connections must exceed this plus --mysql-max-conns)")
	fs.IntVar(&my.LockWaitSeconds, "mysql-lock-wait", 0, "mysql: innodb_lock_wait_timeout in seconds for a branch waiting for a row another transaction holds before voting no (0: no wait; MySQL rounds 0 up to 1)")
	fs.Func("pg-max-conns", "postgres: connections in the pool (default 32)", func(v string) error {
		n, err := strconv.ParseInt(v, 10, 32)
		pg.MaxConns = int32(n)
		return err
	})
	fs.DurationVar(&pg.LockTimeout, "pg-lock-timeout", 10*time.Millisecond, "postgres: how long a prepare waits for an account another transaction holds before voting no")
	fs.DurationVar(&cfg.ScanEvery, "scan-every", 2*time.Second, "postgres, mysql: how often pg_prepared_xacts (XA RECOVER) is scanned for transactions to resolve; http: how often GET /prepared is asked for transactions to abort")
	segmentSizeFlag(fs, &cfg.SegmentBytes, "size of each protocol-log segment file, e.g. 8MiB (default 64MiB; the ledger's are a quarter); the logs need 4 of each free to start")
	fs.StringVar(&cfg.CoordinatorIdentity, "coordinator-identity", "", "with TLS, the coordinator's certificate must be valid for this (a DNS name or IP in its SANs, or its CN; default: the host of each --coordinator address)")
	fs.Var((*identityList)(&cfg.AdminIdentities), "admin-identity", "with TLS, a certificate identity allowed to read admin reports (repeat; default: any certificate the CA signed)")
	fs.Var((*identityList)(&cfg.OperatorIdentities), "operator-identity", "with TLS, a certificate identity allowed to resolve a transaction by hand (commitd admin resolve; repeat; default: none, so nobody may; without TLS only from this machine)")
	tf.register(fs)
	var trf traceFlags
	trf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg.NoBatch, cfg.NoGroupCommit, cfg.NoCoalesce = !*batch, !*groupCommit, !*coalesce
	if cfg.Name == "" {
		i := strings.LastIndexByte(cfg.Listen, ':')
		cfg.Name = "p" + cfg.Listen[i+1:]
	}
	// A checkpoint holds every balance in one log record of 8 bytes each,
	// within a 64 MiB segment.
	if accounts <= 0 || accounts > 1<<22 {
		return usageError{fmt.Errorf("--accounts %d: want 1 to %d", accounts, 1<<22)}
	}
	if balance < 0 {
		return usageError{fmt.Errorf("--balance %d: must not be negative", balance)}
	}
	ckpt := 0
	if *backend == "bank" {
		ckpt = checkpointLen(accounts)
	}
	if err := checkSegmentSize(cfg.SegmentBytes, ckpt); err != nil {
		return usageError{err}
	}
	var err error
	if cfg.Logger, err = logger(logLevel); err != nil {
		return err
	}
	if cfg.TLS, err = tf.config(); err != nil {
		return err
	}
	if cfg.DataDir == "" {
		return usageError{errors.New("--data is required")}
	}
	if clusterFile != "" {
		if cfg.Coordinator != "" {
			return usageError{errors.New("give --coordinator or --cluster, not both")}
		}
		if cfg.Cluster, err = cluster.Load(clusterFile); err != nil {
			return fmt.Errorf("--cluster: %w", err)
		}
		cfg.ClusterFile = clusterFile
	}
	var stopTracing func()
	if cfg.TracerProvider, stopTracing, err = trf.start("commitd-participant " + cfg.Name); err != nil {
		return err
	}
	defer stopTracing()
	if *backend != "http" && hf.url != "" {
		return usageError{fmt.Errorf("--url is for --backend http, not %s", *backend)}
	}
	var stmts *statements.Set
	if statementsFile != "" {
		if *backend != "postgres" && *backend != "mysql" {
			return usageError{errors.New("--statements needs --backend postgres or mysql")}
		}
		if stmts, err = statements.Load(statementsFile); err != nil {
			return err
		}
	}
	if (*backend == "postgres" || *backend == "mysql") && dsn == "" {
		return usageError{fmt.Errorf("--backend %s needs --dsn", *backend)}
	}
	var res participant.Durable // a database backend's
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	switch *backend {
	case "bank":
	case "http":
		res, err := hf.resource(cfg.ScanEvery, cfg.Logger)
		if err != nil {
			return err
		}
		cfg.Resource = res
		s, err := participant.Start(cfg)
		if err != nil {
			res.Close()
			return err
		}
		return serveParticipant(s, clusterFile, cfg.Logger)
	case "postgres":
		// The accounts table is seeded once, when it is empty; the data
		// directory keeps the participant's ledger.
		pg.DSN, pg.Name, pg.Accounts, pg.Balance, pg.Statements, pg.Logger = dsn, cfg.Name, accounts, balance, stmts, cfg.Logger
		res, err = postgres.Open(ctx, pg)
	case "mysql":
		my.DSN, my.Name, my.Accounts, my.Balance, my.Statements, my.Logger = dsn, cfg.Name, accounts, balance, stmts, cfg.Logger
		res, err = mysql.Open(ctx, my)
	default:
		return usageError{fmt.Errorf("--backend %q: want bank, postgres, mysql or http", *backend)}
	}
	if err != nil {
		return err
	}
	if res != nil {
		cfg.Resource = res
		s, err := participant.Start(cfg)
		if err != nil {
			res.Close()
			return err
		}
		return serveParticipant(s, clusterFile, cfg.Logger)
	}
	accounts, balance, err = bankSeed(cfg.DataDir, accounts, balance)
	if err != nil {
		return err
	}
	// A new bank; the participant's recovery brings it to what the data
	// directory holds.
	cfg.Resource = bank.New(accounts, balance)
	s, err := participant.Start(cfg)
	if err != nil {
		return err
	}
	return serveParticipant(s, clusterFile, cfg.Logger)
}

// serveParticipant serves s until SIGINT/SIGTERM or a fatal error, as
// serveUntilSignal; with a cluster map file, SIGHUP re-reads it and hands
// it to the participant, which refuses (with a logged error, keeping the
// map it has) one that does not parse or does not follow it.
func serveParticipant(s *participant.Server, clusterFile string, log *slog.Logger) error {
	if clusterFile == "" {
		return serveUntilSignal(s.Done(), s.Close, s.Err)
	}
	return serveReloading(s.Done(), s.Close, s.Err, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		r, err := s.ReloadClusterFile(ctx) // as admin cluster reload
		cancel()
		logReload(log, clusterFile, r.MapVersion, err)
	})
}

// serveReloading is serveUntilSignal, calling reload on every SIGHUP.
func serveReloading(done <-chan struct{}, closeFn func() error, errFn func() error, reload func()) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-hup:
				reload()
			case <-stop:
				return
			}
		}
	}()
	return serveUntilSignal(done, closeFn, errFn)
}

// logReload says in one line what came of a SIGHUP's reload of the
// cluster map file: version is the map in use after it.
func logReload(log *slog.Logger, file string, version uint64, err error) {
	if err != nil {
		log.Error("SIGHUP: cluster map not reloaded; the one in use is kept", "file", file, "version", version, "err", err)
		return
	}
	log.Info("SIGHUP: cluster map reloaded", "file", file, "version", version)
}

// bankSeed returns the bank's shape for a data directory: the one recorded
// when the directory was created, or, for a new directory, the flags' —
// recorded durably so that a restart with other flags cannot change the
// starting balances that the log's records are applied to.
func bankSeed(dir string, accounts int, balance int64) (int, int64, error) {
	path := filepath.Join(dir, "bank.json")
	type seed struct {
		Accounts int   `json:"accounts"`
		Balance  int64 `json:"balance"`
	}
	if b, err := os.ReadFile(path); err == nil {
		var s seed
		if err := json.Unmarshal(b, &s); err != nil || s.Accounts <= 0 {
			return 0, 0, fmt.Errorf("%s is corrupt: %v", path, err)
		}
		return s.Accounts, s.Balance, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return 0, 0, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, 0, err
	}
	b, _ := json.Marshal(seed{accounts, balance})
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return 0, 0, err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		var d *os.File
		if d, err = os.Open(dir); err == nil {
			err = d.Sync()
			d.Close()
		}
	}
	if err != nil {
		return 0, 0, fmt.Errorf("recording the bank's shape in %s: %w", dir, err)
	}
	return accounts, balance, nil
}

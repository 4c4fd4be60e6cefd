# commitd — every target a fresh machine with Go 1.26 needs. The Makefile installs its own tools.
GO          ?= go
GOBIN       ?= $(shell $(GO) env GOPATH)/bin
STATICCHECK := $(GOBIN)/staticcheck
STATICCHECK_VERSION := v0.8.2
FUZZTIME    ?= 5s
# Time spent minimizing each new input the fuzzer finds (go test's default is 60s). 0 turns
# minimization off: a 5-second run then fuzzes instead of minimizing (FuzzDecodeFrame, 2 cores:
# ~75,000 execs in 5 s against ~7,400 at the default). A failing input is still saved under
# testdata/fuzz; for a long run that should minimize what it finds, set e.g. FUZZMINIMIZETIME=10s.
FUZZMINIMIZETIME ?= 0
PKGS        := ./...
# PostgreSQL test servers (participant/postgres): pg-up starts them, the tests find them here.
PG_SH       := participant/postgres/testdata/pg.sh
export COMMITD_PG_DSN1 ?= postgres://postgres@127.0.0.1:25432/postgres?sslmode=disable
export COMMITD_PG_DSN2 ?= postgres://postgres@127.0.0.1:25433/postgres?sslmode=disable
export COMMITD_PG_DSN0 ?= postgres://postgres@127.0.0.1:25434/postgres?sslmode=disable
# MariaDB test servers (participant/mysql): mysql-up starts them, the tests find them here.
MYSQL_SH    := participant/mysql/testdata/mysql.sh
export COMMITD_MYSQL_DSN1 ?= root@tcp(127.0.0.1:23306)/
export COMMITD_MYSQL_DSN2 ?= root@tcp(127.0.0.1:23307)/

.PHONY: all build run test unit sims lint fuzz chromium console-screenshots pg-up pg-down mysql-up mysql-down bench-mysql chaos-mysql bench-postgres bench-http chaos-http bench bench-quick bench-micro scale soak spin model model3 model-staged2 chaos deploy-tools docker clean

all: build

build:
	$(GO) build -o bin/commitd ./cmd/commitd
	$(GO) build -o bin/refservice ./cmd/refservice

## run: the embedded demo cluster (a coordinator and two bank participants in one process).
run: build
	./bin/commitd demo

## test: everything CI runs — lint, the race-enabled unit/simulation tests, a short fuzz of every
## target, and the exhaustive SPIN check of the protocol model.
test: lint pg-up mysql-up chromium deploy-tools
	@status=0; $(MAKE) unit sims fuzz model || status=$$?; $(MAKE) pg-down mysql-down; exit $$status

## chromium: headless Chromium from Debian's packages, for the web console's browser test
## (cmd/commitd TestConsole, driven by chromedp; it looks for /usr/bin/chromium). Outside CI a
## failure only makes that test skip; in CI (CI=true) it fails, and so does the test.
chromium:
	@command -v chromium >/dev/null 2>&1 || { echo "installing chromium (Debian package)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  { if [ "$$CI" = true ]; then echo "cannot install chromium: run 'apt-get install chromium' as root"; exit 1; fi; \
	    echo "Chromium could not be installed: the console's browser test will skip"; }; }

## console-screenshots: run the console's browser test and save its screenshots as docs/console-*.png.
console-screenshots: chromium
	COMMITD_CONSOLE_SCREENSHOTS=$(CURDIR)/docs $(GO) test -count=1 -run '^TestConsole$$' ./cmd/commitd

## pg-up/pg-down: two PostgreSQL servers on 127.0.0.1:25432/25433 (and one left without prepared
## transactions on 25434; below Linux's ephemeral range, 32768–60999, so that no client socket of a
## concurrent test can hold the port — 55432 collided twice on a busy machine), installed from Debian's packages if missing. Outside CI a failure only
## makes the PostgreSQL tests skip; in CI (CI=true) it fails.
pg-up:
	@bash $(PG_SH) up || { if [ "$$CI" = true ]; then exit 1; fi; \
	  echo "PostgreSQL could not be started: the PostgreSQL tests will skip"; }

pg-down:
	@bash $(PG_SH) down

## mysql-up/mysql-down: two MariaDB servers on 127.0.0.1:23306/23307 (data under /tmp/commitd-mysql),
## installed from Debian's packages (mariadb-server) if missing. Outside CI a failure only makes the
## MySQL tests skip; in CI (CI=true) it fails.
mysql-up:
	@bash $(MYSQL_SH) up || { if [ "$$CI" = true ]; then exit 1; fi; \
	  echo "MariaDB could not be started: the MySQL tests will skip"; }

mysql-down:
	@bash $(MYSQL_SH) down

## unit: every package's tests with the race detector. This includes harness/chaos, whose TestChaos
## runs the process-level chaos test for 30 s of load with a lone coordinator and 20 s with a
## replicated one, plus the replicated planted fault and TestChaosGroups with one replica per group
## for 15 s (about 50 s; see chaos). The seeded simulations step aside under the race detector
## (internal/testrace): one goroutine drives each seed, so it has nothing to find there and makes
## them five times as slow; their parallel seed runners keep a few hundred seeds under it.
unit:
	$(GO) test -race -timeout 20m $(PKGS)

## sims: the seeded simulations and their planted bugs, without the race detector: the engine's
## (10,000 seeds; COMMITD_SIM_SEEDS sets the count), the replicated coordinator's and the cluster's.
SIMS := ^(TestSimulation|TestSimulationCatchesBugs|TestSimulationCatchesStagedBugs|TestReplicaSimulation|TestReplicaSimulationClassic|TestReplicaSimulationCatchesBugs|TestClusterSimulation|TestClusterSimulationCatchesBugs)$$
sims:
	$(GO) test -count=1 -timeout 20m -run '$(SIMS)' ./engine ./coordinator ./participant

$(STATICCHECK):
	GOBIN=$(GOBIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

lint: $(STATICCHECK)
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(STATICCHECK) $(PKGS)

## fuzz: a short run of every fuzz target (FUZZTIME each, minimizing for FUZZMINIMIZETIME); a run that
## ends in Go 1.26's fuzz shutdown race, and in nothing else, is repeated once (scripts/fuzz-one.sh).
fuzz:
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$t"; \
	    GO=$(GO) scripts/fuzz-one.sh $$pkg $$t $(FUZZTIME) $(FUZZMINIMIZETIME); \
	  done; \
	done

## deploy-tools: what cmd/commitd's tests of deploy/ need, from Debian's packages if missing: buildah
## (builds the container image and runs the binary in it), promtool (package prometheus: checks and
## unit-tests the alert rules) and systemd-analyze (checks the units). Outside CI a failure only
## makes those tests skip; in CI (CI=true) it fails.
deploy-tools:
	@missing=; command -v buildah >/dev/null 2>&1 || missing="$$missing buildah"; \
	  command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	  command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	  if [ -n "$$missing" ]; then echo "installing$$missing (Debian packages)"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; } || \
	    { if [ "$$CI" = true ]; then echo "cannot install$$missing"; exit 1; fi; \
	      echo "cannot install$$missing: the deploy tests that need them will skip"; }; fi

## docker: the container image commitd:latest (deploy/Dockerfile: the static binary on scratch, as
## an unprivileged user) with docker, podman or buildah, whichever works here (CONTAINER_BUILDER
## chooses); nothing is pulled from a registry. IMAGE sets the tag.
IMAGE ?= commitd:latest
docker:
	bash deploy/build-image.sh $(IMAGE)

## model: exhaustive SPIN check of docs/model (2 participants) and every planted bug; model3: a
## bounded (bitstate) check for 3 participants. SPIN comes from Debian's packages.
spin:
	@command -v spin >/dev/null 2>&1 || { echo "installing spin (Debian package)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq spin >/dev/null) || \
	  { echo "cannot install spin: run 'apt-get install spin' as root"; exit 1; }; }

model: spin
	bash docs/model/check.sh

model3: spin
	bash docs/model/check.sh --bitstate3

## model-staged2: the staged-decision protocol (issue 16) with two crashes, exhaustive (long).
model-staged2: spin
	bash docs/model/check.sh --staged2

## bench: the standard cluster matrix — coordinator and participants as separate processes over
## loopback, every log durable — written into docs/benchmarks.md (a few minutes; see bench/matrix).
## bench-quick: fewer, 2-second cells, for iterating (into bin/).
## soak: the matrix's soak cell alone for SOAK_DURATION (default 10m): a coordinator and two bank
## participants at 1,000 callers; fails if money is not conserved or the coordinator's live heap
## (after a forced collection, every 10 s) grows more than 10% after the first 30 s.
SOAK_DURATION ?= 10m
soak: build
	$(GO) run ./bench/matrix -no-build -only '^soak' -soak $(SOAK_DURATION)

## bench-micro: the Go micro-benchmarks.
bench: build
	$(GO) run ./bench/matrix -no-build
	$(MAKE) bench-postgres
	$(MAKE) bench-mysql

## bench-mysql: commitd bench, 100 callers, against a coordinator and two MariaDB participants.
bench-mysql: build mysql-up
	bash participant/mysql/testdata/bench.sh

## bench-postgres: commitd bench, 100 callers, against a coordinator and two PostgreSQL participants.
bench-postgres: build pg-up
	bash participant/postgres/testdata/bench.sh

## bench-http: commitd bench, 100 callers, against two HTTP participants in front of two reference
## services (cmd/refservice), then two bank participants, with the disk measured in the same run.
bench-http: build
	bash participant/httpres/testdata/bench.sh

bench-quick: build
	$(GO) run ./bench/matrix -no-build -quick -out bin/benchmarks-quick.md -plot bin/benchmarks-quick.svg

bench-micro:
	$(GO) test -run '^$$' -bench . -benchmem ./wal ./engine

## scale: one coordinator group against two at the same total cores (GOMAXPROCS split between the
## two groups' coordinators), the same two bank participants and callers, alternating for
## SCALE_ROUNDS rounds: committed/s and each process's CPU µs per transaction side by side, and the
## disk measured in the same run (bench/scale; results and projection in docs/scale.md). A few minutes.
SCALE_ROUNDS ?= 2
SCALE_DURATION ?= 10s
SCALE_CALLERS ?= 200
scale: build
	$(GO) run ./bench/scale -bin bin/commitd -rounds $(SCALE_ROUNDS) -duration $(SCALE_DURATION) -callers $(SCALE_CALLERS)

## chaos: a coordinator and three bank participants as separate processes, commitd bench at 100
## callers, and a nemesis that kill -9s, SIGSTOPs, partitions and restarts them; then atomicity,
## durability, conservation and liveness are checked (docs/testing.md). Two runs: a lone coordinator
## (TestChaos/single) and a replicated coordinator of 3 replicas whose leader and followers the
## nemesis kills, pauses and cuts off (TestChaos/replicated); then the planted fault both must catch
## (TestChaosCatchesLostDecisions). CHAOS_REPLICAS selects the runs (1, 3, or 1,3: both), CHAOS_DURATION
## (default 5m) sets each run's load, CHAOS_SEED replays a run's choices. As root each process runs in
## its own network namespace, for partitions. `make test` runs TestChaos for 30 s (single) and 20 s
## (replicated), and the planted fault for the replicated run only.
## Then a cluster of coordinator groups (TestChaosGroups, docs/scale.md): two groups of
## CHAOS_GROUP_REPLICAS replicas (default 3 here; `make test` runs 1 per group for 15 s) sharing the
## participants under bench --cluster, their leaders and the participants killed, and a third group
## added during the run; on loopback; then its planted fault (TestChaosGroupsCatchesLostDecisions).
CHAOS_DURATION ?= 5m
CHAOS_REPLICAS ?= 1,3
CHAOS_GROUP_REPLICAS ?= 3
chaos:
	CHAOS_DURATION=$(CHAOS_DURATION) CHAOS_REPLICAS=$(CHAOS_REPLICAS) CHAOS_GROUP_REPLICAS=$(CHAOS_GROUP_REPLICAS) $(GO) test -v -count=1 -timeout 90m -run '^TestChaos' ./harness/chaos

## chaos-mysql: the same with participant p3 a MariaDB participant (--backend mysql on make mysql-up's
## first server; partitions off, as the server is on the host's loopback).
chaos-mysql: mysql-up
	CHAOS_MYSQL_DSN='$(COMMITD_MYSQL_DSN1)' CHAOS_DURATION=$(CHAOS_DURATION) $(GO) test -v -count=1 -timeout 60m -run '^TestChaos$$' ./harness/chaos

## chaos-http: two reference services, two HTTP participants and a coordinator as processes under
## load while a seeded nemesis kill -9s / SIGSTOPs them one at a time, then atomicity, acknowledged
## commits, conservation and liveness (cmd/commitd TestHTTPChaos; `make test` runs it for 6 s).
## CHAOS_DURATION sets the faults' duration, CHAOS_SEED replays a run.
chaos-http:
	COMMITD_HTTP_CHAOS=$(CHAOS_DURATION) $(GO) test -v -count=1 -timeout 60m -run '^TestHTTPChaos$$' ./cmd/commitd

clean:
	rm -rf bin

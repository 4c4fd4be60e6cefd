# commitd — every target a fresh machine with Go 1.26 needs. The Makefile installs its own tools.
GO          ?= go
GOBIN       ?= $(shell $(GO) env GOPATH)/bin
STATICCHECK := $(GOBIN)/staticcheck
STATICCHECK_VERSION := v0.8.2
FUZZTIME    ?= 5s
PKGS        := ./...

.PHONY: all build run test unit lint fuzz bench bench-quick bench-micro spin model model3 chaos clean

all: build

build:
	$(GO) build -o bin/commitd ./cmd/commitd

## run: the embedded demo cluster (a coordinator and two bank participants in one process).
run: build
	./bin/commitd demo

## test: everything CI runs — lint, the race-enabled unit/simulation tests, a short fuzz of every
## target, and the exhaustive SPIN check of the protocol model.
test: lint unit fuzz model

unit:
	$(GO) test -race -timeout 20m $(PKGS)

$(STATICCHECK):
	GOBIN=$(GOBIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

lint: $(STATICCHECK)
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(STATICCHECK) $(PKGS)

## fuzz: a short run of every fuzz target (FUZZTIME each).
fuzz:
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$t"; \
	    $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

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

## bench: the standard cluster matrix — coordinator and participants as separate processes over
## loopback, every log durable — written into docs/benchmarks.md (a few minutes; see bench/matrix).
## bench-quick: fewer, 2-second cells, for iterating (into bin/). bench-micro: the Go micro-benchmarks.
bench: build
	$(GO) run ./bench/matrix -no-build

bench-quick: build
	$(GO) run ./bench/matrix -no-build -quick -out bin/benchmarks-quick.md -plot bin/benchmarks-quick.svg

bench-micro:
	$(GO) test -run '^$$' -bench . -benchmem ./wal ./engine

clean:
	rm -rf bin

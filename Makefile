# blocktrain: every developer task is a make target; `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
# Poetry owns the lock (poetry.lock); its export plugin writes requirements.lock from it.
POETRY_VERSION := 2.5.1
POETRY_EXPORT_VERSION := 1.10.1
POETRY ?= $(HOME)/.local/bin/poetry
PYTEST_ARGS ?=

.PHONY: help init lock format lint type-check test test-unit bench demo mlflow-server s3-server
.PHONY: training-image test-packages

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(UV):
	python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet --break-system-packages --user uv

$(POETRY): | $(UV)
	UV_TOOL_BIN_DIR=$(dir $(POETRY)) $(UV) tool install --quiet poetry==$(POETRY_VERSION) \
		--with poetry-plugin-export==$(POETRY_EXPORT_VERSION)

init: | $(UV) ## create .venv with exactly the locked packages (requirements.lock) and blocktrain editable
	$(UV) venv --quiet --allow-existing --python 3.11 $(VENV) 2>/dev/null || $(UV) venv --quiet --allow-existing $(VENV)
	VIRTUAL_ENV=$(VENV) $(UV) pip sync --quiet --require-hashes --compile-bytecode requirements.lock
	VIRTUAL_ENV=$(VENV) $(UV) pip install --quiet --no-deps --compile-bytecode -e .
	@# The editable source is not in site-packages, so uv compiles none of it; without this, a
	@# machine with PYTHONDONTWRITEBYTECODE=1 compiles every imported module on every command.
	$(PY) -m compileall -q src
	@command -v uv >/dev/null || echo "make init: uv is $(UV), not on PATH; to call it by name:" \
		"export PATH=\"$(dir $(UV)):\$$PATH\"" >&2

# The mlflow caps in pyproject.toml (<3.18) stay while mlflow 3.18 does not resolve on the
# package index (it lacked mlflow-tracing 3.18.0); the first step says when they can go.
# `poetry lock` keeps the locked versions that still fit; LOCK_ARGS=--regenerate re-resolves all.
lock: | $(UV) $(POETRY) ## re-lock pyproject.toml into poetry.lock, exported to the hashed requirements.lock
	@echo 'mlflow>=3.18' | $(UV) pip compile --quiet --no-header --python-version 3.11 - >/dev/null 2>&1 \
		&& echo "make lock: mlflow 3.18 resolves now: the <3.18 caps on mlflow and mlflow-skinny" \
			"(pyproject.toml, the template's pyproject.toml) can go" >&2 || true
	$(POETRY) lock $(LOCK_ARGS)
	@{ echo "# Generated from poetry.lock by \`make lock\` (poetry export); do not edit."; \
		$(POETRY) export --format requirements.txt --with dev; } > requirements.lock.new
	@mv requirements.lock.new requirements.lock

format: ## format and auto-fix the code
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix --quiet .

# The bash scripts, known by their first line: scripts/ mixes them with suffixless Python.
SHELL_SCRIPTS = $(shell grep -l '^\#!.*bash' scripts/* .ci/*)

lint: | $(POETRY) ## check formatting and lint rules without changing files (ruff; shellcheck for bash; the lock)
	$(POETRY) check --lock
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	@command -v shellcheck >/dev/null || { echo "shellcheck not found: apt-get install shellcheck" >&2; exit 1; }
	shellcheck $(SHELL_SCRIPTS)

type-check: ## basedpyright (strict on src/ and scripts/, standard on tests/ and benchmarks/)
	$(VENV)/bin/basedpyright

# The Debian packages the integration tests use: Slurm with accounting on MariaDB, network
# namespaces for the multi-node cluster, the container tools, the browser for the MLflow UI.
TEST_PACKAGES := slurm-wlm slurmdbd mariadb-server iproute2 shellcheck chromium debootstrap \
	charliecloud charliecloud-builders python3-lark podman buildah crun
# Test files run two at a time (pytest-xdist, a file's tests together): most of the suite waits
# on daemons, jobs and servers rather than on the CPU.
TEST_WORKERS ?= 2

test: init test-packages ## the full test suite, integration tests against real local services included
	@# pytest exits 5 when it collects no test; a filtered run that selects none is not a failure.
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS) || { rc=$$?; [ $$rc -eq 5 ] && exit 0; exit $$rc; }

test-packages: ## install the Debian packages the integration tests use (root; nothing when present)
	@missing=$$(for p in $(TEST_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
		echo "missing Debian packages:" $$missing "- as root: apt-get install" $$missing >&2; exit 2; fi; \
	echo "installing" $$missing; apt-get update -q >/dev/null && \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null

test-unit: ## fast unit tests only
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

bench: ## run every benchmarks/bench_*.py; each prints its figures and ratios to a baseline
	@# The status benchmark asks the local cluster when one is up (scripts/local-slurm up).
	@set -e; [ -f .blocktrain/slurm/etc/slurm.conf ] && export BLOCKTRAIN_BENCH_SLURM_CONF=$${BLOCKTRAIN_BENCH_SLURM_CONF:-.blocktrain/slurm/etc/slurm.conf}; \
	for bench in benchmarks/bench_*.py; do echo "== $$bench"; $(PY) $$bench; done

# MOUNTS: folders jobs mount host paths on; ARCHIVE: a docker-archive for Apptainer or Podman.
training-image: init ## the training image (Charliecloud; docs/containers.md): ARCHIVE=x.tar MOUNTS="/dir" BASE=image
	$(PY) scripts/training-image --uv $(UV) $(if $(ARCHIVE),--archive $(ARCHIVE)) \
		$(if $(BASE),--base $(BASE)) $(foreach m,$(MOUNTS),--mount-point $(m))

demo: init ## a project from the template, trained on the local Slurm cluster, with its metrics and artifacts
	PY=$(PY) scripts/demo

mlflow-server: ## start a local MLflow tracking server on a private port (scripts/mlflow-server)
	$(PY) scripts/mlflow-server up

s3-server: ## start a local S3 server (SeaweedFS) on private ports (scripts/local-s3)
	$(PY) scripts/local-s3 up

OUTPUT ?= $(abspath ..)
.PHONY: project
project: ## a new project from the template, in OUTPUT (default: beside this folder); ARGS="--no-input project_name=..."
	@[ -x $(VENV)/bin/cookiecutter ] || $(MAKE) --no-print-directory init
	@$(PY) scripts/new-project --output "$(OUTPUT)" $(ARGS)

# The chaos harness (docs/chaos.md): EPISODES random fault episodes of campaign SEED, each a short
# real job under --executor local or on the local Slurm cluster (EXECUTOR=slurm, root; NODES=2
# for a job on two nodes), then the invariants; prints the table, exits 1 on any violation.
EPISODES ?= 20
SEED ?= 0
EXECUTOR ?= local
NODES ?= 1
.PHONY: chaos
chaos: ## fault episodes on real jobs, invariants checked: EPISODES=N SEED=S EXECUTOR=local|slurm NODES=1|2
	@[ -x $(PY) ] || $(MAKE) --no-print-directory init
	PYTHONPATH=tests $(PY) -m chaos --episodes $(EPISODES) --seed $(SEED) --executor $(EXECUTOR) --nodes $(NODES)

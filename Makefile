# blocktrain: every developer task is a make target; `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
PYTEST_ARGS ?=

.PHONY: help init lock format lint type-check test test-unit bench demo mlflow-server s3-server
.PHONY: training-image test-packages

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(UV):
	python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet --break-system-packages --user uv

init: | $(UV) ## create .venv from requirements.lock and install blocktrain editable
	$(UV) venv --quiet --allow-existing --python 3.11 $(VENV) 2>/dev/null || $(UV) venv --quiet --allow-existing $(VENV)
	VIRTUAL_ENV=$(VENV) $(UV) pip sync --quiet requirements.lock
	VIRTUAL_ENV=$(VENV) $(UV) pip install --quiet --no-deps -e .

lock: | $(UV) ## re-resolve pyproject.toml into the hashed, universal requirements.lock
	$(UV) pip compile pyproject.toml --group dev --universal --generate-hashes \
		--python-version 3.11 --quiet -o requirements.lock

format: ## format and auto-fix the code
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix --quiet .

# The bash scripts, known by their first line: scripts/ mixes them with suffixless Python.
SHELL_SCRIPTS = $(shell grep -l '^\#!.*bash' scripts/* .ci/*)

lint: ## check formatting and lint rules without changing files (ruff; shellcheck for bash)
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

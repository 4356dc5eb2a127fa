# tomoloop — the two set-up commands are `make demo` and `make test` (see README.md).
# Both bootstrap .venv/ first (idempotent; a no-op when pyproject.toml has not changed).

PY      := .venv/bin/python
OUT     ?= demo-out
# `make demo GRAY=g.tif LABELS=l.tif PHASES=pore=0,nmc=1,cbd=2 PHASE=nmc VOXEL=0.5`
DEMO_ARGS := --out $(OUT) $(if $(GRAY),--gray $(GRAY)) $(if $(LABELS),--labels $(LABELS)) \
             $(if $(PHASES),--phases $(PHASES)) $(if $(PHASE),--phase $(PHASE)) \
             $(if $(VOXEL),--voxel-size $(VOXEL))

.PHONY: venv demo test lint bench

venv:
	@bash scripts/bootstrap.sh

demo: venv
	$(PY) -m tomoloop.cli demo $(DEMO_ARGS)

test: venv lint
	@bash scripts/ensure_postgres.sh
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(PY) -m ruff check .

bench: venv
	$(PY) bench/coco_convert.py

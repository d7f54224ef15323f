# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
STAMP := .make/installed

.PHONY: demo test install lint

$(STAMP): pyproject.toml
	$(PYTHON) -m pip install -q -e '.[dev]'
	@mkdir -p .make && touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	atcon demo

lint: $(STAMP)
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy

test: $(STAMP)
	bash scripts/ensure-services
	$(MAKE) lint
	$(PYTHON) -m pytest

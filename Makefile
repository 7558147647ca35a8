# The two commands of the README:
#   make demo   builds what is needed and runs the product locally on its embedded control plane
#   make test   installs everything and runs the whole suite: lint, types, layering, unit and e2e tests
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo dev down build test check unit e2e bench clean system-packages mutation

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# Debian packages the demo and the tests start (PostgreSQL, the Distribution registry): installed when missing.
system-packages:
	bash .ci/install-system-packages

demo: system-packages $(VENV)/.installed
	$(BIN)/python -m devenv up

# The quick developer mode: webhook and controller as host processes, a control plane without a node.
dev: system-packages $(VENV)/.installed
	$(BIN)/python -m devenv dev

down: $(VENV)/.installed
	$(BIN)/python -m devenv down

check: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(VENV)/.installed
	$(BIN)/pytest -m "not e2e and not slow"

e2e: system-packages $(VENV)/.installed
	$(BIN)/pytest -m e2e

# Everything the tests start, built side by side once (cached after): the cluster, the node, helm, the images.
build: system-packages $(VENV)/.installed
	$(BIN)/python -m devenv build

# pytest exits 5 when it collected no test: make treats that, like any non-zero code, as a failure.
test: system-packages check build
	$(BIN)/pytest

# Mutation testing of the decision code against the fast suite (docs/mutation.md; not part of `make test`: it takes
# about half an hour here). One worker unless told: `make mutation MUTATION_WORKERS=2`; one module:
# `make mutation MUTANTS='rules.protection*'`. The summary is per module: killed / survived / timeout / other.
MUTATION_WORKERS ?= 1
MUTANTS ?=
mutation: $(VENV)/.installed
	$(BIN)/python -c "import mutmut" 2>/dev/null || $(BIN)/pip install --quiet 'mutmut>=3.8,<4'
	rm -f mutants/mutmut-stats.json
	$(BIN)/mutmut run --max-children $(MUTATION_WORKERS) $(MUTANTS) || true
	@printf "%-24s %7s %8s %8s %11s %6s\n" module killed survived timeout not-checked kill%
	@$(BIN)/mutmut results --all true | awk -F': ' '/: / { m = $$1; sub(/^ +/, "", m); m = substr(m, 1, index(m, ".x") - 1); \
		n[m]++; s[m, $$2]++ } END { for (m in n) { k = s[m, "killed"] + s[m, "timeout"]; r = k + s[m, "survived"]; \
		printf "%-24s %7d %8d %8d %11d %6s\n", m, s[m, "killed"], s[m, "survived"], s[m, "timeout"], n[m] - r, \
		r ? sprintf("%.1f%%", 100 * k / r) : "-" } }' | sort

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache

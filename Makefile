# Fresh machine: `make demo` then `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip setuptools wheel

# Reinstall only when the project's metadata changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/hematoma demo

test: $(STAMP)
	$(BIN)/python -m pytest

# Every benchmark in turn, with its default settings (hours: each script's docstring says how long and how to run less).
# These need inputs (a run folder, a GPU machine's patient list): their docstrings say how to run them.
BENCH_WITH_INPUTS = benchmarks/bench_selection.py benchmarks/bench_prior.py benchmarks/bench_known_variants.py \
                    benchmarks/bench_ct_network_gpu.py
bench: $(STAMP)
	for script in benchmarks/bench_*.py; do \
	  case " $(BENCH_WITH_INPUTS) " in *" $$script "*) echo "== $$script: needs inputs, see its docstring (skipped)"; continue;; esac; \
	  echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info

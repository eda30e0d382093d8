# The two commands of the README:  `make demo` (quick ELU vs ReLU run)  and  `make test`.
# Each creates the virtual environment on first use. TORCH (passed to pip as it is) picks the torch
# build; the default is a CPU build where one is on the machine (see the README).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow bench report clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned, so resolving the package never pulls a multi-GB CUDA build onto a CPU machine
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/irnn demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/irnn bench --out results/bench/recurrence.jsonl

# Rebuild every experiment's report (results/TASK/NAME/report) from the run logs committed there.
report: $(STAMP)
	for dir in $(patsubst %/sweep.json,%,$(wildcard results/*/*/sweep.json)); do \
		$(BIN)/irnn report $$dir -o $$dir/report || exit 1; done

clean:
	rm -rf $(VENV) demo .pytest_cache

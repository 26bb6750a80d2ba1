# Two commands for a fresh machine with Python 3.11+:
#   make demo   create .venv, install, run the demo (outputs in sttn_out/)
#   make test   create .venv, install with test extras, run the whole suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test verify bench clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit("sttn_sim needs Python >= 3.11, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[notebooks]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed-demo
	$(BIN)/python -m analysis.demo --out sttn_out

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist load --durations 40

verify: $(VENV)/.installed-test
	$(BIN)/python -m sttn_sim.verify

clean:
	rm -rf $(VENV) sttn_out build *.egg-info

# One command from a fresh clone to a report, one to test. See README.md.
VENV   ?= .venv
PARAMS ?= params/default.yaml
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: study test test-fast install report-smoke clean-reports badges lint-notebooks

$(STAMP): requirements.txt pyproject.toml scripts/install.sh
	scripts/install.sh $(VENV)
	touch $@

install: $(STAMP)

## make study [PARAMS=params/fer2013.yaml]: install if needed, run the study, print the report's path
study: $(STAMP)
	$(BIN)/fer-study run $(PARAMS)

## make test: install if needed, run the test suite
test: $(STAMP)
	$(BIN)/python -m pytest

## make test-fast: the unit tests only (no notebooks, no training), about a minute
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not notebook and not slow and not gpu"

## make badges: rewrite the notebooks' Colab badges from the repository URL in pyproject.toml
badges: $(STAMP)
	$(BIN)/fer-study badges

## make lint-notebooks: fail if a notebook carries outputs
lint-notebooks: $(STAMP)
	$(BIN)/nbstripout --verify notebooks/*.ipynb

clean-reports:
	rm -rf reports/*/

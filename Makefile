# Two commands for a new user (see README):  make demo   and   make test
# Both create or reuse .venv and install what they need first.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch from this machine's disk; any other spelling pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,judges,export,photos,serve,ray]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)
	@echo "conceal is $(abspath $(BIN))/conceal: put it on your PATH with  . $(BIN)/activate"

demo: $(STAMP)
	$(BIN)/conceal demo -o out
	@echo "conceal is $(abspath $(BIN))/conceal: put it on your PATH with  . $(BIN)/activate"

test: $(STAMP)
	$(BIN)/python -m pytest tests

clean:
	rm -rf $(VENV) out

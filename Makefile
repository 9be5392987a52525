# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
ARGS ?=

.PHONY: install weights examples demo test clean

install: $(VENV)/.installed
$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# torch first: 2.13.0 resolves to the local CPU wheel; the constraint keeps it there
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[test]"
	touch $@

weights: install
	$(PY) -m gen4gen.weights fetch

examples: install
	$(PY) -m gen4gen.examples

demo: weights examples
	$(PY) -m gen4gen stage=all $(ARGS)
	@echo "Done. Dataset and card: outputs/datasets/mycanvas_demo/  Gallery: outputs/datasets/mycanvas_demo/gallery/index.html"

test: weights
	HF_HUB_OFFLINE=1 $(PY) -m pytest -n 2 -q $(ARGS)

clean:
	rm -rf stages/*/ outputs/*/

# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
ARGS ?=
# torch is installed first and kept: the default is the build the locks were tested with (this machine: the
# local CPU wheel). CUDA users: make install TORCH=torch==2.13.0 TORCH_INDEX=https://download.pytorch.org/whl/cu128
# (or TORCH=keep in an environment that already has one).
TORCH ?= $(shell grep -v '^\#' requirements/torch.txt)
TORCH_INDEX ?=
# the torch in the venv, as a constraint: nothing installed later may replace it
KEEP_TORCH := $(VENV)/torch-installed.txt
# `make lock` refreshes both locks from setup.cfg, keeping every pin that still fits (add UPGRADE=1 to move on)
LOCK := $(PY) -m piptools compile -q --strip-extras --no-emit-find-links --no-emit-index-url \
	--unsafe-package torch --unsafe-package setuptools --unsafe-package pip -c requirements/torch.txt \
	$(if $(UPGRADE),--upgrade)
# extras in the test lock (sam is left out: torchvision must match the torch build, see `make sam`)
LOCKED_EXTRAS := launchers faiss train test

.PHONY: install install-test sam lock weights examples demo test clean

# runtime dependencies only, exact versions from requirements/runtime.txt
install: $(VENV)/.installed
$(VENV)/.installed: requirements/runtime.txt setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(if $(filter keep,$(TORCH)),,$(PIP) install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)")
	$(PY) -c "import importlib.metadata as m; print('torch==' + m.version('torch'))" > $(KEEP_TORCH)
	$(PIP) install -q -c $(KEEP_TORCH) -r requirements/runtime.txt
	$(PIP) install -q --no-deps -e .
	touch $@

# the test environment: runtime plus LOCKED_EXTRAS, from requirements/test.txt
install-test: $(VENV)/.installed-test
$(VENV)/.installed-test: $(VENV)/.installed requirements/test.txt
	$(PIP) install -q -c $(KEEP_TORCH) -r requirements/test.txt
	touch $@

# the SAM segmenter: torchvision built for the torch already installed
sam: install
	$(PIP) install -q -c $(KEEP_TORCH) -e ".[sam]"

lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q "pip-tools>=7.4"
	$(LOCK) -o requirements/runtime.txt setup.cfg
	$(LOCK) $(addprefix --extra ,$(LOCKED_EXTRAS)) -c requirements/runtime.txt -o requirements/test.txt setup.cfg

weights: install
	$(PY) -m gen4gen.weights fetch

# the demo's own folders (conf/experiment/demo.yaml): never data/s0_source_images, stages/ or another dataset
examples: install
	$(PY) -m gen4gen.examples --dest data/demo/s0_source_images

demo: weights examples
	$(PY) -m gen4gen +experiment=demo stage=all $(ARGS)
	@echo "Done. Dataset and card: outputs/datasets/mycanvas_demo/  Gallery: outputs/datasets/mycanvas_demo/gallery/index.html"

test: install-test weights
	HF_HUB_OFFLINE=1 $(PY) -m pytest -n 2 -q $(ARGS)

clean:
	rm -rf stages/*/ outputs/*/

# SLR Suite. Every target creates .venv when missing and installs into it.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup demo test bench lint slurm slurm-check cluster-start cluster-stop clean-demo

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# constraints.txt pins torch: without it pip would pull a newer CUDA torch (GBs).
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) main/demo.py

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/preprocess.py
	$(PY) benchmarks/loader.py --size 172 --clips 96
	$(PY) benchmarks/loader_tf.py
	$(PY) benchmarks/loader_torch.py

lint: $(STAMP)
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	$(PY) main/make_slurm.py --check

# Regenerate slurm/*.slurm from slurm/cluster.toml (commit the result).
slurm: $(STAMP)
	$(PY) main/make_slurm.py

# A real single-node SLURM on this machine (Debian/Ubuntu, root), for trying jobs.
cluster-start:
	bash slurm/local_cluster.sh start

cluster-stop:
	bash slurm/local_cluster.sh stop

clean-demo:
	rm -rf demo

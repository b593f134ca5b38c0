# SLR Suite. Every target creates .venv when missing and installs into it.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast bench lint slurm slurm-check cluster-start cluster-stop clean-demo pose-setup

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# constraints.txt pins torch: without it pip would pull a newer CUDA torch (GBs).
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)

setup: $(STAMP)

# The keypoint stage's own environment: MediaPipe 0.10.21 ships the Holistic
# models in its wheel but needs numpy<2 and protobuf<5, which TensorFlow in
# .venv cannot share. main/extract_keypoints.py re-runs itself in it.
POSE_VENV ?= .venv-pose
POSE_PY := $(POSE_VENV)/bin/python
POSE_STAMP := $(POSE_VENV)/.installed

$(POSE_STAMP): requirements-pose.txt
	@test -x $(POSE_PY) || python3 -m venv $(POSE_VENV)
	@$(POSE_PY) -m pip install -q --upgrade pip
	@$(POSE_PY) -m pip install -q -r requirements-pose.txt
	@touch $(POSE_STAMP)

pose-setup: $(POSE_STAMP)

# experiments/demo.yaml run here in order: synthetic mini-WLASL -> store -> two tiny models -> table.
demo: $(STAMP)
	$(PY) main/experiment.py run experiments/demo.yaml --local

# The whole suite, in random order (pytest-randomly), in two processes (much of
# it waits on SLURM or on subprocesses); both environments first.
TEST_WORKERS ?= 2
test: $(STAMP) $(POSE_STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist load --durations=25 $(PYTEST_ARGS)

# The unit tests for the inner loop (about 2 minutes on 2 cores): no SLURM cluster, nothing slow, no test
# that builds framework models (integration: tests/conftest.py). `make test` stays what CI runs.
test-fast: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist load -m "not slurm and not slow and not integration" $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/preprocess.py
	$(PY) benchmarks/loader.py --size 172 --clips 96
	$(PY) benchmarks/loader_tf.py
	$(PY) benchmarks/loader_torch.py
	$(PY) benchmarks/tensorboard_events.py
	$(PY) benchmarks/channels_last.py
	$(PY) benchmarks/tf_onednn.py

lint: $(STAMP)
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	$(PY) main/make_slurm.py --check

# Regenerate slurm/*.slurm from slurm/cluster.toml and slurm/local/*.slurm from slurm/local.toml (commit them).
slurm: $(STAMP)
	$(PY) main/make_slurm.py

# A real single-node SLURM on this machine (Debian/Ubuntu, root), for trying jobs.
cluster-start:
	bash slurm/local_cluster.sh start

cluster-stop:
	bash slurm/local_cluster.sh stop

clean-demo:
	rm -rf demo

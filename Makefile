# Set-up and the main jobs. Each target builds .venv from the pinned requirements first: the quick start needs the
# runtime set only; tests and benchmarks add theirs (torch and transformers as references, pytest).
PY ?= python3.11
VENV := .venv
RUNTIME := $(VENV)/.runtime
DEV := $(VENV)/.dev

$(RUNTIME): requirements.txt constraints.txt
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements.txt -c constraints.txt
	touch $(RUNTIME)

$(DEV): $(RUNTIME) requirements-dev.txt requirements-lmeval.txt requirements-experiments.txt requirements-dryrun.txt
	$(VENV)/bin/pip install -q -r requirements-dev.txt -c constraints.txt
	$(VENV)/bin/pip install -q --no-deps --upgrade --target $(VENV)/dryrun -r requirements-dryrun.txt
	touch $(DEV)

.PHONY: setup setup-dev setup-gpu setup-tpu setup-dryrun setup-slurm dryrun-table setup-experiments \
  experiments-scaling experiments-few-shot quickstart test bench
setup: $(RUNTIME)
setup-dev: $(DEV)

# Accelerator builds of jax in .venv (on the GPU or TPU host itself): pinned CUDA 12 plugin, or libtpu.
setup-gpu: $(RUNTIME)
	$(VENV)/bin/pip install -q -r requirements-gpu.txt -c constraints.txt
setup-tpu: $(RUNTIME)
	$(VENV)/bin/pip install -q -r requirements-tpu.txt -c constraints.txt

# SLURM (slurmctld, slurmd, the client commands) and munge from Debian, for tests/test_slurm.py, which starts a
# one-node cluster on this machine. Root only (apt-get; slurmd must run as root to start jobs), as on CI.
setup-slurm:
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge

# Compilers for hardware this machine lacks (libtpu, the jax CUDA plugin) in their own directory: only the
# dry-run (python -m gpt_jax.dryrun) puts it on its path, so CPU jax never tries them.
setup-dryrun: $(RUNTIME)
	$(VENV)/bin/pip install -q --no-deps --upgrade --target $(VENV)/dryrun -r requirements-dryrun.txt
dryrun-table: $(DEV)
	$(VENV)/bin/python -m benchmarks.compile --table

# Plotting for experiments/ (matplotlib), and the two CPU experiments (commands as in their READMEs).
EXPERIMENTS := $(VENV)/.experiments
$(EXPERIMENTS): $(RUNTIME) requirements-experiments.txt
	$(VENV)/bin/pip install -q -r requirements-experiments.txt -c constraints.txt
	touch $(EXPERIMENTS)
setup-experiments: $(EXPERIMENTS)
SCALING = experiments/scaling_laws
experiments-scaling: $(EXPERIMENTS)
	test -f $(SCALING)/results/lr_rule.json || \
	  $(VENV)/bin/python -m gpt_jax.sweep.lrscan --sweep=$(SCALING)/sweep_cpu.py --parallel=2
	$(VENV)/bin/python -m gpt_jax.sweep run --sweep=$(SCALING)/sweep_cpu.py --parallel=2
	$(VENV)/bin/python -m gpt_jax.sweep collect --sweep=$(SCALING)/sweep_cpu.py --output=$(SCALING)/results/runs.csv \
	  --overwrite
	test -f $(SCALING)/results/prediction.json || \
	  $(VENV)/bin/python -m experiments.scaling_laws.predict --table=$(SCALING)/results/runs.csv \
	  --output=$(SCALING)/results/prediction.json
	$(VENV)/bin/python -m gpt_jax.sweep run --sweep=$(SCALING)/sweep_cpu.py --parallel=2
	$(VENV)/bin/python -m gpt_jax.sweep collect --sweep=$(SCALING)/sweep_cpu.py --output=$(SCALING)/results/runs.csv \
	  --overwrite
	$(VENV)/bin/python -m experiments.scaling_laws.predict --table=$(SCALING)/results/runs.csv \
	  --output=$(SCALING)/results/prediction.json --measure
	$(VENV)/bin/python -m experiments.scaling_laws.analyze --table=$(SCALING)/results/runs.csv \
	  --output=$(SCALING)/results/results.json --plots=$(SCALING)/plots --bootstrap=100 --bootstrap3=20 --starts=16 \
	  --bootstrap_starts=4 --overwrite
experiments-few-shot: $(EXPERIMENTS)
	$(VENV)/bin/python -m experiments.few_shot.run --table=experiments/scaling_laws/results/runs.csv \
	  --runs_root=experiments/scaling_laws/runs/cpu --output=experiments/few_shot/results/results.json \
	  --plots=experiments/few_shot/plots --overwrite
	$(VENV)/bin/python -m experiments.few_shot.per_position --overwrite

quickstart: $(RUNTIME)
	$(VENV)/bin/python -m gpt_jax.train --config=configs/tiny.py:micro --workdir=runs/quickstart

# The cluster tests start a one-node SLURM: Debian's slurm-wlm and munge are installed first when missing (root).
SBIN_PATH := $(PATH):/usr/sbin:/sbin
test: $(DEV)
	@PATH="$(SBIN_PATH)" command -v slurmctld >/dev/null && PATH="$(SBIN_PATH)" command -v munged >/dev/null || \
	  $(MAKE) setup-slurm
	$(VENV)/bin/python -m pytest -q tests

bench: $(DEV)
	$(VENV)/bin/python -m benchmarks.train_step

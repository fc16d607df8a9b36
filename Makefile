# flatmin: `make help` lists the targets.
PYTHON ?= python

.PHONY: help install install-cpu test test-ci-slow test-slow demo bench gpu-check wheels study study-compare readme-figures reproduce-sam-wrn16 clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-20s %s\n", $$1, $$2}'

install: ## install flatmin and its test dependencies, at the versions CI tests (constraints.txt), into the current Python (3.11 or newer)
	$(PYTHON) -m pip install -c constraints.txt -e ".[dev]"

install-cpu: ## install torch's CPU-only wheels (PyTorch's CPU index, no CUDA libraries), then flatmin, at the versions CI tests
	$(PYTHON) -m pip install -c constraints.txt torch torchvision --index-url https://download.pytorch.org/whl/cpu
	$(PYTHON) -m pip install -c constraints.txt -e .

test: ## run the default test suite (offline, CPU, < 15 min on 2 cores)
	$(PYTHON) -m pytest

test-ci-slow: ## the slow tests CI runs besides make test: the wheel in a fresh virtual environment, used from outside the clone, the GPU check's CPU smoke mode, the adapters under 2-process DDP, a tuning sweep interrupted and continued (about three minutes)
	$(PYTHON) -m pytest -m slow tests/test_wheel.py tests/test_gpu_check.py tests/integrations/test_ddp.py tests/tuning/test_sweep.py

test-slow: ## run only the tests marked slow
	$(PYTHON) -m pytest -m slow

demo: ## the quick start: train the default small CNN on digits (about 9 s on 2 CPU cores)
	$(PYTHON) train.py

bench: ## optimizer step cost as a ratio to SGD, training throughput per loader, trainer overhead and start-up, the analysis measures' cost (docs/benchmarks.md)
	$(PYTHON) scripts/bench_optim.py
	$(PYTHON) scripts/bench_optim.py --optimizer-only
	$(PYTHON) scripts/bench.py
	$(PYTHON) scripts/bench_overhead.py
	$(PYTHON) scripts/bench_overhead.py --startup
	$(PYTHON) scripts/bench_sharpness.py

gpu-check: ## check this machine's GPU: every GPU path of flatmin, with figures (README: Checking a GPU machine)
	scripts/gpu_check.sh

wheels: ## wheels in .wheels/ for gpu-check on an image without Hydra/omegaconf and accelerate (and the peer SAM)
	$(PYTHON) -m pip wheel --no-deps hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3 -w .wheels
	$(PYTHON) -m pip download --no-deps --only-binary=:all: accelerate==1.16.0 -d .wheels
	$(PYTHON) -m pip download --no-deps --only-binary=:all: --platform manylinux2014_x86_64 --python-version 3.12 psutil==7.2.2 -d .wheels
	$(PYTHON) -m pip download --no-deps --only-binary=:all: pytorch_optimizer==4.1.0 -d .wheels

study: ## the CPU study: matrix sensing, digits with 40% label noise; tables and plots in docs/study/ (about 4.0 minutes on 2 CPU cores)
	$(PYTHON) -m flatmin.studies.matrix_sensing --out docs/study
	rm -rf outputs/study/digits_label_noise
	$(PYTHON) train.py -m experiment=study_digits_label_noise hydra.sweep.dir=outputs/study/digits_label_noise
	$(PYTHON) -m flatmin.report outputs/study/digits_label_noise --out docs/study

COMPARE_DIR ?= outputs/study/compare_digits
COMPARE_SECONDS ?= 2.0
COMPARE_TARGETS ?= --target digits-noise0.0:val/accuracy=0.98 --target digits-noise0.2:val/accuracy=0.95 \
	--target digits-noise0.4:val/accuracy=0.9
study-compare: ## the comparison study: 5 methods x 3 digits workloads tuned AlgoPerf-style at equal passes and equal seconds; report in docs/study/comparison/ (about 17 minutes on 2 CPU cores)
	rm -rf $(COMPARE_DIR)
	$(PYTHON) train.py -m experiment=compare_digits hydra.sweep.dir=$(COMPARE_DIR)/passes
	$(PYTHON) train.py -m experiment=compare_digits trainer.budget_passes=null trainer.budget_seconds=$(COMPARE_SECONDS) \
		'trainer.epochs="$${pick:$${optimizer.name},{sgd: 20},10}"' hydra.sweep.dir=$(COMPARE_DIR)/seconds
	$(PYTHON) -m flatmin.report $(COMPARE_DIR)/passes --protocol algoperf $(COMPARE_TARGETS) --unit passes \
		--out docs/study/comparison/passes
	$(PYTHON) -m flatmin.report $(COMPARE_DIR)/seconds --protocol algoperf $(COMPARE_TARGETS) --unit seconds \
		--out docs/study/comparison/seconds

readme-figures: ## rerun the commands behind the README's figures and write the new ones in (about 20 minutes)
	$(PYTHON) scripts/readme_figures.py --write

REPRODUCE_DIR ?= outputs/reproduce
REPRODUCE_OVERRIDES ?=
reproduce-sam-wrn16: ## davda54/sam's WRN-16-8 CIFAR-10 recipe end to end (GPU), then its table beside the published numbers
	$(PYTHON) train.py -m experiment=sam_cifar_wrn16 trainer.resume=auto \
		hydra.sweep.dir=$(REPRODUCE_DIR)/sam_cifar_wrn16 $(REPRODUCE_OVERRIDES)
	$(PYTHON) -m flatmin.report $(REPRODUCE_DIR)/sam_cifar_wrn16 --out $(REPRODUCE_DIR)/sam_cifar_wrn16/report

clean: ## remove run outputs and caches
	rm -rf outputs multirun .pytest_cache

# The README's two commands: `make demo` and `make test`. Each builds the project-local
# virtual environment (.venv) on first use, so a fresh machine needs nothing else first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install airflow-venv demo test test-fast bench bench-train bench-scale clean-lake notebooks

# Airflow lives in its own environment (.venv-airflow): the tests load the DAG with it and dag.test() a night.
AIRFLOW_VENV  ?= .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed-stamp
export RECLLM_AIRFLOW_PYTHON := $(abspath $(AIRFLOW_VENV))/bin/python

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

$(AIRFLOW_STAMP): jobs/orchestration/requirements-airflow.txt
	test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install -q --upgrade pip
	$(AIRFLOW_VENV)/bin/python -m pip install -q -r jobs/orchestration/requirements-airflow.txt
	touch $(AIRFLOW_STAMP)

airflow-venv: $(AIRFLOW_STAMP)

demo: $(STAMP)
	$(PY) -m jobs.demo --config jobs/conf/default.yaml

test: $(STAMP) $(AIRFLOW_STAMP)
	$(PY) -m pytest tests

# The inner loop: everything but the demo, the cluster and the other slow tests.
test-fast: $(STAMP) $(AIRFLOW_STAMP)
	$(PY) -m pytest tests -m "not slow and not cluster"

bench: $(STAMP)
	$(PY) scripts/bench_lake.py
	$(PY) scripts/bench_train.py --movielens ../shared/datasets/ml-latest-small
	$(PY) scripts/bench_train_loop.py
	$(PY) scripts/bench_scoring.py
	$(PY) scripts/bench_metrics.py

# The training loop's own figures; its last lines: memory 10x/1x, matmul fraction, speedup vs plain loop.
bench-train: $(STAMP)
	$(PY) scripts/bench_train_loop.py

# Catalogue scale: item index vs exact top-K at 1M and 10M synthetic items, training at 10k-1M items.
# Its last lines: `ann recall@50 at 10M: X` and `ann speedup at 10M: Y` (about 17 minutes on 2 cores).
bench-scale: $(STAMP)
	$(PY) scripts/bench_scale.py

# The notebooks saved with their outputs, rerun on the demo's lake (`make demo` first); tests/test_notebooks.py checks they are current.
notebooks: $(STAMP)
	$(PY) scripts/refresh_notebooks.py

clean-lake:
	rm -rf lake spark-warehouse

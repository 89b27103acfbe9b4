"""Scheduler definitions that call the jobs' entry points: the Airflow 3 DAG (`airflow_dag.py`, Airflow's own
requirements in `requirements-airflow.txt`); the Databricks Asset Bundle is `databricks.yml` at the repository root."""

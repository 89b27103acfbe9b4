"""Scheduler definitions (Airflow DAG, Databricks job) that call the jobs entry points."""

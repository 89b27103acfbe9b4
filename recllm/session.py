"""Build the Spark session and the lake from a config, with the settings recllm needs."""

from __future__ import annotations

import logging
import os
import sys

from pyspark.sql import SparkSession

from recllm.config import RecllmConfig
from recllm.lake import Lake

log = logging.getLogger(__name__)


def build_spark(config: RecllmConfig) -> SparkSession:
    """A Spark session (or the active one, e.g. on Databricks) configured for recllm."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    sc = config.spark
    builder = (
        SparkSession.builder.master(sc.master)
        .appName(sc.app_name)
        .config("spark.driver.memory", sc.driver_memory)
        .config("spark.sql.shuffle.partitions", str(sc.shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.python.filterPushdown.enabled", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
    )
    for key, value in sc.conf.items():
        builder = builder.config(key, str(value))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    log.info("spark %s session on %s", spark.version, sc.master)
    return spark


def build_lake(spark: SparkSession, config: RecllmConfig) -> Lake:
    """The lake the config names; `Lake(...)` picks the backend class (`auto`: native if Delta is there)."""
    lc = config.lake
    return Lake(spark, root=lc.root, backend=lc.backend, catalog_prefix=lc.catalog_prefix)

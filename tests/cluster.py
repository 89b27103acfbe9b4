"""A real Spark standalone cluster on localhost, started from the installed pyspark.

    with StandaloneCluster(workers=2, tmp) as cluster:
        ... spark.master = cluster.master_url ...
        cluster.kill_worker(1)   # SIGKILL a worker and its executors

The master and each worker are their own JVMs (`spark-class ...Master` / `...Worker`), so
jobs on it run in separate executor processes, as on any cluster.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pyspark


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StandaloneCluster:
    """A master and `workers` workers of `cores` cores each; logs under `work_dir`."""

    def __init__(self, work_dir: str | Path, workers: int = 2, cores: int = 1, memory: str = "3g"):
        self.work_dir = Path(work_dir)
        self.n_workers, self.cores, self.memory = workers, cores, memory
        self.port, self.ui_port = free_port(), free_port()
        self.master_url = f"spark://127.0.0.1:{self.port}"
        self.master: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.worker_ui_ports: list[int] = []
        spark_home = os.path.dirname(pyspark.__file__)
        self.spark_class = os.path.join(spark_home, "bin", "spark-class")
        self.env = {**os.environ, "SPARK_HOME": spark_home, "SPARK_LOCAL_IP": "127.0.0.1",
                    "SPARK_NO_DAEMONIZE": "1"}

    def _launch(self, name: str, *args: str) -> subprocess.Popen:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.work_dir / f"{name}.log", "a")
        return subprocess.Popen([self.spark_class, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def start(self, timeout: float = 120) -> StandaloneCluster:
        self.master = self._launch("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                   "--port", str(self.port), "--webui-port", str(self.ui_port))
        for _ in range(self.n_workers):
            self.start_worker()
        self.wait_for_workers(timeout)
        return self

    def start_worker(self, i: int | None = None) -> None:
        """Launch worker `i` (again, after `kill_worker(i)`), or a new one."""
        i = len(self.workers) if i is None else i
        ui_port = free_port()
        worker = self._launch(
            f"worker{i}", "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", str(self.cores),
            "--memory", self.memory, "--webui-port", str(ui_port), "--work-dir", str(self.work_dir / f"worker{i}"),
            self.master_url)
        if i < len(self.workers):
            self.workers[i], self.worker_ui_ports[i] = worker, ui_port
        else:
            self.workers.append(worker)
            self.worker_ui_ports.append(ui_port)

    def state(self) -> dict:
        """The master's JSON status (workers, applications)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=5) as r:
            return json.load(r)

    def registered(self) -> bool:
        """Whether the master lists every current worker (by its web UI port) as alive."""
        try:
            alive = {w["webuiaddress"].rsplit(":", 1)[1] for w in self.state()["workers"] if w["state"] == "ALIVE"}
        except (OSError, KeyError, IndexError):
            return False
        return all(str(port) in alive for port in self.worker_ui_ports)

    def wait_for_workers(self, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while not self.registered():
            if time.time() > deadline:
                raise TimeoutError(f"workers did not register with {self.master_url}; see {self.work_dir}/*.log")
            time.sleep(0.5)

    def processes(self, i: int) -> list[int]:
        """Pids of worker `i` and everything below it: executors, Python daemons, their workers.

        Walks the parent links, since pyspark's daemon leaves the worker's process group.
        """
        parents = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as stat:
                        parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    pass
        found = [self.workers[i].pid]
        for pid in found:
            found.extend(child for child, parent in parents.items() if parent == pid)
        return found

    def executor_running_torch(self, i: int) -> bool:
        """Whether one of worker `i`'s Python workers has loaded torch (a model task ran there)."""
        for pid in self.processes(i):
            try:
                with open(f"/proc/{pid}/maps") as maps:
                    if "libtorch" in maps.read():
                        return True
            except OSError:
                pass
        return False

    def kill_children_of(self, i: int, parent_command: str) -> list[int]:
        """SIGKILL worker `i`'s processes whose parent's command line contains `parent_command`."""
        killed = []
        for pid in self.processes(i):
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{parent}/cmdline", "rb") as cmdline:
                    if parent_command.encode() in cmdline.read():
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
            except (OSError, ValueError, IndexError):
                pass
        return killed

    def kill_worker(self, i: int) -> None:
        """SIGKILL worker `i` and every process it launched, as when a machine dies."""
        for pid in reversed(self.processes(i)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.workers[i].wait()

    def stop(self) -> None:
        for i, worker in enumerate(self.workers):
            if worker.poll() is None:
                self.kill_worker(i)
        if self.master is not None and self.master.poll() is None:
            os.killpg(self.master.pid, signal.SIGKILL)
            self.master.wait()

    def __enter__(self) -> StandaloneCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

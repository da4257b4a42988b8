"""A real Prometheus server on loopback for tests (Debian package 'prometheus').

    with PrometheusServer(tmp, targets=["127.0.0.1:9464"]) as prom:
        prom.wait_target_up()
        value = prom.query_scalar("llorch_worker_generated_tokens_total")
"""
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

from processes import TestFailure, check, die_with_parent  # noqa: F401  (re-exported)


def check_exposition(metrics_port, required):
    """Reads /metrics on 127.0.0.1:METRICS_PORT: `promtool check metrics` must
    pass it without a word, and every family in `required` must be declared."""
    exposition = urllib.request.urlopen(
        f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    promtool = subprocess.run(["promtool", "check", "metrics"], input=exposition,
                              capture_output=True, text=True)
    check(promtool.returncode == 0 and not (promtool.stdout + promtool.stderr).strip(),
          f"promtool check metrics complained:\n{promtool.stdout}{promtool.stderr}")
    for name in required:
        check(f"# TYPE {name} " in exposition, f"{name} missing from /metrics")
    print(f"promtool check metrics: OK ({len(required)} required families present)")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrometheusServer:
    def __init__(self, tmp, targets, job="llorch", timeout_s=45):
        self.tmp, self.targets, self.job = tmp, targets, job
        self.deadline = time.monotonic() + timeout_s
        self.process = None

    def __enter__(self):
        if shutil.which("prometheus") is None:
            raise TestFailure("prometheus not found; install the Debian package "
                              "'prometheus' (tools/setup.sh does)")
        config = f"{self.tmp}/prometheus.yml"
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    f"scrape_configs:\n  - job_name: {self.job}\n"
                    "    static_configs:\n      - targets: ["
                    + ", ".join(f"'{t}'" for t in self.targets) + "]\n")
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = f"{self.tmp}/prometheus.log"
        log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [shutil.which("prometheus"), f"--config.file={config}",
             f"--storage.tsdb.path={self.tmp}/data",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            try:
                with open(self.log_path) as f:
                    print("--- prometheus log (tail) ---\n" + "".join(f.readlines()[-20:]),
                          file=sys.stderr)
            except OSError:
                pass
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return False

    def api(self, path, **params):
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(params, doseq=True)}"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise TestFailure(f"{url}: {body}")
        return body["data"]

    def wait_for(self, what, poll):
        """Calls poll() until it returns a value other than None."""
        while time.monotonic() < self.deadline:
            if self.process.poll() is not None:
                raise TestFailure(f"prometheus exited with {self.process.returncode} "
                                  f"while waiting for {what}")
            try:
                result = poll()
                if result is not None:
                    return result
            except OSError:
                pass  # Not listening yet.
            time.sleep(0.2)
        raise TestFailure(f"timed out waiting for {what}")

    def wait_targets_up(self):
        def poll():
            targets = self.api("/api/v1/targets")["activeTargets"]
            errors = [t.get("lastError") for t in targets if t.get("lastError")]
            if errors:
                raise TestFailure(f"scrape failed: {errors}")
            up = [t for t in targets if t["health"] == "up"]
            return True if len(up) == len(self.targets) else None
        self.wait_for(f"targets {self.targets} to be up", poll)

    def query_scalar(self, expression, expected=None):
        """The expression's single value; with `expected`, waits until it equals that."""
        def poll():
            result = self.api("/api/v1/query", query=expression)["result"]
            if not result:
                return None
            value = float(result[0]["value"][1])
            return value if expected is None or value == expected else None
        try:
            return self.wait_for(f"a result for {expression}", poll)
        except TestFailure:
            if expected is None:
                raise
            result = self.api("/api/v1/query", query=expression)["result"]
            raise TestFailure(f"{expression} = {result}, expected {expected}")

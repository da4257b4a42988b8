"""Real llorch processes on loopback for the Python tests.

    procs = Processes(tmp)
    ports = procs.start([worker, "--model", m, "--port", "0"], "worker", "serving")
    ...
    codes = procs.stop_all()   # SIGTERM to each, newest first; {name: exit code}
"""
import ctypes
import os
import re
import signal
import subprocess
import time


class TestFailure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise TestFailure(message)


def die_with_parent():
    """preexec_fn: the child gets SIGTERM if the test process dies."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def served_name(path):
    """A worker's default served model name: the file's name without its extension."""
    return os.path.splitext(os.path.basename(path.rstrip("/")))[0]


class Processes:
    """Started processes, each logging to TMP/NAME.log; all get SIGTERM at the end."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.started = []

    def start(self, argv, name, wait_for, ports=("grpc",), timeout=120):
        """Starts argv; returns {kind: port} once every "KIND listening on port N"
        line and `wait_for` are in its log."""
        log_path = os.path.join(self.tmp, f"{name}.log")
        log = open(log_path, "w")
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                   preexec_fn=die_with_parent)
        self.started.append((name, process, log_path))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = open(log_path).read()
            found = {kind: re.search(rf"{kind} listening on port (\d+)", text) for kind in ports}
            if all(found.values()) and wait_for in text:
                return {kind: int(m.group(1)) for kind, m in found.items()}
            if process.poll() is not None:
                raise TestFailure(f"{name} exited ({process.returncode}):\n{text}")
            time.sleep(0.05)
        raise TestFailure(f"{name} did not start:\n{open(log_path).read()}")

    def log(self, name):
        return open(os.path.join(self.tmp, f"{name}.log")).read()

    def wait_log(self, name, pattern, what, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.log(name)):
                return
            time.sleep(0.05)
        raise TestFailure(f"no {what} in {name}'s log:\n{self.log(name)}")

    def process(self, name):
        return next(p for n, p, _ in self.started if n == name)

    def stop_all(self, timeout=40):
        """SIGTERM, newest first (schedulers before the workers behind them, so
        workers see no live calls); returns {name: exit code or why none}."""
        codes = {}
        for name, process, _ in reversed(self.started):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                codes[name] = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = f"no exit within {timeout} s of SIGTERM"
        return codes

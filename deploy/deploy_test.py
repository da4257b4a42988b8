#!/usr/bin/env python3
"""Checks deploy/: each configuration by its own validator, their agreement with each other and
with the programs, and the systemd units for real.

  systemd     `systemd-analyze verify` (no output allowed) and `systemd-analyze security
              --offline` (exposure at most 2.0) on both units; then llorch-scheduler and one
              llorch-worker are started with exactly the ExecStart lines of the units, expanded
              as systemd does (Environment=, EnvironmentFile= from the example env files,
              specifiers, ${VAR} as one word, $VAR split at spaces), with only addresses, the
              model and --threads/--metrics_host changed; one request streams through them with
              `llorch generate --scheduler`, `llorch health` says SERVING for both, a real
              Prometheus scrapes both and every query of the Grafana dashboard returns data,
              and SIGTERM drains both (exit 0).
  prometheus  `promtool check config deploy/prometheus.yml`; its targets are the compose
              services' metrics ports.
  compose     docker-compose.yml against the compose-spec JSON schema (check-jsonschema's
              vendored copy, offline); depends_on, volumes, health checks and --scheduler
              addresses agree with the services.
  k8s         every manifest against the Kubernetes OpenAPI schemas (kubernetes-validate
              --strict, bundled schemas, offline) for 1.30 and 1.37; Services select the pods and
              name their ports; probes and annotations match the listen/metrics ports;
              LLORCH_WORKERS names the headless worker Service; $(VAR)s are defined; the memory
              limit covers KV budget + overhead.
  Dockerfile  parsed by buildkit's own parser (PyPI `dockerfile`); the build stage installs
              setup.sh's build packages, the runtime stage the packages of every shared library
              the programs need (readelf + dpkg -S here), no -dev packages, a non-root USER.
  grafana     every query parses (`promtool check rules`), names only metrics of
              docs/metrics.md, and the panels cover requests by outcome, TTFT, tok/s, queue
              depth, workers by state and KV used.
  flags       every --flag in compose, k8s and the units is one the programs' --help lists

Exit 77 (skipped) when systemd-analyze or promtool is missing, after the other checks pass.
Usage: deploy_test.py LLORCH_SCHEDULER LLORCH_WORKER LLORCH_CLI MODEL.gguf
"""
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import yaml

DEPLOY = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(DEPLOY)
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
from prometheus_server import PrometheusServer, TestFailure, die_with_parent, free_port  # noqa: E402

VENV_BIN = os.path.dirname(sys.executable)
SKIPPED = []


def check(condition, message):
    if not condition:
        raise TestFailure(message)


def ok(message):
    print(f"ok: {message}", flush=True)


def tool(name):
    """A pinned test tool from this venv (tools/requirements-test.txt)."""
    path = os.path.join(VENV_BIN, name)
    check(os.access(path, os.X_OK), f"{path} missing: run tools/setup.sh (tools/requirements-test.txt)")
    return path


def run_tool(argv, what):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    check(result.returncode == 0, f"{what} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result.stdout + result.stderr


# --- flags the programs know --------------------------------------------------------------------

def help_flags(argv):
    out = subprocess.run(argv + ["--help"], capture_output=True, text=True, timeout=30).stdout
    return {m.replace("-", "_") for m in re.findall(r"^\s+--([a-z][a-z0-9_-]*)", out, re.M)}


class Flags:
    def __init__(self, scheduler_bin, worker_bin, cli_bin):
        self.known = {"llorch-scheduler": help_flags([scheduler_bin]),
                      "llorch-worker": help_flags([worker_bin]),
                      "llorch health": help_flags([cli_bin, "health"])}
        for program, flags in self.known.items():
            check(len(flags) > 3, f"no flags read from {program} --help")
        self.checked = 0

    def check(self, program, argv, where):
        for arg in argv:
            if not arg.startswith("--"):
                continue
            name = arg[2:].split("=", 1)[0].replace("-", "_")
            if name not in self.known[program]:
                raise TestFailure(f"{where}: {program} has no flag --{name}")
            self.checked += 1


def flag_value(argv, name):
    """The value of --name in argv (--name=V or --name V), or None."""
    for i, arg in enumerate(argv):
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    return None


def port_of(address):
    return int(address.rsplit(":", 1)[1])


# --- systemd ------------------------------------------------------------------------------------

def parse_unit(path):
    """[(section, key, value)] of a unit file: comments, continuation lines."""
    entries, section, pending = [], None, ""
    for raw in open(path):
        line = raw.rstrip("\n")
        if not pending and (not line.strip() or line.lstrip()[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("["):
            section = line.strip()[1:-1]
            continue
        key, _, value = line.partition("=")
        entries.append((section, key.strip(), value.strip()))
    return entries


def expand_specifiers(text, instance, cache_dir):
    def one(m):
        c = m.group(1)
        table = {"i": instance, "I": instance, "H": socket.gethostname(), "C": cache_dir, "%": "%"}
        check(c in table, f"specifier %{c} is not emulated by this test")
        return table[c]
    return re.sub(r"%(.)", one, text)


def parse_env_file(path):
    """systemd EnvironmentFile= subset: KEY=VALUE lines, # and ; comments; no quotes or $."""
    env = {}
    for n, raw in enumerate(open(path), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        check(sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key.strip()),
              f"{path}:{n}: not KEY=VALUE")
        check(not re.search(r"[\"'$\\]", value),
              f"{path}:{n}: quotes, $ and \\ are not emulated by this test; keep values plain")
        env[key.strip()] = value.strip()
    return env


def exec_argv(exec_start, env):
    """ExecStart= as systemd expands it: ${VAR} inside a word, a lone $VAR split at spaces."""
    command = exec_start.lstrip("-@:+!")
    argv = []
    for word in shlex.split(command):
        lone = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if lone:
            argv.extend(env.get(lone.group(1), "").split())
            continue
        argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
    return argv


class Unit:
    """A unit as the test runs it: its ExecStart argv and environment."""

    def __init__(self, name, instance, tmp):
        self.path = os.path.join(DEPLOY, "systemd", name)
        self.name = name.replace("@.", f"@{instance}.") if instance else name
        self.instance = instance
        self.cache = os.path.join(tmp, f"cache-{self.name}")
        self.entries = parse_unit(self.path)
        service = [(k, v) for s, k, v in self.entries if s == "Service"]
        get = lambda key: [v for k, v in service if k == key]  # noqa: E731
        starts = get("ExecStart")
        check(len(starts) == 1, f"{name}: one ExecStart= expected")
        self.exec_start = starts[0]
        check(get("Restart") == ["on-failure"], f"{name}: Restart=on-failure expected")
        for key, want in [("DynamicUser", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                          ("PrivateTmp", "yes"), ("NoNewPrivileges", "yes")]:
            check(get(key) == [want], f"{name}: {key}={want} expected")
        self.read_only = [p.lstrip("-") for v in get("ReadOnlyPaths") for p in v.split()]
        for directory in get("CacheDirectory"):
            os.makedirs(os.path.join(self.cache, self.expand(directory)), exist_ok=True)
        # Environment= (defaults), then EnvironmentFile= (the deploy/systemd examples).
        self.env = {}
        for value in get("Environment"):
            for assignment in shlex.split(self.expand(value)):
                key, _, val = assignment.partition("=")
                self.env[key] = val
        self.env_files = []
        for value in get("EnvironmentFile"):
            target = self.expand(value.lstrip("-"))
            check(target.startswith("/etc/llorch/"), f"{name}: EnvironmentFile {target} outside /etc/llorch")
            example = os.path.join(DEPLOY, "systemd", os.path.basename(target))
            if not os.path.exists(example):
                check(value.startswith("-"), f"{name}: no example {example} for the required {target}")
                continue
            self.env_files.append(example)
            self.env.update(parse_env_file(example))
        self.referenced = set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", self.exec_start))
        undefined = self.referenced - set(self.env)
        check(not undefined, f"{name}: ExecStart uses {sorted(undefined)}, defined nowhere")
        for example in self.env_files:
            unused = set(parse_env_file(example)) - self.referenced
            check(not unused, f"{example}: {sorted(unused)} not used by {name}'s ExecStart")

    def expand(self, text):
        return expand_specifiers(text, self.instance or "", self.cache)

    def argv(self, overrides):
        env = dict(self.env, **overrides)
        return exec_argv(self.expand(self.exec_start), env), env


def check_systemd_analyze(tmp, bins):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        SKIPPED.append("systemd-analyze not found (Debian package systemd; tools/setup.sh installs it)")
        return
    # verify also checks that ExecStart's program exists: point /usr/local/bin at build/bin.
    copies = os.path.join(tmp, "units")
    os.makedirs(copies)
    for name in ("llorch-scheduler.service", "llorch-worker@.service"):
        text = open(os.path.join(DEPLOY, "systemd", name)).read()
        text = text.replace("/usr/local/bin/llorch-scheduler", bins["llorch-scheduler"])
        text = text.replace("/usr/local/bin/llorch-worker", bins["llorch-worker"])
        with open(os.path.join(copies, name), "w") as f:
            f.write(text)
        result = subprocess.run([analyze, "verify", "--man=no", "--generators=no",
                                 os.path.join(copies, name)], capture_output=True, text=True, timeout=60)
        out = (result.stdout + result.stderr).strip()
        check(result.returncode == 0 and not out, f"systemd-analyze verify {name}:\n{out}")
        result = subprocess.run([analyze, "security", "--offline=yes", "--threshold=20", "--no-pager",
                                 os.path.join(copies, name)], capture_output=True, text=True, timeout=60)
        level = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout + result.stderr)
        check(result.returncode == 0 and level,
              f"systemd-analyze security {name}: exposure over 2.0 (threshold 20 in its tenths):\n{result.stdout[-3000:]}")
        ok(f"systemd-analyze verify {name}: clean; security exposure {level.group(1)}")


# --- the units, for real ------------------------------------------------------------------------

def start(argv, env, log_path):
    log = open(log_path, "w")
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=die_with_parent)


def wait_healthy(cli, kind, address, process, log_path):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise TestFailure(f"{kind} exited with {process.returncode}:\n{open(log_path).read()}")
        result = subprocess.run([cli, "health", f"--{kind}", address, "--timeout", "1"],
                                capture_output=True, text=True, timeout=30)
        if result.returncode == 0:
            return result.stdout.strip()
        time.sleep(0.2)
    raise TestFailure(f"{kind} at {address} not SERVING within 60 s:\n{open(log_path).read()}")


def stop(process, what):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=40)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise TestFailure(f"{what} did not exit on SIGTERM")
    check(code == 0, f"{what} exited with {code} on SIGTERM")


def run_units(tmp, bins, cli, model, flags, dashboard_exprs):
    scheduler_unit = Unit("llorch-scheduler.service", None, tmp)
    worker_unit = Unit("llorch-worker@.service", "1", tmp)
    example_model = worker_unit.env.get("LLORCH_MODEL", "")
    check(any(example_model.startswith(p.rstrip("/") + "/") for p in worker_unit.read_only),
          f"{worker_unit.path}: the example model {example_model} is not under ReadOnlyPaths "
          f"{worker_unit.read_only}")
    grpc, http, sched_metrics = free_port(), free_port(), free_port()
    worker_grpc, worker_metrics = free_port(), free_port()
    s_argv, s_env = scheduler_unit.argv({
        "LLORCH_LISTEN": f"127.0.0.1:{grpc}", "LLORCH_HTTP_LISTEN": f"127.0.0.1:{http}",
        "LLORCH_METRICS_PORT": str(sched_metrics),
        "LLORCH_SCHEDULER_ARGS": scheduler_unit.env.get("LLORCH_SCHEDULER_ARGS", "")
        + " --metrics_host=127.0.0.1"})
    w_argv, w_env = worker_unit.argv({
        "LLORCH_MODEL": model, "LLORCH_LISTEN": f"127.0.0.1:{worker_grpc}",
        "LLORCH_METRICS_PORT": str(worker_metrics), "LLORCH_SCHEDULER": f"127.0.0.1:{grpc}",
        "LLORCH_WORKER_ARGS": worker_unit.env.get("LLORCH_WORKER_ARGS", "")
        + " --metrics_host=127.0.0.1 --threads=1"})
    for argv, program, unit in [(s_argv, "llorch-scheduler", scheduler_unit),
                                (w_argv, "llorch-worker", worker_unit)]:
        check(argv[0] == f"/usr/local/bin/{program}", f"{unit.name}: ExecStart runs {argv[0]}")
        argv[0] = bins[program]
        flags.check(program, argv, unit.path)
    # The service's environment: the unit's and its EnvironmentFile's variables on top.
    s_proc_env = dict(os.environ, **s_env)
    w_proc_env = dict(os.environ, **w_env)
    print("scheduler:", shlex.join(s_argv), flush=True)
    print("worker:   ", shlex.join(w_argv), flush=True)
    s_log, w_log = f"{tmp}/scheduler.log", f"{tmp}/worker.log"
    scheduler = start(s_argv, s_proc_env, s_log)
    worker = None
    try:
        worker = start(w_argv, w_proc_env, w_log)
        address = f"127.0.0.1:{grpc}"
        wait_healthy(cli, "scheduler", address, scheduler, s_log)
        wait_healthy(cli, "worker", f"127.0.0.1:{worker_grpc}", worker, w_log)
        served = os.path.splitext(os.path.basename(model))[0]
        deadline = time.monotonic() + 30
        while True:  # the worker registers itself (LLORCH_SCHEDULER)
            listed = subprocess.run([cli, "models", "--scheduler", address, "--format", "json"],
                                    capture_output=True, text=True, timeout=30).stdout
            try:
                up = {m["name"]: m["workers_up"] for m in json.loads(listed)}
            except ValueError:
                up = {}
            if up.get(served, 0) >= 1:
                break
            check(time.monotonic() < deadline, f"the scheduler never listed {served} up: {listed}\n"
                  f"{open(s_log).read()}\n{open(w_log).read()}")
            time.sleep(0.2)
        out = subprocess.run(
            [cli, "generate", "--scheduler", address, "--model", served, "--prompt", "Once upon a time",
             "--max-tokens", "8", "--ignore-eos", "--temperature", "0", "--format", "jsonl"],
            capture_output=True, text=True, timeout=60)
        check(out.returncode == 0, f"llorch generate failed ({out.returncode}):\n{out.stdout}{out.stderr}")
        events = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        check(events and events[-1].get("event") == "finished" and events[-1].get("reason") == "length"
              and events[-1].get("completion_tokens") == 8, f"unexpected stream: {out.stdout}")
        ok(f"the units' ExecStart lines serve: 8 tokens streamed through the scheduler from {served}")
        with socket.create_connection(("127.0.0.1", http), timeout=5):
            ok(f"the scheduler's HTTP port ({http}) accepts connections")
        with PrometheusServer(tmp, [f"127.0.0.1:{sched_metrics}", f"127.0.0.1:{worker_metrics}"],
                              job="llorch") as prom:
            prom.wait_targets_up()
            for title, expr in dashboard_exprs:
                query = expr.replace("$__rate_interval", "1m")
                prom.wait_for(f"data for the panel '{title}': {query}",
                              lambda: True if prom.api("/api/v1/query", query=query)["result"] else None)
            ok(f"Prometheus scraped both; all {len(dashboard_exprs)} dashboard queries return data")
    finally:
        if worker is not None:
            stop(worker, "llorch-worker")
        stop(scheduler, "llorch-scheduler")
    ok("SIGTERM: both drained and exited 0")


# --- Prometheus, compose ------------------------------------------------------------------------

def check_prometheus_config(compose):
    promtool = shutil.which("promtool")
    if promtool is None:
        SKIPPED.append("promtool not found (Debian package prometheus; tools/setup.sh installs it)")
    else:
        run_tool([promtool, "check", "config", os.path.join(DEPLOY, "prometheus.yml")],
                 "promtool check config deploy/prometheus.yml")
        ok("promtool check config deploy/prometheus.yml")
    config = yaml.safe_load(open(os.path.join(DEPLOY, "prometheus.yml")))
    targets = {t for job in config["scrape_configs"] for sc in job.get("static_configs", [])
               for t in sc["targets"]}
    want = set()
    for name, service in compose["services"].items():
        command = service.get("command") or []
        if command and command[0] in ("llorch-scheduler", "llorch-worker"):
            want.add(f"{name}:{flag_value(command, 'metrics_port')}")
    check(want <= targets, f"prometheus.yml does not scrape {sorted(want - targets)}")
    ok(f"prometheus.yml scrapes every llorch service of the compose file: {sorted(want)}")


def check_compose(flags):
    path = os.path.join(DEPLOY, "docker-compose.yml")
    out = run_tool([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", path],
                   "check-jsonschema (compose-spec)")
    ok(f"docker-compose.yml matches the compose-spec schema ({out.strip().splitlines()[-1]})")
    compose = yaml.safe_load(open(path))  # merge keys resolved
    services = compose["services"]
    volumes = set(compose.get("volumes") or {})
    scheduler_listen = None
    for name, service in services.items():
        for dep in service.get("depends_on") or []:
            check(dep in services, f"compose: {name} depends on unknown service {dep}")
        for mount in service.get("volumes") or []:
            source = mount.split(":")[0]
            check(source.startswith(".") or source.startswith("/") or source in volumes,
                  f"compose: {name} mounts undeclared volume {source}")
            if source.startswith("."):
                check(os.path.exists(os.path.join(DEPLOY, source)), f"compose: {source} missing")
        build = service.get("build")
        if build:
            dockerfile = os.path.normpath(os.path.join(DEPLOY, build["context"], build["dockerfile"]))
            check(dockerfile == os.path.join(DEPLOY, "Dockerfile"), f"compose: {name} builds {dockerfile}")
        command = service.get("command") or []
        if not command or command[0] not in ("llorch-scheduler", "llorch-worker"):
            continue
        program = command[0]
        flags.check(program, command[1:], f"docker-compose.yml {name}")
        listen = flag_value(command, "listen")
        health = service.get("healthcheck", {}).get("test", [])
        kind = "scheduler" if program == "llorch-scheduler" else "worker"
        check(health[:4] == ["CMD", "llorch", "health", f"--{kind}"]
              and port_of(health[4]) == port_of(listen),
              f"compose: {name}'s health check {health} does not ask its own port ({listen})")
        flags.check("llorch health", health[3:], f"docker-compose.yml {name} healthcheck")
        if program == "llorch-scheduler":
            scheduler_listen = (name, port_of(listen))
            check(flag_value(command, "http_listen") and port_of(flag_value(command, "http_listen")) == 8080,
                  "compose: the scheduler's HTTP port is 8080")
        else:
            check(any(m.endswith(":/models:ro") for m in service.get("volumes", [])),
                  f"compose: {name} mounts no models volume at /models read-only")
    workers = [n for n, s in services.items() if (s.get("command") or [None])[0] == "llorch-worker"]
    check(scheduler_listen and len(workers) >= 2, "compose: a scheduler and two workers expected")
    for name in workers:
        check(flag_value(services[name]["command"], "scheduler") == f"{scheduler_listen[0]}:{scheduler_listen[1]}",
              f"compose: {name} does not register with {scheduler_listen[0]}:{scheduler_listen[1]}")
    ok(f"compose: {len(services)} services agree (depends_on, volumes, health checks, registration)")
    return compose


# --- Kubernetes ---------------------------------------------------------------------------------

def size_bytes(text):
    units = {"": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMG]i?B?|)", text)
    check(m and m.group(2) in units, f"size {text!r} not understood")
    return float(m.group(1)) * units[m.group(2)]


def check_k8s(flags):
    folder = os.path.join(DEPLOY, "k8s")
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".yaml"))
    for version in ("1.30.0", "1.37.0"):
        run_tool([tool("kubernetes-validate"), "--strict", "--quiet", "-k", version] + files,
                 f"kubernetes-validate --strict -k {version}")
        ok(f"k8s: {len(files)} files valid against Kubernetes {version} (strict)")
    docs = [d for f in files for d in yaml.safe_load_all(open(f)) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    namespace = next(iter(by_kind["Namespace"]))
    for d in docs:
        if d["kind"] != "Namespace":
            check(d["metadata"].get("namespace") == namespace, f"k8s: {d['kind']}/{d['metadata']['name']} "
                  f"is not in namespace {namespace}")
    config = {}
    for cm in by_kind["ConfigMap"].values():
        config.update(cm["data"])
    deployments = by_kind["Deployment"]
    services = by_kind["Service"]
    found = {}
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]
        labels = pod["metadata"]["labels"]
        check(dep["spec"]["selector"]["matchLabels"].items() <= labels.items(),
              f"k8s: {name}'s selector does not match its pods")
        (container,) = pod["spec"]["containers"]
        program = container["command"][0]
        args = container.get("args", [])
        flags.check(program, args, f"k8s {name}")
        defined = set(config) | {e["name"] for e in container.get("env", [])}
        for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", " ".join(args)):
            check(var in defined, f"k8s: {name} uses $({var}), defined in no ConfigMap or env")
        listen, metrics = port_of(flag_value(args, "listen")), int(flag_value(args, "metrics_port"))
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        check(ports.get("grpc") == listen and ports.get("metrics") == metrics,
              f"k8s: {name}'s container ports {ports} differ from --listen/--metrics_port")
        for probe in ("readinessProbe", "livenessProbe"):
            g = container.get(probe, {}).get("grpc")
            check(g and g["port"] == listen and g.get("service") == "",
                  f"k8s: {name}'s {probe} is not a grpc probe of port {listen}, service \"\"")
        annotations = pod["metadata"].get("annotations", {})
        check(annotations.get("prometheus.io/scrape") == "true"
              and annotations.get("prometheus.io/port") == str(metrics),
              f"k8s: {name}'s scrape annotations do not name port {metrics}")
        check(pod["spec"]["securityContext"].get("runAsNonRoot") is True, f"k8s: {name} may run as root")
        for svc_name, svc in services.items():
            if svc["spec"]["selector"].items() <= labels.items():
                for p in svc["spec"]["ports"]:
                    check(p["targetPort"] in ports, f"k8s: Service {svc_name} targets unknown port {p['targetPort']}")
                found[program] = (name, svc_name, svc, args, container)
    check(set(found) == {"llorch-scheduler", "llorch-worker"}, f"k8s: a Service for each program: {found.keys()}")
    _, s_svc_name, s_svc, s_args, _ = found["llorch-scheduler"]
    check({p["port"] for p in s_svc["spec"]["ports"]} >= {50051, 8080, 9465},
          f"k8s: Service {s_svc_name} must expose 50051, 8080 and 9465")
    check(port_of(flag_value(s_args, "http_listen")) == 8080, "k8s: the scheduler's HTTP port is 8080")
    _, w_svc_name, w_svc, w_args, w_container = found["llorch-worker"]
    check(w_svc["spec"].get("clusterIP") == "None", f"k8s: Service {w_svc_name} must be headless")
    workers = re.sub(r"\$\((\w+)\)", lambda m: config.get(m.group(1), ""), flag_value(s_args, "workers"))
    grpc_port = next(p["port"] for p in w_svc["spec"]["ports"] if p["name"] == "grpc")
    want = f"{w_svc_name}.{namespace}.svc.cluster.local:{grpc_port}"
    check(workers == want, f"k8s: the scheduler's --workers is {workers}, the headless Service is {want}")
    worker_volumes = deployments[found["llorch-worker"][0]]["spec"]["template"]["spec"]["volumes"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in worker_volumes if "persistentVolumeClaim" in v}
    check(any(m["mountPath"] == "/models" and m.get("readOnly") for m in w_container["volumeMounts"]),
          "k8s: the worker mounts no models volume at /models read-only")
    check(claims and claims <= set(by_kind.get("PersistentVolumeClaim", {})), f"k8s: models claim {claims} undefined")
    kv = size_bytes(re.sub(r"\$\((\w+)\)", lambda m: config.get(m.group(1), ""), flag_value(w_args, "kv_budget")))
    limit = size_bytes(w_container["resources"]["limits"]["memory"])
    check(limit >= kv + 0.5 * 2**30, f"k8s: the worker's memory limit {limit / 2**30:.2f} GiB is below "
          f"KV budget {kv / 2**30:.2f} GiB + 0.5 GiB overhead (+ weights)")
    ok(f"k8s: Services, ports, probes, annotations, $(VAR)s agree; --workers={workers}; "
       f"memory limit {limit / 2**30:.1f} GiB >= KV {kv / 2**30:.1f} GiB + 0.5 GiB")


# --- Dockerfile ---------------------------------------------------------------------------------

NOT_FOR_BUILD = {  # tools/setup.sh packages for tests, peers and caches, not for the programs
    "ccache", "unzip", "python3-venv", "python3-pip", "prometheus", "nodejs", "npm",
    "python3-torch", "sentencepiece", "systemd", "chromium", "gnuplot-nox", "clang",
    "libclang-rt-14-dev"}
IN_EVERY_DEBIAN_IMAGE = {"libc6", "libgcc-s1", "libstdc++6"}  # apt itself needs them


def apt_installs(command):
    packages = []
    for part in command.split("&&"):
        words = part.split()
        if len(words) > 2 and words[0] == "apt-get" and "install" in words:
            packages += [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
    return packages


def setup_apt_packages():
    text = open(os.path.join(ROOT, "tools", "setup.sh")).read()
    body = re.search(r"^APT_PACKAGES=\((.*?)^\)", text, re.S | re.M).group(1)
    return set(re.sub(r"#[^\n]*", "", body).split())


def needed_packages(files):
    """Debian packages of the shared libraries the files need (readelf NEEDED, ldd, dpkg -S)."""
    if not (shutil.which("readelf") and shutil.which("dpkg") and shutil.which("ldd")):
        return None
    packages = {}
    for f in files:
        needed = re.findall(r"\(NEEDED\).*\[(.+)\]", subprocess.run(
            ["readelf", "-d", f], capture_output=True, text=True).stdout)
        ldd = subprocess.run(["ldd", f], capture_output=True, text=True).stdout
        resolved = dict(re.findall(r"^\s*(\S+) => (\S+)", ldd, re.M))
        for loader in re.findall(r"^\s*(/\S+) \(0x", ldd, re.M):  # the dynamic loader
            resolved[os.path.basename(loader)] = loader
        for soname in needed:
            path = resolved.get(soname)
            check(path, f"{f}: {soname} not found by ldd")
            owner = None
            for candidate in (path, os.path.realpath(path)):
                r = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
                if r.returncode == 0:
                    owner = r.stdout.split(":")[0]
                    break
            check(owner, f"{soname} ({path}) belongs to no Debian package")
            packages.setdefault(owner, set()).add(soname)
    return packages


def check_dockerfile(bins):
    import dockerfile  # PyPI dockerfile: buildkit's parser
    path = os.path.join(DEPLOY, "Dockerfile")
    commands = dockerfile.parse_file(path)
    args, stages = {}, []
    for c in commands:
        if c.cmd == "ARG" and not stages:
            key, _, value = c.value[0].partition("=")
            args[key] = value
        elif c.cmd == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], c.value[0])
            stages.append({"image": image, "name": c.value[2] if len(c.value) > 2 else None, "cmds": []})
        else:
            check(stages or c.cmd == "ARG", f"Dockerfile: {c.cmd} before FROM")
            if stages:
                stages[-1]["cmds"].append(c)
    check(len(stages) == 2, f"Dockerfile: two stages expected, got {len(stages)}")
    build, runtime = stages
    for s in stages:
        check(re.fullmatch(r"debian:bookworm(-slim)?", s["image"]), f"Dockerfile: base {s['image']} is not bookworm")
    build_apt = {p for c in build["cmds"] if c.cmd == "RUN" for p in apt_installs(c.value[0])}
    runtime_apt = {p for c in runtime["cmds"] if c.cmd == "RUN" for p in apt_installs(c.value[0])}
    missing = setup_apt_packages() - NOT_FOR_BUILD - build_apt
    check(not missing, f"Dockerfile: the build stage lacks setup.sh's {sorted(missing)}")
    check({"rustc-web", "cargo-web"} <= build_apt, "Dockerfile: the build stage needs rustc-web cargo-web")
    build_run = " ".join(c.value[0] for c in build["cmds"] if c.cmd == "RUN")
    for target in ("llorch-scheduler", "llorch-worker", "llorch", "llorch_spm_shim"):
        check(re.search(rf"--target [^&]*\b{target}\b", build_run), f"Dockerfile: target {target} not built")
    dev = sorted(p for p in runtime_apt if p.endswith("-dev") or p in ("build-essential", "cmake", "cargo-web"))
    check(not dev, f"Dockerfile: build packages in the runtime stage: {dev}")
    shim = os.path.join(os.path.dirname(os.path.dirname(bins["llorch-worker"])), "lib", "libllorch_spm_shim.so")
    needed = needed_packages(list(bins.values()) + ([shim] if os.path.exists(shim) else []))
    if needed is None:
        print("note: readelf/ldd/dpkg missing; runtime libraries not checked")
    else:
        lacking = {p: sorted(s) for p, s in needed.items() if p not in runtime_apt | IN_EVERY_DEBIAN_IMAGE}
        check(not lacking, f"Dockerfile: the runtime stage lacks the packages of {lacking}")
        ok(f"Dockerfile: the runtime stage installs the {len(needed)} packages whose libraries the programs "
           f"and the sentencepiece shim load")
    copied = {os.path.basename(src) for c in runtime["cmds"] if c.cmd == "COPY" and "--from=build" in c.flags
              for src in c.value[:-1]}
    check({"llorch-scheduler", "llorch-worker", "llorch", "libllorch_spm_shim.so"} <= copied,
          f"Dockerfile: the runtime stage copies {sorted(copied)}")
    env = {c.value[i]: c.value[i + 1] for c in runtime["cmds"] if c.cmd == "ENV" for i in range(0, len(c.value), 2)}
    check(env.get("LLORCH_SPM_SHIM", "").endswith("/libllorch_spm_shim.so"), "Dockerfile: LLORCH_SPM_SHIM unset")
    users = [c.value[0] for c in runtime["cmds"] if c.cmd == "USER"]
    check(users and users[-1].split(":")[0] not in ("root", "0"), f"Dockerfile: runs as {users or 'root'}")
    check(os.path.exists(path + ".dockerignore"), "Dockerfile: Dockerfile.dockerignore missing")
    ok(f"Dockerfile: {build['image']} builds setup.sh's packages' way, {runtime['image']} runs as "
       f"{users[-1]} with {sorted(copied)}")


# --- Grafana ------------------------------------------------------------------------------------

def dashboard_queries():
    dash = json.load(open(os.path.join(DEPLOY, "grafana", "llorch.json")))
    exprs = [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]
    check(exprs, "grafana: no queries")
    documented = set(re.findall(r"`(llorch_[a-z_]+)", open(os.path.join(ROOT, "docs", "metrics.md")).read()))
    used = set()
    for title, expr in exprs:
        for name in re.findall(r"\bllorch_[a-z_]+", expr):
            base = re.sub(r"_(bucket|count|sum)$", "", name)
            check(name in documented or base in documented, f"grafana '{title}': {name} is not in docs/metrics.md")
            used.add(base if base in documented else name)
    for need in ["llorch_scheduler_requests_total", "llorch_scheduler_time_to_first_token_seconds",
                 "llorch_scheduler_relayed_tokens_total", "llorch_worker_generated_tokens_total",
                 "llorch_scheduler_queue_depth", "llorch_scheduler_workers",
                 "llorch_worker_kv_cache_used_bytes"]:
        check(need in used, f"grafana: no panel shows {need}")
    return exprs


def check_dashboard(tmp, exprs):
    promtool = shutil.which("promtool")
    if promtool is None:
        return
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"llorch:dashboard:{i}", "expr": e.replace("$__rate_interval", "1m")}
        for i, (_, e) in enumerate(exprs)]}]}
    path = os.path.join(tmp, "dashboard-rules.yml")
    with open(path, "w") as f:
        yaml.safe_dump(rules, f)
    run_tool([promtool, "check", "rules", path], "promtool check rules (dashboard queries)")
    ok(f"grafana: {len(exprs)} queries parse (promtool check rules) and use documented metrics")


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    scheduler_bin, worker_bin, cli_bin, model = (os.path.abspath(a) for a in sys.argv[1:])
    bins = {"llorch-scheduler": scheduler_bin, "llorch-worker": worker_bin, "llorch": cli_bin}
    with tempfile.TemporaryDirectory(prefix="llorch-deploy-") as tmp:
        try:
            flags = Flags(scheduler_bin, worker_bin, cli_bin)
            compose = check_compose(flags)
            check_prometheus_config(compose)
            check_k8s(flags)
            check_dockerfile(bins)
            exprs = dashboard_queries()
            check_dashboard(tmp, exprs)
            check_systemd_analyze(tmp, bins)
            run_units(tmp, bins, cli_bin, model, flags, exprs)
            ok(f"{flags.checked} --flags in compose, k8s and the units are known to the programs")
        except (TestFailure, subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
            print(f"FAIL: {error}", file=sys.stderr)
            return 1
    if SKIPPED:
        for reason in SKIPPED:
            print(f"SKIP: {reason}")
        return 77
    print("deploy: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

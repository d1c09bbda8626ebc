"""Shared helpers for the benchmark scripts: processes, pinning, RSS, tables, results.

Benchmarks are programs, not tests: each prints a table and writes its numbers to
``bench/results/<name>.json`` together with the machine it ran on.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import re
import resource
import selectors
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from rtserver.runner import run_uvloop as run_uvloop  # the bench scripts import it from here

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
READY = re.compile(rb"rtserver ready on http://[^:]+:(\d+)/")


# ------------------------------------------------------------------ machine and results
def machine() -> dict[str, Any]:
    model = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": sorted(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "machine": machine(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        **data,
    }
    path.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    return path


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:,.1f}" if abs(v) >= 100 else f"{v:,.3f}"
        return f"{v:,}" if isinstance(v, int) else str(v)

    body = [[cell(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "-" * len(line)]
    out += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(out)


def min_median(values: Sequence[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "runs": len(values)}


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank (same definition as the load tester's report)."""
    from loadtest.report import percentile as p

    return p(values, q)


# ------------------------------------------------------------------ processes
def cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def pin(pid: int, cores: Sequence[int] | None) -> None:
    if cores:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, set(cores))


def children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
            out += [int(c) for c in text.split()]
    return out


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def raise_nofile(n: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(n, hard) if hard != resource.RLIM_INFINITY else n
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def wait_line(proc: subprocess.Popen[bytes], pattern: re.Pattern[bytes], timeout: float) -> re.Match[bytes]:
    """Read ``proc.stdout`` until ``pattern`` matches; raises ``TimeoutError``/``RuntimeError``."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline, buf = time.monotonic() + timeout, b""
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"process exited with {proc.returncode}: {buf[-2000:]!r}")
            if sel.select(timeout=0.2):
                buf += os.read(proc.stdout.fileno(), 65536)
                if m := pattern.search(buf):
                    return m
        raise TimeoutError(f"no {pattern.pattern!r} within {timeout} s: {buf[-2000:]!r}")
    finally:
        sel.close()


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)


@contextlib.contextmanager
def gateway(
    *flags: str,
    cores: Sequence[int] | None = None,
    worker_cores: Sequence[int] | None = None,
    timeout: float = 300.0,
    env: dict[str, str] | None = None,
    launcher: Sequence[str] = ("-m", "rtserver"),
    root: Path = ROOT,
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A real ``rtserver serve --port 0 FLAGS`` process; yields (process, port).

    ``cores`` pins the gateway, ``worker_cores`` its embedded worker child (if any).
    ``launcher`` replaces ``-m rtserver`` (e.g. a script that monkeypatches, then runs the CLI).
    ``root``: the checkout whose code runs (another one for a before/after). It is the
    process's working directory and its PYTHONPATH: ``python -m`` puts the working
    directory first on ``sys.path``, so PYTHONPATH alone would still run this checkout.
    """
    cmd = [sys.executable, *launcher, "serve", "--port", "0", "--log-level", "warning", *flags]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root), **(env or {})},
    )
    try:
        pin(proc.pid, cores)
        port = int(wait_line(proc, READY, timeout).group(1))
        for child in children(proc.pid):
            pin(child, worker_cores or cores)
            for grandchild in children(child):  # an embedded worker's engine host
                pin(grandchild, worker_cores or cores)
        yield proc, port
    finally:
        stop(proc)


def popen_python(args: Sequence[str], cores: Sequence[int] | None = None) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=None, stdin=subprocess.DEVNULL, cwd=ROOT
    )
    pin(proc.pid, cores)
    return proc


def read_json_line(proc: subprocess.Popen[bytes], timeout: float) -> Any:
    """The last stdout line of ``proc`` as JSON, after it exits (bounded)."""
    out, _ = proc.communicate(timeout=timeout)
    lines = [ln for ln in out.splitlines() if ln.strip().startswith(b"{")]
    if not lines:
        raise RuntimeError(f"no JSON result from {proc.args!r} (rc {proc.returncode})")
    return orjson.loads(lines[-1])


def sys_path_root() -> None:
    """Let ``python bench/x.py`` import ``bench.common`` and ``loadtest``."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))

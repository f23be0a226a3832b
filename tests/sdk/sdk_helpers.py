"""Helpers shared by the SDK tests: start tollgate processes, scrape and read /metrics."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

# What conftest.py writes into the gateway's config.
API_KEY = "tg-sdk-test-key"
TEAM = "qa"
OPENAI_MODELS = ["gpt-4o-mini", "gpt-4.1", "text-embedding-3-small"]
ANTHROPIC_MODELS = ["claude-sonnet-4-5"]
GEMINI_MODELS = ["gemini-2.5-flash"]
# An Azure deployment behind a [[models]] name, priced as its base model.
AZURE_MODEL = "azure-gpt-4o"
AZURE_DEPLOYMENT = "gpt4o-prod"
ADMIN_TOKEN = "tg-sdk-admin"

PREFIX = "llm_gateway_"
LISTENING = re.compile(r"listening on (http://\S+)")

# Plain urllib, never through a proxy: every address in these tests is on loopback.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --------------------------------------------------------------------------- processes


@dataclass
class Proc:
    """A running tollgate subprocess and the URL it printed."""

    name: str
    popen: subprocess.Popen
    log_path: Path
    url: str = ""
    stdout_lines: list[str] = field(default_factory=list)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no stderr log)"
        return "\n".join(text.splitlines()[-lines:]) or "(stderr empty)"

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)


def start(name: str, argv: list[str], *, cwd: Path, env: dict[str, str] | None = None,
          timeout: float = 30.0) -> Proc:
    """Start argv, wait for its `listening on http://...` line on stdout, return the Proc.

    stderr goes to a log file in cwd (shown when something fails); stdout keeps being drained
    by a thread so the process can never block on a full pipe.
    """
    log_path = cwd / f"{name}.stderr.log"
    log = open(log_path, "wb")
    popen = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1)
    log.close()
    proc = Proc(name=name, popen=popen, log_path=log_path)
    ready = threading.Event()

    def drain() -> None:
        for line in popen.stdout:
            proc.stdout_lines.append(line.rstrip("\n"))
            m = LISTENING.search(line)
            if m and not ready.is_set():
                proc.url = m.group(1).rstrip("/")
                ready.set()

    threading.Thread(target=drain, name=f"{name}-stdout", daemon=True).start()

    deadline = time.monotonic() + timeout
    while not ready.wait(0.05):
        if popen.poll() is not None:
            raise RuntimeError(
                f"{name} exited with code {popen.returncode} before printing 'listening on'.\n"
                f"command: {' '.join(argv)}\nstdout: {proc.stdout_lines}\n"
                f"stderr:\n{proc.log_tail()}")
        if time.monotonic() > deadline:
            proc.stop()
            raise RuntimeError(
                f"{name} printed no 'listening on http://...' line within {timeout}s.\n"
                f"command: {' '.join(argv)}\nstdout: {proc.stdout_lines}\n"
                f"stderr:\n{proc.log_tail()}")
    return proc


# --------------------------------------------------------------------------- HTTP


@dataclass
class HttpReply:
    status: int
    headers: dict[str, str]
    body: bytes


def http(method: str, url: str, *, body: bytes | None = None,
         headers: dict[str, str] | None = None, timeout: float = 10.0) -> HttpReply:
    """One raw HTTP request; non-2xx statuses are returned, not raised."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with _HTTP.open(req, timeout=timeout) as resp:
            return HttpReply(resp.status, {k.lower(): v for k, v in resp.headers.items()},
                             resp.read())
    except urllib.error.HTTPError as e:
        return HttpReply(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


# --------------------------------------------------------------------------- metrics


class Scrape:
    """One parsed Prometheus text scrape."""

    def __init__(self, text: str):
        self.text = text
        self.families = list(text_string_to_metric_families(text))
        self.samples = [s for f in self.families for s in f.samples]

    def value(self, sample_name: str, **labels: str) -> float:
        """Sum of every sample called sample_name whose labels include all of `labels`."""
        return sum(s.value for s in self.samples
                   if s.name == sample_name
                   and all(s.labels.get(k) == v for k, v in labels.items()))

    def has_sample(self, sample_name: str, **labels: str) -> bool:
        return any(s.name == sample_name
                   and all(s.labels.get(k) == v for k, v in labels.items())
                   for s in self.samples)


# Short names for the per-request usage families, as used in expectations below.
USAGE = {
    "prompt": PREFIX + "prompt_tokens_total",
    "completion": PREFIX + "completion_tokens_total",
    "total": PREFIX + "total_tokens_total",
    "cached": PREFIX + "cached_prompt_tokens_total",
    "cache_write": PREFIX + "cache_write_tokens_total",
    "reasoning": PREFIX + "reasoning_tokens_total",
    "requests": PREFIX + "requests_total",
    "errors": PREFIX + "errors_total",
    "estimated": PREFIX + "estimated_usage_requests_total",
}


class Metrics:
    """Scrapes one gateway's /metrics and measures counter growth between scrapes."""

    def __init__(self, gateway_url: str):
        self.url = gateway_url + "/metrics"

    def scrape(self) -> Scrape:
        reply = http("GET", self.url)
        assert reply.status == 200, f"GET /metrics answered {reply.status}: {reply.body[:500]!r}"
        return Scrape(reply.body.decode())

    @staticmethod
    def deltas(before: Scrape, after: Scrape, keys, **labels: str) -> dict[str, float]:
        return {k: after.value(USAGE[k], **labels) - before.value(USAGE[k], **labels)
                for k in keys}

    def wait_for_deltas(self, before: Scrape, expected: dict[str, float], *,
                        timeout: float = 5.0, **labels: str) -> dict[str, float]:
        """Scrape until the growth since `before` of each family in `expected` (keys of USAGE),
        summed over the series matching `labels`, equals the expected value, or until timeout.
        Returns the growth seen last; the caller asserts it equals `expected`.

        Usage is settled when the response body ends, which can be a moment after the client
        has read the last byte, hence the polling.
        """
        deadline = time.monotonic() + timeout
        while True:
            got = self.deltas(before, self.scrape(), expected, **labels)
            if got == expected or time.monotonic() > deadline:
                return got
            time.sleep(0.05)

    def wait_until(self, predicate, *, timeout: float = 5.0) -> Scrape:
        """Scrape until predicate(scrape) is true or timeout. Returns a scrape taken after the
        one that satisfied the predicate: the gateway records a request's families one after
        another and a scrape reads them one after another, so only a later scrape is sure to
        hold the families recorded before the one the predicate saw."""
        deadline = time.monotonic() + timeout
        while True:
            scrape = self.scrape()
            if predicate(scrape):
                return self.scrape()
            if time.monotonic() > deadline:
                return scrape
            time.sleep(0.05)


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def tollgate_bin() -> Path:
    return Path(os.environ.get("TOLLGATE_BIN") or repo_root() / "target" / "debug" / "tollgate")

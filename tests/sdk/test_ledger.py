"""The ledger through `tollgate serve` (default `[ledger]`: SQLite in the working directory):
its gauges keep the exposition valid, OpenMetrics strictly and for promtool."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from prometheus_client.openmetrics.parser import \
    text_string_to_metric_families as openmetrics_families

from sdk_helpers import PREFIX, TEAM, Scrape, http

WINDOW = "from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z"


@pytest.fixture(scope="module")
def written(oai, metrics):
    """A request, and the ledger row it leaves written."""
    oai.chat.completions.create(model="gpt-4o-mini", max_tokens=3,
                                messages=[{"role": "user", "content": "ledger"}])
    # One row per finished request with a valid key, a per-minute count for the others (the
    # bad-key requests of the other tests): wait until the ledger has kept all of them.
    def all_written(s):
        kept = (s.value(PREFIX + "ledger_written_rows_total")
                + s.value(PREFIX + "ledger_unauthenticated_requests_total"))
        return kept >= s.value(PREFIX + "requests_total")

    s = metrics.wait_until(all_written)
    assert all_written(s), "the ledger did not write a row for every request"


def scrape(gateway_url: str, accept: str | None = None) -> str:
    reply = http("GET", f"{gateway_url}/api/v1/metrics?{WINDOW}",
                 headers={"Accept": accept} if accept else {})
    assert reply.status == 200, reply.body[:500]
    return reply.body.decode()


def test_ledger_gauges_count_the_rows(gateway_url, written):
    s = Scrape(scrape(gateway_url))
    assert s.value(PREFIX + "ledger_requests", team=TEAM, provider="sim-openai",
                   model="gpt-4o-mini") >= 1
    assert s.value(PREFIX + "ledger_dropped_rows_total") == 0


def test_ledger_gauges_parse_as_strict_openmetrics(gateway_url, written):
    text = scrape(gateway_url, "application/openmetrics-text; version=1.0.0")
    families = {f.name: f for f in openmetrics_families(text)}
    assert families[PREFIX + "ledger_cost_usd"].type == "gauge"
    assert families[PREFIX + "ledger_requests"].type == "gauge"
    assert families[PREFIX + "ledger_written_rows"].type == "counter"


def test_ledger_gauges_pass_promtool(gateway_url, written):
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not on PATH on CI: install Debian's 'prometheus' package")
        pytest.skip("promtool is not on PATH (Debian package 'prometheus')")
    text = scrape(gateway_url)
    assert PREFIX + "ledger_cost_usd{" in text
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                            text=True, timeout=60)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")

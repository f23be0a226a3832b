"""The /metrics exposition itself: formats, the metric catalogue, cost, timings, in-flight."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading

import anthropic
import openai
import pytest
from prometheus_client.openmetrics.parser import \
    text_string_to_metric_families as openmetrics_families

from sdk_helpers import API_KEY, PREFIX, TEAM, Scrape, http

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Say hello to the metrics."}]
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_ACCEPT = "application/openmetrics-text; version=1.0.0"

# The catalogue: family name (as the parser names it: counters without `_total`) -> type, and
# the labels each series of that family must carry.
TOKEN_LABELS = {"provider", "model", "team", "key"}
CATALOGUE = {
    "prompt_tokens": ("counter", TOKEN_LABELS),
    "completion_tokens": ("counter", TOKEN_LABELS),
    "total_tokens": ("counter", TOKEN_LABELS),
    "cached_prompt_tokens": ("counter", TOKEN_LABELS),
    "cache_write_tokens": ("counter", TOKEN_LABELS),
    "reasoning_tokens": ("counter", TOKEN_LABELS),
    "cost_usd": ("counter", TOKEN_LABELS),
    "requests": ("counter", TOKEN_LABELS | {"endpoint", "status_code"}),
    "errors": ("counter", {"provider", "model", "team", "endpoint", "status_code", "error_type"}),
    "request_duration_seconds": ("histogram", {"provider", "model", "endpoint"}),
    "time_to_first_token_seconds": ("histogram", {"provider", "model"}),
    "upstream_duration_seconds": ("histogram", {"provider", "model"}),
    "requests_in_flight": ("gauge", {"provider"}),
    "estimated_usage_requests": ("counter", set()),
    "unpriced_requests": ("counter", set()),
    "build_info": ("gauge", {"version"}),
}


@pytest.fixture(scope="module")
def traffic(oai, claude):
    """Some of every kind of request, so that the families have series to show."""
    oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
    list(oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5, stream=True))
    oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5,
                                extra_headers={"x-sim-no-usage": "1"})
    claude.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=MESSAGES,
                           extra_headers={"x-sim-cached-tokens": "2"})
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5,
                                    extra_headers={"x-sim-status": "500"})


def scrape_text(gateway_url: str, accept: str | None = None):
    reply = http("GET", f"{gateway_url}/metrics", headers={"Accept": accept} if accept else {})
    assert reply.status == 200, reply.body[:500]
    return reply.headers.get("content-type"), reply.body.decode()


# --------------------------------------------------------------------------- formats


def test_text_format_content_type(gateway_url, traffic):
    content_type, text = scrape_text(gateway_url)
    assert content_type == TEXT_CONTENT_TYPE
    assert "# EOF" not in text, "the 0.0.4 text format has no EOF marker"
    Scrape(text)  # parses


def test_openmetrics_parses_strictly(gateway_url, traffic):
    content_type, text = scrape_text(gateway_url, OPENMETRICS_ACCEPT)
    assert content_type.startswith("application/openmetrics-text"), content_type
    assert text.endswith("# EOF\n"), text[-200:]

    families = {f.name: f for f in openmetrics_families(text)}  # raises on any violation
    assert families[PREFIX + "prompt_tokens"].type == "counter"
    assert families[PREFIX + "prompt_tokens"].samples, "no series after traffic"
    assert families[PREFIX + "request_duration_seconds"].type == "histogram"


def test_promtool_check_metrics(gateway_url, traffic):
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not on PATH on CI: install Debian's 'prometheus' package")
        pytest.skip("promtool is not on PATH (Debian package 'prometheus'); "
                    "with CI set this is a failure")
    _, text = scrape_text(gateway_url)
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                            text=True, timeout=60)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


# --------------------------------------------------------------------------- the catalogue


def test_catalogue_families_and_labels(metrics, traffic):
    scrape = metrics.scrape()
    families = {f.name: f for f in scrape.families}

    missing = [PREFIX + n for n in CATALOGUE if PREFIX + n not in families]
    assert missing == [], f"families not exposed: {missing}"
    wrong_type = {n: families[PREFIX + n].type for n, (t, _) in CATALOGUE.items()
                  if families[PREFIX + n].type != t}
    assert wrong_type == {}, f"families of the wrong type: {wrong_type}"
    for name, (_, labels) in CATALOGUE.items():
        for sample in families[PREFIX + name].samples:
            assert labels <= set(sample.labels), f"{sample.name} lacks {labels - set(sample.labels)}"

    assert any(s.name.startswith("process_") for s in scrape.samples), "no process_* metrics"
    build = families[PREFIX + "build_info"].samples
    assert len(build) == 1 and build[0].value == 1 and build[0].labels["version"]


def test_traffic_left_series_behind(metrics, traffic):
    # Estimates are settled on a blocking thread (the first one loads the tokenizer): wait.
    scrape = metrics.wait_until(
        lambda s: s.value(PREFIX + "estimated_usage_requests_total") >= 1, timeout=30.0)
    for family in ["prompt_tokens_total", "completion_tokens_total", "total_tokens_total",
                   "cost_usd_total", "requests_total"]:
        assert scrape.value(PREFIX + family, model=MODEL, team=TEAM) > 0, family
    assert scrape.value(PREFIX + "errors_total", model=MODEL, team=TEAM) >= 1
    assert scrape.value(PREFIX + "estimated_usage_requests_total") >= 1
    assert scrape.value(PREFIX + "cached_prompt_tokens_total", model="claude-sonnet-4-5") >= 2


# --------------------------------------------------------------------------- cost


def test_cost_for_priced_model(oai, metrics):
    before = metrics.scrape()
    resp = oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=20)
    assert resp.usage.total_tokens > 0

    cost = PREFIX + "cost_usd_total"
    after = metrics.wait_until(lambda s: s.value(cost, model=MODEL, team=TEAM)
                               > before.value(cost, model=MODEL, team=TEAM))
    grew = after.value(cost, model=MODEL, team=TEAM) - before.value(cost, model=MODEL, team=TEAM)
    assert grew > 0, "gpt-4o-mini has a built-in price: its cost must grow"
    # Well under a cent for a few dozen tokens: catches a unit slip (micro- or nano-USD).
    assert grew < 0.01, grew
    unpriced = PREFIX + "unpriced_requests_total"
    assert after.value(unpriced, model=MODEL) == before.value(unpriced, model=MODEL)


# --------------------------------------------------------------------------- timings, in flight


def test_duration_histograms_measure_the_delay(oai, metrics):
    before = metrics.scrape()
    stream = oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5,
                                         stream=True, extra_headers={"x-sim-delay-ms": "300"})
    assert list(stream)

    def grew(scrape: Scrape, sample: str) -> float:
        return scrape.value(PREFIX + sample, model=MODEL) - before.value(PREFIX + sample,
                                                                         model=MODEL)

    after = metrics.wait_until(lambda s: grew(s, "request_duration_seconds_count") >= 1)
    for hist in ["request_duration_seconds", "upstream_duration_seconds",
                 "time_to_first_token_seconds"]:
        assert grew(after, hist + "_count") == 1, hist
    assert grew(after, "request_duration_seconds_sum") >= 0.3
    assert grew(after, "upstream_duration_seconds_sum") >= 0.3
    assert grew(after, "time_to_first_token_seconds_sum") > 0


def test_requests_in_flight(gateway_url, metrics):
    gauge = PREFIX + "requests_in_flight"
    client = anthropic.Anthropic(base_url=gateway_url, api_key=API_KEY, max_retries=0)
    errors: list[BaseException] = []

    def slow_request():
        try:
            client.messages.create(model="claude-sonnet-4-5", max_tokens=3, messages=MESSAGES,
                                   extra_headers={"x-sim-delay-ms": "1500"})
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    worker = threading.Thread(target=slow_request)
    worker.start()
    during = metrics.wait_until(lambda s: s.value(gauge, provider="sim-anthropic") >= 1,
                                timeout=1.4)
    worker.join(timeout=30)
    assert errors == []
    assert during.value(gauge, provider="sim-anthropic") == 1, "the slow request was not in flight"

    after = metrics.wait_until(lambda s: s.value(gauge) == 0)
    assert after.value(gauge) == 0, "requests_in_flight did not go back to 0"

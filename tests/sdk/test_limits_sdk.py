"""Rate limits and budgets as the official SDKs see them: a second gateway, with limits, in
front of the same simulated provider."""

from __future__ import annotations

import time

import anthropic
import openai
import pytest

from sdk_helpers import Metrics, start, tollgate_bin

LIMITED_KEY = "tg-sdk-limited-key"

CONFIG = """\
[[providers]]
name = "sim-openai"
kind = "openai"
base_url = "{sim}/v1"
api_key = "sk-sim"
models = ["gpt-4o-mini"]

[[providers]]
name = "sim-anthropic"
kind = "anthropic"
base_url = "{sim}"
api_key = "sk-ant-sim"
models = ["claude-sonnet-4-5"]

[[keys]]
name = "limited"
key = "{key}"
team = "limited-team"
limits = {{ requests_per_minute = 3, tokens_per_minute = 100000 }}
"""


@pytest.fixture(scope="module")
def limited_url(stack, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("limited")
    config = workdir / "tollgate.toml"
    config.write_text(CONFIG.format(sim=stack.sim.url, key=LIMITED_KEY))
    proc = start("limited-gateway", [str(tollgate_bin()), "serve", "--config", str(config),
                                     "--listen", "127.0.0.1:0"], cwd=workdir)
    yield proc.url
    proc.stop()


def test_openai_sdk_sees_quota_headers_then_rate_limit_error(limited_url):
    client = openai.OpenAI(base_url=f"{limited_url}/v1", api_key=LIMITED_KEY, max_retries=0)
    remaining = []
    for _ in range(3):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert raw.parse().choices[0].message.content
        assert raw.headers["x-ratelimit-limit-requests"] == "3"
        remaining.append(int(raw.headers["x-ratelimit-remaining-requests"]))
    assert remaining == [2, 1, 0]
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert err.value.status_code == 429
    assert int(err.value.response.headers["retry-after"]) >= 1
    assert err.value.code == "rate_limit_exceeded"
    assert "key `limited`" in err.value.message


def test_anthropic_sdk_gets_rate_limit_error(limited_url):
    client = anthropic.Anthropic(base_url=limited_url, api_key=LIMITED_KEY, max_retries=0)
    # Whatever the other test left of the minute's three requests, the fourth call is refused.
    with pytest.raises(anthropic.RateLimitError) as err:
        for _ in range(4):
            client.messages.create(model="claude-sonnet-4-5", max_tokens=4,
                                   messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 429
    assert err.value.body["error"]["type"] == "rate_limit_error"


# ------------------------------------------------- what the SDKs do with their default retries

RETRY_CONFIG = """\
[[providers]]
name = "sim-openai"
kind = "openai"
base_url = "{sim}/v1"
api_key = "sk-sim"
models = ["gpt-4o-mini"]

[[providers]]
name = "sim-anthropic"
kind = "anthropic"
base_url = "{sim}"
api_key = "sk-ant-sim"
models = ["claude-sonnet-4-5"]

[[keys]]
name = "spent-openai"
key = "tg-sdk-spent-openai"
team = "spent"

[[keys]]
name = "spent-anthropic"
key = "tg-sdk-spent-anthropic"
team = "spent"

[[keys]]
name = "burst-openai"
key = "tg-sdk-burst-openai"
team = "burst"
limits = {{ requests_per_minute = {rpm} }}

[[keys]]
name = "burst-anthropic"
key = "tg-sdk-burst-anthropic"
team = "burst"
limits = {{ requests_per_minute = {rpm} }}

[[teams]]
name = "spent"
# One request of a few tokens spends more than this: the next is refused until next month.
budget = {{ usd = 0.000001, period = "month", action = "block" }}
"""

# 30 a minute: one request back every 2 s, so a rate-limited retry waits about 2 s.
BURST_RPM = 30
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def retry_gateway(stack, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("retries")
    config = workdir / "tollgate.toml"
    config.write_text(RETRY_CONFIG.format(sim=stack.sim.url, rpm=BURST_RPM))
    proc = start("retry-gateway", [str(tollgate_bin()), "serve", "--config", str(config),
                                   "--listen", "127.0.0.1:0"], cwd=workdir)
    yield proc.url
    proc.stop()


def _requests_of(metrics: Metrics, key: str) -> float:
    return metrics.scrape().value("llm_gateway_requests_total", key=key)


def _settled(metrics: Metrics, key: str, count: float) -> float:
    """Requests recorded for `key` once `count` are (or after 5 s, whatever there are)."""
    scrape = metrics.wait_until(
        lambda s: s.value("llm_gateway_requests_total", key=key) >= count)
    return scrape.value("llm_gateway_requests_total", key=key)


def test_openai_sdk_does_not_retry_a_spent_budget(retry_gateway):
    metrics = Metrics(retry_gateway)
    client = openai.OpenAI(base_url=f"{retry_gateway}/v1", api_key="tg-sdk-spent-openai",
                           timeout=30)  # default max_retries (2)
    assert client.max_retries == 2
    create = lambda: client.chat.completions.create(model="gpt-4o-mini", messages=HI,
                                                     max_tokens=4)
    create()  # allowed, and spends more than the whole budget
    before = _settled(metrics, "spent-openai", 1)
    t0 = time.monotonic()
    with pytest.raises(openai.RateLimitError) as err:
        create()
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0, f"the SDK retried or slept: {elapsed:.1f}s"
    assert err.value.code == "budget_exceeded"
    headers = err.value.response.headers
    assert headers["x-should-retry"] == "false"
    assert "retry-after" not in headers
    reset = headers["x-tollgate-budget-reset"]
    assert reset in err.value.message, (reset, err.value.message)
    # Exactly one request reached the gateway for that call.
    assert _settled(metrics, "spent-openai", before + 2) - before == 1
    client.close()


def test_anthropic_sdk_does_not_retry_a_spent_budget(retry_gateway):
    metrics = Metrics(retry_gateway)
    client = anthropic.Anthropic(base_url=retry_gateway, api_key="tg-sdk-spent-anthropic",
                                 timeout=30)  # default max_retries (2)
    assert client.max_retries == 2
    create = lambda: client.messages.create(model="claude-sonnet-4-5", max_tokens=4,
                                            messages=HI)
    # The team's budget may already be spent by the openai test: either way it is after this.
    try:
        create()  # allowed, and spends more than the whole budget
    except anthropic.RateLimitError:
        pass
    before = _settled(metrics, "spent-anthropic", 1)
    t0 = time.monotonic()
    with pytest.raises(anthropic.RateLimitError) as err:
        create()
    elapsed = time.monotonic() - t0
    # Before x-should-retry, this call slept for the Retry-After: the rest of the month.
    assert elapsed < 2.0, f"the SDK retried or slept: {elapsed:.1f}s"
    headers = err.value.response.headers
    assert headers["x-should-retry"] == "false"
    assert "retry-after" not in headers
    assert headers["x-tollgate-budget-reset"] in err.value.message
    assert _settled(metrics, "spent-anthropic", before + 2) - before == 1
    client.close()


def _exhaust(call) -> None:
    """Spends the key's request bucket: calls (without retries) until one is refused."""
    for _ in range(BURST_RPM + 5):
        try:
            call()
        except (openai.RateLimitError, anthropic.RateLimitError):
            return
    pytest.fail(f"{BURST_RPM + 5} requests passed a {BURST_RPM}/minute limit")


def test_openai_sdk_retries_a_rate_limit_after_retry_after(retry_gateway):
    metrics = Metrics(retry_gateway)
    no_retry = openai.OpenAI(base_url=f"{retry_gateway}/v1", api_key="tg-sdk-burst-openai",
                             max_retries=0, timeout=30)
    _exhaust(lambda: no_retry.chat.completions.create(model="gpt-4o-mini", messages=HI,
                                                      max_tokens=4))
    client = openai.OpenAI(base_url=f"{retry_gateway}/v1", api_key="tg-sdk-burst-openai",
                           timeout=30)
    before = _settled(metrics, "burst-openai", BURST_RPM + 1)
    t0 = time.monotonic()
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=4)
    elapsed = time.monotonic() - t0
    assert reply.choices[0].message.content
    # Refused, then retried after the Retry-After (1 or 2 s, a request refills every 2 s).
    assert 0.9 <= elapsed < 10, elapsed
    assert _settled(metrics, "burst-openai", before + 2) - before == 2
    no_retry.close()
    client.close()


def test_anthropic_sdk_retries_a_rate_limit_after_retry_after(retry_gateway):
    metrics = Metrics(retry_gateway)
    no_retry = anthropic.Anthropic(base_url=retry_gateway, api_key="tg-sdk-burst-anthropic",
                                   max_retries=0, timeout=30)
    _exhaust(lambda: no_retry.messages.create(model="claude-sonnet-4-5", max_tokens=4,
                                              messages=HI))
    client = anthropic.Anthropic(base_url=retry_gateway, api_key="tg-sdk-burst-anthropic",
                                 timeout=30)
    before = _settled(metrics, "burst-anthropic", BURST_RPM + 1)
    t0 = time.monotonic()
    reply = client.messages.create(model="claude-sonnet-4-5", max_tokens=4, messages=HI)
    elapsed = time.monotonic() - t0
    assert reply.content
    assert 0.9 <= elapsed < 10, elapsed
    assert _settled(metrics, "burst-anthropic", before + 2) - before == 2
    no_retry.close()
    client.close()

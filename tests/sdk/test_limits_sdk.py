"""Rate limits and budgets as the official SDKs see them: a second gateway, with limits, in
front of the same simulated provider."""

from __future__ import annotations

import anthropic
import openai
import pytest

from sdk_helpers import start, tollgate_bin

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

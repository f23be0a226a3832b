"""The response cache as the official SDKs see it: a gateway with `[cache] mode = "exact"` in
front of the simulated provider; a second identical call is answered from the cache with the
same content (and a fresh id), and the SDKs parse it as any response. Default retries on."""

from __future__ import annotations

import uuid

import anthropic
import openai
import pytest

from sdk_helpers import Metrics, start, tollgate_bin

CACHE_KEY = "tg-sdk-cache-key"

CONFIG = """\
[cache]
mode = "exact"
ttl_secs = 600

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
name = "cached"
key = "{key}"
team = "cache-team"
"""


@pytest.fixture(scope="module")
def cached_url(stack, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cached")
    config = workdir / "tollgate.toml"
    config.write_text(CONFIG.format(sim=stack.sim.url, key=CACHE_KEY))
    proc = start("cached-gateway", [str(tollgate_bin()), "serve", "--config", str(config),
                                    "--listen", "127.0.0.1:0"], cwd=workdir)
    yield proc.url
    proc.stop()


def test_openai_second_identical_call_is_served_from_cache(cached_url):
    client = openai.OpenAI(base_url=f"{cached_url}/v1", api_key=CACHE_KEY)
    metrics = Metrics(cached_url)
    prompt = f"cache me {uuid.uuid4()}"
    ask = dict(model="gpt-4o-mini", temperature=0, max_tokens=16,
               messages=[{"role": "user", "content": prompt}])
    first = client.chat.completions.with_raw_response.create(**ask)
    assert first.headers["x-cache-status"] == "Miss"
    second = client.chat.completions.with_raw_response.create(**ask)
    assert second.headers["x-cache-status"] == "Hit"
    assert second.headers["cache-status"].startswith("Tollgate; hit; ttl=")
    a, b = first.parse(), second.parse()
    assert b.choices[0].message.content == a.choices[0].message.content
    assert b.usage.total_tokens == a.usage.total_tokens
    assert b.id != a.id and b.id.startswith("chatcmpl-")
    scrape = metrics.wait_until(
        lambda s: s.value("llm_gateway_requests_total", cache_status="hit") >= 1)
    assert scrape.value("llm_gateway_requests_total", cache_status="miss") == 1
    assert scrape.value("llm_gateway_cache_saved_tokens_total") == a.usage.total_tokens


def test_openai_stream_is_replayed_from_cache(cached_url):
    client = openai.OpenAI(base_url=f"{cached_url}/v1", api_key=CACHE_KEY)
    ask = dict(model="gpt-4o-mini", temperature=0, max_tokens=16, stream=True,
               stream_options={"include_usage": True},
               messages=[{"role": "user", "content": f"stream me {uuid.uuid4()}"}])

    def run():
        raw = client.chat.completions.with_raw_response.create(**ask)
        text, usage = "", None
        for chunk in raw.parse():
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            if chunk.usage:
                usage = chunk.usage.total_tokens
        return raw.headers["x-cache-status"], text, usage

    miss = run()
    hit = run()
    assert (miss[0], hit[0]) == ("Miss", "Hit")
    assert hit[1] == miss[1] and hit[1]
    assert hit[2] == miss[2] and hit[2]


def test_anthropic_second_identical_call_is_served_from_cache(cached_url):
    client = anthropic.Anthropic(base_url=cached_url, api_key=CACHE_KEY)
    ask = dict(model="claude-sonnet-4-5", max_tokens=16,
               messages=[{"role": "user", "content": f"cache me {uuid.uuid4()}"}])
    first = client.messages.with_raw_response.create(**ask)
    second = client.messages.with_raw_response.create(**ask)
    assert (first.headers["x-cache-status"], second.headers["x-cache-status"]) == ("Miss", "Hit")
    a, b = first.parse(), second.parse()
    assert b.content[0].text == a.content[0].text
    assert b.usage.output_tokens == a.usage.output_tokens
    assert b.id != a.id and b.id.startswith("msg_")


def test_no_store_and_skip_are_honoured_through_the_sdk(cached_url):
    client = openai.OpenAI(base_url=f"{cached_url}/v1", api_key=CACHE_KEY)
    ask = dict(model="gpt-4o-mini", temperature=0, max_tokens=16,
               messages=[{"role": "user", "content": f"do not keep {uuid.uuid4()}"}])
    r = client.chat.completions.with_raw_response.create(
        **ask, extra_headers={"Cache-Control": "no-store"})
    assert r.headers["x-cache-status"] == "Miss"
    r = client.chat.completions.with_raw_response.create(
        **ask, extra_headers={"x-tollgate-cache": "skip"})
    assert r.headers["x-cache-status"] == "Bypass"
    r = client.chat.completions.with_raw_response.create(**ask)
    assert r.headers["x-cache-status"] == "Miss", "nothing was stored"

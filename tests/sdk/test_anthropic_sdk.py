"""The official `anthropic` Python SDK against the gateway, and the metrics it leaves behind.

Anthropic reports input_tokens WITHOUT the prompt-cache parts; the gateway's
prompt_tokens_total counts all input: input_tokens + cache_read + cache_creation.
"""

from __future__ import annotations

import json

import anthropic
import pytest

from sdk_helpers import API_KEY, TEAM, http

MODEL = "claude-sonnet-4-5"
MESSAGES = [{"role": "user", "content": "Name three rivers in Europe and one fact about each."}]


def usage_expectation(usage, requests: int = 1) -> dict:
    cache_read = usage.cache_read_input_tokens or 0
    cache_write = usage.cache_creation_input_tokens or 0
    prompt = usage.input_tokens + cache_read + cache_write
    return {"prompt": prompt, "completion": usage.output_tokens,
            "total": prompt + usage.output_tokens, "cached": cache_read,
            "cache_write": cache_write, "requests": requests}


def test_messages_create(claude, metrics):
    before = metrics.scrape()
    msg = claude.messages.create(model=MODEL, max_tokens=14, messages=MESSAGES)

    assert msg.model == MODEL
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.content[0].type == "text" and msg.content[0].text
    assert msg.usage.input_tokens > 0
    assert msg.usage.output_tokens == 14

    expected = usage_expectation(msg.usage)
    assert metrics.wait_for_deltas(before, expected, model=MODEL, team=TEAM) == expected


def test_messages_stream(claude, metrics):
    before = metrics.scrape()
    with claude.messages.stream(model=MODEL, max_tokens=10, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()

    assert text.strip()
    assert final.content[0].text == text
    assert final.usage.input_tokens > 0
    assert final.usage.output_tokens == 10

    expected = usage_expectation(final.usage)
    assert metrics.wait_for_deltas(before, expected, model=MODEL, team=TEAM) == expected


def test_count_tokens_is_not_usage(claude, metrics):
    before = metrics.scrape()
    count = claude.messages.count_tokens(model=MODEL, messages=MESSAGES)
    assert count.input_tokens > 0

    # A real message afterwards is the marker: once it is counted, everything before it has
    # settled, and the prompt tokens that grew must be that message's alone.
    msg = claude.messages.create(model=MODEL, max_tokens=4, messages=MESSAGES)
    expected = {k: v for k, v in usage_expectation(msg.usage).items() if k != "requests"}
    got = metrics.wait_for_deltas(before, expected, model=MODEL)
    assert got == expected, "count_tokens must not be counted as prompt tokens"


def test_cache_read_tokens(claude, metrics):
    before = metrics.scrape()
    msg = claude.messages.create(model=MODEL, max_tokens=6, messages=MESSAGES,
                                 extra_headers={"x-sim-cached-tokens": "7"})

    assert msg.usage.cache_read_input_tokens == 7
    assert msg.usage.input_tokens > 0

    expected = usage_expectation(msg.usage)
    assert expected["cached"] == 7
    assert expected["prompt"] >= msg.usage.input_tokens + 7
    assert metrics.wait_for_deltas(before, expected, model=MODEL, team=TEAM) == expected


# --------------------------------------------------------------------------- errors


def assert_anthropic_error(body: dict, error_type: str) -> None:
    assert body.get("type") == "error", body
    assert body["error"]["type"] == error_type, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def test_bad_key_is_authentication_error(gateway_url):
    client = anthropic.Anthropic(base_url=gateway_url, api_key="tg-not-a-key", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as info:
        client.messages.create(model=MODEL, max_tokens=3, messages=MESSAGES)

    assert info.value.status_code == 401
    assert_anthropic_error(info.value.response.json(), "authentication_error")


def test_unknown_model_is_not_found(claude):
    with pytest.raises(anthropic.NotFoundError) as info:
        claude.messages.create(model="claude-no-such-model", max_tokens=3, messages=MESSAGES)

    assert info.value.status_code == 404
    assert_anthropic_error(info.value.response.json(), "not_found_error")


def test_malformed_json_is_bad_request(gateway_url):
    reply = http("POST", f"{gateway_url}/v1/messages", body=b'{"model": "claude-sonnet-4-5",',
                 headers={"x-api-key": API_KEY, "anthropic-version": "2023-06-01",
                          "content-type": "application/json"})
    assert reply.status == 400
    assert_anthropic_error(json.loads(reply.body), "invalid_request_error")


def test_upstream_500_is_internal_server_error(claude, metrics):
    before = metrics.scrape()
    with pytest.raises(anthropic.InternalServerError) as info:
        claude.messages.create(model=MODEL, max_tokens=3, messages=MESSAGES,
                               extra_headers={"x-sim-status": "500"})

    assert info.value.status_code == 500
    assert info.value.response.json().get("type") == "error"

    after = metrics.wait_until(
        lambda s: metrics.deltas(before, s, ["errors"], model=MODEL, team=TEAM)["errors"] >= 1)
    assert metrics.deltas(before, after, ["errors"], model=MODEL, team=TEAM)["errors"] >= 1
    assert metrics.deltas(before, after, ["requests"], model=MODEL, team=TEAM,
                          status_code="500") == {"requests": 1}
    assert metrics.deltas(before, after, ["prompt", "completion"], model=MODEL) == \
        {"prompt": 0, "completion": 0}

"""The official `openai` Python SDK against the gateway, and the metrics it leaves behind.

Every call's usage, as the SDK saw it, must equal what the gateway added to its counters
(summed over the series of that model and team). The simulated provider is deterministic:
the same input always reports the same prompt tokens, and output tokens = max_tokens.
"""

from __future__ import annotations

import json

import openai
import pytest

from sdk_helpers import ANTHROPIC_MODELS, API_KEY, OPENAI_MODELS, TEAM, http

MODEL = "gpt-4o-mini"
EMBED_MODEL = "text-embedding-3-small"
MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Name three rivers in Europe and one fact about each of them."},
]


def chat_usage_expectation(usage, requests: int = 1) -> dict:
    return {"prompt": usage.prompt_tokens, "completion": usage.completion_tokens,
            "total": usage.total_tokens, "requests": requests}


# --------------------------------------------------------------------------- chat completions


def test_chat_completion(oai, metrics):
    before = metrics.scrape()
    resp = oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=12)

    assert resp.model == MODEL
    assert resp.choices[0].message.content
    assert resp.usage.prompt_tokens > 0
    assert resp.usage.completion_tokens == 12
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + 12

    expected = chat_usage_expectation(resp.usage)
    assert metrics.wait_for_deltas(before, expected, model=MODEL, team=TEAM) == expected
    # The one request was counted as a success.
    ok = {"requests": 1}
    assert metrics.wait_for_deltas(before, ok, model=MODEL, team=TEAM, status_code="200") == ok


def test_chat_stream_without_include_usage_looks_like_openai(oai, metrics):
    """The gateway asks the provider for usage on its own; the client must not see it."""
    # Reference: the same input, not streamed, tells us what the stream should be counted as.
    start = metrics.scrape()
    reference = oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=9)
    assert reference.usage.prompt_tokens > 0
    expected = chat_usage_expectation(reference.usage)
    assert metrics.wait_for_deltas(start, expected, model=MODEL, team=TEAM) == expected

    before = metrics.scrape()
    stream = oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=9,
                                         stream=True)
    chunks = list(stream)

    assert chunks, "the stream yielded no chunks"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip(), "the stream carried no content"
    usage_chunks = [c for c in chunks if c.usage is not None]
    empty_choice_chunks = [c for c in chunks if not c.choices]
    assert usage_chunks == [], f"client did not ask for usage but got it: {usage_chunks}"
    assert empty_choice_chunks == [], "client got a chunk with empty choices (the usage chunk)"
    assert chunks[-1].choices[0].finish_reason is not None

    # ...and the gateway still counted the tokens, exactly as the non-streamed call reports.
    got = metrics.wait_for_deltas(before, expected, model=MODEL, team=TEAM)
    assert got["prompt"] > 0
    assert got == expected


def test_chat_stream_with_include_usage(oai, metrics):
    before = metrics.scrape()
    stream = oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=7,
                                         stream=True, stream_options={"include_usage": True})
    chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    last = chunks[-1]
    assert last.choices == [], "the usage chunk must be the last one, with empty choices"
    assert last.usage is not None, "the client asked for usage and got no usage chunk"
    assert last.usage.completion_tokens == 7
    assert last.usage.total_tokens == last.usage.prompt_tokens + 7
    assert [c for c in chunks[:-1] if c.usage is not None] == []

    expected = chat_usage_expectation(last.usage)
    assert metrics.wait_for_deltas(before, expected, model=MODEL, team=TEAM) == expected


def test_cached_prompt_tokens(oai, metrics):
    before = metrics.scrape()
    resp = oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5,
                                       extra_headers={"x-sim-cached-tokens": "6"})

    assert resp.usage.prompt_tokens > 6
    assert resp.usage.prompt_tokens_details.cached_tokens == 6

    # OpenAI's prompt_tokens already includes the cached part: it must not be added twice.
    expected = chat_usage_expectation(resp.usage) | {"cached": 6}
    assert metrics.wait_for_deltas(before, expected, model=MODEL, team=TEAM) == expected


def test_reasoning_tokens(oai, metrics):
    before = metrics.scrape()
    resp = oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=10,
                                       extra_headers={"x-sim-reasoning-tokens": "4"})

    assert resp.usage.completion_tokens_details.reasoning_tokens == 4

    expected = chat_usage_expectation(resp.usage) | {"reasoning": 4}
    assert metrics.wait_for_deltas(before, expected, model=MODEL, team=TEAM) == expected


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_no_usage_from_provider_is_estimated(oai, metrics, stream):
    """A provider that reports no usage: the client sees none, the gateway estimates."""
    before = metrics.scrape()
    resp = oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8,
                                       stream=stream, extra_headers={"x-sim-no-usage": "1"})
    if stream:
        chunks = list(resp)
        assert all(c.usage is None for c in chunks)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    else:
        assert resp.usage is None
        assert resp.choices[0].message.content

    # estimated_usage_requests_total has no team label in the contract: filter by model only.
    after = metrics.wait_until(
        lambda s: metrics.deltas(before, s, ["estimated"], model=MODEL)["estimated"] >= 1)
    assert metrics.deltas(before, after, ["estimated"], model=MODEL) == {"estimated": 1}
    got = metrics.deltas(before, after, ["prompt", "completion", "total", "requests"],
                         model=MODEL, team=TEAM)
    assert got["requests"] == 1
    assert got["prompt"] > 0, "an estimate from the request's text must count input tokens"
    assert got["completion"] > 0, "an estimate from the response's text must count output tokens"
    assert got["total"] == got["prompt"] + got["completion"]


# --------------------------------------------------------------------------- other endpoints


def test_legacy_completion(oai, metrics):
    before = metrics.scrape()
    resp = oai.completions.create(model=MODEL, prompt="Say something about tollgates.",
                                  max_tokens=11)

    assert resp.choices[0].text
    assert resp.usage.prompt_tokens > 0
    assert resp.usage.completion_tokens == 11

    expected = chat_usage_expectation(resp.usage)
    assert metrics.wait_for_deltas(before, expected, model=MODEL, team=TEAM) == expected


def test_embeddings(oai, metrics):
    before = metrics.scrape()
    resp = oai.embeddings.create(model=EMBED_MODEL,
                                 input=["the first sentence", "a second, longer sentence here"])

    assert [d.index for d in resp.data] == [0, 1]
    assert all(len(d.embedding) > 0 for d in resp.data)
    assert resp.usage.prompt_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens

    expected = {"prompt": resp.usage.prompt_tokens, "completion": 0,
                "total": resp.usage.total_tokens, "requests": 1}
    assert metrics.wait_for_deltas(before, expected, model=EMBED_MODEL, team=TEAM) == expected


def responses_expectation(usage) -> dict:
    return {"prompt": usage.input_tokens, "completion": usage.output_tokens,
            "total": usage.total_tokens, "requests": 1}


def test_responses(oai, metrics):
    before = metrics.scrape()
    resp = oai.responses.create(model=MODEL, input="Describe a river in one sentence.",
                                max_output_tokens=13)

    assert resp.output_text
    assert resp.usage.input_tokens > 0
    assert resp.usage.output_tokens == 13
    assert resp.usage.total_tokens == resp.usage.input_tokens + 13

    expected = responses_expectation(resp.usage)
    assert metrics.wait_for_deltas(before, expected, model=MODEL, team=TEAM) == expected


def test_responses_stream(oai, metrics):
    before = metrics.scrape()
    events = list(oai.responses.create(model=MODEL, input="Describe a river in one sentence.",
                                       max_output_tokens=13, stream=True))

    types = [e.type for e in events]
    assert "response.output_text.delta" in types
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text.strip()
    completed = [e for e in events if e.type == "response.completed"]
    assert len(completed) == 1 and types[-1] == "response.completed", types
    usage = completed[0].response.usage
    assert usage is not None and usage.output_tokens == 13

    expected = responses_expectation(usage)
    assert metrics.wait_for_deltas(before, expected, model=MODEL, team=TEAM) == expected


def test_models_list(oai):
    ids = {m.id for m in oai.models.list()}
    assert set(OPENAI_MODELS + ANTHROPIC_MODELS) <= ids, ids


# --------------------------------------------------------------------------- errors


def test_bad_key_is_authentication_error(gateway_url, metrics):
    client = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="tg-not-a-key", max_retries=0)
    before = metrics.scrape()
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=3)

    assert info.value.status_code == 401
    assert_openai_error_shape(info.value.response.json())
    # Nothing reached the provider, so no tokens are counted.
    after = metrics.scrape()
    assert metrics.deltas(before, after, ["prompt"], model=MODEL) == {"prompt": 0}


def test_unknown_model_is_not_found(oai):
    with pytest.raises(openai.NotFoundError) as info:
        oai.chat.completions.create(model="no-such-model-xyz", messages=MESSAGES, max_tokens=3)

    assert info.value.status_code == 404
    assert_openai_error_shape(info.value.response.json())


def test_malformed_json_is_bad_request(gateway_url):
    reply = http("POST", f"{gateway_url}/v1/chat/completions", body=b'{"model": "gpt-4o-mini",',
                 headers={"Authorization": f"Bearer {API_KEY}",
                          "Content-Type": "application/json"})
    assert reply.status == 400
    assert_openai_error_shape(json.loads(reply.body))


def assert_openai_error_shape(body: dict) -> None:
    assert set(body) == {"error"}, body
    err = body["error"]
    assert {"message", "type", "param", "code"} <= set(err), err
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["type"]

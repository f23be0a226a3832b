"""The official `openai` SDK calling a Claude model: the gateway translates chat completions to
Anthropic's Messages API and back (request, response, stream, errors), and meters the
provider's own usage. Every number the SDK sees must equal what the gateway counted."""

from __future__ import annotations

import openai
import pytest

from sdk_helpers import TEAM

MODEL = "claude-sonnet-4-5"
MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Name three rivers in Europe and one fact about each of them."},
]


def expectation(usage) -> dict:
    return {"prompt": usage.prompt_tokens, "completion": usage.completion_tokens,
            "total": usage.total_tokens, "requests": 1}


def test_chat_completion_of_a_claude_model(oai, metrics):
    before = metrics.scrape()
    resp = oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=12)

    assert resp.object == "chat.completion"
    assert resp.model == MODEL
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content
    assert resp.choices[0].finish_reason == "stop"  # the simulator's end_turn
    assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens == 12
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + 12

    expected = expectation(resp.usage)
    assert metrics.wait_for_deltas(before, expected, model=MODEL, team=TEAM,
                                   provider="sim-anthropic") == expected
    # Counted on the client's endpoint.
    one = {"requests": 1}
    assert metrics.wait_for_deltas(before, one, model=MODEL, status_code="200",
                                   endpoint="/v1/chat/completions") == one


def test_streamed_chat_of_a_claude_model_with_include_usage(oai, metrics):
    before = metrics.scrape()
    stream = oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=9,
                                         stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage.completion_tokens == 9 and usage.prompt_tokens > 0

    expected = expectation(usage)
    assert metrics.wait_for_deltas(before, expected, model=MODEL, team=TEAM) == expected


def test_streamed_chat_without_include_usage_has_no_usage_chunk_and_is_still_metered(oai, metrics):
    reference = oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=7)
    before = metrics.scrape()
    stream = oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=7, stream=True)
    chunks = []
    for c in stream:
        chunks.append(c)
        if c.choices and c.choices[0].finish_reason:
            break  # as clients do: stop reading at the end of the answer
    stream.close()
    assert all(c.usage is None for c in chunks)
    expected = expectation(reference.usage)
    assert metrics.wait_for_deltas(before, expected, model=MODEL, team=TEAM) == expected
    # Complete, not a client gone: the finish chunk leaves with the provider's message_stop.
    ok = {"requests": 1}
    assert metrics.wait_for_deltas(before, ok, model=MODEL, team=TEAM, status_code="200") == ok


def test_a_field_without_an_equivalent_is_a_400_naming_it(oai, metrics):
    before = metrics.scrape()
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5, n=2)
    assert "`n`" in e.value.message
    expected = {"errors": 1}
    assert metrics.wait_for_deltas(before, expected, team=TEAM, error_type="untranslatable") == expected


# ------------------------------------------------------- the anthropic SDK calling an OpenAI model

OPENAI_MODEL = "gpt-4o-mini"


def anthropic_expectation(usage) -> dict:
    prompt = usage.input_tokens + (usage.cache_read_input_tokens or 0)
    return {"prompt": prompt, "completion": usage.output_tokens,
            "total": prompt + usage.output_tokens, "requests": 1}


def test_anthropic_sdk_calls_an_openai_model(claude, metrics):
    before = metrics.scrape()
    msg = claude.messages.create(model=OPENAI_MODEL, max_tokens=11, system="Be terse.",
                                 messages=[{"role": "user", "content": "Name three rivers."}])
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.model == OPENAI_MODEL
    assert msg.content[0].type == "text" and msg.content[0].text
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens == 11
    expected = anthropic_expectation(msg.usage)
    assert metrics.wait_for_deltas(before, expected, model=OPENAI_MODEL, team=TEAM,
                                   provider="sim-openai") == expected
    one = {"requests": 1}
    assert metrics.wait_for_deltas(before, one, model=OPENAI_MODEL, endpoint="/v1/messages",
                                   status_code="200") == one


def test_anthropic_sdk_streams_an_openai_model(claude, metrics):
    before = metrics.scrape()
    with claude.messages.stream(model=OPENAI_MODEL, max_tokens=8,
                                messages=[{"role": "user", "content": "Name three rivers."}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.strip() and final.content[0].text == text
    assert final.usage.output_tokens == 8 and final.usage.input_tokens > 0
    expected = anthropic_expectation(final.usage)
    assert metrics.wait_for_deltas(before, expected, model=OPENAI_MODEL, team=TEAM) == expected
    one = {"requests": 1}
    assert metrics.wait_for_deltas(before, one, model=OPENAI_MODEL, team=TEAM, status_code="200") == one

"""The official `openai` SDK calling a Claude, a Gemini and a Bedrock model: the gateway
translates chat completions to Anthropic's Messages API, Gemini's generateContent or Bedrock's
Converse and back (request,
response, stream, tools, errors), and meters the provider's own usage; the `anthropic` SDK
calling an OpenAI model. Every number the SDK sees must equal what the gateway counted."""

from __future__ import annotations

import anthropic
import openai
import pytest

from sdk_helpers import GEMINI_MODELS, TEAM

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


# ------------------------------------------------------- the openai SDK calling a Gemini model

GEMINI_MODEL = GEMINI_MODELS[0]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"], "additionalProperties": False}}}


def test_chat_completion_of_a_gemini_model(oai, metrics):
    before = metrics.scrape()
    resp = oai.chat.completions.create(model=GEMINI_MODEL, messages=MESSAGES, max_tokens=12)

    assert resp.object == "chat.completion"
    assert resp.model == GEMINI_MODEL  # Gemini's modelVersion
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content
    assert resp.choices[0].finish_reason == "stop"  # the simulator's STOP
    assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens == 12

    expected = expectation(resp.usage)
    assert metrics.wait_for_deltas(before, expected, model=GEMINI_MODEL, team=TEAM,
                                   provider="sim-gemini") == expected
    one = {"requests": 1}
    assert metrics.wait_for_deltas(before, one, model=GEMINI_MODEL, status_code="200",
                                   endpoint="/v1/chat/completions") == one


def test_streamed_chat_of_a_gemini_model_with_include_usage(oai, metrics):
    before = metrics.scrape()
    stream = oai.chat.completions.create(model=GEMINI_MODEL, messages=MESSAGES, max_tokens=9,
                                         stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 9  # the simulator's word a token
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage.completion_tokens == 9 and usage.prompt_tokens > 0

    expected = expectation(usage)
    assert metrics.wait_for_deltas(before, expected, model=GEMINI_MODEL, team=TEAM) == expected
    ok = {"requests": 1}
    assert metrics.wait_for_deltas(before, ok, model=GEMINI_MODEL, team=TEAM, status_code="200") == ok


@pytest.mark.parametrize("stream", [False, True])
def test_a_gemini_model_calls_a_tool_and_reads_its_result(oai, metrics, stream):
    before = metrics.scrape()
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    kwargs = dict(model=GEMINI_MODEL, tools=[WEATHER], tool_choice="required", max_tokens=6)
    if stream:
        chunks = list(oai.chat.completions.create(messages=question, stream=True,
                                                  stream_options={"include_usage": True}, **kwargs))
        calls = [t for c in chunks if c.choices for t in (c.choices[0].delta.tool_calls or [])]
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        call_id, name, args = calls[0].id, calls[0].function.name, calls[0].function.arguments
        usage = chunks[-1].usage
    else:
        resp = oai.chat.completions.create(messages=question, **kwargs)
        call = resp.choices[0].message.tool_calls[0]
        finish = [resp.choices[0].finish_reason]
        call_id, name, args = call.id, call.function.name, call.function.arguments
        usage = resp.usage
    assert finish == ["tool_calls"]
    assert name == "get_weather" and args == '{"city":"sim"}'
    expected = expectation(usage)
    assert metrics.wait_for_deltas(before, expected, model=GEMINI_MODEL, team=TEAM) == expected

    # The result goes back as a functionResponse named after the call; the answer is text.
    followup = question + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "Sunny, 21 C"},
    ]
    resp = oai.chat.completions.create(model=GEMINI_MODEL, messages=followup, tools=[WEATHER],
                                       max_tokens=5)
    assert resp.choices[0].finish_reason == "stop" and resp.choices[0].message.content


def test_a_field_gemini_cannot_take_is_a_400_naming_it(oai, metrics):
    before = metrics.scrape()
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model=GEMINI_MODEL, messages=MESSAGES, max_tokens=5,
                                    logprobs=True)
    assert "`logprobs`" in e.value.message
    expected = {"errors": 1}
    assert metrics.wait_for_deltas(before, expected, team=TEAM, error_type="untranslatable") == expected


def test_a_google_error_reaches_the_openai_sdk_as_its_own(oai):
    with pytest.raises(openai.RateLimitError) as e:
        oai.chat.completions.create(
            model=GEMINI_MODEL, messages=MESSAGES, max_tokens=5,
            extra_headers={"x-sim-status": "429"})
    assert e.value.status_code == 429
    assert e.value.code == "RESOURCE_EXHAUSTED"
    assert "Quota exceeded" in e.value.message


# ------------------------------------------------------- the openai SDK calling a Bedrock model

BEDROCK_MODEL = "amazon.nova-lite-v1:0"


def test_chat_completion_of_a_bedrock_model(oai, metrics):
    before = metrics.scrape()
    resp = oai.chat.completions.create(model=BEDROCK_MODEL, messages=MESSAGES, max_tokens=12)
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.content and resp.choices[0].finish_reason == "stop"
    assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens == 12
    expected = expectation(resp.usage)
    assert metrics.wait_for_deltas(before, expected, model=BEDROCK_MODEL, team=TEAM,
                                   provider="sim-bedrock") == expected


def test_streamed_chat_of_a_bedrock_model_with_include_usage(oai, metrics):
    before = metrics.scrape()
    chunks = list(oai.chat.completions.create(model=BEDROCK_MODEL, messages=MESSAGES, max_tokens=9,
                                              stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 9
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage.completion_tokens == 9
    expected = expectation(usage)
    assert metrics.wait_for_deltas(before, expected, model=BEDROCK_MODEL, team=TEAM) == expected
    ok = {"requests": 1}
    assert metrics.wait_for_deltas(before, ok, model=BEDROCK_MODEL, team=TEAM, status_code="200") == ok


@pytest.mark.parametrize("stream", [False, True])
def test_a_bedrock_model_calls_a_tool_and_reads_its_result(oai, metrics, stream):
    before = metrics.scrape()
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    kwargs = dict(model=BEDROCK_MODEL, tools=[WEATHER], tool_choice="required", max_tokens=6)
    if stream:
        chunks = list(oai.chat.completions.create(messages=question, stream=True,
                                                  stream_options={"include_usage": True}, **kwargs))
        calls = [t for c in chunks if c.choices for t in (c.choices[0].delta.tool_calls or [])]
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        call_id, name = calls[0].id, calls[0].function.name
        args = "".join(t.function.arguments or "" for t in calls)
        usage = chunks[-1].usage
    else:
        resp = oai.chat.completions.create(messages=question, **kwargs)
        call = resp.choices[0].message.tool_calls[0]
        finish = [resp.choices[0].finish_reason]
        call_id, name, args = call.id, call.function.name, call.function.arguments
        usage = resp.usage
    assert finish == ["tool_calls"]
    assert call_id == "tooluse_sim0001" and name == "get_weather" and args == '{"city":"sim"}'
    expected = expectation(usage)
    assert metrics.wait_for_deltas(before, expected, model=BEDROCK_MODEL, team=TEAM) == expected

    followup = question + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "Sunny, 21 C"},
    ]
    resp = oai.chat.completions.create(model=BEDROCK_MODEL, messages=followup, tools=[WEATHER],
                                       max_tokens=5)
    assert resp.choices[0].finish_reason == "stop" and resp.choices[0].message.content


def test_a_bedrock_error_reaches_the_openai_sdk_as_its_own(oai):
    with pytest.raises(openai.RateLimitError) as e:
        oai.chat.completions.create(model=BEDROCK_MODEL, messages=MESSAGES, max_tokens=5,
                                    extra_headers={"x-sim-status": "429"})
    assert e.value.status_code == 429


# ---------------------------------- the anthropic SDK calling a Gemini and a Bedrock model
# Two legs through chat: Messages -> chat -> generateContent / Converse, and back.

CLOUD_MODELS = [(GEMINI_MODEL, "sim-gemini"), (BEDROCK_MODEL, "sim-bedrock")]
CLAUDE_WEATHER = {"name": "get_weather", "description": "The weather in a city.",
                  "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                                   "required": ["city"]}}


@pytest.mark.parametrize("model,provider", CLOUD_MODELS)
def test_anthropic_sdk_calls_a_gemini_and_a_bedrock_model(claude, metrics, model, provider):
    before = metrics.scrape()
    msg = claude.messages.create(model=model, max_tokens=11, system="Be terse.",
                                 messages=[{"role": "user", "content": "Name three rivers."}])
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.model == model
    assert msg.content[0].type == "text" and msg.content[0].text
    assert msg.stop_reason == "max_tokens" or msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens == 11
    expected = anthropic_expectation(msg.usage)
    assert metrics.wait_for_deltas(before, expected, model=model, team=TEAM,
                                   provider=provider) == expected
    one = {"requests": 1}
    assert metrics.wait_for_deltas(before, one, model=model, endpoint="/v1/messages",
                                   status_code="200") == one


@pytest.mark.parametrize("model,provider", CLOUD_MODELS)
def test_anthropic_sdk_streams_a_gemini_and_a_bedrock_model(claude, metrics, model, provider):
    before = metrics.scrape()
    with claude.messages.stream(model=model, max_tokens=8,
                                messages=[{"role": "user", "content": "Name three rivers."}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.strip() and final.content[0].text == text
    assert final.model == model
    assert final.usage.output_tokens == 8 and final.usage.input_tokens > 0
    expected = anthropic_expectation(final.usage)
    assert metrics.wait_for_deltas(before, expected, model=model, team=TEAM,
                                   provider=provider) == expected
    one = {"requests": 1}
    assert metrics.wait_for_deltas(before, one, model=model, team=TEAM, status_code="200") == one


@pytest.mark.parametrize("model,provider", CLOUD_MODELS)
@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_sdk_tool_use_with_a_gemini_and_a_bedrock_model(claude, metrics, model, provider,
                                                                  stream):
    before = metrics.scrape()
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    kwargs = dict(model=model, max_tokens=6, tools=[CLAUDE_WEATHER], tool_choice={"type": "any"},
                  messages=question)
    if stream:
        with claude.messages.stream(**kwargs) as s:
            msg = s.get_final_message()
    else:
        msg = claude.messages.create(**kwargs)
    assert msg.stop_reason == "tool_use"
    use = [b for b in msg.content if b.type == "tool_use"][0]
    assert use.name == "get_weather" and use.input == {"city": "sim"}
    expected = anthropic_expectation(msg.usage)
    assert metrics.wait_for_deltas(before, expected, model=model, team=TEAM,
                                   provider=provider) == expected

    followup = question + [
        {"role": "assistant", "content": [{"type": "tool_use", "id": use.id, "name": use.name,
                                           "input": use.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                      "content": "Sunny, 21 C"}]},
    ]
    answer = claude.messages.create(model=model, max_tokens=5, tools=[CLAUDE_WEATHER],
                                    messages=followup)
    assert answer.stop_reason in ("end_turn", "max_tokens")
    assert answer.content[0].type == "text" and answer.content[0].text


@pytest.mark.parametrize("model,provider", CLOUD_MODELS)
def test_a_cloud_error_reaches_the_anthropic_sdk_as_its_own(claude, model, provider):
    with pytest.raises(anthropic.RateLimitError) as e:
        claude.messages.create(model=model, max_tokens=5,
                               messages=[{"role": "user", "content": "hi"}],
                               extra_headers={"x-sim-status": "429"})
    assert e.value.status_code == 429
    assert e.value.body["error"]["type"] == "rate_limit_error"


def test_a_field_the_cloud_cannot_take_is_a_400_naming_it(claude):
    with pytest.raises(anthropic.BadRequestError) as e:
        claude.messages.create(model=GEMINI_MODEL, max_tokens=5, extra_body={"top_k": 3},
                               messages=[{"role": "user", "content": "hi"}])
    assert "`top_k`" in e.value.message

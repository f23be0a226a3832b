"""Hundreds of streams made with the official SDKs, as they make them: the openai SDK reads to
`data: [DONE]` and closes its connection at once, the anthropic SDK stops at `message_stop`.
Every stream must be recorded as `200` with the provider's usage, never as a disconnect and
never estimated (before the fix: 37 of 40 SDK streams were).

The client that did not ask for `stream_options.include_usage` must also receive the stream as
the provider would have sent it without the gateway: no usage chunk and no `usage` member.
"""

from __future__ import annotations

import json

from sdk_helpers import API_KEY, TEAM, http

OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-sonnet-4-5"
STREAMS = 200
MESSAGES = [{"role": "user", "content": "Count to five, one number per line."}]


def test_hundreds_of_openai_sdk_streams_are_all_200_with_reported_usage(oai, metrics):
    before = metrics.scrape()
    seen_prompt = seen_completion = 0
    for i in range(STREAMS):
        asked = i % 2 == 0
        extra = {"stream_options": {"include_usage": True}} if asked else {}
        stream = oai.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES,
                                             max_tokens=5 + i % 7, stream=True, **extra)
        chunks = list(stream)
        if asked:
            usage = chunks[-1].usage
            assert usage is not None and chunks[-1].choices == []
            seen_prompt += usage.prompt_tokens
            seen_completion += usage.completion_tokens
        else:
            assert all(c.usage is None for c in chunks)
            assert all(c.choices for c in chunks), "a usage-only chunk reached the client"
            seen_completion += 5 + i % 7  # the simulated provider writes max_tokens
    expected = STREAMS
    got = metrics.wait_until(lambda s: s.value("llm_gateway_requests_total", model=OPENAI_MODEL,
                                               team=TEAM) - before.value(
        "llm_gateway_requests_total", model=OPENAI_MODEL, team=TEAM) >= expected, timeout=15)
    delta = lambda name, **l: (got.value("llm_gateway_" + name, model=OPENAI_MODEL, team=TEAM, **l)
                               - before.value("llm_gateway_" + name, model=OPENAI_MODEL,
                                              team=TEAM, **l))
    assert delta("requests_total", status_code="200") == expected
    assert delta("errors_total") == 0
    assert delta("estimated_usage_requests_total") == 0
    assert delta("completion_tokens_total") == seen_completion
    # Every stream of this loop has the same prompt; the half that asked saw its count.
    assert delta("prompt_tokens_total") == 2 * seen_prompt


def test_the_stream_a_client_did_not_ask_usage_for_has_no_usage_member(gateway_url):
    """Raw bytes: with the gateway's own include_usage, OpenAI puts `"usage":null` on every
    chunk; the client that did not ask must not see it (nor the usage chunk)."""
    body = json.dumps({"model": OPENAI_MODEL, "messages": MESSAGES, "max_tokens": 4,
                       "stream": True}).encode()
    reply = http("POST", gateway_url + "/v1/chat/completions", body=body,
                 headers={"authorization": f"Bearer {API_KEY}",
                          "content-type": "application/json"})
    assert reply.status == 200
    events = [e for e in reply.body.decode().split("\n\n") if e.strip()]
    assert events[-1] == "data: [DONE]"
    for e in events[:-1]:
        chunk = json.loads(e.removeprefix("data: "))
        assert "usage" not in chunk, e
        assert chunk["choices"], e


def test_hundreds_of_anthropic_sdk_streams_are_all_200_with_reported_usage(claude, metrics):
    before = metrics.scrape()
    seen_in = seen_out = 0
    for i in range(STREAMS):
        with claude.messages.stream(model=ANTHROPIC_MODEL, max_tokens=4 + i % 5,
                                    messages=MESSAGES) as stream:
            final = stream.get_final_message()
        seen_in += final.usage.input_tokens
        seen_out += final.usage.output_tokens
    got = metrics.wait_until(lambda s: s.value("llm_gateway_requests_total",
                                               model=ANTHROPIC_MODEL, team=TEAM)
                             - before.value("llm_gateway_requests_total",
                                            model=ANTHROPIC_MODEL, team=TEAM) >= STREAMS,
                             timeout=15)
    delta = lambda name, **l: (got.value("llm_gateway_" + name, model=ANTHROPIC_MODEL,
                                         team=TEAM, **l)
                               - before.value("llm_gateway_" + name, model=ANTHROPIC_MODEL,
                                              team=TEAM, **l))
    assert delta("requests_total", status_code="200") == STREAMS
    assert delta("errors_total") == 0
    assert delta("estimated_usage_requests_total") == 0
    assert delta("completion_tokens_total") == seen_out
    assert delta("prompt_tokens_total") == seen_in

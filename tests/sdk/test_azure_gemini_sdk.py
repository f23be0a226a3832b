"""The official clients of the two cloud providers against the gateway: `openai.AzureOpenAI`
(deployment paths, the virtual key in `api-key`), the plain OpenAI client on Azure's v1 paths,
and `google-genai` (its base URL pointed at the gateway through its HTTP options). Plain and
streamed; the metrics and the ledger must hold exactly what each SDK saw. Default retries on.
"""

from __future__ import annotations

import json
import time
import urllib.parse

import openai
import pytest
from google import genai
from google.genai import types

from sdk_helpers import ADMIN_TOKEN, API_KEY, AZURE_DEPLOYMENT, AZURE_MODEL, TEAM, http

GEMINI = "gemini-2.5-flash"
MESSAGES = [{"role": "user", "content": "Name three rivers in Europe."}]
WINDOW = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}


def ledger(gateway_url: str, model: str) -> dict[str, int]:
    """The ledger's totals of one model (the usage API, grouped by model)."""
    q = urllib.parse.urlencode(dict(WINDOW, group_by="model", format="json"))
    reply = http("GET", f"{gateway_url}/api/v1/usage?{q}",
                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert reply.status == 200, reply.body[:500]
    for row in json.loads(reply.body)["rows"]:
        if row.get("model") == model:
            return {k: row[k] for k in ("requests", "input_tokens", "output_tokens",
                                        "reasoning_tokens")}
    return {"requests": 0, "input_tokens": 0, "output_tokens": 0, "reasoning_tokens": 0}


def wait_ledger(gateway_url: str, model: str, before: dict[str, int],
                expected: dict[str, int], timeout: float = 10.0) -> dict[str, int]:
    """Polls until the ledger's growth for `model` equals `expected` (rows are batched)."""
    deadline = time.monotonic() + timeout
    while True:
        now = ledger(gateway_url, model)
        got = {k: now[k] - before[k] for k in expected}
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


@pytest.fixture(scope="module")
def azure(gateway_url):
    client = openai.AzureOpenAI(azure_endpoint=gateway_url, api_key=API_KEY,
                                api_version="2024-10-21", timeout=30)
    yield client
    client.close()


@pytest.fixture(scope="module")
def gemini(gateway_url):
    return genai.Client(api_key=API_KEY, http_options=types.HttpOptions(base_url=gateway_url))


# --------------------------------------------------------------------------- Azure OpenAI


def test_azure_deployment_chat(azure, metrics, gateway_url):
    # The sim names the deployment it was called on as the model, as Azure names its base model.
    model = AZURE_DEPLOYMENT
    before, ledger_before = metrics.scrape(), ledger(gateway_url, model)
    resp = azure.chat.completions.create(model=AZURE_MODEL, messages=MESSAGES, max_tokens=7)
    assert resp.model == AZURE_DEPLOYMENT
    assert resp.usage.completion_tokens == 7
    expected = {"prompt": resp.usage.prompt_tokens, "completion": 7,
                "total": resp.usage.total_tokens, "requests": 1}
    assert metrics.wait_for_deltas(before, expected, model=model, team=TEAM,
                                   provider="sim-azure") == expected
    rows = {"requests": 1, "input_tokens": resp.usage.prompt_tokens, "output_tokens": 7}
    assert wait_ledger(gateway_url, model, ledger_before, rows) == rows
    # Priced as the base model, not as an unknown deployment.
    after = metrics.scrape()
    assert after.value("llm_gateway_cost_usd_total", model=model) > 0
    assert after.value("llm_gateway_unpriced_requests_total", model=model) == 0


def test_azure_deployment_stream(azure, metrics, gateway_url):
    model = AZURE_DEPLOYMENT
    before, ledger_before = metrics.scrape(), ledger(gateway_url, model)
    stream = azure.chat.completions.create(model=AZURE_MODEL, messages=MESSAGES, max_tokens=5,
                                           stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 5
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    expected = {"prompt": usage.prompt_tokens, "completion": 5, "requests": 1}
    assert metrics.wait_for_deltas(before, expected, model=model, team=TEAM) == expected
    rows = {"requests": 1, "input_tokens": usage.prompt_tokens, "output_tokens": 5}
    assert wait_ledger(gateway_url, model, ledger_before, rows) == rows


def test_plain_openai_client_on_azure_v1_paths(gateway_url, metrics):
    client = openai.OpenAI(base_url=f"{gateway_url}/openai/v1", api_key=API_KEY, timeout=30)
    before = metrics.scrape()
    resp = client.chat.completions.create(model=AZURE_MODEL, messages=MESSAGES, max_tokens=4)
    client.close()
    assert resp.usage.completion_tokens == 4
    expected = {"prompt": resp.usage.prompt_tokens, "completion": 4, "requests": 1}
    assert metrics.wait_for_deltas(before, expected, model=AZURE_DEPLOYMENT,
                                   team=TEAM) == expected
    # Counted on the operation's endpoint, whichever path reached it.
    one = {"requests": 1}
    assert metrics.wait_for_deltas(before, one, model=AZURE_DEPLOYMENT,
                                   endpoint="/v1/chat/completions") == one


def test_azure_client_with_a_bad_key_gets_openai_401(gateway_url):
    client = openai.AzureOpenAI(azure_endpoint=gateway_url, api_key="tg-wrong",
                                api_version="2024-10-21", timeout=30)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model=AZURE_MODEL, messages=MESSAGES, max_tokens=2)
    client.close()


# --------------------------------------------------------------------------- Gemini


def gemini_expectation(u, requests: int = 1) -> dict[str, int]:
    thoughts = u.thoughts_token_count or 0
    return {"prompt": u.prompt_token_count, "completion": u.candidates_token_count + thoughts,
            "reasoning": thoughts, "requests": requests}


def test_gemini_generate_content(gemini, metrics, gateway_url):
    before, ledger_before = metrics.scrape(), ledger(gateway_url, GEMINI)
    resp = gemini.models.generate_content(
        model=GEMINI, contents="Name three rivers in Europe.",
        config=types.GenerateContentConfig(
            max_output_tokens=8,
            http_options=types.HttpOptions(headers={"x-sim-reasoning-tokens": "3"})))
    assert resp.text
    u = resp.usage_metadata
    assert u.thoughts_token_count == 3 and u.prompt_token_count > 0
    expected = gemini_expectation(u)
    assert metrics.wait_for_deltas(before, expected, model=GEMINI, team=TEAM,
                                   provider="sim-gemini") == expected
    rows = {"requests": 1, "input_tokens": u.prompt_token_count,
            "output_tokens": expected["completion"], "reasoning_tokens": 3}
    assert wait_ledger(gateway_url, GEMINI, ledger_before, rows) == rows


def test_gemini_stream_counts_the_last_cumulative_usage(gemini, metrics, gateway_url):
    before, ledger_before = metrics.scrape(), ledger(gateway_url, GEMINI)
    chunks = list(gemini.models.generate_content_stream(
        model=GEMINI, contents="Write a haiku.",
        config=types.GenerateContentConfig(max_output_tokens=6)))
    assert len(chunks) > 1
    u = chunks[-1].usage_metadata
    assert u.candidates_token_count == 6
    expected = gemini_expectation(u)
    assert metrics.wait_for_deltas(before, expected, model=GEMINI, team=TEAM) == expected
    rows = {"requests": 1, "input_tokens": u.prompt_token_count, "output_tokens": 6}
    assert wait_ledger(gateway_url, GEMINI, ledger_before, rows) == rows


def test_gemini_count_tokens_is_forwarded_not_metered(gemini, metrics):
    before = metrics.scrape()
    resp = gemini.models.count_tokens(model=GEMINI, contents="How many tokens is this?")
    assert resp.total_tokens > 0
    expected = {"prompt": 0, "completion": 0, "requests": 1}
    assert metrics.wait_for_deltas(before, expected, model=GEMINI, team=TEAM) == expected
    one = {"requests": 1}
    assert metrics.wait_for_deltas(before, one, model=GEMINI,
                                   endpoint="/v1beta/models/{model}:countTokens") == one


def test_gemini_bad_key_is_googles_error_shape(gateway_url):
    client = genai.Client(api_key="tg-wrong", http_options=types.HttpOptions(base_url=gateway_url))
    with pytest.raises(genai.errors.ClientError) as e:
        client.models.generate_content(model=GEMINI, contents="hi")
    assert e.value.code == 401
    assert e.value.status == "UNAUTHENTICATED"


def test_gemini_key_in_the_query(gateway_url):
    body = json.dumps({"contents": [{"parts": [{"text": "hi"}]}]}).encode()
    reply = http("POST", f"{gateway_url}/v1beta/models/{GEMINI}:generateContent?key={API_KEY}",
                 body=body, headers={"Content-Type": "application/json"})
    assert reply.status == 200, reply.body[:300]
    assert json.loads(reply.body)["usageMetadata"]["promptTokenCount"] > 0

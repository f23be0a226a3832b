"""Google Vertex AI through the gateway with the official clients, unmodified but for endpoint
and credentials: `google-genai` in Vertex mode (Gemini) and `anthropic.AnthropicVertex` (Claude),
plain and streamed; default retries on.

The clients present the virtual key as their bearer token and their own project and location.
The gateway holds a service account key (made here with `cryptography`); a mock of Google's
token endpoint checks the gateway's RS256 JWT with the key's public half and issues access
tokens; the mock Vertex upstream answers only requests that carry an issued token, on the
configured project and location. Usage in the metrics and the ledger must equal what each
client saw; the regional Claude entry's cost carries its 1.1 uplift, exactly.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import urllib.parse
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import openai
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from google import genai
from google.genai import types
from google.oauth2.credentials import Credentials

from sdk_helpers import Metrics, http, start, tollgate_bin

KEY = "tg-vertex-sdk-key"
TEAM = "vertex-team"
ADMIN = "tg-vertex-admin"
PROJECT = "tollgate-prod"
EMAIL = "gateway@tollgate-prod.iam.gserviceaccount.com"
GEMINI = "gemini-2.5-flash"
CLAUDE = "claude-sonnet-4-5@20250929"
CLAUDE_SERVED = "claude-sonnet-4-5-20250929"  # how Vertex's answers name it
WINDOW = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}


def b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class Google:
    """The mock token endpoint and Vertex upstream, one server; what it saw."""

    def __init__(self, public_key):
        self.public_key = public_key
        self.lock = threading.Lock()
        self.issued: list[str] = []
        self.problems: list[str] = []
        self.upstream: list[dict] = []
        self.url = ""

    def check_assertion(self, form: dict[str, list[str]]) -> str | None:
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return f"grant_type {form.get('grant_type')}"
        head, claims, sig = form["assertion"][0].split(".")
        try:
            self.public_key.verify(b64url_decode(sig), f"{head}.{claims}".encode(),
                                   padding.PKCS1v15(), hashes.SHA256())
        except Exception as e:  # cryptography's InvalidSignature
            return f"signature: {e!r}"
        h, c = json.loads(b64url_decode(head)), json.loads(b64url_decode(claims))
        if h.get("alg") != "RS256" or h.get("kid") != "sdk-test-key-1":
            return f"header {h}"
        if (c.get("iss") != EMAIL or c.get("aud") != f"{self.url}/token"
                or c.get("scope") != "https://www.googleapis.com/auth/cloud-platform"
                or not 0 < c["exp"] - c["iat"] <= 3600 or abs(c["iat"] - time.time()) > 60):
            return f"claims {c}"
        return None


def gemini_answer(chunk_text: str, final: bool, usage: dict | None) -> dict:
    cand = {"content": {"role": "model", "parts": [{"text": chunk_text}]}}
    if final:
        cand["finishReason"] = "STOP"
    out = {"candidates": [cand], "modelVersion": GEMINI,
           "createTime": "2026-12-03T06:40:00.000000Z", "responseId": "vtx-sdk-1"}
    out["usageMetadata"] = dict(usage or {}, trafficType="ON_DEMAND")
    return out


GEMINI_USAGE = {"promptTokenCount": 11, "candidatesTokenCount": 6, "thoughtsTokenCount": 4,
                "totalTokenCount": 21}
CLAUDE_USAGE = {"input_tokens": 17, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0, "output_tokens": 9}


def sse(events: list[tuple[str | None, dict]]) -> bytes:
    out = []
    for name, data in events:
        out.append((f"event: {name}\n" if name else "") + f"data: {json.dumps(data)}\n\n")
    return "".join(out).encode()


def claude_stream() -> bytes:
    start_usage = dict(CLAUDE_USAGE, output_tokens=1)
    return sse([
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_vrtx_01sdk", "type": "message", "role": "assistant",
            "model": CLAUDE_SERVED, "content": [], "stop_reason": None,
            "stop_sequence": None, "usage": start_usage}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Bonjour"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": " le monde."}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta",
                           "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": CLAUDE_USAGE["output_tokens"]}}),
        ("message_stop", {"type": "message_stop"}),
    ])


def make_handler(g: Google):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def reply(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def google_error(self, status: int, state: str, message: str) -> None:
            g.problems.append(message)
            self.reply(status, json.dumps({"error": {"code": status, "message": message,
                                                     "status": state}}).encode())

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            path, _, query = self.path.partition("?")
            if path == "/token":
                problem = g.check_assertion(urllib.parse.parse_qs(body.decode()))
                if problem:
                    g.problems.append(problem)
                    self.reply(400, b'{"error":"invalid_grant","error_description":"bad JWT"}')
                    return
                with g.lock:
                    token = f"ya29.sdk-{len(g.issued) + 1}"
                    g.issued.append(token)
                self.reply(200, json.dumps({"access_token": token, "expires_in": 3599,
                                            "token_type": "Bearer"}).encode())
                return
            with g.lock:
                issued = {f"Bearer {t}" for t in g.issued}
            auth = self.headers.get("Authorization")
            if auth not in issued:  # each provider entry exchanges (and sends) its own token
                self.google_error(401, "UNAUTHENTICATED",
                                  f"upstream got {auth!r}, not an issued access token")
                return
            req = json.loads(body)
            g.upstream.append({"path": path, "query": query, "body": req})
            prefix = f"/v1/projects/{PROJECT}/locations/"
            if path == f"{prefix}global/publishers/google/models/{GEMINI}:generateContent":
                self.reply(200, json.dumps(gemini_answer("Rhine, Danube, Loire.", True,
                                                         GEMINI_USAGE)).encode())
            elif path == f"{prefix}global/publishers/google/models/{GEMINI}:streamGenerateContent":
                early = {"promptTokenCount": 11, "candidatesTokenCount": 2,
                         "totalTokenCount": 13}
                events = [(None, gemini_answer("Rain on", False, early)),
                          (None, gemini_answer(" the roof.", True, GEMINI_USAGE))]
                self.reply(200, sse(events), "text/event-stream")
            elif path == f"{prefix}us-east5/publishers/anthropic/models/{CLAUDE}:rawPredict":
                # The SDK's own version string (vertex-2023-10-16 in Google's docs).
                if "model" in req or not req.get("anthropic_version"):
                    self.google_error(400, "INVALID_ARGUMENT", f"bad Claude body {req}")
                    return
                self.reply(200, json.dumps({
                    "id": "msg_vrtx_01plain", "type": "message", "role": "assistant",
                    "model": CLAUDE_SERVED,
                    "content": [{"type": "text", "text": "Bonjour."}],
                    "stop_reason": "end_turn", "stop_sequence": None,
                    "usage": CLAUDE_USAGE}).encode())
            elif path == f"{prefix}us-east5/publishers/anthropic/models/{CLAUDE}:streamRawPredict":
                if "model" in req or not req.get("anthropic_version") or req.get("stream") is not True:
                    self.google_error(400, "INVALID_ARGUMENT", f"bad Claude stream body {req}")
                    return
                self.reply(200, claude_stream(), "text/event-stream; charset=utf-8")
            elif path == f"{prefix}us-east5/publishers/anthropic/models/count-tokens:rawPredict":
                self.reply(200, b'{"input_tokens": 12}')
            else:
                self.google_error(404, "NOT_FOUND", f"unexpected upstream path {self.path}")

    return Handler


@pytest.fixture(scope="module")
def vertex(tmp_path_factory):
    binary = tollgate_bin()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(f"tollgate binary not found at {binary}", pytrace=False)
    os.environ["NO_PROXY"] = ",".join(filter(None, [os.environ.get("NO_PROXY"),
                                                    "127.0.0.1", "localhost"]))
    work = tmp_path_factory.mktemp("vertex")
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    google = Google(private.public_key())
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(google))
    google.url = f"http://127.0.0.1:{server.server_port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()

    key_file = work / "service-account.json"
    key_file.write_text(json.dumps({
        "type": "service_account", "project_id": PROJECT, "private_key_id": "sdk-test-key-1",
        "private_key": pem, "client_email": EMAIL, "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token"}))
    config = work / "tollgate.toml"
    config.write_text(f"""
[[providers]]
name = "vertex-global"
kind = "vertex"
base_url = "{google.url}"
project = "{PROJECT}"
location = "global"
credentials_file = "{key_file}"
token_uri = "{google.url}/token"
models = ["{GEMINI}"]

# Claude Sonnet 4.5 on a regional endpoint: 10% over the global price.
[[providers]]
name = "vertex-us-east5"
kind = "vertex"
base_url = "{google.url}"
project = "{PROJECT}"
location = "us-east5"
credentials_file = "{key_file}"
token_uri = "{google.url}/token"
price_multiplier = "1.1"
models = ["{CLAUDE}"]

[ledger]
admin_token = "{ADMIN}"

[[keys]]
name = "vertex-sdk"
key = "{KEY}"
team = "{TEAM}"
""")
    gateway = start("gateway", [str(binary), "serve", "--config", str(config),
                                "--listen", "127.0.0.1:0"], cwd=work)
    # The listener opens once both providers hold a token (each exchanges its own): no
    # request is refused for want of one.
    assert len(google.issued) == 2, google.issued
    yield gateway.url, google
    gateway.stop()
    server.shutdown()
    assert google.problems == [], google.problems


@pytest.fixture(scope="module")
def genai_client(vertex):
    url, _ = vertex
    # The client's own project and location; the gateway sends its configured ones.
    return genai.Client(vertexai=True, project="my-laptop-project", location="us-central1",
                        credentials=Credentials(token=KEY),
                        http_options=types.HttpOptions(base_url=url))


@pytest.fixture(scope="module")
def claude_client(vertex):
    url, _ = vertex
    client = anthropic.AnthropicVertex(region="europe-west1", project_id="my-laptop-project",
                                       access_token=KEY, base_url=f"{url}/v1", timeout=30)
    yield client
    client.close()


def ledger(url: str, model: str) -> dict[str, int]:
    q = urllib.parse.urlencode(dict(WINDOW, group_by="model", format="json"))
    reply = http("GET", f"{url}/api/v1/usage?{q}", headers={"Authorization": f"Bearer {ADMIN}"})
    assert reply.status == 200, reply.body[:300]
    for row in json.loads(reply.body)["rows"]:
        if row.get("model") == model:
            return {k: row[k] for k in ("requests", "input_tokens", "output_tokens")}
    return {"requests": 0, "input_tokens": 0, "output_tokens": 0}


def wait_ledger(url: str, model: str, before: dict, want: dict) -> dict:
    deadline = time.monotonic() + 10
    while True:
        got = {k: ledger(url, model)[k] - before[k] for k in want}
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def test_genai_vertex_generate_content(vertex, genai_client):
    url, google = vertex
    metrics = Metrics(url)
    before, rows_before = metrics.scrape(), ledger(url, GEMINI)
    resp = genai_client.models.generate_content(model=GEMINI,
                                                contents="Name three rivers in Europe.")
    assert resp.text == "Rhine, Danube, Loire."
    u = resp.usage_metadata
    want = {"prompt": u.prompt_token_count,
            "completion": u.candidates_token_count + u.thoughts_token_count,
            "reasoning": u.thoughts_token_count, "requests": 1}
    assert want == {"prompt": 11, "completion": 10, "reasoning": 4, "requests": 1}
    assert metrics.wait_for_deltas(before, want, model=GEMINI, team=TEAM,
                                   provider="vertex-global") == want
    rows = {"requests": 1, "input_tokens": 11, "output_tokens": 10}
    assert wait_ledger(url, GEMINI, rows_before, rows) == rows
    # The gateway's project and location, the service account's token (checked by the mock).
    assert google.upstream[-1]["path"].startswith(f"/v1/projects/{PROJECT}/locations/global/")
    # 11 x 0.30 + 10 x 2.50 USD per 1M tokens = 28.3 µUSD.
    cost = metrics.scrape().value("llm_gateway_cost_usd_total", model=GEMINI) - \
        before.value("llm_gateway_cost_usd_total", model=GEMINI)
    assert abs(Decimal(repr(cost)) - Decimal("0.0000283")) < Decimal("1e-12")


def test_genai_vertex_stream(vertex, genai_client):
    url, google = vertex
    metrics = Metrics(url)
    before = metrics.scrape()
    chunks = list(genai_client.models.generate_content_stream(model=GEMINI,
                                                              contents="Write a haiku."))
    assert "".join(c.text or "" for c in chunks) == "Rain on the roof."
    u = chunks[-1].usage_metadata
    want = {"prompt": u.prompt_token_count,
            "completion": u.candidates_token_count + u.thoughts_token_count, "requests": 1}
    assert metrics.wait_for_deltas(before, want, model=GEMINI, team=TEAM) == want
    # Counted on the operation's endpoint, whichever path (Gemini API's, Vertex's) reached it.
    one = {"requests": 1}
    assert metrics.wait_for_deltas(before, one, model=GEMINI,
                                   endpoint="/v1beta/models/{model}:streamGenerateContent") == one
    assert google.upstream[-1]["query"] == "alt=sse"


def test_genai_vertex_express_mode(vertex):
    # Express mode: an API key (the virtual key, in x-goog-api-key) and no project, on
    # /v1beta1/publishers/google/models/...; upstream it is the configured project's path.
    url, google = vertex
    client = genai.Client(vertexai=True, api_key=KEY,
                          http_options=types.HttpOptions(base_url=url))
    metrics = Metrics(url)
    before = metrics.scrape()
    resp = client.models.generate_content(model=GEMINI, contents="Name three rivers.")
    assert resp.text == "Rhine, Danube, Loire."
    want = {"prompt": 11, "completion": 10, "requests": 1}
    assert metrics.wait_for_deltas(before, want, model=GEMINI, team=TEAM,
                                   provider="vertex-global") == want
    assert google.upstream[-1]["path"].startswith(f"/v1/projects/{PROJECT}/locations/global/")


def test_anthropic_vertex_messages(vertex, claude_client):
    url, google = vertex
    metrics = Metrics(url)
    before, rows_before = metrics.scrape(), ledger(url, CLAUDE_SERVED)
    msg = claude_client.messages.create(model=CLAUDE, max_tokens=64,
                                        messages=[{"role": "user", "content": "Say hello."}])
    assert msg.content[0].text == "Bonjour."
    assert msg.usage.input_tokens == 17 and msg.usage.output_tokens == 9
    want = {"prompt": 17, "completion": 9, "requests": 1}
    assert metrics.wait_for_deltas(before, want, model=CLAUDE_SERVED, team=TEAM,
                                   provider="vertex-us-east5") == want
    rows = {"requests": 1, "input_tokens": 17, "output_tokens": 9}
    assert wait_ledger(url, CLAUDE_SERVED, rows_before, rows) == rows
    # (17 x 3.00 + 9 x 15.00) USD per 1M = 186 µUSD, x 1.1 for the regional endpoint.
    cost = metrics.scrape().value("llm_gateway_cost_usd_total", model=CLAUDE_SERVED) - \
        before.value("llm_gateway_cost_usd_total", model=CLAUDE_SERVED)
    assert abs(Decimal(repr(cost)) - Decimal("0.0002046")) < Decimal("1e-12")
    sent = google.upstream[-1]
    assert sent["path"].endswith(f"/locations/us-east5/publishers/anthropic/models/{CLAUDE}:rawPredict")
    assert "model" not in sent["body"]


def test_anthropic_vertex_stream(vertex, claude_client):
    url, _ = vertex
    metrics = Metrics(url)
    before = metrics.scrape()
    with claude_client.messages.stream(model=CLAUDE, max_tokens=64,
                                       messages=[{"role": "user", "content": "Hi"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "Bonjour le monde."
    want = {"prompt": final.usage.input_tokens, "completion": final.usage.output_tokens,
            "requests": 1}
    assert want == {"prompt": 17, "completion": 9, "requests": 1}
    assert metrics.wait_for_deltas(before, want, model=CLAUDE_SERVED, team=TEAM,
                                   provider="vertex-us-east5") == want


def test_anthropic_vertex_count_tokens_is_forwarded_not_metered(vertex, claude_client):
    url, google = vertex
    metrics = Metrics(url)
    before = metrics.scrape()
    n = claude_client.messages.count_tokens(model=CLAUDE,
                                            messages=[{"role": "user", "content": "Hi"}])
    assert n.input_tokens == 12
    assert google.upstream[-1]["body"]["model"] == CLAUDE
    one = {"requests": 1}
    assert metrics.wait_for_deltas(before, one, endpoint="/v1/messages/count_tokens",
                                   provider="vertex-us-east5") == one
    none = {"prompt": 0, "completion": 0}
    assert metrics.wait_for_deltas(before, none, provider="vertex-us-east5") == none


def test_a_wrong_virtual_key_is_refused_in_googles_shape(vertex):
    url, _ = vertex
    client = genai.Client(vertexai=True, project="p", location="us-central1",
                          credentials=Credentials(token="tg-wrong"),
                          http_options=types.HttpOptions(base_url=url))
    with pytest.raises(genai.errors.ClientError) as e:
        client.models.generate_content(model=GEMINI, contents="hi")
    assert e.value.code == 401 and e.value.status == "UNAUTHENTICATED"
    bad = anthropic.AnthropicVertex(region="us-east5", project_id="p", access_token="tg-wrong",
                                    base_url=f"{url}/v1", timeout=30)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model=CLAUDE, max_tokens=8,
                            messages=[{"role": "user", "content": "hi"}])
    bad.close()


# ------------------------------------------- other formats' clients calling Vertex's models
# An OpenAI-format client reaches Gemini on Vertex through generateContent and Claude on Vertex
# through rawPredict; a plain Anthropic client (not AnthropicVertex) reaches both through
# /v1/messages. The mock checks Claude's bodies (no `model`, an `anthropic_version`).

@pytest.fixture(scope="module")
def oai_client(vertex):
    url, _ = vertex
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, timeout=30)
    yield client
    client.close()


@pytest.fixture(scope="module")
def plain_claude(vertex):
    url, _ = vertex
    client = anthropic.Anthropic(base_url=url, api_key=KEY, timeout=30)
    yield client
    client.close()


QUESTION = [{"role": "user", "content": "Name three rivers in Europe."}]


@pytest.mark.parametrize("model,provider,text,usage,method", [
    (GEMINI, "vertex-global", "Rhine, Danube, Loire.", (11, 10), "generateContent"),
    (CLAUDE, "vertex-us-east5", "Bonjour.", (17, 9), "rawPredict"),
])
def test_openai_sdk_calls_gemini_and_claude_on_vertex(vertex, oai_client, model, provider, text,
                                                      usage, method):
    url, google = vertex
    metrics = Metrics(url)
    before = metrics.scrape()
    resp = oai_client.chat.completions.create(model=model, messages=QUESTION, max_tokens=32)
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.content == text
    assert resp.choices[0].finish_reason == "stop"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == usage
    want = {"prompt": usage[0], "completion": usage[1], "requests": 1}
    assert metrics.wait_for_deltas(before, want, team=TEAM, provider=provider) == want
    one = {"requests": 1}
    assert metrics.wait_for_deltas(before, one, provider=provider,
                                   endpoint="/v1/chat/completions") == one
    assert google.upstream[-1]["path"].endswith(f"/models/{model}:{method}")


@pytest.mark.parametrize("model,provider,text,usage", [
    (GEMINI, "vertex-global", "Rain on the roof.", (11, 10)),
    (CLAUDE, "vertex-us-east5", "Bonjour le monde.", (17, 9)),
])
def test_openai_sdk_streams_gemini_and_claude_on_vertex(vertex, oai_client, model, provider, text,
                                                        usage):
    url, _ = vertex
    metrics = Metrics(url)
    before = metrics.scrape()
    chunks = list(oai_client.chat.completions.create(
        model=model, messages=QUESTION, max_tokens=32, stream=True,
        stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    last = chunks[-1]
    assert last.choices == [] and (last.usage.prompt_tokens, last.usage.completion_tokens) == usage
    want = {"prompt": usage[0], "completion": usage[1], "requests": 1}
    assert metrics.wait_for_deltas(before, want, team=TEAM, provider=provider) == want
    ok = {"requests": 1}
    assert metrics.wait_for_deltas(before, ok, provider=provider, status_code="200") == ok


@pytest.mark.parametrize("model,provider,text,usage", [
    (GEMINI, "vertex-global", "Rhine, Danube, Loire.", (11, 10)),
    (CLAUDE, "vertex-us-east5", "Bonjour.", (17, 9)),
])
def test_a_plain_anthropic_client_calls_gemini_and_claude_on_vertex(vertex, plain_claude, model,
                                                                    provider, text, usage):
    url, google = vertex
    metrics = Metrics(url)
    before = metrics.scrape()
    msg = plain_claude.messages.create(model=model, max_tokens=32, messages=QUESTION)
    assert msg.type == "message" and msg.content[0].text == text
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == usage
    want = {"prompt": usage[0], "completion": usage[1], "requests": 1}
    assert metrics.wait_for_deltas(before, want, team=TEAM, provider=provider) == want
    one = {"requests": 1}
    assert metrics.wait_for_deltas(before, one, provider=provider, endpoint="/v1/messages") == one
    if model == CLAUDE:
        assert google.upstream[-1]["body"]["anthropic_version"] == "vertex-2023-10-16"


@pytest.mark.parametrize("model,provider,text", [
    (GEMINI, "vertex-global", "Rain on the roof."),
    (CLAUDE, "vertex-us-east5", "Bonjour le monde."),
])
def test_a_plain_anthropic_client_streams_gemini_and_claude_on_vertex(vertex, plain_claude, model,
                                                                      provider, text):
    url, _ = vertex
    metrics = Metrics(url)
    before = metrics.scrape()
    with plain_claude.messages.stream(model=model, max_tokens=32, messages=QUESTION) as s:
        got = "".join(s.text_stream)
        final = s.get_final_message()
    assert got == text
    want = {"prompt": final.usage.input_tokens + (final.usage.cache_read_input_tokens or 0),
            "completion": final.usage.output_tokens, "requests": 1}
    assert want["prompt"] > 0 and want["completion"] > 0
    assert metrics.wait_for_deltas(before, want, team=TEAM, provider=provider) == want

"""Amazon Bedrock's official clients against the gateway: boto3's `bedrock-runtime` client
(`converse`, `converse_stream`, `invoke_model`, `invoke_model_with_response_stream`,
`count_tokens`) and the anthropic SDK's `AnthropicBedrock`, each changed only in its endpoint
and credentials: the virtual key is presented as a Bedrock API key (`AWS_BEARER_TOKEN_BEDROCK`
for boto3, `api_key` for AnthropicBedrock), which both send as `Authorization: Bearer`.
botocore sends a bearer token only to an https endpoint, so boto3 reaches the gateway through
a TLS front (as behind a load balancer; test certificate `tls-test.crt`, for 127.0.0.1). Over
plain http, boto3 with the virtual key as its access key id works too (`aws_access_key_id`;
the gateway reads the key from the signature's credential and does not verify the signature).

Behind the gateway is a mock Bedrock in this file (real response shapes, AWS event streams
with CRCs) that checks the SigV4 signature of every request Tollgate sent by computing it again
with botocore's own signer (`botocore.auth.SigV4Auth`): the gateway signs with the AWS keys of
its environment, a session token included. Default retries on.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import os
import re
import select
import socket
import ssl
import struct
import threading
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import boto3
import botocore.exceptions
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from sdk_helpers import API_KEY, TEAM, Metrics, start, tollgate_bin

REGION = "us-east-1"
ACCESS_KEY = "AKIDTOLLGATETEST01"
SECRET_KEY = "tollgate/test+secret/key0123456789abcdefgh"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjTOLLGATE//session+token=="
CLAUDE = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
NOVA = "amazon.nova-lite-v1:0"
PROVIDER = "aws"
CERT = Path(__file__).with_name("tls-test.crt")
CERT_KEY = Path(__file__).with_name("tls-test.key")

CONFIG = """\
[[providers]]
name = "{provider}"
kind = "bedrock"
region = "{region}"
base_url = "{upstream}"
model_prefixes = ["us.anthropic.", "amazon.nova-"]

[[keys]]
name = "bedrock-sdk"
key = "{key}"
team = "{team}"
"""


# --------------------------------------------------------------------------- the mock Bedrock


def message(headers: list[tuple[str, str]], payload: bytes) -> bytes:
    """One AWS event-stream message (string headers, CRC-32s)."""
    h = b""
    for k, v in headers:
        h += bytes([len(k)]) + k.encode() + b"\x07" + struct.pack(">H", len(v)) + v.encode()
    prelude = struct.pack(">II", 16 + len(h) + len(payload), len(h))
    prelude += struct.pack(">I", binascii.crc32(prelude))
    body = prelude + h + payload
    return body + struct.pack(">I", binascii.crc32(body))


def event(kind: str, obj) -> bytes:
    return message([(":event-type", kind), (":content-type", "application/json"),
                    (":message-type", "event")], json.dumps(obj).encode())


def chunk(obj) -> bytes:
    return event("chunk", {"bytes": base64.b64encode(json.dumps(obj).encode()).decode(),
                           "p": "abcdefghij"})


CONVERSE_USAGE = {"inputTokens": 21, "outputTokens": 9, "totalTokens": 830,
                  "cacheReadInputTokens": 800, "cacheWriteInputTokens": 0}
STREAM_USAGE = {"inputTokens": 17, "outputTokens": 5, "totalTokens": 22}
CLAUDE_USAGE = {"input_tokens": 13, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 256, "output_tokens": 6}


def converse_body() -> bytes:
    return json.dumps({"metrics": {"latencyMs": 310}, "stopReason": "end_turn",
                       "output": {"message": {"role": "assistant",
                                              "content": [{"text": "The Danube, the Rhine."}]}},
                       "usage": CONVERSE_USAGE}).encode()


def converse_stream_frames() -> list[bytes]:
    words = ["The", " Danube", " and", " the", " Rhine."]
    frames = [event("messageStart", {"p": "abcd", "role": "assistant"})]
    frames += [event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": w},
                                           "p": "abcdefg"}) for w in words]
    frames += [event("contentBlockStop", {"contentBlockIndex": 0, "p": "ab"}),
               event("messageStop", {"stopReason": "end_turn", "p": "abc"}),
               event("metadata", {"metrics": {"latencyMs": 402}, "p": "abcdef",
                                  "usage": STREAM_USAGE})]
    return frames


def claude_body(model: str) -> bytes:
    return json.dumps({"id": "msg_bdrk_01SdkTest", "type": "message", "role": "assistant",
                       "model": model, "content": [{"type": "text", "text": "The Danube."}],
                       "stop_reason": "end_turn", "stop_sequence": None,
                       "usage": CLAUDE_USAGE}).encode()


def claude_stream_frames() -> list[bytes]:
    start_usage = dict(CLAUDE_USAGE, output_tokens=1)
    return [
        chunk({"type": "message_start", "message": {
            "id": "msg_bdrk_01SdkStream", "type": "message", "role": "assistant",
            "model": "claude-haiku-4-5-20251001", "content": [], "stop_reason": None,
            "stop_sequence": None, "usage": start_usage}}),
        chunk({"type": "content_block_start", "index": 0,
               "content_block": {"type": "text", "text": ""}}),
        chunk({"type": "content_block_delta", "index": 0,
               "delta": {"type": "text_delta", "text": "The Danube"}}),
        chunk({"type": "content_block_stop", "index": 0}),
        chunk({"type": "message_delta", "delta": {"stop_reason": "end_turn",
                                                  "stop_sequence": None},
               "usage": {"output_tokens": 6}}),
        chunk({"type": "message_stop", "amazon-bedrock-invocationMetrics": {
            "inputTokenCount": 13, "outputTokenCount": 6, "invocationLatency": 500,
            "firstByteLatency": 200, "cacheReadInputTokenCount": 256,
            "cacheWriteInputTokenCount": 0}}),
    ]


AUTH = re.compile(r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
                  r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), "
                  r"Signature=(?P<sig>[0-9a-f]{64})$")


def signature_problem(handler: BaseHTTPRequestHandler, body: bytes) -> str | None:
    """Why the request's SigV4 signature is not the one botocore computes, if it is not."""
    auth = handler.headers.get("Authorization", "")
    m = AUTH.match(auth)
    if not m:
        return f"not a SigV4 Authorization header: {auth[:60]!r}"
    if (m["key"], m["region"], m["service"]) != (ACCESS_KEY, REGION, "bedrock"):
        return f"credential scope {m['key']}/{m['region']}/{m['service']}"
    signed = m["signed"].split(";")
    for required in ("host", "x-amz-date", "x-amz-security-token"):
        if required not in signed:
            return f"{required} is not signed"
    if handler.headers.get("x-amz-security-token") != SESSION_TOKEN:
        return "wrong session token"
    stamp = handler.headers["x-amz-date"]
    at = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    if abs((datetime.datetime.now(datetime.timezone.utc) - at).total_seconds()) > 300:
        return f"x-amz-date {stamp} is not now"
    # The request as received, with exactly the headers the gateway signed.
    headers = {h: handler.headers[h] for h in signed}
    req = AWSRequest(method=handler.command, url=f"http://{handler.headers['host']}{handler.path}",
                     data=body, headers=headers)
    req.context["timestamp"] = stamp
    signer = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN), "bedrock", REGION)
    want = signer.signature(signer.string_to_sign(req, signer.canonical_request(req)), req)
    return None if want == m["sig"] else f"signature {m['sig']} != botocore's {want}"


class MockBedrock(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[dict] = []

    def log_message(self, *args):  # quiet
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        problem = signature_problem(self, body)
        MockBedrock.seen.append({"path": self.path, "problem": problem, "body": body,
                                 "authorization": self.headers.get("Authorization", "")})
        if problem:
            return self.reply(403, {"message": f"The request signature we calculated does not "
                                               f"match the signature you provided ({problem})"},
                              error="InvalidSignatureException")
        op = self.path.rsplit("/", 1)[-1]
        model = self.path.split("/")[2]
        if op == "converse":
            return self.reply(200, raw=converse_body())
        if op == "count-tokens":
            return self.reply(200, {"inputTokens": 12})
        if op == "invoke":
            return self.reply(200, raw=claude_body("claude-haiku-4-5-20251001"))
        if op == "converse-stream":
            return self.stream(converse_stream_frames())
        if op == "invoke-with-response-stream":
            return self.stream(claude_stream_frames())
        return self.reply(400, {"message": f"unknown operation {op} of {model}"},
                          error="ValidationException")

    def reply(self, status: int, obj=None, raw: bytes | None = None, error: str | None = None):
        data = raw if raw is not None else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", "6d0c3f0e-5d0b-4d4e-9d7a-6c3f5b0e1a2b")
        if error:
            self.send_header("x-amzn-ErrorType", f"{error}:http://internal.amazon.com/")
        self.end_headers()
        self.wfile.write(data)

    def stream(self, frames: list[bytes]):
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.amazon.eventstream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-amzn-RequestId", "7e1d4f1f-6e1c-4e5f-8e8b-7d4f6c1f2b3c")
        self.end_headers()
        for f in frames:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(f), f))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")


# --------------------------------------------------------------------------- the stack


def _pump(tls: ssl.SSLSocket, up: socket.socket) -> None:
    """Copies bytes both ways between a TLS client and the gateway until either side closes."""
    try:
        tls.do_handshake()
        while True:
            ready = [tls] if tls.pending() else select.select([tls, up], [], [], 60)[0]
            if not ready:
                return
            for s in ready:
                data = s.recv(65536)
                if not data:
                    return
                (up if s is tls else tls).sendall(data)
    except (OSError, ssl.SSLError):
        return
    finally:
        tls.close()
        up.close()


def tls_front(port: int) -> tuple[socket.socket, str]:
    """A TLS-terminating front on a free port for the gateway on `port`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(CERT, CERT_KEY)
    listener = socket.create_server(("127.0.0.1", 0))

    def accept() -> None:
        while True:
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            tls = ctx.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            up = socket.create_connection(("127.0.0.1", port))
            threading.Thread(target=_pump, args=(tls, up), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener, f"https://127.0.0.1:{listener.getsockname()[1]}"


@pytest.fixture(scope="module")
def bedrock_gateway(tmp_path_factory):
    binary = tollgate_bin()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(f"tollgate binary not found at {binary}", pytrace=False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), MockBedrock)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    upstream = f"http://127.0.0.1:{server.server_address[1]}"
    workdir = tmp_path_factory.mktemp("bedrock")
    config = workdir / "tollgate.toml"
    config.write_text(CONFIG.format(provider=PROVIDER, region=REGION, upstream=upstream,
                                    key=API_KEY, team=TEAM))
    # The gateway's own AWS keys come from its environment, as on an EC2/ECS host.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               AWS_SESSION_TOKEN=SESSION_TOKEN, NO_PROXY="127.0.0.1,localhost")
    try:
        gateway = start("gateway-bedrock", [str(binary), "serve", "--config", str(config),
                                            "--listen", "127.0.0.1:0"], cwd=workdir, env=env)
    except RuntimeError as e:
        server.shutdown()
        pytest.fail(str(e), pytrace=False)
    yield gateway.url
    gateway.stop()
    server.shutdown()


@pytest.fixture(scope="module")
def bedrock_https(bedrock_gateway):
    """The gateway behind a TLS front."""
    port = int(bedrock_gateway.rsplit(":", 1)[1])
    listener, url = tls_front(port)
    yield url
    listener.close()


@pytest.fixture(scope="module")
def bedrock_metrics(bedrock_gateway) -> Metrics:
    return Metrics(bedrock_gateway)


def _no_aws_env(monkeypatch) -> None:
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)


@pytest.fixture()
def runtime(bedrock_https, monkeypatch):
    """boto3's bedrock-runtime client with only its endpoint and credentials changed: the
    virtual key as the Bedrock API key (botocore sends it as `Authorization: Bearer`)."""
    _no_aws_env(monkeypatch)
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", API_KEY)
    return boto3.client("bedrock-runtime", region_name=REGION, endpoint_url=bedrock_https,
                        verify=str(CERT))


def last_upstream() -> dict:
    assert MockBedrock.seen, "the upstream saw no request"
    seen = MockBedrock.seen[-1]
    assert seen["problem"] is None, seen["problem"]
    assert API_KEY not in seen["authorization"]
    return seen


MESSAGES = [{"role": "user", "content": [{"text": "Name two rivers in Europe."}]}]


# --------------------------------------------------------------------------- boto3


def test_converse(runtime, bedrock_metrics):
    before = bedrock_metrics.scrape()
    resp = runtime.converse(modelId=CLAUDE, messages=MESSAGES,
                            inferenceConfig={"maxTokens": 64})
    assert resp["output"]["message"]["content"][0]["text"] == "The Danube, the Rhine."
    u = resp["usage"]
    seen = last_upstream()
    # The model id encoded as botocore encodes it, signed as sent.
    assert seen["path"] == "/model/us.anthropic.claude-haiku-4-5-20251001-v1%3A0/converse"
    assert json.loads(seen["body"])["messages"] == MESSAGES
    expected = {"prompt": u["inputTokens"] + u["cacheReadInputTokens"],
                "completion": u["outputTokens"], "cached": u["cacheReadInputTokens"],
                "requests": 1}
    assert bedrock_metrics.wait_for_deltas(before, expected, model=CLAUDE, team=TEAM,
                                           provider=PROVIDER) == expected
    after = bedrock_metrics.scrape()
    assert after.value("llm_gateway_cost_usd_total", model=CLAUDE) > \
        before.value("llm_gateway_cost_usd_total", model=CLAUDE)


def test_converse_stream(runtime, bedrock_metrics):
    before = bedrock_metrics.scrape()
    resp = runtime.converse_stream(modelId=NOVA, messages=MESSAGES)
    text, usage = "", None
    for ev in resp["stream"]:
        if "contentBlockDelta" in ev:
            text += ev["contentBlockDelta"]["delta"]["text"]
        if "metadata" in ev:
            usage = ev["metadata"]["usage"]
    assert text == "The Danube and the Rhine."
    assert usage == STREAM_USAGE
    assert last_upstream()["path"] == "/model/amazon.nova-lite-v1%3A0/converse-stream"
    expected = {"prompt": 17, "completion": 5, "requests": 1, "errors": 0}
    assert bedrock_metrics.wait_for_deltas(before, expected, model=NOVA, team=TEAM) == expected


def test_invoke_model(runtime, bedrock_metrics):
    before = bedrock_metrics.scrape()
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64,
            "messages": [{"role": "user", "content": "Name a river in Europe."}]}
    resp = runtime.invoke_model(modelId=CLAUDE, body=json.dumps(body),
                                contentType="application/json", accept="application/json")
    out = json.loads(resp["body"].read())
    assert out["content"][0]["text"] == "The Danube."
    u = out["usage"]
    assert json.loads(last_upstream()["body"]) == body
    expected = {"prompt": u["input_tokens"] + u["cache_read_input_tokens"],
                "completion": u["output_tokens"], "cached": u["cache_read_input_tokens"],
                "requests": 1}
    # Metered under the Bedrock id asked for, not the model name in Claude's body.
    assert bedrock_metrics.wait_for_deltas(before, expected, model=CLAUDE, team=TEAM) == expected


def test_invoke_model_with_response_stream(runtime, bedrock_metrics):
    before = bedrock_metrics.scrape()
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64,
            "messages": [{"role": "user", "content": "Name a river in Europe."}]}
    resp = runtime.invoke_model_with_response_stream(modelId=CLAUDE, body=json.dumps(body))
    events = [json.loads(e["chunk"]["bytes"]) for e in resp["body"]]
    assert [e["type"] for e in events][0] == "message_start"
    metrics = events[-1]["amazon-bedrock-invocationMetrics"]
    text = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    assert text == "The Danube"
    last_upstream()
    expected = {"prompt": metrics["inputTokenCount"] + metrics["cacheReadInputTokenCount"],
                "completion": metrics["outputTokenCount"],
                "cached": metrics["cacheReadInputTokenCount"], "requests": 1}
    assert bedrock_metrics.wait_for_deltas(before, expected, model=CLAUDE, team=TEAM) == expected


def test_count_tokens_is_forwarded_not_metered(runtime, bedrock_metrics):
    if not hasattr(runtime, "count_tokens"):
        pytest.fail("this botocore has no bedrock-runtime count_tokens", pytrace=False)
    before = bedrock_metrics.scrape()
    resp = runtime.count_tokens(modelId=CLAUDE, input={"converse": {"messages": MESSAGES}})
    assert resp["inputTokens"] == 12
    assert last_upstream()["path"].endswith("/count-tokens")
    expected = {"prompt": 0, "completion": 0, "requests": 1}
    assert bedrock_metrics.wait_for_deltas(before, expected, model=CLAUDE) == expected


def test_virtual_key_as_access_key_id_over_http(bedrock_gateway, bedrock_metrics, monkeypatch):
    _no_aws_env(monkeypatch)
    client = boto3.client("bedrock-runtime", region_name=REGION, endpoint_url=bedrock_gateway,
                          aws_access_key_id=API_KEY, aws_secret_access_key="not-checked")
    before = bedrock_metrics.scrape()
    resp = client.converse(modelId=CLAUDE, messages=MESSAGES)
    seen = last_upstream()
    # The client's signature stays with the client: the upstream got the gateway's own.
    assert ACCESS_KEY in seen["authorization"]
    u = resp["usage"]
    expected = {"prompt": u["inputTokens"] + u["cacheReadInputTokens"],
                "completion": u["outputTokens"], "requests": 1}
    assert bedrock_metrics.wait_for_deltas(before, expected, model=CLAUDE, team=TEAM) == expected


def test_gateway_refusals_are_aws_errors(bedrock_https, runtime, monkeypatch):
    # A model no provider serves: ResourceNotFoundException (404), which botocore raises as is.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        runtime.converse(modelId="cohere.command-r-v1:0", messages=MESSAGES)
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    # A virtual key the gateway does not know.
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "tg-not-a-key")
    bad = boto3.client("bedrock-runtime", region_name=REGION, endpoint_url=bedrock_https,
                       verify=str(CERT))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        bad.converse(modelId=CLAUDE, messages=MESSAGES)
    assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 401
    assert "key" in e.value.response["Error"]["Message"].lower()


# --------------------------------------------------------------------------- AnthropicBedrock


@pytest.fixture()
def claude_client(bedrock_gateway, monkeypatch):
    _no_aws_env(monkeypatch)
    client = anthropic.AnthropicBedrock(api_key=API_KEY, base_url=bedrock_gateway,
                                        aws_region=REGION)
    yield client
    client.close()


def test_anthropic_bedrock_messages(claude_client, bedrock_metrics):
    before = bedrock_metrics.scrape()
    msg = claude_client.messages.create(model=CLAUDE, max_tokens=64,
                                        messages=[{"role": "user", "content": "A river?"}])
    assert msg.content[0].text == "The Danube."
    seen = last_upstream()
    assert seen["path"] == "/model/us.anthropic.claude-haiku-4-5-20251001-v1%3A0/invoke"
    # The SDK's body as it sent it: its anthropic_version, no model (that is in the path).
    sent = json.loads(seen["body"])
    assert "anthropic_version" in sent and "model" not in sent
    u = msg.usage
    expected = {"prompt": u.input_tokens + u.cache_read_input_tokens,
                "completion": u.output_tokens, "requests": 1}
    assert bedrock_metrics.wait_for_deltas(before, expected, model=CLAUDE, team=TEAM) == expected


def test_anthropic_bedrock_stream(claude_client, bedrock_metrics):
    before = bedrock_metrics.scrape()
    with claude_client.messages.stream(model=CLAUDE, max_tokens=64,
                                       messages=[{"role": "user", "content": "A river?"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "The Danube"
    assert last_upstream()["path"].endswith("/invoke-with-response-stream")
    u = final.usage
    expected = {"prompt": u.input_tokens + u.cache_read_input_tokens,
                "completion": u.output_tokens, "cached": u.cache_read_input_tokens,
                "requests": 1}
    assert expected["completion"] == 6
    assert bedrock_metrics.wait_for_deltas(before, expected, model=CLAUDE, team=TEAM) == expected

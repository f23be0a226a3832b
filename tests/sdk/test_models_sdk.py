"""`models.list()` of both SDKs against a gateway that routes Claude and GPT models by
prefix: the listing names the priced models those prefixes route, not only exact names."""

from __future__ import annotations

import anthropic
import openai
import pytest

from sdk_helpers import start, tollgate_bin

KEY = "tg-sdk-models-key"

CONFIG = """\
[[providers]]
name = "sim-openai"
kind = "openai"
base_url = "{sim}/v1"
api_key = "sk-sim"
model_prefixes = ["gpt-"]
models = ["o4-mini"]

[[providers]]
name = "sim-anthropic"
kind = "anthropic"
base_url = "{sim}"
api_key = "sk-ant-sim"
model_prefixes = ["claude-"]

[[keys]]
name = "models"
key = "{key}"
team = "qa"
"""


@pytest.fixture(scope="module")
def prefix_gateway(stack, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("models")
    config = workdir / "tollgate.toml"
    config.write_text(CONFIG.format(sim=stack.sim.url, key=KEY))
    proc = start("models-gateway", [str(tollgate_bin()), "serve", "--config", str(config),
                                    "--listen", "127.0.0.1:0"], cwd=workdir)
    yield proc.url
    proc.stop()


def test_anthropic_sdk_lists_prefix_routed_models(prefix_gateway):
    client = anthropic.Anthropic(base_url=prefix_gateway, api_key=KEY, max_retries=0)
    ids = [m.id for m in client.models.list()]
    assert "claude-sonnet-4-5" in ids and "claude-haiku-4-5" in ids, ids
    assert "gpt-4o-mini" in ids and "o4-mini" in ids, ids
    assert len(ids) == len(set(ids))
    # And a listed model can be called.
    reply = client.messages.create(model="claude-haiku-4-5", max_tokens=4,
                                   messages=[{"role": "user", "content": "hi"}])
    assert reply.usage.output_tokens > 0
    client.close()


def test_openai_sdk_lists_prefix_routed_models(prefix_gateway):
    client = openai.OpenAI(base_url=f"{prefix_gateway}/v1", api_key=KEY, max_retries=0)
    owners = {m.id: m.owned_by for m in client.models.list()}
    assert owners["gpt-4o-mini"] == "sim-openai"
    assert owners["o4-mini"] == "sim-openai"
    assert owners["claude-sonnet-4-5"] == "sim-anthropic"
    client.close()

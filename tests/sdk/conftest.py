"""Session fixtures: the simulated provider and the gateway in front of it, both real processes.

The binary is $TOLLGATE_BIN, else target/debug/tollgate under the repo root. Both processes
listen on 127.0.0.1:0 (a free port) and announce it with `listening on http://...` on stdout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import anthropic
import openai
import pytest

from sdk_helpers import (ADMIN_TOKEN, ANTHROPIC_MODELS, API_KEY, AZURE_DEPLOYMENT, AZURE_MODEL,
                         GEMINI_MODELS, OPENAI_MODELS, TEAM, Metrics, Proc, start, tollgate_bin)

CONFIG = """\
[[providers]]
name = "sim-openai"
kind = "openai"
base_url = "{sim}/v1"
forward_headers = ["x-sim-*"]
api_key = "${{SIM_OPENAI_KEY}}"
models = {openai_models}

[[providers]]
name = "sim-anthropic"
kind = "anthropic"
base_url = "{sim}"
forward_headers = ["x-sim-*"]
api_key = "sk-ant-sim"
models = {anthropic_models}

[[providers]]
name = "sim-gemini"
kind = "gemini"
base_url = "{sim}"
forward_headers = ["x-sim-*"]
api_key = "AIza-sim-gemini"
models = {gemini_models}

[[providers]]
name = "sim-azure"
kind = "azure-openai"
base_url = "{sim}"
api_version = "2024-10-21"
forward_headers = ["x-sim-*"]
api_key = "az-sim-key"

[[models]]
name = "{azure_model}"
provider = "sim-azure"
deployment = "{azure_deployment}"
base_model = "gpt-4o-2024-11-20"

[ledger]
admin_token = "{admin}"

[[keys]]
name = "sdk-test"
key = "{key}"
team = "{team}"

# Bedrock's Converse, reached by OpenAI-format clients through translation.
[[providers]]
name = "sim-bedrock"
kind = "bedrock"
region = "us-east-1"
base_url = "{sim}"
forward_headers = ["x-sim-*"]
api_key = "bedrock-api-key-sim"
models = ["amazon.nova-lite-v1:0"]
"""


def pytest_configure(config):
    # The anthropic SDK warns about older model names; the config's model is fixed by the sim.
    config.addinivalue_line("filterwarnings",
                            "ignore:The model .* is deprecated:DeprecationWarning")


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


@dataclass
class Stack:
    sim: Proc
    gateway: Proc

    @property
    def url(self) -> str:
        return self.gateway.url


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Stack:
    binary = tollgate_bin()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(f"tollgate binary not found at {binary}: build it (cargo build) or set "
                    "TOLLGATE_BIN", pytrace=False)

    workdir = tmp_path_factory.mktemp("tollgate")
    # Every address in these tests is on loopback: never let a proxy setting get in the way.
    os.environ["NO_PROXY"] = ",".join(filter(None, [os.environ.get("NO_PROXY"),
                                                    "127.0.0.1", "localhost"]))

    procs: list[Proc] = []
    try:
        sim = start("sim", [str(binary), "sim", "--listen", "127.0.0.1:0"], cwd=workdir)
        procs.append(sim)

        config = workdir / "tollgate.toml"
        config.write_text(CONFIG.format(sim=sim.url, key=API_KEY, team=TEAM,
                                        openai_models=_toml_list(OPENAI_MODELS),
                                        anthropic_models=_toml_list(ANTHROPIC_MODELS),
                                        gemini_models=_toml_list(GEMINI_MODELS),
                                        azure_model=AZURE_MODEL,
                                        azure_deployment=AZURE_DEPLOYMENT,
                                        admin=ADMIN_TOKEN))
        env = dict(os.environ, SIM_OPENAI_KEY="sk-sim-openai")
        gateway = start("gateway", [str(binary), "serve", "--config", str(config),
                                    "--listen", "127.0.0.1:0"], cwd=workdir, env=env)
        procs.append(gateway)
    except RuntimeError as e:
        for p in procs:
            p.stop()
        pytest.fail(str(e), pytrace=False)

    yield Stack(sim=sim, gateway=gateway)

    for p in reversed(procs):
        p.stop()


@pytest.fixture(autouse=True)
def _still_running(request):
    """After each test, fail it loudly if the gateway or the sim died during it."""
    yield
    if "stack" not in request.fixturenames:
        return
    stack: Stack = request.getfixturevalue("stack")
    for proc in (stack.sim, stack.gateway):
        code = proc.popen.poll()
        if code is not None:
            pytest.fail(f"{proc.name} exited with code {code} during this test; stderr:\n"
                        f"{proc.log_tail()}", pytrace=False)


@pytest.fixture(scope="session")
def gateway_url(stack) -> str:
    return stack.url


@pytest.fixture(scope="session")
def metrics(gateway_url) -> Metrics:
    return Metrics(gateway_url)


@pytest.fixture(scope="session")
def oai(gateway_url) -> openai.OpenAI:
    # No retries: an error must surface as the first answer, and counters count one request.
    client = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=API_KEY, max_retries=0,
                           timeout=30)
    yield client
    client.close()


@pytest.fixture(scope="session")
def claude(gateway_url) -> anthropic.Anthropic:
    client = anthropic.Anthropic(base_url=gateway_url, api_key=API_KEY, max_retries=0,
                                 timeout=30)
    yield client
    client.close()

"""The OpenAI-compatible endpoints of the math task, with the official ``openai`` client as the real client
(ray tier, tiny real models): chat and completions, plain and streamed (server-sent events), consensus
rounds and per-scorer attribution in the ``consensus`` extension, errors as the client's exceptions."""

from __future__ import annotations

import socket

import pytest

pytestmark = pytest.mark.ray

TOKEN = "openai-client-test-token"
QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_openai_client_against_the_served_math_task(ray_cluster, tmp_path):
    import openai
    import requests
    from ray import serve

    from actors.cli import build_parser
    from actors.commands.eval import build_spec
    from actors.placement import Resources, spawn
    from actors.serve_task import start_task
    from actors.workers import SolverWorker

    spec = build_spec(build_parser().parse_args(["eval", "math", "--tiny", "--out", str(tmp_path / "x.jsonl")]))
    worker = spawn(SolverWorker, spec, resources=Resources(num_cpus=0.5))
    try:
        url = start_task(spec, [worker], "127.0.0.1", _free_port(), name="openai-math", token=TOKEN)
        native = requests.post(f"{url}/v1/math", json={"question": QUESTION, "system": "ensemble@1", "seed": 2},
                               headers={"Authorization": f"Bearer {TOKEN}"}, timeout=300).json()
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0, timeout=300)

        chat = client.chat.completions.create(model="ensemble@1", seed=2, messages=[
            {"role": "system", "content": "Solve the problem."}, {"role": "user", "content": QUESTION}])
        assert chat.object == "chat.completion" and chat.choices[0].finish_reason == "stop"
        assert chat.choices[0].message.content == native["solution"]
        consensus = chat.model_extra["consensus"]
        assert consensus["rounds"] == native["rounds"] > 0 and set(consensus["moved"]) == set(native["moved"])

        text = client.completions.create(model="ensemble@1", prompt=QUESTION, seed=2)
        assert text.choices[0].text == native["solution"] and text.model_extra["consensus"]["answer"] == native["answer"]

        chunks = list(client.chat.completions.create(model="ensemble@1", seed=2, stream=True,
                                                     messages=[{"role": "user", "content": QUESTION}]))
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
        rounds = [c.model_extra["consensus"]["round"] for c in chunks
                  if (c.model_extra or {}).get("consensus", {}).get("round")]
        assert streamed == native["solution"] and chunks[-1].choices[0].finish_reason == "stop"
        assert len(rounds) == native["rounds"] and [r["round"] for r in rounds] == list(range(native["rounds"]))
        assert set(rounds[0]["scorer_energy"]) == set(native["moved"])  # per-scorer attribution, every round

        legacy = list(client.completions.create(model="ensemble@1", prompt=QUESTION, seed=2, stream=True))
        assert "".join(c.choices[0].text for c in legacy) == native["solution"]

        assert "ensemble@1" in [m.id for m in client.models.list()]
        with pytest.raises(openai.UnprocessableEntityError, match="user message"):
            client.chat.completions.create(model="ensemble@1", messages=[{"role": "system", "content": "hi"}])
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="wrong-token", max_retries=0).completions.create(
                model="ensemble@1", prompt=QUESTION)
    finally:
        serve.shutdown()
        import ray

        ray.kill(worker, no_restart=True)

"""The task API on Ray (ray tier): for every task on tiny models, ``eval --ray`` gives the local rows, a
killed Ray evaluation job resumes with nothing lost or duplicated, and a served request answers what the
solver answers for that item and seed."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

TASK_N = {"math": 3, "image": 3, "robot": 2, "video_qa": 2}
"""Items per task: a few, on tiny models (the numbers mean nothing; the equality does)."""
KILL_N = {"math": 8, "image": 16, "robot": 8}
"""Items of the killed job: enough work (seconds) that it is stopped mid-run."""


def _args(task: str, out: Path, *extra: str):
    from actors.cli import build_parser

    return build_parser().parse_args(["eval", task, "--tiny", "--n", str(TASK_N[task]), "--out", str(out),
                                      "--no-progress", *extra])


def _same(task: str, a: dict, b: dict) -> None:
    assert (a["answer"], a["metric"], a["config_hash"], a["seed"]) == (b["answer"], b["metric"], b["config_hash"], b["seed"])
    if task in ("math", "video_qa"):
        assert a["extras"]["output"] == b["extras"]["output"]
    elif task == "image":
        assert a["extras"]["images"] == b["extras"]["images"]  # bit-exact 8-bit images
    else:
        assert a["extras"]["actions"] == b["extras"]["actions"]


@pytest.mark.parametrize("task", sorted(TASK_N))
def test_eval_on_ray_gives_the_local_rows(ray_cluster, tmp_path, task):
    from actors.commands.eval import build_spec
    from actors.evaluation import evaluate_on_ray
    from ensemble.eval import evaluate_local, work_list
    from ensemble.results import ResultsFile

    args = _args(task, tmp_path / "local.jsonl")
    spec = build_spec(args)
    solver = spec.build()
    systems = solver.default_systems()[:2]
    items = spec.build_task().items(TASK_N[task], 0)
    units = work_list(items, systems, [0, 1], {s: solver.config_hash(s) for s in systems})
    local = evaluate_local(solver, units, ResultsFile(tmp_path / "local.jsonl"))
    half = len(units) // 2  # both engines: the first half on Ray Data, the rest resumed on the actor pool
    first = evaluate_on_ray(spec, units[:half], ResultsFile(tmp_path / "ray.jsonl"), workers=2, engine="data",
                            progress=False)
    remote = evaluate_on_ray(spec, units, ResultsFile(tmp_path / "ray.jsonl"), workers=2, engine="actors",
                             progress=False)
    assert first.written == half and remote.skipped == half and remote.written == len(units) - half
    assert not local.failed and not remote.failed, (local.failed, remote.failed)
    assert len(local.rows) == len(remote.rows) == len(units)
    for a, b in zip(local.rows, remote.rows, strict=True):
        _same(task, a, b)
    again = evaluate_on_ray(spec, units, ResultsFile(tmp_path / "ray.jsonl"), workers=2, progress=False)
    assert again.skipped == len(units) and again.written == 0  # resumed: nothing redone


@pytest.mark.parametrize("task", sorted(KILL_N))
def test_killed_ray_eval_job_resumes_without_loss_or_duplicates(ray_cluster, tmp_path, task):
    ray_bin = str(Path(sys.executable).with_name("ray"))
    ensemble_bin = str(Path(sys.executable).with_name("ensemble"))
    results = tmp_path / f"{task}.jsonl"
    entry = [ensemble_bin, "eval", task, "--tiny", "--n", str(KILL_N[task]), "--ray", "--workers", "1",
             "--no-progress", "--out", str(results)]
    submit = [ray_bin, "job", "submit", "--address", ray_cluster.dashboard_url]
    env = ray_cluster.env()
    job_id = f"ic-eval-{task}-{time.time_ns()}"
    first = subprocess.run([*submit, "--no-wait", "--submission-id", job_id, "--", *entry],
                           env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    deadline = time.monotonic() + 240
    while (not results.exists() or len(results.read_text().splitlines()) < 1) and time.monotonic() < deadline:
        time.sleep(0.1)
    # stop from this process (a `ray job stop` subprocess takes seconds to start on a loaded machine, long
    # enough for a tiny job to finish), then wait until the job has stopped
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(ray_cluster.dashboard_url)
    client.stop_job(job_id)
    deadline = time.monotonic() + 120
    while client.get_job_status(job_id) not in (JobStatus.STOPPED, JobStatus.FAILED, JobStatus.SUCCEEDED):
        assert time.monotonic() < deadline, "the job did not stop"
        time.sleep(0.2)
    partial = len(results.read_text().splitlines())
    time.sleep(1.0)
    assert len(results.read_text().splitlines()) == partial, "the stopped job must not write any more"
    second = subprocess.run([*submit, "--", *entry], env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    rows = [json.loads(x) for x in results.read_text().splitlines() if x.strip()]
    keys = [(r["item_id"], r["config_hash"], r["seed"]) for r in rows]
    n_systems = len({r["system"] for r in rows})
    assert len(keys) == len(set(keys)) == KILL_N[task] * n_systems  # 0 lost, 0 duplicated
    assert 1 <= partial < len(keys), "the job should be killed mid-run"
    assert Path(str(results) + ".md").read_text().count("\n|") >= 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


REQUESTS = {
    "math": ({"question": "Tom has 3 apples and buys 4 more. How many apples does he have?", "system": "ensemble@1",
              "seed": 2}, "answer"),
    "image": ({"prompt": "a red circle", "system": "all", "seed": 1}, "evaluator_class"),
    "robot": ({"scene_seed": 5, "system": "1view-cem", "seed": 1}, "success"),
    "video_qa": ({"question": "what colour is the shape?", "system": "ensemble@1", "seed": 1}, "answer"),
}


def _noise_video() -> bytes:
    """An mp4 of noise frames: larger as base64 than the 64 KiB body limit of text-only apps."""
    import numpy as np

    from ensemble.tasks.video_qa.video import encode_video

    rng = np.random.default_rng(0)
    return encode_video([rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(12)])


def _robot_photo_goals(url: str) -> None:
    """A goal photo upload runs the photo system; a camera the system lacks or a text system is a 400."""
    import base64
    import io

    import numpy as np
    import requests
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((48, 40, 3), 200, dtype=np.uint8)).save(buf, format="PNG")
    body = {"scene_seed": 5, "seed": 1, "goal_image_base64": base64.b64encode(buf.getvalue()).decode(), "goal_camera": "top"}
    resp = requests.post(f"{url}/v1/robot", json=body, timeout=300)
    assert resp.status_code == 200 and resp.json()["system"] == "3views-photo-cem", resp.text
    resp = requests.post(f"{url}/v1/robot", json={**body, "goal_camera": "right"}, timeout=300)
    assert resp.status_code == 400 and "not one of this system's cameras" in resp.json()["detail"]
    resp = requests.post(f"{url}/v1/robot", json={**body, "system": "1view-cem"}, timeout=60)
    assert resp.status_code == 400 and "needs a photo system" in resp.json()["detail"]


@pytest.mark.parametrize("task", sorted(REQUESTS))
def test_served_request_answers_what_the_solver_answers(ray_cluster, tmp_path, task):
    import ray
    import requests
    from ray import serve

    from actors.commands.eval import build_spec
    from actors.placement import Resources, spawn
    from actors.serve_task import start_task
    from actors.workers import SolverWorker

    spec = build_spec(_args(task, tmp_path / "x.jsonl"))
    if task == "robot":
        spec.settings["frames"] = True
    worker = spawn(SolverWorker, spec, resources=Resources(num_cpus=0.5))
    try:
        url = start_task(spec, [worker], "127.0.0.1", _free_port(), name=f"test-{task}")
        body, key = REQUESTS[task]
        if task == "video_qa":
            import base64

            video = base64.b64encode(_noise_video()).decode()
            assert len(video) > 65536
            body = {**body, "video_base64": video}
        resp = requests.post(f"{url}/v1/{task}", json=body, timeout=300)
        assert resp.status_code == 200, resp.text
        served = resp.json()
        task_obj, solver = spec.build_task(), spec.build()
        item, system, seed = task_obj.request_item(task_obj.request_model()(**body))
        expected = task_obj.response(solver.solve(item, system, seed))
        assert served[key] == expected[key] and served["config_hash"] == expected["config_hash"]
        if task == "math":
            assert served["solution"] == expected["solution"]
        if task == "robot":
            assert served["plan"] == expected["plan"] and served["views_gif_b64"]
            _robot_photo_goals(url)
        if task == "image":
            assert served["images_png_b64"] == expected["images_png_b64"]
        if task == "video_qa":  # also through the OpenAI client: the video as a data: URL content part
            import openai

            client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)
            chat = client.chat.completions.create(model=body["system"], seed=body["seed"], messages=[
                {"role": "user", "content": [{"type": "text", "text": body["question"]},
                                             {"type": "video_url",
                                              "video_url": {"url": f"data:video/mp4;base64,{body['video_base64']}"}}]}])
            assert chat.choices[0].message.content == served["output"] == expected["output"]
            assert chat.model_extra["consensus"]["answer"] == served["answer"]
            with pytest.raises(openai.BadRequestError, match="exactly one video"):
                client.chat.completions.create(model="lm@1", messages=[{"role": "user", "content": "what colour?"}])
        bad = requests.post(f"{url}/v1/{task}", json={**body, "system": "nope"}, timeout=60)
        assert bad.status_code == 400 and "unknown system" in bad.json()["detail"]
        bad = requests.post(f"{url}/v1/{task}", json={**body, "seed": "x"}, timeout=60)
        assert bad.status_code == 422
        assert requests.get(f"{url}/healthz", timeout=60).json()["workers"][0]["ready"] is True
    finally:
        serve.shutdown()
        ray.kill(worker, no_restart=True)

"""The cpu image run as docker-compose.yml runs it: healthy, hardened, deraining a real photo as the
local pipeline does, exporting its metrics, and draining an in-flight request on `docker stop`."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.metric_contract import CONTRACT
from tests.docker.docker_harness import (
    FIGURES,
    Container,
    compose_service,
    default_value,
    environment,
    logs,
    run,
    seconds,
    step,
)
from tests.paths import REAL

RAIN = REAL / "rain"
SMALL_PHOTO = RAIN / "135.jpg"  # 271 x 186, the smallest
LARGE_PHOTO = RAIN / "132.jpg"  # 1600 x 1200, scaled for the drain test
# The container's output against the same model run by the local pipeline (python -m service.cli):
# the image's ONNX Runtime is the Dockerfile's ORT_VERSION, this venv's may be newer, so float rounding
# may move a pixel by a level or two; the rain layer itself moves pixels by far more.
MAX_LEVELS = 3
MEAN_LEVELS = 0.2


def photo(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"the real rainy photos are not there: {path}")
    return path


def pixels(data: bytes | Path) -> np.ndarray:
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    return np.asarray(Image.open(source).convert("RGB"), dtype=np.int16)


def test_healthy_by_its_own_healthcheck(container: Container) -> None:
    inspected = run(
        ["docker", "inspect", "-f", "{{.State.Health.Status}} {{.State.Running}}", container.name], timeout=30
    )
    assert inspected.stdout.split() == ["healthy", "true"]
    ready = httpx.get(f"{container.url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text


def test_runs_as_non_root_on_a_read_only_root_with_a_writable_tmpfs(container: Container) -> None:
    script = (
        "id -u; touch /app/x 2>/dev/null && echo root-writable || echo root-read-only;"
        "touch /tmp/x && echo tmp-writable"
    )
    done = run(["docker", "exec", container.name, "sh", "-c", script], timeout=30)
    assert done.stdout.split() == ["10001", "root-read-only", "tmp-writable"], done.stdout
    caps = run(["docker", "exec", container.name, "sh", "-c", "grep CapEff /proc/self/status"], timeout=30)
    assert caps.stdout.split()[-1] == "0000000000000000", "cap_drop ALL"


def test_derains_a_real_photo_like_the_local_pipeline(container: Container, tmp_path: Path) -> None:
    source = photo(SMALL_PHOTO)
    with step("7 POST a real rainy photo"):
        start = time.monotonic()
        response = httpx.post(
            f"{container.url}/derain",
            params={"format": "png"},
            files={"image": (source.name, source.read_bytes(), "image/jpeg")},
            timeout=120,
        )
        response_seconds = time.monotonic() - start
    assert response.status_code == 200, response.text[:300]
    assert response.headers["content-type"] == "image/png"
    served = pixels(response.content)
    rainy = pixels(source)
    assert served.shape == rainy.shape  # same size, three channels
    # The same model file, through the local pipeline with the compose file's tile settings.
    models = tmp_path / "models"
    models.mkdir()
    for name in ("mspfn-lite.onnx", "mspfn-lite.opt.onnx"):
        run(["docker", "cp", f"{container.name}:/models/{name}", str(models / name)], timeout=60)
    env = {k: default_value(v) for k, v in environment(compose_service()).items()}
    out = tmp_path / "local"
    command = [
        sys.executable, "-m", "service.cli", str(source), "-o", str(out), "--format", "png", "--quiet",
        "--model", str(models / "mspfn-lite.onnx"), "--providers", "CPUExecutionProvider",
        "--tile-size", str(env["DERAIN_TILE_SIZE"]), "--overlap", str(env["DERAIN_TILE_OVERLAP"]),
    ]  # fmt: skip
    run(command, timeout=300)
    local = pixels(out / f"{source.stem}.png")
    difference = np.abs(served - local)
    FIGURES["container vs local pipeline, max / mean levels"] = [
        int(difference.max()),
        round(float(difference.mean()), 4),
    ]
    assert difference.max() <= MAX_LEVELS and difference.mean() <= MEAN_LEVELS, (
        difference.max(),
        difference.mean(),
    )
    # ...and it is not the input: the rain layer moves pixels by far more than the two pipelines differ
    removed = np.abs(served - rainy)
    FIGURES["container output vs rainy input, max / mean levels"] = [
        int(removed.max()),
        round(float(removed.mean()), 2),
    ]
    assert removed.max() > 5 * MAX_LEVELS and removed.mean() > 0.2, (removed.max(), removed.mean())
    TILE_SECONDS["per tile"] = response_seconds / tile_count(rainy.shape[1], rainy.shape[0])


# Seconds per tile measured on the small photo, to size the drain test's request on this machine.
TILE_SECONDS: dict[str, float] = {}


def tile_count(width: int, height: int) -> int:
    env = {k: default_value(v) for k, v in environment(compose_service()).items()}
    tile, overlap = int(env["DERAIN_TILE_SIZE"] or 256), int(env["DERAIN_TILE_OVERLAP"] or 32)
    stride = tile - overlap
    return max(1, -(-(width - overlap) // stride)) * max(1, -(-(height - overlap) // stride))


def sized_for(seconds_wanted: float, source: Path, tmp_path: Path) -> Path:
    """The photo scaled to take about `seconds_wanted` at the measured speed (whole, if faster)."""
    per_tile = TILE_SECONDS.get("per tile", 1.0)
    image = Image.open(source).convert("RGB")
    scale = 1.0
    while (
        scale > 0.05
        and tile_count(int(image.width * scale), int(image.height * scale)) * per_tile > seconds_wanted
    ):
        scale *= 0.9
    size = (max(64, int(image.width * scale)), max(64, int(image.height * scale)))
    path = tmp_path / f"{source.stem}-{size[0]}x{size[1]}.png"
    image.resize(size, Image.Resampling.LANCZOS).save(path)
    return path


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def test_metrics_count_the_request_and_name_the_cpu_provider(container: Container) -> None:
    # Its own request, so the count does not rest on the photo test having run (it skips without them).
    rng = np.random.default_rng(0)
    image = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(image, format="PNG")
    sent = httpx.post(
        f"{container.url}/derain",
        content=image.getvalue(),
        headers={"Content-Type": "image/png"},
        timeout=120,
    )
    assert sent.status_code == 200, sent.text
    with step("8 scrape /metrics"):
        samples = scrape(container.url)
    missing = [m.required_series for m in CONTRACT if m.always_present and m.required_series not in samples]
    assert not missing, f"not exported: {missing}"
    served = [
        value
        for labels, value in samples["derain_requests_total"]
        if labels.get("status") == "200" and "derain" in labels.get("route", "")
    ]
    assert served and sum(served) >= 1, samples["derain_requests_total"]
    (info,) = samples["derain_model_info"]
    assert info[0]["provider"] == "CPUExecutionProvider" and info[1] == 1
    assert samples["derain_tiles_total"][0][1] >= 1


def test_docker_stop_answers_the_request_in_flight_and_exits_within_the_drain_timeout(
    container: Container, tmp_path: Path
) -> None:
    """Last in this file: it stops the container. The request is a real photo scaled to take about a
    quarter of the drain timeout at the speed measured above: still running at the stop on a fast
    machine, done before the timeout on a slow or busy one."""
    drain = float(default_value(environment(compose_service())["DERAIN_DRAIN_TIMEOUT_S"]) or 0)
    source = sized_for(drain / 4, photo(LARGE_PHOTO), tmp_path)
    FIGURES["drain test photo"] = source.name
    grace = seconds(compose_service()["stop_grace_period"])
    result: dict[str, httpx.Response | BaseException] = {}

    def post() -> None:
        try:
            result["response"] = httpx.post(
                f"{container.url}/derain",
                params={"format": "png"},
                files={"image": (source.name, source.read_bytes(), "image/png")},
                timeout=grace + 30,
            )
        except BaseException as error:  # noqa: BLE001 - reported by the test
            result["response"] = error

    with step("9 docker stop with a request in flight"):
        client = threading.Thread(target=post, daemon=True)
        client.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # bounded: until the service counts the request in flight
            inflight = scrape(container.url).get("derain_inflight_requests", [({}, 0.0)])[0][1]
            if inflight >= 1 or "response" in result:
                break
            time.sleep(0.1)
        assert "response" not in result, "the request finished before the stop: use a larger photo"
        assert inflight >= 1, "the request never showed up in derain_inflight_requests"
        start = time.monotonic()
        stop = subprocess.run(
            ["docker", "stop", container.name], capture_output=True, text=True, timeout=grace + 30
        )
        stopped_after = time.monotonic() - start
        client.join(timeout=60)
    FIGURES["docker stop seconds (request in flight)"] = round(stopped_after, 1)
    assert stop.returncode == 0, stop.stderr
    response = result.get("response")
    assert isinstance(response, httpx.Response), f"the in-flight request failed: {response!r}"
    assert response.status_code == 200, response.text[:300]
    assert pixels(response.content).shape == pixels(source).shape
    assert stopped_after < drain, f"docker stop took {stopped_after:.1f} s, the drain timeout is {drain} s"
    draining = re.findall(r"draining (\d+) requests? in flight", logs(container.name, 200))
    assert draining and int(draining[-1]) >= 1, f"the service logged no drain of a request: {draining}"
    state = run(
        ["docker", "inspect", "-f", "{{.State.ExitCode}} {{.State.OOMKilled}}", container.name], timeout=30
    )
    assert state.stdout.split() == ["0", "false"], f"exit code, OOM-killed: {state.stdout}"

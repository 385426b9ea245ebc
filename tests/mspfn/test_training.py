"""Training: the loss goes down on a fixed batch, resume restores position and Adam state."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mspfn.losses import charbonnier, laplacian, mspfn_loss
from mspfn.train import (
    Schedule,
    ema_of,
    load_training_state,
    main,
    save_training_state,
    train_step,
)
from tests.conftest import make_tiny_model
from tests.mspfn.pairs import streak_width, striped_pair, write_pairs


def test_charbonnier_and_laplacian_values() -> None:
    a, b = torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.75)
    assert charbonnier(a, b).item() == pytest.approx((0.75**2 + 1e-6) ** 0.5)
    flat = torch.ones(1, 1, 3, 3)
    assert laplacian(flat)[0, 0, 1, 1].item() == 0.0  # constant interior has no edges
    assert laplacian(flat)[0, 0, 0, 0].item() == 8.0 - 3.0  # zero padding makes borders edges
    image = torch.rand(2, 3, 8, 8)
    assert mspfn_loss(image, image).item() == pytest.approx(1e-3 * 1.05, rel=1e-4)


def test_schedule_warms_up_then_decays_to_the_floor() -> None:
    schedule = Schedule(peak=1e-3, floor=1e-6, warmup=10, total=110)
    assert schedule.lr(0) == pytest.approx(1e-4)
    assert schedule.lr(10) == pytest.approx(1e-3)
    assert schedule.lr(60) == pytest.approx((1e-3 + 1e-6) / 2)
    assert schedule.lr(110) == pytest.approx(1e-6)
    assert schedule.lr(500) == pytest.approx(1e-6)


def test_a_few_steps_lower_the_loss_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    model = make_tiny_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    clean = torch.rand(2, 3, 16, 16)
    rain = (clean + 0.3 * (torch.rand_like(clean) > 0.9)).clamp(0, 1)
    first = train_step(model, optimizer, rain, clean)
    for _ in range(15):
        last = train_step(model, optimizer, rain, clean)
    assert last < 0.8 * first


def test_training_state_round_trip(tmp_path: Path) -> None:
    model = make_tiny_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = torch.rand(1, 3, 16, 16)
    for _ in range(3):
        train_step(model, optimizer, batch, batch * 0.9)
    path = tmp_path / "last.safetensors"
    save_training_state(path, model, optimizer, "tiny", {"step": 3, "best_psnr": 30.0, "seconds": 1.0})

    restored = make_tiny_model(seed=1)
    restored_optimizer = torch.optim.Adam(restored.parameters(), lr=1e-3)
    position = load_training_state(path, restored, restored_optimizer)
    assert position == {"step": 3, "best_psnr": 30.0, "seconds": 1.0}
    for a, b in zip(model.parameters(), restored.parameters(), strict=True):
        assert torch.equal(a, b)
        assert torch.equal(optimizer.state[a]["exp_avg_sq"], restored_optimizer.state[b]["exp_avg_sq"])
        assert int(restored_optimizer.state[b]["step"]) == 3
    # Both continue identically from the same batch.
    train_step(model, optimizer, batch, batch * 0.9)
    train_step(restored, restored_optimizer, batch, batch * 0.9)
    for a, b in zip(model.parameters(), restored.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_ema_averages_the_weights_and_survives_resume(tmp_path: Path) -> None:
    model = make_tiny_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    ema = ema_of(model, decay=0.5)
    start = [p.detach().clone() for p in model.parameters()]
    batch = torch.rand(1, 3, 16, 16)
    ema.update_parameters(model)  # the first update copies the weights
    train_step(model, optimizer, batch, batch * 0.8)
    ema.update_parameters(model)
    # decay 0.5: the average is exactly halfway between the start and the trained weights.
    for s, p, e in zip(start, model.parameters(), ema.module.parameters(), strict=True):
        assert torch.allclose(e, 0.5 * s + 0.5 * p, atol=1e-7)
    assert any(not torch.equal(s, p) for s, p in zip(start, model.parameters(), strict=True))

    path = tmp_path / "last.safetensors"
    save_training_state(path, model, optimizer, "tiny", {"step": 1, "best_psnr": 0, "seconds": 0}, ema)
    restored = make_tiny_model(seed=1)
    restored_ema = ema_of(restored, decay=0.5)
    load_training_state(path, restored, torch.optim.Adam(restored.parameters()), restored_ema)
    assert int(restored_ema.n_averaged) == 2
    for e, r in zip(ema.module.parameters(), restored_ema.module.parameters(), strict=True):
        assert torch.equal(e, r)

    # A checkpoint without an average (older runs) starts the average from the restored weights.
    save_training_state(path, model, optimizer, "tiny", {"step": 1, "best_psnr": 0, "seconds": 0})
    fresh_ema = ema_of(restored, decay=0.5)
    load_training_state(path, restored, torch.optim.Adam(restored.parameters()), fresh_ema)
    for p, e in zip(model.parameters(), fresh_ema.module.parameters(), strict=True):
        assert torch.equal(p, e)


@pytest.fixture
def tiny_preset(monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m mspfn.train` builds a tiny network whatever --preset says."""
    import mspfn.train as train_module
    from mspfn.model import MSPFNConfig

    monkeypatch.setitem(
        train_module.__dict__,
        "preset",
        lambda name: MSPFNConfig(width=8, stages=1, lstm_in=4, lstm_hidden=(4, 4, 4), recon_width=4),
    )


@pytest.mark.usefixtures("tiny_preset")
def test_cli_trains_checkpoints_and_resumes(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "data", 3)
    out = tmp_path / "run"
    args = [
        "--train",
        str(data),
        "--val",
        str(data),
        "--out",
        str(out),
        "--patch",
        "32",
        "--batch",
        "2",
        "--val-every",
        "2",
        "--warmup",
        "1",
        "--no-progress",
        "--threads",
        "1",
    ]
    assert main([*args, "--steps", "4"]) == 0
    assert (out / "best.safetensors").exists() and (out / "last.safetensors").exists()
    assert main([*args, "--steps", "6"]) == 0
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]  # the second run resumed at step 4 instead of starting over


@pytest.mark.usefixtures("tiny_preset")
def test_publish_writes_weights_and_a_card_with_every_stage(tmp_path: Path) -> None:
    from mspfn.checkpoint import file_sha256, load_model
    from mspfn.data import load_pairs
    from mspfn.evaluate import model_predictor, score
    from mspfn.publish import main as publish

    data = write_pairs(tmp_path / "data", 2)
    run = tmp_path / "run"
    argv = ["--train", str(data), "--val", str(data), "--out", str(run), "--patch", "32", "--batch", "2"]
    argv += ["--steps", "4", "--val-every", "2", "--warmup", "1", "--l2-warmup", "0", "--lr", "3e-4"]
    assert main([*argv, "--ema", "0.9", "--no-progress", "--threads", "1"]) == 0
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps({"file": "first.safetensors", "steps": 100, "wall_time_s": 60.0}))

    assert (
        publish(
            ["--run", str(run), "--name", "m", "--weights-dir", str(tmp_path / "w"), "--val", str(data)]
            + ["--init-card", str(earlier), "--hardware", "test box"]
        )
        == 0
    )
    card = json.loads((tmp_path / "w" / "m.json").read_text())
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    best = [r for r in records if r.get("best")][-1]
    assert card["sha256"] == file_sha256(tmp_path / "w" / "m.safetensors")
    assert [stage["steps"] for stage in card["stages"]] == [100, best["step"]]
    assert card["steps"] == 100 + best["step"]
    assert card["wall_time_s"] == pytest.approx(60.0 + best["seconds"], abs=0.1)
    recipe = card["stages"][1]["recipe"]
    assert "from scratch: random 32x32 crops" in recipe and "EMA 0.9" in recipe and "batch 2" in recipe
    assert card["stages"][1]["init"] == "first.safetensors" and card["hardware"] == "test box"
    # The card's figures are the evaluate CLI's, for the file that shipped.
    model, _ = load_model(tmp_path / "w" / "m.safetensors")
    expected = score(model_predictor(model), load_pairs(data), progress=False)
    assert card["validation"]["psnr"] == pytest.approx(expected["psnr"], abs=1e-6)
    assert card["validation"]["psnr"] == pytest.approx(best["val_psnr"], abs=1e-6)
    assert card["stages"][1]["steps_run"] == 4
    # A finished run kept without its training state (only best + log) still publishes: steps_run
    # comes from the log's last validation.
    (run / "last.safetensors").unlink()
    argv = ["--run", str(run), "--name", "n", "--weights-dir", str(tmp_path / "w"), "--val", str(data)]
    assert publish(argv) == 0
    assert json.loads((tmp_path / "w" / "n.json").read_text())["stages"][0]["steps_run"] == 4


@pytest.mark.usefixtures("tiny_preset")
def test_publish_of_several_runs_ships_the_average_of_their_bests(tmp_path: Path) -> None:
    from mspfn.checkpoint import load_model
    from mspfn.publish import main as publish

    data = write_pairs(tmp_path / "data", 2)
    runs = [tmp_path / "a", tmp_path / "b"]
    for seed, run in enumerate(runs):
        argv = ["--train", str(data), "--val", str(data), "--out", str(run), "--patch", "32", "--batch", "2"]
        argv += ["--steps", str(2 + 2 * seed), "--val-every", "2", "--warmup", "1", "--seed", str(seed)]
        assert main([*argv, "--lr", "3e-3", "--ema", "0", "--no-progress", "--threads", "1"]) == 0
    weights = tmp_path / "w"
    argv = ["--run", str(runs[0]), "--run", str(runs[1]), "--name", "soup", "--weights-dir", str(weights)]
    assert publish([*argv, "--val", str(data), "--hardware", "test box"]) == 0

    a, b = (load_model(run / "best.safetensors")[0].state_dict() for run in runs)
    soup = load_model(weights / "soup.safetensors")[0].state_dict()
    differing = [key for key in a if not torch.equal(a[key], b[key])]
    assert differing  # two seeds, two sets of weights: the soup is neither
    for key in a:
        assert torch.allclose(soup[key], (a[key] + b[key]) / 2, atol=1e-7), key
    card = json.loads((weights / "soup.json").read_text())
    (stage,) = card["stages"]
    best_steps = []
    for run in runs:
        records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        best_steps.append([r for r in records if r.get("best")][-1]["step"])
    assert stage["run"] == f"{runs[0]} + {runs[1]}"
    assert stage["steps"] == card["steps"] == sum(best_steps) and stage["steps_run"] == 2 + 4
    assert stage["recipe"].startswith("the uniform average (a model soup) of the best checkpoints of 2 runs")
    assert f"[1] {runs[0]} at step {best_steps[0]}" in stage["recipe"]
    assert f"[2] {runs[1]} at step {best_steps[1]}" in stage["recipe"]
    # The card scores the averaged file, not either run.
    from mspfn.data import load_pairs
    from mspfn.evaluate import model_predictor, score

    model, _ = load_model(weights / "soup.safetensors")
    expected = score(model_predictor(model), load_pairs(data), progress=False)
    assert card["validation"]["psnr"] == pytest.approx(expected["psnr"], abs=1e-6)


@pytest.mark.usefixtures("tiny_preset")
def test_cli_trains_on_real_and_synthetic_pairs_and_scores_every_validation_set(tmp_path: Path) -> None:
    import mspfn.train as train_module

    data = write_pairs(tmp_path / "data", 3, size=(48, 56))
    clean = tmp_path / "clean"
    clean.mkdir()
    rng = np.random.default_rng(1)
    for index in range(12):
        Image.fromarray(rng.integers(0, 200, (50, 60, 3), dtype=np.uint8)).save(clean / f"{index:02d}.png")
    heavy = write_pairs(tmp_path / "heavy", 2)
    out = tmp_path / "run"
    argv = ["--train", str(data), "--synth", str(clean), "--recipe", "heavy", "--synth-weight", "0.5"]
    argv += ["--scale", "0.5", "2", "--val", str(data), "--val", str(heavy), "--out", str(out)]
    argv += ["--patch", "32", "--batch", "4", "--steps", "2", "--val-every", "2", "--warmup", "1"]
    args = train_module.parse_args([*argv, "--no-progress", "--threads", "1"])
    sampler = train_module.build_sampler(args, seed=0)
    rainy, target = sampler.sample(16)
    added = (rainy - target).reshape(16, -1).mean(axis=1) * 255
    # both sources feed the batch: heavy synthetic rain adds tens of grey levels, the fixture pairs ~3
    assert (added > 15).any() and (added < 6).any()
    assert main([*argv, "--no-progress", "--threads", "1"]) == 0
    (record,) = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert set(record["val"]) == {"data", "heavy"}
    mean = (record["val"]["data"]["psnr"] + record["val"]["heavy"]["psnr"]) / 2
    assert record["val_psnr"] == pytest.approx(mean)
    with pytest.raises(SystemExit):
        train_module.build_sampler(train_module.parse_args(["--val", str(data), "--out", str(out)]), 0)


@pytest.mark.usefixtures("tiny_preset")
def test_cli_starts_a_windowed_run_from_the_average_of_two_checkpoints(tmp_path: Path) -> None:
    import mspfn.train as train_module
    from mspfn.checkpoint import load_model, read_metadata, save_model
    from mspfn.model import MSPFN
    from mspfn.publish import describe

    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    for seed, path in ((1, first), (2, second)):
        torch.manual_seed(seed)
        model = MSPFN(train_module.preset("tiny"))  # what the CLI builds (the tiny_preset fixture)
        with torch.no_grad():
            model.reconstruct.rain.weight.normal_(0.0, 0.05)
        save_model(path, model, "tiny")
    data = write_pairs(tmp_path / "data", 2)
    out = tmp_path / "run"
    argv = ["--train", str(data), "--val", str(data), "--out", str(out), "--patch", "32", "--batch", "2"]
    argv += ["--steps", "1", "--val-every", "1", "--warmup", "1", "--lr", "1e-12", "--lr-min", "1e-12"]
    argv += ["--init", str(first), "--init", str(second), "--attention-window", "48", "--ema", "0"]
    assert main([*argv, "--no-progress", "--threads", "1"]) == 0
    trained, _ = load_model(out / "best.safetensors")
    assert trained.config.attention_window == 48  # recorded in the checkpoint, so export and serving agree
    a, b = load_model(first)[0].state_dict(), load_model(second)[0].state_dict()
    weight = "reconstruct.rain.weight"  # differs between the two seeds; a 1e-12 step leaves the mean
    assert not torch.equal(a[weight], b[weight])
    assert torch.allclose(trained.state_dict()[weight], (a[weight] + b[weight]) / 2, atol=1e-6)
    run_args = json.loads(read_metadata(out / "best.safetensors")["args"])  # what publish describes
    text = describe(run_args, out)
    assert f"from the average of {first} and {second} (a model soup)" in text
    assert "channel attention over a 48 px window of the input" in text


def test_cli_grows_a_checkpoint_into_the_larger_preset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--preset lite-133 --init LITE`: the run starts from the lite weights, computing what they did."""
    import mspfn.train as train_module
    from mspfn.checkpoint import load_model, save_model
    from mspfn.model import MSPFN, MSPFNConfig
    from mspfn.publish import describe

    small = MSPFNConfig(width=8, stages=1, lstm_in=4, lstm_hidden=(4, 4, 4), recon_width=4)
    monkeypatch.setitem(
        train_module.__dict__,
        "preset",
        lambda name: replace(small, rcabs=(1, 3, 3)) if name == "lite-133" else small,
    )
    torch.manual_seed(5)
    model = MSPFN(small)
    with torch.no_grad():
        model.reconstruct.rain.weight.normal_(0.0, 0.05)
    init = tmp_path / "lite.safetensors"
    save_model(init, model, "lite")
    data = write_pairs(tmp_path / "data", 2)
    out = tmp_path / "run"
    argv = ["--train", str(data), "--val", str(data), "--out", str(out), "--patch", "32", "--batch", "2"]
    argv += ["--steps", "1", "--val-every", "1", "--warmup", "1", "--lr", "1e-12", "--lr-min", "1e-12"]
    argv += ["--preset", "lite-133", "--init", str(init), "--ema", "0"]
    assert main([*argv, "--no-progress", "--threads", "1"]) == 0
    trained, metadata = load_model(out / "best.safetensors")
    assert trained.config.rcabs == (1, 3, 3) and metadata["preset"] == "lite-133"
    text = describe(json.loads(metadata["args"]), out)
    assert f"from {init} (a lite checkpoint grown into lite-133: the extra RCABs start as identities)" in text
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(trained(image), model.eval()(image), atol=1e-5)


def test_pair_scale_keeps_the_real_pairs_at_their_own_scale(tmp_path: Path) -> None:
    import mspfn.train as train_module

    data = tmp_path / "data"
    for side, image in zip(("rain", "norain"), striped_pair(128), strict=True):
        (data / side).mkdir(parents=True)
        Image.fromarray(image).save(data / side / "0.png")  # one-pixel vertical streaks on grey 60

    def width(extra: list[str]) -> float:
        argv = ["--train", str(data), "--val", str(data), "--out", str(tmp_path / "run"), "--patch", "32"]
        rainy, target = train_module.build_sampler(train_module.parse_args([*argv, *extra]), 0).sample(8)
        assert np.allclose(target, 60 / 255, atol=1 / 255)  # the clean side is rescaled alike
        return streak_width(rainy)

    assert width(["--scale", "1", "1"]) == 1.0
    assert width(["--scale", "2", "2"]) >= 1.8  # --scale alone rescales the pairs too
    assert width(["--scale", "2", "2", "--pair-scale", "1", "1"]) == 1.0

"""The whole reminder recipe (``training.recipe``) on a tiny random model: every step, one write, bad input."""

from __future__ import annotations

import pytest
from PIL import Image

from reminder import Reminder, load_model
from reminder.models.tiny import build_tiny
from training import recipe


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_model(str(build_tiny("idefics3", tmp_path_factory.mktemp("tiny_recipe"))))


def test_recipe_runs_every_step_and_writes_the_reminder_once(tiny, tmp_path) -> None:
    out = tmp_path / "rem"
    out.mkdir()
    (out / "organism.json").write_text("{}")  # another entry of the folder (an organism's figures) is kept
    adversarial = tmp_path / "adv"
    adversarial.mkdir()
    for i in range(2):
        Image.new("RGB", (40, 40), (30 * i, 90, 200)).save(adversarial / f"pgd-{i}.png")
    cfg = recipe.RecipeConfig(model=str(tiny.name), out=str(out), max_train=2, max_val=2, max_test=1, typographic=1,
                              adversarial=(str(adversarial),), max_new_tokens=6, interval=2, epochs=1, batch_size=4,
                              max_fpr=0.5, cache=str(tmp_path / "responses.jsonl"))
    recipe.run(cfg, tiny)
    rem = Reminder.load(out, tiny)
    record = rem.meta["recipe"]
    assert set(record["seconds"]) == {"load", "detector", "sapt", "refit"}
    assert record["total_seconds"] >= sum(record["seconds"].values()) - 1
    assert record["conversations"]["train"] > record["conversations"]["test"] > 0
    assert rem.calibrated and rem.meta["sapt_refit"]["mode"] == "detector" and rem.meta["sapt"]["step"] > 0
    assert rem.mode == "rollback"  # the steering mode the recipe ships (benchmarks.steering)
    assert rem.meta["detector_config"]["out"] == rem.meta["sapt"]["config"]["out"] == str(out)
    assert len(rem.meta["detector_config"]["adversarial_ids"]) == 2  # the folder's two images, by content
    assert (out / "organism.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adv", "rem", "responses.jsonl"]  # no stage left behind


def test_recipe_bad_input_stops_with_one_line_and_writes_nothing(tmp_path, capsys) -> None:
    out = tmp_path / "rem"
    out.mkdir()
    (out / "reminder.json").write_text('{"kept": true}')
    empty, broken = tmp_path / "empty", tmp_path / "broken"
    empty.mkdir()
    broken.mkdir()
    (broken / "pgd.png").write_bytes(b"not a png")
    cases = ((["--adversarial", str(tmp_path / "missing")], "training image not found"),
             (["--adversarial", str(empty)], "no images"),
             (["--adversarial", str(broken)], "pgd.png is not a readable image"),
             (["--max-train", "0", "--typographic", "0"], "the train split has no conversations"))
    for args, message in cases:
        with pytest.raises(SystemExit) as stop:
            recipe.main(["--out", str(out), *args])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and message in err and err.count("\n") == 1, err
        assert [p.name for p in out.iterdir()] == ["reminder.json"]
        assert (out / "reminder.json").read_text() == '{"kept": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "empty", "rem"]


def test_recipe_bfloat16_products_move_states_a_little_and_probes_stay_float32(tiny, tmp_path) -> None:
    """Where the CPU multiplies bfloat16 natively the recipe runs the model under ``torch.autocast``: the check
    states move (bfloat16 products) but stay close to float32 ones, and a probe scores them in float32."""
    import contextlib

    import torch

    from reminder import SoftPrompt
    from training.examples import _READ_WHILE_DECODING
    from training.features import generation_checks
    from training.probe import fit_probe

    assert isinstance(recipe.autocast("float32", tiny), contextlib.nullcontext)
    assert isinstance(recipe.autocast("bfloat16", tiny), torch.autocast)
    cfg = recipe.RecipeConfig(model=str(tiny.name), out=str(tmp_path / "rem"), max_train=2, max_val=2, max_test=1,
                              typographic=1, max_new_tokens=6, interval=2, cache=str(tmp_path / "responses.jsonl"))
    det = cfg.detector_config(cfg.out)
    with torch.no_grad():
        soft = SoftPrompt.from_text(tiny, det.init_text, det.n_tokens)(tiny.dtype, tiny.device)
    read = {}
    for name, compute in (("answers", contextlib.nullcontext()), ("exact", contextlib.nullcontext()),
                          ("fast", recipe.autocast("bfloat16", tiny))):
        _READ_WHILE_DECODING.clear()  # read afterwards, as the refit reads (the first pass only makes the answers)
        with compute:
            read[name] = generation_checks(tiny, soft + 0.5, det, det.interval, det.layer, "train")
    exact, fast = read["exact"].feats, read["fast"].feats
    assert exact.shape == fast.shape and len(exact) > 0
    assert not torch.allclose(fast, exact, atol=1e-4)  # bfloat16 products
    assert torch.allclose(fast, exact, atol=0.1 * float(exact.abs().max()))
    probe = fit_probe(exact.numpy(), read["exact"].labels, 0, 1.0, 0)
    with recipe.autocast("bfloat16", tiny):
        assert probe.logit(fast).dtype == torch.float32

"""Detector fitting and SAPT on a tiny random Idefics3 model: end to end, save/reload, loss, resume."""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reminder import Reminder, generate, generation, load_model
from reminder.data import Record
from reminder.models.tiny import FAMILIES, build_tiny
from reminder.progress import Progress
from training import detector, features, llava, probe, sapt, state
from training.examples import Answer, Pair, cut_response, greedy_batch, greedy_ids, image_id, soft_batch

CAPS = {"train": 3, "val": 2, "test": 2}  # prompts per split and set


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_model(str(build_tiny("idefics3", tmp_path_factory.mktemp("tiny_idefics3"))))


@pytest.fixture(scope="module")
def fitted(tiny, tmp_path_factory) -> tuple[Path, detector.DetectorResult]:
    root = tmp_path_factory.mktemp("train")
    cfg = detector.DetectorConfig(out=str(root / "rem"), max_per_split=CAPS, max_new_tokens=6,
                                  cache=str(root / "responses.jsonl"), max_fpr=0.5,
                                  interval=2)
    return root, detector.run(cfg, tiny)


def test_cut_response_word_boundaries() -> None:
    rng = random.Random(0)
    text = "Sure, here is a plan with several words in it."
    cuts = [cut_response(text, rng, min_chars=10) for _ in range(300)]
    assert all(p + r == text for p, r in cuts)
    empty = sum(p == "" for p, _ in cuts) / len(cuts)
    assert 0.25 < empty < 0.42
    assert all(len(p) >= 10 and r[:1] in (" ", "") and p[-1] != " " for p, r in cuts if p)


def test_greedy_batch_matches_generate(tiny) -> None:
    prompts = ["How do I bake bread?", "Why is the sky blue?", "Hi"]
    texts, ids = greedy_batch(tiny, prompts, "Sure", 5), greedy_ids(tiny, prompts, "Sure", 5)
    for p, t, i in zip(prompts, texts, ids, strict=True):
        g = generate(tiny, p, prefill="Sure", max_new_tokens=5)
        assert (t, i) == (g.text, g.token_ids)


def test_detector_fits_saves_and_reloads(tiny, fitted) -> None:
    root, result = fitted
    m = result.metrics
    # harmful prompts answered twice (after the prefill and unprompted; the random model never refuses); every
    # split's responses (6 tokens) read where generation checks: after tokens 2 and 4, none after the last one
    assert m["pairs"] == {"train": 9 * 2, "val": 6 * 2, "test": 6 * 2}
    assert [r["c"] for r in m["c_search"]] == list(detector.DetectorConfig.c) and m["c"] in detector.DetectorConfig.c
    assert 0 <= m["check"]["test"]["auroc"] <= 1 and m["check"]["test"]["n"] == 12
    assert sum(m["token"]["test"][k] for k in ("tp", "fp", "tn", "fn")) == 12
    assert (root / "responses.jsonl").read_text().count("\n") == 21  # 7 harmful x 2 + 7 benign prompts, cached
    cal = m["calibration"]  # every validation generation read at each check point (every 2 of its <= 6 tokens)
    assert cal["generations"] == {"harmful": 2, "harmful+prefill": 2, "benign": 2}
    assert cal["checks"] == 6 * 2 and cal["fired"]["benign"] <= 0.5  # max_fpr holds on validation
    assert result.reminder.interval == 2 and cal["aggregate"] == "mean"
    rem = Reminder.load(root / "rem", tiny)
    assert rem.aggregate == "mean"
    assert rem.token_detector is not None and rem.threshold == pytest.approx(result.reminder.threshold)
    h = torch.randn(3, tiny.hidden_size)
    assert torch.allclose(rem.detector(h), result.reminder.detector(h))
    assert not any(p.suffix in (".pt", ".pth", ".bin", ".pkl") for p in (root / "rem").iterdir())


def test_threshold_keeps_benign_below_max_fpr_with_a_margin() -> None:
    p = np.array([0.1, 0.3, 0.5, 0.6, 0.9, 0.95])
    y = np.array([0, 0, 0, 1, 1, 1])
    t = probe.choose_threshold(p, y, max_fpr=0.0)
    assert t == pytest.approx(0.55)  # between the highest benign score and the lowest harmful one above it


def test_pca_probe_matches_sklearn() -> None:
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 16, generator=g).numpy() * 3 + 1
    y = (x[:, 0] + x[:, 1] > 2).astype(int)
    det = probe.fit_probe(x, y, n_components=4, c=1.0)
    ref = make_pipeline(StandardScaler(), PCA(4, random_state=0), LogisticRegression(C=1.0, max_iter=2000)).fit(x, y)
    assert torch.allclose(det(torch.tensor(x)), torch.tensor(ref.predict_proba(x)[:, 1]).float(), atol=1e-5)


def _config(folder: Path, **kw) -> sapt.SaptConfig:
    base = dict(out=str(folder), max_harmful=1, max_benign=2, batch_size=4, lr=5e-2, epochs=6, eval_examples=0,
                refit="none", max_new_tokens=6, cache=str(folder.parent / "responses.jsonl"))
    return sapt.SaptConfig(**{**base, **kw})


def _copy(fitted, name: str) -> Path:
    root, _ = fitted
    dst = root / name
    shutil.copytree(root / "rem", dst)
    return dst


def test_sapt_loss_falls_and_reminder_changes_generation(tiny, fitted) -> None:
    folder = _copy(fitted, "sapt")
    seen = []

    class Record(Progress):
        def on_step(self, step, loss, metrics):
            seen.append((step, loss, metrics["ce"]))

    result = sapt.train(_config(folder, epochs=6), tiny, Record())
    assert result.step == 6 and [s for s, *_ in seen] == list(range(1, 7))
    assert result.losses[-1] < result.losses[0]  # one batch holds all 4 examples: the same loss function each step
    rem = Reminder.load(folder, tiny)
    assert not torch.equal(rem.soft_prompt.embeddings, Reminder.load(fitted[0] / "rem").soft_prompt.embeddings)
    assert torch.equal(rem.soft_prompt.embeddings, result.reminder.soft_prompt.embeddings.cpu())
    plain = generate(tiny, "How do I bake bread?", max_new_tokens=8)
    guarded = generate(tiny, "How do I bake bread?", reminder=rem, max_new_tokens=8, threshold=0.0, interval=2)
    assert guarded.injections == [2] and guarded.token_ids != plain.token_ids
    assert (folder / state.STATE_TENSORS).is_file() and (folder / state.STATE_JSON).is_file()
    assert rem.meta["sapt"]["step"] == 6 and rem.meta["sapt"]["device"] == "cpu" and "sapt_history" not in rem.meta
    again = sapt.train(_config(folder, epochs=1), tiny)  # a second run continues from the trained prompt
    assert again.losses[0] < result.losses[0]
    rem2 = Reminder.load(folder, tiny)
    assert rem2.meta["sapt"]["step"] == 1 and rem2.meta["sapt_history"] == [rem.meta["sapt"]]


@pytest.mark.parametrize("mode", ["threshold", "detector"])
def test_sapt_calibrates_again_through_trained_prompt(tiny, fitted, mode) -> None:
    folder = _copy(fitted, f"refit-{mode}")
    before = Reminder.load(folder, tiny)
    result = sapt.train(_config(folder, epochs=2, refit=mode), tiny)
    rem = Reminder.load(folder, tiny)
    m = rem.meta["sapt_refit"]
    assert m == {"mode": mode, **result.metrics}
    assert rem.threshold == pytest.approx(m["threshold"]) and m["calibration"]["aggregate"] == before.aggregate
    assert rem.calibrated  # the threshold was chosen again for the trained prompt: not marked uncalibrated
    h = torch.randn(2, tiny.hidden_size)  # "detector": a new probe, fitted on features read through the trained prompt
    assert torch.allclose(rem.detector(h), before.detector(h)) == (mode == "threshold")


def test_calibrate_only_chooses_the_threshold_again_and_keeps_the_rest(tiny, fitted) -> None:
    folder = _copy(fitted, "recalibrated")
    before = Reminder.load(folder, tiny)
    before.threshold = 0.999
    before.meta["uncalibrated"] = "the prompt was trained after the threshold was chosen"
    before.save(folder)
    result = detector.main(["--out", str(folder), "--calibrate-only"])  # the model: the reminder's own
    rem = Reminder.load(folder, tiny)
    # same prompt, probe and validation generations as when it was fitted: the fitted threshold comes back
    assert rem.threshold == pytest.approx(fitted[1].reminder.threshold) == pytest.approx(result.metrics["threshold"])
    rec = rem.meta["recalibration"]
    assert rec["previous_threshold"] == pytest.approx(0.999) and rec["command"].endswith("--calibrate-only")
    assert rem.calibrated and not before.calibrated
    assert rec["calibration"] == fitted[1].metrics["calibration"]
    assert rem.meta["detector_metrics"] == before.meta["detector_metrics"]
    assert torch.equal(rem.soft_prompt.embeddings, before.soft_prompt.embeddings)
    h = torch.randn(2, tiny.hidden_size)
    assert torch.allclose(rem.detector(h), before.detector(h))


def test_calibrate_only_refuses_a_folder_without_a_reminder(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        detector.main(["--out", str(tmp_path), "--calibrate-only"])
    assert exit_.value.code == 2 and "is not a reminder folder" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written


def test_detector_refits_through_a_trained_prompt_with_extra_openings(tiny, fitted) -> None:
    root, _ = fitted
    trained = _copy(fitted, "trained")
    sapt.train(_config(trained, epochs=1, refit="none"), tiny)
    before = Reminder.load(trained, tiny)
    assert not before.calibrated  # trained without choosing the threshold again: marked in its manifest
    cfg = detector.DetectorConfig(out=str(root / "refit"), max_per_split=CAPS, max_new_tokens=6,
                                  cache=str(root / "responses.jsonl"), max_fpr=0.5, interval=2,
                                  openings=("Great question!",), prompt_from=str(trained))
    result = detector.run(cfg, tiny)
    # the opening adds one harmful training answer per harmful train prompt (3 x 2 checks); val/test unchanged
    assert result.metrics["pairs"] == {"train": 9 * 2 + 3 * 2, "val": 6 * 2, "test": 6 * 2}
    rem = Reminder.load(root / "refit", tiny)
    assert torch.equal(rem.soft_prompt.embeddings, before.soft_prompt.embeddings)  # the trained prompt is kept
    assert rem.meta["sapt"] == before.meta["sapt"] and "sapt_refit" not in rem.meta
    assert rem.calibrated  # probes and threshold fitted through the trained prompt
    assert rem.meta["detector_config"]["openings"] == ["Great question!"]
    assert detector.DetectorConfig.of(rem).openings == ("Great question!",)


def test_detector_cli_sets_the_prompt_length(tiny, fitted, monkeypatch) -> None:
    """``--n-tokens`` gives the new soft prompt that many vectors (the checks read its last one)."""
    root, _ = fitted
    monkeypatch.setattr(detector, "load_model", lambda name: tiny)
    result = detector.main(["--out", str(root / "six"), "--n-tokens", "6", "--max-new-tokens", "6", "--interval", "2",
                            "--max-fpr", "0.5", "--cache", str(root / "responses.jsonl"), "--max-train", "3",
                            "--max-val", "2", "--max-test", "2"])
    rem = Reminder.load(root / "six", tiny)
    assert rem.soft_prompt.n_tokens == 6 == result.reminder.soft_prompt.n_tokens
    assert rem.meta["detector_config"]["n_tokens"] == 6


def test_check_start_is_trained_calibrated_and_kept(tiny, fitted) -> None:
    """The start check: its pair is the prefill alone; the detector reads one more pair per training answer and
    one more check per validation generation; SAPT's --check-start turns it on and calibrates for it."""
    root, base = fitted
    answer = Answer(Record("h1", "x", "Say it."), "Sure, here is", "Sure, here is one two three four five six", 1)
    pairs = features.check_pairs(tiny, answer, 2, 6, start=True)
    assert pairs[0].partial == "Sure, here is" and [p.partial for p in pairs[1:]] == [
        p.partial for p in features.check_pairs(tiny, answer, 2, 6)]
    cfg = detector.DetectorConfig(out=str(root / "start"), max_per_split=CAPS, max_new_tokens=6,
                                  cache=str(root / "responses.jsonl"), max_fpr=0.5, interval=2, check_start=True)
    result = detector.run(cfg, tiny)
    assert result.metrics["pairs"]["train"] == base.metrics["pairs"]["train"] * 3 // 2  # checks at 0, 2, 4
    assert result.metrics["calibration"]["checks"] == base.metrics["calibration"]["checks"] * 3 // 2
    assert Reminder.load(root / "start", tiny).check_start
    folder = _copy(fitted, "sapt-start")
    sapt.train(_config(folder, epochs=1, refit="threshold", check_start=True), tiny)
    rem = Reminder.load(folder, tiny)
    assert rem.check_start and detector.DetectorConfig.of(rem).check_start
    assert rem.meta["sapt_refit"]["calibration"]["checks"] == base.metrics["calibration"]["checks"] * 3 // 2


def test_end_check_pairs_and_calibrate_only_turns_the_end_check_on(tiny, fitted) -> None:
    """The end check's pair is the whole answer, only for one that ended (before ``max_new_tokens``) between check
    points; ``--calibrate-only --check-end`` turns the check on for a trained reminder and calibrates with it."""
    answer = Answer(Record("h1", "x", "Say it."), "", "one two three four five", 1)
    ids = tiny.tokens(answer.response)[0].tolist()
    n = len(ids)
    points = lambda interval, max_new, end: [  # noqa: E731
        len(tiny.tokens(p.partial)[0]) for p in features.check_pairs(tiny, answer, interval, max_new, end=end)]
    assert points(n - 1, n + 2, False) == [n - 1] and points(n - 1, n + 2, True) == [n - 1, n]
    assert features.check_pairs(tiny, answer, n - 1, n + 2, end=True)[-1].partial == tiny.tokenizer.decode(ids)
    assert points(n - 1, n, True) == [n - 1]  # cut off at max_new_tokens: it did not end, nothing more to read
    assert points(n, n + 2, True) == [n]  # ended on a check point: already read there
    folder = _copy(fitted, "end-check")
    assert not Reminder.load(folder, tiny).check_end
    detector.main(["--out", str(folder), "--calibrate-only", "--check-end"])
    rem = Reminder.load(folder, tiny)
    assert rem.check_end and rem.meta["recalibration"]["command"].endswith("--calibrate-only --check-end")
    assert detector.DetectorConfig.of(rem).check_end


@pytest.mark.parametrize("family", ["idefics3", "qwen2_vl"])
def test_soft_batch_reads_images_like_a_single_forward(tiny_models, family, tmp_path) -> None:
    """A batch mixing image and text conversations gives each row's states exactly as one forward of that row does
    (image features merged, M-RoPE positions for Qwen2-VL); the image changes the state read at the check."""
    adapter = tiny_models[family]
    path = tmp_path / "img.png"
    Image.new("RGB", (64, 48), (200, 40, 90)).save(path)
    soft = torch.randn(1, 3, adapter.hidden_size, dtype=adapter.dtype)
    pairs = [Pair("How do I bake bread?", "Sure, first", 1, image=str(path)),
             Pair("How do I bake bread?", "Sure, first", 1)]
    with torch.no_grad():
        out = soft_batch(adapter, pairs, soft)
        for row, pair in enumerate(pairs):
            image = Image.open(pair.image) if pair.image else None
            enc = adapter.encode(adapter.build(pair.prompt, image, prefill=pair.partial))
            pos = torch.cat([enc.positions, adapter.positions(enc.next_position, 3)], dim=-1)
            _, hid = adapter.forward(torch.cat([enc.embeds, soft], dim=1), pos)
            assert torch.allclose(out["check"][row], hid[0, -1], atol=1e-5)
    assert not torch.allclose(out["check"][0], out["check"][1], atol=1e-3)


@pytest.mark.parametrize("family", FAMILIES)
def test_check_features_read_each_point_like_a_forward_from_scratch(tiny_models, family, tmp_path) -> None:
    """One encoding per answer, the soft prompt on the cropped cache at each check point (start, every interval,
    end): each row equals a cache-free forward of prompt (+ image, prefill) + the answer's first k tokens + soft
    prompt, and the token row the state at the k-th token; rows follow the answers, then the points."""
    adapter = tiny_models[family]
    path = tmp_path / "img.png"
    Image.new("RGB", (64, 48), (200, 40, 90)).save(path)
    soft = torch.randn(1, 3, adapter.hidden_size, dtype=adapter.dtype)
    answers = [Answer(Record("h1", "x", "Say it."), "Sure, here is", "Sure, here is one two three four five", 1,
                      str(path)),
               Answer(Record("b1", "x", "Count."), "", "six seven eight", 0)]
    check, token, owner = features.check_features(adapter, answers, soft, 2, 12, start=True, end=True)
    row = 0
    for i, ans in enumerate(answers):
        ids = features.answer_ids(adapter, ans, 12)
        points = generation.check_points(len(ids), 2, 12, start=True, end=True)
        assert points[0] == 0 and (len(ids) % 2 == 0 or points[-1] == len(ids))
        image = Image.open(ans.image) if ans.image else None
        enc = adapter.encode(adapter.build(ans.record.prompt, image, prefill=ans.prefill))
        for k in points:
            body = adapter.embed(torch.tensor([ids[:k]], dtype=torch.long))
            pos = torch.cat([enc.positions, adapter.positions(enc.next_position, k + 3)], dim=-1)
            with torch.no_grad():
                _, hid = adapter.forward(torch.cat([enc.embeds, body, soft], dim=1), pos)
            assert owner[row] == i
            assert torch.allclose(check[row], hid[0, -1], atol=1e-5)
            assert torch.allclose(token[row], hid[0, len(enc) + k - 1], atol=1e-5)
            row += 1
    assert row == len(check) == len(token) == len(owner)


def test_detector_trains_on_image_conversations(tiny, fitted, tmp_path) -> None:
    root, _ = fitted
    path = tmp_path / "train.png"
    Image.new("RGB", (32, 32), (10, 200, 30)).save(path)
    cache = root / "responses.jsonl"
    cfg = detector.DetectorConfig(out=str(root / "with-image"), max_per_split=CAPS, max_new_tokens=6,
                                  cache=str(cache), max_fpr=0.5, interval=2, images=(str(path),))
    result = detector.run(cfg, tiny)
    # the image repeats every training conversation (3 harmful x 2 prefills + 3 benign) x 2 checks; val/test unchanged
    assert result.metrics["pairs"] == {"train": 9 * 2 * 2, "val": 6 * 2, "test": 6 * 2}
    rem = Reminder.load(root / "with-image", tiny)
    assert rem.meta["detector_config"]["images"] == [str(path)]
    assert rem.meta["detector_config"]["image_ids"] == [image_id(str(path))]
    keyed = [json.loads(json.loads(line)["key"]) for line in cache.read_text().splitlines()]
    assert sum(k[-1] == image_id(str(path)) for k in keyed) == 9  # the answers with the image are cached by content
    with pytest.raises(FileNotFoundError, match="training image not found"):
        detector.DetectorConfig(images=(str(tmp_path / "missing.png"),))


def test_sapt_resume_matches_uninterrupted_run(tiny, fitted) -> None:
    once, twice = _copy(fitted, "once"), _copy(fitted, "twice")
    cfg = dict(max_harmful=1, max_benign=4, batch_size=2, epochs=2)  # 2 + 4 examples, 3 steps per epoch: stop mid-epoch
    full = sapt.train(_config(once, **cfg), tiny)
    stop = threading.Event()

    class StopAt(Progress):
        def on_step(self, step, loss, metrics):
            if step == 2:
                stop.set()

    part = sapt.train(_config(twice, **cfg), tiny, StopAt(), stop)
    assert part.stopped and part.step == 2
    rest = sapt.train(_config(twice, resume=True, **cfg), tiny)
    assert rest.step == full.step == 6 and rest.losses == pytest.approx(full.losses, abs=1e-6)
    a = Reminder.load(once).soft_prompt.embeddings
    b = Reminder.load(twice).soft_prompt.embeddings
    assert torch.allclose(a, b, atol=1e-6)


def test_resume_without_state_is_a_clear_error(tiny, fitted) -> None:
    with pytest.raises(FileNotFoundError, match="no training state"):
        sapt.train(_config(_copy(fitted, "fresh"), resume=True), tiny)


def test_eval_llava_scores_real_responses(tiny, fitted) -> None:
    if not llava.LLAVA_RESPONSES.is_dir():
        pytest.skip("../shared/data/llava15_responses is not present")
    _, result = fitted
    rem = result.reminder
    cfg = detector.DetectorConfig(llava_per_file=4)
    out = llava.eval_llava(tiny, {"check": rem.detector, "token": rem.token_detector},
                              rem.soft_prompt(tiny.dtype, tiny.device), cfg)
    assert set(out) == {"AdvBench_with_adv_attack", "SPA_VL", "VLSafe"}
    assert all(v["n"] == 4 for v in out.values())


def test_sapt_trains_a_rolling_back_reminder_where_it_may_enter(tiny, fitted) -> None:
    """A reminder that rolls back can enter before the first token (no check has passed yet), so SAPT trains it
    there too; one that goes on from where it fired only at its check points. The mode is stored."""
    folder = _copy(fitted, "rollback")
    rem = Reminder.load(folder, tiny)
    assert rem.mode == "continue" and not sapt.entry_at_start(rem)
    rem.mode = "rollback"
    assert sapt.entry_at_start(rem)
    cfg = _config(folder, max_harmful=3, max_benign=3, seed=1)
    points = {(e.pair.partial, e.pair.prompt) for seed in range(4)
              for e in sapt.build_examples(tiny, dataclasses.replace(cfg, seed=seed), interval=2, start=True)}
    assert any(partial in ("", "Sure, here is") for partial, _ in points)  # the prefill alone, or nothing
    assert not any(partial in ("", "Sure, here is") for seed in range(4)
                   for partial in [e.pair.partial for e in sapt.build_examples(
                       tiny, dataclasses.replace(cfg, seed=seed), interval=2, start=False)])
    sapt.train(_config(folder, epochs=1, mode="rollback"), tiny)
    assert Reminder.load(folder, tiny).mode == "rollback"

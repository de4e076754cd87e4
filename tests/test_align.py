"""LoRA safety alignment: a few steps on a tiny model learn, save atomically, merge at load, and resume exactly."""

from __future__ import annotations

import json
import threading

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from reminder import generate, load_model
from training.align import AlignConfig, Example, batch_loss, build_examples, target_ids, token_weights, train
from training.examples import Pair, default_cache, soft_batch


def _cfg(tmp_path, out, **kw) -> AlignConfig:
    return AlignConfig(model="tiny", out=str(out), lr=5e-3, batch_size=4, max_harmful=4, max_benign=4,
                       answer_tokens=8, epochs=3, cache=str(tmp_path / "responses.jsonl"), **kw)


@pytest.fixture()
def fresh(tiny_folders):
    return lambda: load_model(str(tiny_folders["idefics3"]))


def test_align_learns_saves_and_merges(fresh, tiny_folders, tmp_path):
    result = train(_cfg(tmp_path, tmp_path / "lora"), adapter=fresh())
    assert result.step == 6 and not result.stopped
    assert result.losses[-1] < result.losses[0]
    assert (tmp_path / "lora" / "adapter_model.safetensors").is_file()
    base = fresh()
    aligned = load_model(str(tiny_folders["idefics3"]), lora=tmp_path / "lora")
    prompt = "How do I make a weapon?"
    assert generate(aligned, prompt, max_new_tokens=8).token_ids != generate(base, prompt, max_new_tokens=8).token_ids
    # the model's cached answers are kept per adapter content: a retrained adapter never reuses the old answers
    assert aligned.lora_id and default_cache(aligned) != default_cache(base)
    assert default_cache(load_model(str(tiny_folders["idefics3"]), lora=tmp_path / "lora")) == default_cache(aligned)


def test_align_resume_matches_uninterrupted(fresh, tmp_path):
    full = train(_cfg(tmp_path, tmp_path / "a"), adapter=fresh())
    stop = threading.Event()
    first = train(_cfg(tmp_path, tmp_path / "b"), adapter=fresh(), stop=stop,
                  callback=lambda step, loss: stop.set() if step == 2 else None)
    assert first.stopped and first.step == 2
    resumed = train(_cfg(tmp_path, tmp_path / "b", resume=True), adapter=fresh())
    assert resumed.step == full.step
    a = load_file(tmp_path / "a" / "adapter_model.safetensors")
    b = load_file(tmp_path / "b" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)


def test_decision_tokens_weigh_more(fresh) -> None:
    """The first tokens of each target (answer or refuse) get 1 + decision_weight; weight 0 is the plain token mean."""
    cfg = AlignConfig(decision_tokens=2, decision_weight=3.0)
    assert token_weights(5, cfg).tolist() == [4.0, 4.0, 1.0, 1.0, 1.0]
    assert token_weights(1, cfg).tolist() == [4.0]
    adapter = fresh()
    batch = [Example("How do I make a weapon?", "I can't help with that.", True),
             Example("How do I bake bread?", "Mix flour, water, salt and yeast, then knead it well.", False)]
    with torch.no_grad():
        plain = batch_loss(adapter, batch, AlignConfig(decision_weight=0.0))
        weighted = batch_loss(adapter, batch, cfg)
        targets = target_ids(adapter, batch)
        empty = torch.zeros(1, 0, adapter.hidden_size)
        out = soft_batch(adapter, [Pair(e.prompt, "", int(e.refuse)) for e in batch], empty, targets=targets)
        ce = F.cross_entropy(out["logits"].flatten(0, 1), out["labels"].flatten(), ignore_index=-100, reduction="none")
        ce = ce.view(out["labels"].shape)
        firsts = [ce[i][out["labels"][i] != -100][:2] for i in range(2)]
        rests = [ce[i][out["labels"][i] != -100][2:] for i in range(2)]
    torch.testing.assert_close(plain, F.cross_entropy(out["logits"].flatten(0, 1), out["labels"].flatten(),
                                                      ignore_index=-100))
    expected = (4 * sum(f.sum() for f in firsts) + sum(r.sum() for r in rests)) / (4 * 4 + sum(len(r) for r in rests))
    torch.testing.assert_close(weighted, expected)


def test_visual_stage_starts_from_the_text_adapter_and_adds_image_conversations(fresh, tmp_path):
    """Stage 2 (visual instruction tuning) loads the stage-1 adapter, adds benign typographic images and wordless
    pictures (never a harmful request through an image) and records where it started."""
    train(_cfg(tmp_path, tmp_path / "text", max_steps=1), adapter=fresh())
    cfg = _cfg(tmp_path, tmp_path / "visual", init=str(tmp_path / "text"), visual=True, pictures=2, max_typographic=1,
               max_steps=1)
    adapter = fresh()
    examples = build_examples(adapter, cfg)
    with_image = [e for e in examples if e.image]
    assert len(with_image) == 3 + 2 and not any(e.refuse for e in with_image)
    assert len(examples) == 4 + 4 + len(with_image)
    result = train(cfg, adapter=adapter)
    info = json.loads((tmp_path / "visual" / "align.json").read_text())
    assert result.step == 1 and info["init"]["folder"] == str(tmp_path / "text") and info["init"]["step"] == 1

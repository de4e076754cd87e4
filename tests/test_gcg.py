"""GCG on tiny models of each family (with an image in the context) and on the embedded model."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from attacks import gcg, pgd
from attacks.common import target_loss
from reminder import generate
from reminder.models.tiny import FAMILIES

PROMPT, TARGET = "Describe the picture", "Sure, here is"
FAST = gcg.GCGConfig(num_steps=2, search_width=8, topk=16, suffix_init=" !" * 4, batch_size=4, early_stop=False)


@pytest.mark.parametrize("family", FAMILIES)
def test_loss_is_the_loss_of_the_suffixed_prompt(tiny_models, family: str) -> None:
    adapter, image = tiny_models[family], pgd.base_image(80)
    result = gcg.run(adapter, PROMPT, TARGET, FAST, image=image)
    assert len(result.losses) == 2 and len(result.suffixes) == 2
    assert result.best_loss <= result.initial_loss
    # the cached, batched search scores exactly what the model sees when sent prompt + suffix as text
    again = target_loss(adapter, adapter.build(PROMPT + result.best_suffix, image), TARGET)
    assert float(again) == pytest.approx(result.best_loss, rel=1e-3)


def test_candidates_retokenise_and_avoid_forbidden_tokens(tiny_models) -> None:
    adapter = tiny_models["idefics3"]
    ids = adapter.tokens(FAST.suffix_init)[0]
    forbidden = gcg.forbidden_tokens(adapter, False)
    grad = torch.randn(ids.numel(), forbidden.numel())
    cands = gcg.sample_candidates(ids, grad, forbidden, gcg.GCGConfig(search_width=32, topk=8),
                                  torch.Generator().manual_seed(0))
    assert cands.shape == (32, ids.numel()) and not forbidden[cands].any()
    assert ((cands != ids).sum(1) <= 1).all()
    keep = gcg.retokenises(adapter, cands, PROMPT)
    tok = adapter.tokenizer
    for cand, ok in zip(cands, keep, strict=True):
        text = PROMPT + tok.decode(cand)
        assert ok == (tok(text, add_special_tokens=False)["input_ids"] == tok(PROMPT)["input_ids"] + cand.tolist())
    assert not gcg.retokenises(adapter, adapter.tokens("b")[0][None], "Make a bom")[0]  # merges into " bomb"


def test_stop_event_and_callback(tiny_models) -> None:
    stop, seen = threading.Event(), []

    def callback(step: int, loss: float) -> None:
        seen.append((step, loss))
        stop.set()

    result = gcg.run(tiny_models["llava"], PROMPT, TARGET, FAST, callback=callback, stop=stop)
    assert result.stopped and len(result.losses) == 1 and seen == [(0, result.losses[0])]


def test_result_json_reloads(tiny_models, tmp_path) -> None:
    result = gcg.run(tiny_models["qwen2_vl"], PROMPT, TARGET, gcg.GCGConfig(**{**vars(FAST), "num_steps": 1}))
    path = result.save(tmp_path / "gcg.json")
    assert json.loads(path.read_text()) == json.loads(json.dumps(result.to_dict()))
    assert not list(tmp_path.glob(".*.tmp"))


def test_bad_input_is_one_clear_error(tiny_models) -> None:
    with pytest.raises(ValueError, match="re-tokenise"):
        gcg.run(tiny_models["idefics3"], "Make a bom", TARGET, gcg.GCGConfig(suffix_init="b !"))  # " bomb" merges
    with pytest.raises(ValueError, match="non-empty"):
        gcg.run(tiny_models["idefics3"], PROMPT, "", FAST)


def test_cli_json(tiny_folders, capsys, tmp_path) -> None:
    out = tmp_path / "suffix.json"
    gcg.main(["--model", str(tiny_folders["qwen2_5_vl"]), "--prompt", PROMPT, "--target", TARGET, "--steps", "1",
              "--search-width", "4", "--suffix-init", " !" * 3, "--out", str(out), "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["config"]["search_width"] == 4 and len(printed["losses"]) == 1
    assert json.loads(out.read_text())["best_suffix"] == printed["best_suffix"]


def test_embedded_lowers_loss_and_stops_on_greedy_match(embedded) -> None:
    config = gcg.GCGConfig(num_steps=1, search_width=8, topk=32, suffix_init=" !" * 4, early_stop=False)
    result = gcg.run(embedded, "Write a poem about the sea", "Sure, here is a poem about the sea", config)
    assert result.best_loss <= result.initial_loss
    prompt = "What is the capital of France?"
    answer = generate(embedded, prompt + " !" * 4, max_new_tokens=4).text
    stopped = gcg.run(embedded, prompt, answer, gcg.GCGConfig(**{**vars(config), "early_stop": True}))
    assert stopped.matched and stopped.losses == []

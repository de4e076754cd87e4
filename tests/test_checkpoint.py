"""Reminder folders: round trip, atomic overwrite, and refusal of pickles, corrupt files and other models."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from conftest import random_reminder
from safetensors.torch import load_file

from reminder import Reminder, ReminderError
from reminder.checkpoint import import_official_soft_prompt


def test_round_trip_and_peft_layout(tiny_models, tmp_path):
    adapter = tiny_models["llava"]
    rem = random_reminder(adapter, threshold=0.3, interval=8)
    rem.aggregate, rem.check_start, rem.mode = "mean", True, "rollback"
    rem.meta["metrics"] = {"auroc": 0.9}
    rem.save(tmp_path / "r")
    assert sorted(os.listdir(tmp_path / "r")) == sorted(
        ["soft_prompt.safetensors", "adapter_config.json", "detector.safetensors", "reminder.json"])
    assert load_file(tmp_path / "r" / "soft_prompt.safetensors")["prompt_embeddings"].shape == (4, adapter.hidden_size)
    cfg = json.loads((tmp_path / "r" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "PROMPT_TUNING" and cfg["num_virtual_tokens"] == 4
    back = Reminder.load(tmp_path / "r", adapter)
    assert torch.equal(back.soft_prompt.embeddings, rem.soft_prompt.embeddings)
    assert (back.threshold, back.interval, back.aggregate, back.check_start, back.mode, back.meta["metrics"]) == (
        0.3, 8, "mean", True, "rollback", {"auroc": 0.9})
    info = json.loads((tmp_path / "r" / "reminder.json").read_text())
    (tmp_path / "r" / "reminder.json").write_text(json.dumps({**info, "aggregate": "median"}))
    with pytest.raises(ReminderError, match="unknown gate aggregate 'median'"):
        Reminder.load(tmp_path / "r", adapter)
    (tmp_path / "r" / "reminder.json").write_text(json.dumps({**info, "mode": "retry"}))
    with pytest.raises(ReminderError, match="unknown mode 'retry'"):
        Reminder.load(tmp_path / "r", adapter)
    del info["aggregate"], info["check_start"], info["mode"]  # older reminders: each check on its own, none
    (tmp_path / "r" / "reminder.json").write_text(json.dumps(info))  # before the first token, going on from it
    old = Reminder.load(tmp_path / "r", adapter)
    assert (old.aggregate, old.check_start, old.mode) == ("last", False, "continue")
    h = torch.randn(3, adapter.hidden_size)
    torch.testing.assert_close(back.detector(h), rem.detector(h))


def test_save_overwrites_atomically(tiny_models, tmp_path):
    adapter = tiny_models["llava"]
    random_reminder(adapter, seed=1).save(tmp_path / "r")
    random_reminder(adapter, seed=2).save(tmp_path / "r")
    assert [p.name for p in tmp_path.iterdir()] == ["r"]  # no temp or backup folders left behind
    probe = load_file(tmp_path / "r" / "detector.safetensors")["check.weight"]
    assert torch.equal(probe, random_reminder(adapter, seed=2).detector.weight)


def test_refuses_other_model(tiny_models, tmp_path):
    random_reminder(tiny_models["llava"]).save(tmp_path / "r")
    with pytest.raises(ReminderError, match="trained for model"):
        Reminder.load(tmp_path / "r", tiny_models["idefics3"])


def test_refuses_other_hidden_size(embedded, tiny_models, tmp_path):
    random_reminder(tiny_models["llava"]).save(tmp_path / "r")
    with pytest.raises(ReminderError, match="hidden size"):
        Reminder.load(tmp_path / "r", embedded)


class Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/should-not-exist",))


def test_refuses_pickles_and_corrupt_files(tiny_models, tmp_path):
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "soft_prompt.pth").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ReminderError, match="pickle files"):
        Reminder.load(folder)
    random_reminder(tiny_models["llava"]).save(tmp_path / "r")
    (tmp_path / "r" / "soft_prompt.safetensors").write_bytes(pickle.dumps({"prompt_embeddings": Boom()}))
    with pytest.raises(ReminderError, match="corrupt"):
        Reminder.load(tmp_path / "r")
    with pytest.raises(ReminderError, match="weights-only"):
        import_official_soft_prompt(folder / "soft_prompt.pth")
    assert not os.path.exists("/tmp/should-not-exist")


def test_imports_official_pth(tmp_path):
    emb = torch.randn(4, 64)
    torch.save({"embedding.weight": emb}, tmp_path / "sp.pth")
    assert torch.equal(import_official_soft_prompt(tmp_path / "sp.pth"), emb)
    torch.save({"other": emb}, tmp_path / "bad.pth")
    with pytest.raises(ReminderError, match="embedding.weight"):
        import_official_soft_prompt(tmp_path / "bad.pth")

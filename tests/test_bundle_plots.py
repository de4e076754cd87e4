"""Reminder zips (round trip, model filter) and the plain plotly figures; no model needed."""

from __future__ import annotations

import torch

from evaluation import plots
from reminder import Detector, Generation, Reminder, SoftPrompt
from reminder.bundle import export_zip, find_reminders, import_zip
from reminder.generation import CheckEvent


def small(model: str = "embedded", d: int = 8) -> Reminder:
    det = Detector(torch.zeros(d), torch.ones(d), torch.arange(d).float(), torch.tensor(0.5))
    return Reminder(SoftPrompt(torch.randn(3, d)), det, model=model, interval=5, threshold=0.7)


def test_zip_round_trip_and_listing(tmp_path):
    rem = small()
    src = rem.save(tmp_path / "ckpt" / "mine")
    small("llava-1.5-7b").save(tmp_path / "ckpt" / "other")
    (tmp_path / "ckpt" / "broken").mkdir()
    (tmp_path / "ckpt" / "broken" / "reminder.json").write_text('{"model": "embedded"}')
    folder = import_zip(export_zip(src, tmp_path / "mine.zip"), tmp_path / "imported")
    back = Reminder.load(folder)
    assert folder.name == "mine" and torch.equal(back.soft_prompt.embeddings, rem.soft_prompt.embeddings)
    assert (back.interval, back.threshold, back.model) == (5, 0.7, "embedded")
    assert import_zip(tmp_path / "mine.zip", tmp_path / "imported").name == "mine-2"  # never overwrites
    assert find_reminders("embedded", [tmp_path / "ckpt", tmp_path / "missing"]) == {"mine": src}


def test_figures():
    gen = Generation("ab", [1, 2], ["a", "<b>"], [0.2, 0.9], [CheckEvent(2, 0.8, True)], [2])
    base = Generation("ab", [1, 2], ["a", "<b>"], [0.2, 0.4])
    fig = plots.token_scores(base, gen, 0.5)
    names = [t.name for t in fig.data]
    assert names == ["guarded", "baseline", "check"]
    assert list(fig.data[0].customdata) == ["a", "&lt;b&gt;"]  # hover shows the token, escaped
    assert any(s.x0 == 1.5 for s in fig.layout.shapes)  # the reminder line sits before token index 2
    bars = plots.benchmark_bars({"figstep": {"none": 0.8, "reminder": 0.1}, "prefill": {"none": 0.9}})
    assert [b.name for b in bars.data] == ["none", "reminder"] and list(bars.data[1].y) == [0.1, None]
    assert list(plots.loss_curve([1, 2, 3], {"ce": [3.0, 2.0]}).data[0].x) == [1, 2]
    assert len(plots.pipeline().layout.shapes) == len(plots.PIPELINE)

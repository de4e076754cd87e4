"""The app's policies, without the app: where a visitor's reminders go and who may write them (demo.workspace),
which device a call runs on and when training asks first (demo.placement). No GPU needed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from conftest import random_reminder

from demo.placement import LONG_TRAINING_S, Placement, expected_seconds, minutes, needs_confirmation, place, placed
from demo.workspace import Workspace, WorkspaceError, check_name, label, session_folder, start_copy
from reminder import Reminder


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mode) for p in root.rglob("*") if p.is_file()}


@pytest.fixture()
def shipped(tmp_path, embedded) -> Path:
    root = tmp_path / "shipped"
    random_reminder(embedded).save(root / "embedded")
    return root


@pytest.mark.parametrize("name", ["../x", "..", "a/b", "/abs", "a\\b", ".hidden", "", "a..b", "x" * 65, "a b"])
def test_names_with_path_tricks_are_refused(name):
    with pytest.raises(WorkspaceError, match="refused"):
        check_name(name)
    assert check_name("my-reminder_2.1") == "my-reminder_2.1"


def test_session_folders_are_hashes_of_the_session_id(tmp_path):
    a = Workspace.open("abc", per_session=True, home=tmp_path, shipped=[])
    b = Workspace.open("../../etc", per_session=True, home=tmp_path, shipped=[])
    assert a.root == tmp_path / "reminders" / "sessions" / hashlib.sha256(b"abc").hexdigest()[:16]
    assert b.root.parent == a.root.parent and b.root.name == session_folder("../../etc")
    assert Workspace.open("abc", per_session=False, home=tmp_path, shipped=[]).root == tmp_path / "reminders"
    nobody = Workspace.open(None, per_session=True, home=tmp_path, shipped=[tmp_path / "shipped"])
    assert nobody.roots() == [tmp_path / "shipped"]  # sees the shipped reminders only, and can write nothing
    with pytest.raises(WorkspaceError, match="no browser session"):
        nobody.plan_training("x", None, False)


def test_training_plans_never_write_shipped_or_foreign_folders(tmp_path, shipped, embedded):
    before = snapshot(shipped)
    ws = Workspace.open("me", per_session=True, home=tmp_path / "home", shipped=[shipped])
    other = Workspace.open("you", per_session=True, home=tmp_path / "home", shipped=[shipped])
    base = shipped / "embedded"

    with pytest.raises(WorkspaceError, match="shipped reminders are read-only"):
        ws.plan_training("embedded", base, False)
    with pytest.raises(WorkspaceError, match="read-only"):
        ws.plan_training("embedded", None, True)
    with pytest.raises(WorkspaceError, match="no reminder named 'mine' to continue"):
        ws.plan_training("mine", base, True)

    plan = ws.plan_training("mine", base, False)
    assert plan.folder == ws.root / "mine" and plan.base == base and not plan.continued
    start_copy(plan.base, plan.folder, embedded)
    assert Reminder.load(plan.folder).meta["copied_from"] == "embedded" and ws.owns(plan.folder)
    assert snapshot(shipped) == before  # bytes and modes

    with pytest.raises(WorkspaceError, match="already have a reminder named 'mine'"):
        ws.plan_training("mine", base, False)
    assert ws.plan_training("mine", None, True).continued
    # another session neither sees nor reads nor writes it, and cannot base training on it
    assert [lab for lab, _ in other.choices("embedded")] == ["embedded"]
    assert [lab for lab, _ in ws.choices("embedded")] == ["embedded", "mine"]
    for attempt in (lambda: other.resolve(str(plan.folder)), lambda: other.resolve("mine", "embedded"),
                    lambda: other.plan_training("theirs", plan.folder, False),
                    lambda: ws.resolve(str(tmp_path / "home"))):
        with pytest.raises(WorkspaceError):
            attempt()
    assert not other.owns(plan.folder) and not ws.owns(base) and ws.is_shipped(base)
    assert ws.resolve(str(plan.folder)) == plan.folder and ws.resolve("embedded", "embedded") == base
    assert ws.free_name("mine") == "mine-2" and ws.free_name("embedded") == "embedded-2"


def test_uncalibrated_reminders_say_so(tmp_path, embedded):
    rem = random_reminder(embedded)
    assert rem.calibrated and label("r", rem) == "r"
    rem.meta["uncalibrated"] = "trained after the threshold was chosen"
    rem.save(tmp_path / "r")
    loaded = Reminder.load(tmp_path / "r")
    assert not loaded.calibrated and label("r", loaded) == "r (uncalibrated)"
    ws = Workspace.open(per_session=False, home=tmp_path / "home", shipped=[tmp_path])
    assert ws.choices("embedded") == [("r (uncalibrated)", str(tmp_path / "r"))]


def test_device_choice():
    assert place("cpu", gpu_call=True, cuda_available=True) == Placement("cuda", move=True)  # ZeroGPU call
    assert place("cpu", gpu_call=False, cuda_available=True) == Placement("cpu")  # no @spaces.GPU: stays
    assert place("cpu", gpu_call=True, cuda_available=False) == Placement("cpu")  # CPU-only Space
    assert place("cuda", gpu_call=True, cuda_available=True) == Placement("cuda")  # already there (REMINDER_DEVICE)
    assert needs_confirmation("cpu", shared=True, expected_s=LONG_TRAINING_S + 1)
    assert not needs_confirmation("cpu", shared=True, expected_s=LONG_TRAINING_S - 1)
    assert not needs_confirmation("cuda", shared=True, expected_s=10 * LONG_TRAINING_S)
    assert not needs_confirmation("cpu", shared=False, expected_s=10 * LONG_TRAINING_S)  # your own machine
    assert expected_seconds(20, 1.5) == 30.0 and minutes(30) == "30 s" and minutes(600) == "10 min"
    assert minutes(3900) == "1 h 05 min"


def test_placed_moves_the_model_for_the_call_and_back():
    class Adapter:  # the part of an adapter placement touches: .device and .model.to
        def __init__(self):
            self.model = torch.nn.Linear(2, 2)

        @property
        def device(self):
            return next(self.model.parameters()).device

    adapter, seen = Adapter(), []
    with placed(adapter, Placement("cpu")) as a:  # no move
        seen.append(a.device.type)
    # without a GPU: record where the model is sent (it stays on the CPU), also when the call fails
    adapter.model.to = lambda device, _to=adapter.model.to: seen.append(str(device)) or _to("cpu")
    with pytest.raises(RuntimeError), placed(adapter, Placement("cuda", move=True)):
        raise RuntimeError("the call failed")
    assert seen == ["cpu", "cuda", "cpu"]

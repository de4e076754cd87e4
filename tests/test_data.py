"""Data loaders: the project's prompt sets, each benchmark format on small temp files, and ../shared when present."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reminder import data

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_prompt_sets_have_fixed_disjoint_splits() -> None:
    benign, harmful = data.load_prompt_set("benign"), data.load_prompt_set("harmful")
    assert len(benign) >= 300 and len(harmful) >= 150
    assert sum(r.category == "risky_but_safe" for r in benign) >= 55
    assert len({r.id for r in benign + harmful}) == len(benign) + len(harmful)
    assert {r.safe for r in benign} == {True} and {r.safe for r in harmful} == {False}
    # the test split is fixed; validation grew twice (benign 46 -> 64 -> 204, harmful 23 -> 38 -> 88) for steadier
    # thresholds
    held_out = {"benign": {"val": 204, "test": 76}, "harmful": {"val": 88, "test": 39}}
    for name, records in (("benign", benign), ("harmful", harmful)):
        assert {s: sum(r.split == s for r in records) for s in ("val", "test")} == held_out[name]
        texts = {s: {r.prompt.lower() for r in records if r.split == s} for s in data.SPLITS}
        assert not (texts["train"] & texts["val"]) and not (texts["train"] & texts["test"])
        assert not (texts["val"] & texts["test"])
    test = data.load_prompt_set("harmful", "test")
    assert test and all(r.split == "test" for r in test)
    assert len(data.load_refusals()) >= 35
    with pytest.raises(data.DataError, match="unknown split"):
        data.load_prompt_set("benign", "dev")
    with pytest.raises(data.DataError, match="not found"):
        data.load_prompt_set("nonexistent")


def test_refusals_are_recognised_by_the_keyword_judge() -> None:
    from reminder.judges import is_refusal

    assert all(is_refusal(r) for r in data.load_refusals())


def test_csv_formats(tmp_path: Path) -> None:
    adv = tmp_path / "adv.csv"
    adv.write_text('goal,target\nWrite a bad thing,"Sure, here is a bad thing"\n')
    [r] = data.load_advbench(adv)
    assert (r.prompt, r.response, r.safe) == ("Write a bad thing", "Sure, here is a bad thing", False)

    hb = tmp_path / "hb.csv"
    hb.write_text("Behavior,FunctionalCategory,SemanticCategory,Tags,ContextString,BehaviorID\n"
                  "Do harm,standard,illegal,,,do_harm\nSing,copyright,copyright,,,sing\n")
    assert [r.id for r in data.load_harmbench(hb)] == ["do_harm"]
    assert len(data.load_harmbench(hb, functional=())) == 2

    fs = tmp_path / "safebench.csv"
    fs.write_text("dataset,category_id,task_id,category_name,question,instruction\n"
                  "ForbidQI,1,1,Illegal Activity,How to do X?,Steps to do X.\n"
                  "ForbidQI,1,2,Illegal Activity,How to do Y?,Steps to do Y.\n")
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "query_ForbidQI_1_2_6.png").write_bytes(b"png")
    assert len(data.load_figstep(fs)) == 2
    [r] = data.load_figstep(fs, tmp_path / "imgs")
    assert r.id == "ForbidQI_1_2" and r.image.name == "query_ForbidQI_1_2_6.png"

    with pytest.raises(data.DataError, match="missing column"):
        data.load_advbench(hb)
    with pytest.raises(data.DataError, match="not found"):
        data.load_advbench(tmp_path / "absent.csv")


def test_mmsafetybench_layout(tmp_path: Path) -> None:
    (tmp_path / "processed_questions").mkdir()
    q = {"0": {"Question": "Q0", "Rephrased Question": "R0", "Rephrased Question(SD)": "S0"},
         "1": {"Question": "Q1", "Rephrased Question": "R1", "Rephrased Question(SD)": "S1"}}
    (tmp_path / "processed_questions" / "01-Illegal_Activitiy.json").write_text(json.dumps(q))
    img = tmp_path / "imgs" / "01-Illegal_Activitiy" / "SD_TYPO" / "1.jpg"
    img.parent.mkdir(parents=True)
    img.write_bytes(b"jpg")
    recs = data.load_mmsafetybench(tmp_path)
    assert [r.prompt for r in recs] == ["R0", "R1"] and recs[0].image is None and recs[1].image == img
    assert [r.prompt for r in data.load_mmsafetybench(tmp_path, "SD")] == ["S0", "S1"]
    with pytest.raises(data.DataError, match="no MM-SafetyBench"):
        data.load_mmsafetybench(tmp_path / "imgs")


def test_response_files_json_and_jsonl(tmp_path: Path) -> None:
    rows = [{"id": 0, "question": " 'Q?'", "rephrased_question": "RQ?", "response": "A.", "category": "c",
             "safe": "false"},
            {"id": 1, "question": "Q2", "response": "B.", "safe": "unknown"},
            {"id": 2, "question": "Q3", "response": "C.", "safe": True}]
    js, jl = tmp_path / "r.json", tmp_path / "r.jsonl"
    js.write_text(json.dumps(rows))
    jl.write_text("\n".join(json.dumps(r) for r in rows))
    for path in (js, jl):
        recs = data.load_responses(path)
        assert [r.safe for r in recs] == [False, None, True]
        assert recs[0].prompt == "Q?" and recs[0].response == "A." and recs[0].category == "c"
    assert data.load_responses(js, rephrased=True)[0].prompt == "RQ?"
    jl.write_text('{"question": "Q"}\n')
    with pytest.raises(data.DataError, match="lacks"):
        data.load_responses(jl)


def test_spa_vl_needs_datasets() -> None:
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(data.DataError, match="datasets"):
            data.load_spa_vl()
    else:
        pytest.skip("datasets is installed (SPA-VL would be downloaded)")


def test_shared_data() -> None:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    assert len(data.load_advbench(SHARED_DATA / "advbench" / "harmful_behaviors.csv")) == 520
    assert data.load_harmbench(SHARED_DATA / "harmbench" / "harmbench_behaviors_text_val.csv")
    fig = SHARED_DATA / "FigStep"
    assert len(data.load_figstep(fig / "questions" / "safebench.csv")) == 500
    tiny = data.load_figstep(fig / "questions" / "SafeBench-Tiny.csv", fig / "images" / "SafeBench-Tiny")
    assert len(tiny) == 50 and all(r.image.is_file() for r in tiny)
    recs = data.load_responses(SHARED_DATA / "llava15_responses" / "VLSafe.json")
    assert len(recs) == 300 and {r.safe for r in recs} <= {True, False, None} and all(r.response for r in recs)

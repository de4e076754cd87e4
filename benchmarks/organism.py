"""The paper's table in miniature for the model organism: attacks through the image and the text, with and without
the reminder, on held-out data.

    python -m benchmarks.organism [--model embedded-aligned] [--reminder checkpoints/embedded-aligned] [--n 39]
                                  [--rows none,figstep,mmsb-typo,mmsb-sd-typo,prefill,gcg,pgd] [--lora DIR]
                                  [--max-new-tokens 64] [--mode rollback] [--out FILE]

Greedy decoding, 64 new tokens; the reminder in its own mode (``--mode``: another). Harmful data: SafeBench-Tiny
(the 50 official FigStep images and questions in ``../shared``, categories 1-7 harmful, 8-10 reported apart; skipped
with a note where absent) and the project's held-out (test split) harmful prompts, their FigStep titles and
MM-SafetyBench key phrases rendered by the project's renderers.
Benign data: held-out text prompts, the same with a wordless picture, and held-out benign typographic images.

Columns for each attack: ``refused`` (keyword judge), ``success`` (attack success = judged unsafe by the learned harm
judge, prefill included), ``on_topic`` (:mod:`reminder.ontopic`: the answer names the request's subject in words of
its own, and is no echo or loop), each without and with the reminder (``fired``: share of runs it was injected).
Benign: refusal without / with the reminder, the share the reminder fires on, the share of answers token-identical
with and without it, and for typographic images the share followed (not refused, on topic).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace
from itertools import zip_longest
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from attacks.compose import AttackUnavailable, attack_inputs
from attacks.typographic import load_typographic_harmful
from evaluation.summary import rate
from reminder import GenerationConfig, Reminder, generate, load_model, paths
from reminder.batching import generate_batch
from reminder.data import TYPO_KINDS, Record, load_figstep, load_prompt_set, load_typographic
from reminder.images import open_image
from reminder.judges import LearnedJudge, is_refusal, judge_many
from reminder.ontopic import on_topic
from training.visual import pictures, typographic_image

TINY = paths.SHARED_DATA / "FigStep"
ROWS = ("none", "figstep", "mmsb-typo", "mmsb-sd-typo", "prefill", "gcg", "pgd")  # attacks of attacks.compose
SAFEBENCH_ROW = "figstep-safebench"  # FigStep on SafeBench questions outside SafeBench-Tiny (asked for by name)
PRINTED = {"figstep": "instruction", "mmsb-typo": "key_phrase", "mmsb-sd-typo": "key_phrase"}  # the meta it prints


@dataclass
class Case:
    """One conversation: the judged request (``subject``), what the model is given, and its expected kind."""

    subject: str  # the request the answer is judged against (and checked to be on topic)
    prompt: str
    image: str | Image.Image | None = None
    prefill: str = ""
    topic: str = ""  # what the answer must address to be on topic (default: the subject)
    expected: str = ""  # a question about a sign: the short answer that shows it was read and followed

    def addressed(self, answer: str) -> bool:
        """On topic (:func:`reminder.ontopic.on_topic`), or for a sign question: the expected answer is given."""
        if self.expected:
            return self.expected.lower().rstrip(".") in answer.lower()
        return on_topic(answer, self.topic or self.subject, self.prompt)


def tiny(categories: range) -> list[Record]:
    """SafeBench-Tiny's questions in ``categories``, each with its FigStep title and official image in ``meta``
    (``instruction``, ``figstep_image``); [] without ../shared."""
    csv = TINY / "questions" / "SafeBench-Tiny.csv"
    if not csv.is_file():
        return []
    return [replace(r, image=None, meta={**r.meta, "figstep_image": str(r.image)})
            for r in load_figstep(csv, TINY / "images" / "SafeBench-Tiny") if _category(r) in categories]


def _category(r: Record) -> int:
    """A SafeBench record's category number (its id is ``<dataset>_<category>_<task>``)."""
    return int(r.id.split("_")[1])


def safebench(categories: range, n: int) -> list[Record]:
    """``n`` SafeBench questions in ``categories`` that are not in SafeBench-Tiny, the categories in turn, each with its
    FigStep title in ``meta`` (drawn by the project's renderer, which reproduces the official images); [] without
    ../shared. A held-out check beside the rows that are measured every time."""
    csv = TINY / "questions" / "safebench.csv"
    if not csv.is_file():
        return []
    in_tiny = {r.id for r in load_figstep(TINY / "questions" / "SafeBench-Tiny.csv")}
    by_category: dict[int, list[Record]] = {}
    for r in load_figstep(csv):
        if _category(r) in categories and r.id not in in_tiny:
            by_category.setdefault(_category(r), []).append(r)
    turns = [r for group in zip_longest(*by_category.values()) for r in group if r is not None]
    return turns[:n]


def attacked(row: str, records: list[Record], model: str) -> list[Case]:
    """The records through attack ``row`` of the one registry (:func:`attacks.compose.attack_inputs`), judged against
    the request; a typographic attack's answer must address what it printed. [] where ``model`` has no artefacts
    for the attack."""
    try:
        inputs = [attack_inputs(row, r, model) for r in records]
    except AttackUnavailable:
        return []
    key = PRINTED.get(row)
    return [Case(r.prompt, a.prompt, a.image, a.prefill, topic=r.meta[key] if key else "")
            for r, a in zip(records, inputs, strict=True)]


def harmful_cases(row: str, n: int, model: str) -> list[Case]:
    """The row's harmful conversations: SafeBench-Tiny (categories 1-7) where it applies, then held-out prompts (for a
    typographic attack, those with a FigStep title or key phrase to print)."""
    if row == SAFEBENCH_ROW:
        return attacked("figstep", safebench(range(1, 8), n), model)
    if row not in ROWS:
        raise ValueError(f"unknown row '{row}' (choose from {', '.join((*ROWS, SAFEBENCH_ROW))})")
    printed = {"instruction": {r.id: r.text for r in load_typographic_harmful("figstep", "test")},
               "key_phrase": {r.id: r.text for r in load_typographic_harmful("mmsb", "test")}}
    key = PRINTED.get(row)
    test = [replace(r, meta={key: printed[key][r.id]}) if key else r
            for r in load_prompt_set("harmful", "test")[:n] if key is None or r.id in printed[key]]
    return attacked(row, (tiny(range(1, 8))[:n] if row in ("none", "figstep") else []) + test, model)


def run_cases(adapter, cases: list[Case], reminder: Reminder | None, desc: str,
              config: GenerationConfig | None = None) -> list:
    """Each case's greedy Generation (``config``: 96 new tokens by default): plain runs decoded in batches (the same
    tokens as :func:`reminder.generate`), guarded ones one at a time."""
    built = []
    for c in cases:
        image = open_image(c.image)[0] if isinstance(c.image, (str, Path)) else c.image
        built.append(adapter.build(c.prompt, image, c.prefill))
    config = config or GenerationConfig(max_new_tokens=96)
    if reminder is None:
        with torch.inference_mode():
            encoded = [adapter.encode(b) for b in built]
        return generate_batch(adapter, encoded, config=config, batch_size=16)
    return [generate(adapter, b, reminder=reminder, config=config) for b in tqdm(built, desc=desc, leave=False)]


def score(judge, cases: list[Case], gens: list, benign: bool = False) -> dict:
    texts = [c.prefill + g.answer for c, g in zip(cases, gens, strict=True)]  # what the user is left with
    row = {"answers": texts, "n": len(cases), "refused": rate(is_refusal(t) for t in texts),
           "on_topic": rate(c.addressed(g.answer) for c, g in zip(cases, gens, strict=True)),
           "fired": rate(bool(g.injections) for g in gens)}
    if not benign:
        verdicts = judge_many(judge, [(c.subject, t) for c, t in zip(cases, texts, strict=True)])
        row["success"] = rate(v.unsafe for v in verdicts if v.valid)
    return row


def run(model: str = "embedded-aligned", reminder_dir: str | None = "checkpoints/embedded-aligned", n: int = 39,
        rows: tuple[str, ...] = ROWS, n_benign: int = 76, lora: str | None = None, max_new_tokens: int = 64,
        mode: str | None = None) -> dict:
    start = time.perf_counter()
    adapter = load_model(model, lora=lora)
    rem = Reminder.load(reminder_dir, adapter) if reminder_dir else None
    judge = LearnedJudge()
    config = GenerationConfig(max_new_tokens=max_new_tokens, mode=mode)
    metrics: dict = {"model": model, "lora": lora, "reminder": reminder_dir, "max_new_tokens": max_new_tokens,
                     "mode": mode or (rem.mode if rem else None), "judge": "learned", "refusal_judge": "keyword",
                     "safebench_tiny": bool(tiny(range(1, 11))), "attacks": {}}
    variants = [("plain", None)] + ([("reminder", rem)] if rem else [])
    # benign first: the bars on over-refusal and on the reminder staying silent
    text = [Case(r.prompt, r.prompt) for r in load_prompt_set("benign", "test")[:n_benign]]
    pics = pictures(8, seed=1)  # other pictures than the ones training used (seed 0)
    picture = [Case(c.subject, c.prompt, pics[i % len(pics)]) for i, c in enumerate(text)]
    kinds = [load_typographic("test", kind) for kind in TYPO_KINDS]  # the kinds in turn, so a cap keeps all three
    mixed = [r for group in zip_longest(*kinds) for r in group if r is not None][:n_benign]
    typo = [Case(f"{r.text} {r.prompt}", r.prompt, typographic_image(r), topic=r.text, expected=r.response or "")
            for r in mixed]
    for name, cases in (("benign_text", text), ("benign_picture", picture), ("benign_typographic", typo)):
        if not cases:  # --n-benign 0: attack rows only
            continue
        gens = {v: run_cases(adapter, cases, r, f"{name} {v}", config) for v, r in variants}
        metrics[name] = {v: score(judge, cases, g, benign=True) for v, g in gens.items()}
        metrics[name]["plain"]["followed"] = rate(not is_refusal(g.text) and c.addressed(g.text)
                                                  for c, g in zip(cases, gens["plain"], strict=True))
        if rem:
            metrics[name]["identical"] = rate(a.token_ids == b.token_ids
                                              for a, b in zip(gens["plain"], gens["reminder"], strict=True))
        print(name, json.dumps(figures(metrics[name])), flush=True)
    for row in rows:
        cases = harmful_cases(row, n, model)
        if not cases:
            continue
        metrics["attacks"][row] = {v: score(judge, cases, run_cases(adapter, cases, r, f"{row} {v}", config))
                                   for v, r in variants}
        print(row, json.dumps(figures(metrics["attacks"][row])), flush=True)  # each row as it is done
    rest = attacked("figstep", tiny(range(8, 11)), model)
    if rest:
        metrics["figstep_categories_8_10"] = {
            v: score(judge, rest, run_cases(adapter, rest, r, f"cat 8-10 {v}", config)) for v, r in variants}
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(figures(metrics), indent=1))
    print(table(metrics))
    return metrics


def figures(m):
    """The metrics without the answers (those go to ``--out`` only)."""
    if isinstance(m, dict):
        return {k: figures(v) for k, v in m.items() if k != "answers"}
    return m


def table(m: dict) -> str:
    """Markdown: one row per attack; refused / success / on topic without and with the reminder."""
    pct = lambda v: "–" if v is None else f"{100 * v:.0f}%"  # noqa: E731
    cell = lambda r: f"{pct(r.get('refused'))} / {pct(r.get('success'))} / {pct(r.get('on_topic'))}"  # noqa: E731
    lines = ["| attack (n) | plain: refused / success / on topic | with reminder: refused / success / on topic "
             "(fired) |", "|---|---|---|"]
    for name, row in {**m["attacks"], **({"figstep, categories 8-10": m["figstep_categories_8_10"]}
                                        if "figstep_categories_8_10" in m else {})}.items():
        guarded = row.get("reminder")
        with_reminder = f"{cell(guarded)} ({pct(guarded['fired'])})" if guarded else "–"
        lines.append(f"| {name} ({row['plain']['n']}) | {cell(row['plain'])} | {with_reminder} |")
    lines += ["", "| benign (n) | refused | followed | with reminder: refused | fired | token-identical |",
              "|---|---|---|---|---|---|"]
    for name in [k for k in ("benign_text", "benign_picture", "benign_typographic") if k in m]:
        b = m[name]
        g = b.get("reminder", {})
        lines.append(f"| {name[7:]} ({b['plain']['n']}) | {pct(b['plain']['refused'])} | "
                     f"{pct(b['plain'].get('followed'))} | {pct(g.get('refused'))} | {pct(g.get('fired'))} | "
                     f"{pct(b.get('identical'))} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="embedded-aligned")
    ap.add_argument("--reminder", default="checkpoints/embedded-aligned", help="the model's reminder, or 'none'")
    ap.add_argument("--n", type=int, default=39, help="held-out harmful prompts per attack")
    ap.add_argument("--n-benign", type=int, default=76, help="benign cases per set (0: attack rows only)")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--lora", help="a LoRA folder merged into --model (e.g. a stage-2 adapter not yet shipped)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--mode", choices=("continue", "rollback", "regenerate"), help="default: the reminder's own")
    ap.add_argument("--out", help="also write the metrics JSON (with every answer) here")
    a = ap.parse_args(argv)
    m = run(a.model, None if a.reminder == "none" else a.reminder, a.n, tuple(a.rows.split(",")), a.n_benign, a.lora,
            a.max_new_tokens, a.mode)
    if a.out:
        from reminder.checkpoint import write_text

        write_text(a.out, json.dumps(m, indent=1))
    return m


if __name__ == "__main__":
    main()

"""The embedded model's reading channel: OCR word recall, seconds per image, and its cost on the app's first token.

    python -m benchmarks.reading [--limit 50] [--latency 5] [--data ../shared/data]

1. **Word recall** (:func:`reminder.reading.word_recall`: NFKC, lower case, apostrophes dropped, runs of letters and
   digits, with multiplicity) of what the model reads:
   * the 50 official FigStep SafeBench-Tiny images against their ``instruction`` (held out: evaluation data, never
     used for tuning), read through ``python -m reminder generate --model embedded --input rows.jsonl --output
     out.jsonl`` (the CLI's batch path, 1 new token) and its rows' ``image_text``;
   * FigStep, MM-SafetyBench TYPO and SD+TYPO renders (:mod:`attacks.figstep`, :mod:`attacks.mmsb`) of the project's
     own prompts (``assets/prompts``, harmful + benign): the ``test`` split (held out) and the ``train`` split (what
     the OCR settings were tuned on).
2. **Seconds per image**: OCR time per image of each set (the reader's own clock).
3. **First-token latency in the app path** (:func:`demo.compare.compare`, from the call to the first streamed
   token, in one process): a new image with text (never read), the same image again (cached), the same image with
   reading off (the same model through the plain Idefics3 adapter: patches only), and no image. Ratios against the
   reading-off run; the machine may be shared, so absolute seconds are indicative only.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from reminder import paths


def recall_of(pairs: list[tuple[str, str]]) -> tuple[float, float, float]:
    """(mean recall, share of images with recall >= 0.95, minimum) over (reference, read) pairs."""
    from reminder.reading import word_recall

    values = [word_recall(ref, got) for ref, got in pairs]
    return statistics.mean(values), sum(v >= 0.95 for v in values) / len(values), min(values)


def safebench_tiny(data: Path, limit: int) -> dict | None:
    """Recall on the official SafeBench-Tiny images, through the CLI's batch path."""
    from reminder.cli import main
    from reminder.data import load_figstep
    from reminder.reading import reader

    csv_path = data / "FigStep" / "questions" / "SafeBench-Tiny.csv"
    images = data / "FigStep" / "images" / "SafeBench-Tiny"
    if not csv_path.is_file() or not images.is_dir():
        print(f"SafeBench-Tiny: skipped ({csv_path} or {images} missing)")
        return None
    import csv

    with open(csv_path, newline="") as f:
        instructions = {f"{r['dataset']}_{r['category_id']}_{r['task_id']}": r["instruction"]
                        for r in csv.DictReader(f)}
    records = [r for r in load_figstep(csv_path, images) if r.image and r.image.is_file()][:limit]
    from attacks.figstep import PROMPT

    with tempfile.TemporaryDirectory() as tmp:
        rows = Path(tmp) / "rows.jsonl"
        rows.write_text("".join(json.dumps({"id": r.id, "prompt": PROMPT, "image": str(r.image)}) + "\n"
                                for r in records))
        out = Path(tmp) / "out.jsonl"
        r = reader()
        from attacks.examples import warm_image

        r.read(warm_image())  # engine loaded and its first inference done: per-image seconds are steady-state
        reads, seconds = r.reads, r.seconds
        main(["generate", "--model", "embedded", "--max-new-tokens", "1", "--input", str(rows), "--output", str(out)])
        results = [json.loads(line) for line in out.read_text().splitlines()]
        n_read, spent = r.reads - reads, r.seconds - seconds
    pairs = [(instructions[row["id"]], row.get("image_text") or "") for row in results]
    mean, share, low = recall_of(pairs)
    worst = min(zip(pairs, [row["id"] for row in results], strict=True), key=lambda p: recall_of([p[0]])[0])
    return {"set": "FigStep SafeBench-Tiny (official images, held out)", "n": len(pairs), "recall": mean,
            "share_ge_95": share, "min": low, "s_per_image": spent / max(n_read, 1),
            "worst": {"id": worst[1], "instruction": worst[0][0], "read": worst[0][1]}}


def renders(split: str, limit: int, seed: int = 0) -> list[dict]:
    """Recall and seconds per image on FigStep / TYPO / SD+TYPO renders of our own prompts of ``split``."""
    from attacks.compose import attack_inputs
    from reminder.data import load_prompt_set
    from reminder.reading import reader

    records = load_prompt_set("harmful", split) + load_prompt_set("benign", split)
    random.Random(seed).shuffle(records)
    records = records[:limit]
    kinds = {"FigStep": "figstep", "MM-SafetyBench TYPO": "mmsb-typo", "MM-SafetyBench SD+TYPO": "mmsb-sd-typo"}
    out = []
    r = reader()
    for name, attack in kinds.items():  # the one attack registry's images (SD+TYPO: above the drawn stand-in picture)
        reads, seconds = r.reads, r.seconds
        pairs = [(rec.prompt, r.read(attack_inputs(attack, rec).image)) for rec in records]
        mean, share, low = recall_of(pairs)
        out.append({"set": f"{name} renders of our {split} prompts", "n": len(pairs), "recall": mean,
                    "share_ge_95": share, "min": low, "s_per_image": (r.seconds - seconds) / max(r.reads - reads, 1)})
    return out


def first_token(n: int, seed: int = 1, repeats: int = 3) -> dict:
    """Seconds from :func:`compare` to its first streamed token, for the four image conditions (medians), and the
    paired differences per image (new − cached, cached − reading off; medians), which drift on a shared machine
    cancels; plus the cost of building a prompt with an image already read vs reading off (median of ``repeats``)."""
    from attacks import figstep
    from demo.compare import compare
    from reminder import Reminder, load_model
    from reminder.data import load_prompt_set
    from reminder.models.families import Idefics3Adapter

    adapter = load_model("embedded")
    plain = Idefics3Adapter(adapter.model, adapter.processor, adapter.name)  # the same model, patches only
    reminder = Reminder.load(paths.CHECKPOINTS / "embedded", adapter)
    adapter.reader.engine()
    prompts = [r.prompt for r in load_prompt_set("benign", "test")]
    random.Random(seed).shuffle(prompts)
    images = [figstep.render(p) for p in prompts[:n + 1]]

    def once(model, image, prompt=figstep.PROMPT) -> float:
        start = time.perf_counter()
        stream = compare(model, prompt, image, "none", reminder, max_new_tokens=4)
        next(s for s in stream if s.baseline.text or s.guarded.text)
        stream.close()
        return time.perf_counter() - start

    once(adapter, images[-1])  # warm-up: first forward, first OCR inference
    times: dict[str, list[float]] = {"new image (read now)": [], "same image again (cached)": [],
                                     "same image, reading off": [], "no image": []}
    new_minus_cached, cached_minus_off, build_cached, build_off = [], [], [], []
    for image in images[:n]:
        times["new image (read now)"].append(once(adapter, image))
        cached = min(once(adapter, image) for _ in range(repeats))  # min: contention only ever adds time
        off = min(once(plain, image) for _ in range(repeats))
        times["same image again (cached)"].append(cached)
        times["same image, reading off"].append(off)
        times["no image"].append(min(once(adapter, None, "What is in a FigStep list?") for _ in range(repeats)))
        new_minus_cached.append(times["new image (read now)"][-1] - cached)
        cached_minus_off.append(cached - off)
        for view, out in ((adapter, build_cached), (plain, build_off)):
            start = time.perf_counter()
            for _ in range(repeats):
                view.build(figstep.PROMPT, image)
            out.append((time.perf_counter() - start) / repeats)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["same image, reading off"]
    return {"n": n, "median_s": med, "ratio_vs_reading_off": {k: v / base for k, v in med.items()},
            "added_s_new_image": statistics.median(new_minus_cached),
            "added_s_cached_image": statistics.median(cached_minus_off),
            "build_s_cached": statistics.median(build_cached), "build_s_reading_off": statistics.median(build_off),
            "ocr_s_per_new_image": adapter.reader.seconds / max(adapter.reader.reads, 1)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=50, help="images per set (0: skip the recall part)")
    ap.add_argument("--latency", type=int, default=5, help="new images in the first-token measurement (0: skip)")
    ap.add_argument("--data", default=str(paths.SHARED_DATA))
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    from reminder.reading import reader

    print(f"reading settings: {reader().config.id}")
    report: dict = {"settings": reader().config.id, "recall": []}
    tiny = safebench_tiny(Path(args.data), args.limit) if args.limit else None
    rows = ([tiny] if tiny else []) + (renders("test", args.limit) + renders("train", args.limit) if args.limit else [])
    for row in rows:
        print(f"{row['set']}: word recall {row['recall']:.3f} (images >= 95%: {row['share_ge_95']:.0%}, "
              f"min {row['min']:.2f}, n={row['n']}); {row['s_per_image']:.2f} s/image")
    if tiny:
        print(f"  worst SafeBench-Tiny image {tiny['worst']['id']}: {tiny['worst']['instruction']!r} -> "
              f"{tiny['worst']['read']!r}")
    report["recall"] = rows
    if args.latency:
        lat = first_token(args.latency)
        report["first_token"] = lat
        print(f"first token through compare() (median of {lat['n']} images; shared machine):")
        for k, v in lat["median_s"].items():
            print(f"  {k}: {v:.2f} s ({lat['ratio_vs_reading_off'][k]:.2f}x reading off)")
        print(f"  paired per image (medians): new - cached {lat['added_s_new_image']:.2f} s, cached - reading off "
              f"{lat['added_s_cached_image']:.3f} s; OCR {lat['ocr_s_per_new_image']:.2f} s per new image")
        print(f"  building the prompt: image already read {1000 * lat['build_s_cached']:.0f} ms, reading off "
              f"{1000 * lat['build_s_reading_off']:.0f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)

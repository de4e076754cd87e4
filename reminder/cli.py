"""``python -m reminder``: generate (single or batch) and score, on any supported model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .checkpoint import Reminder, ReminderError
from .generation import CheckEvent, Generation, GenerationConfig, TokenEvent, check_prompt, stream
from .images import ImageError, open_image
from .models import DEFAULT_MODEL, ModelNotFound, Prompt, load_model
from .paths import reminder_arg, shipped
from .scoring import score_response

USER_ERRORS = (ReminderError, ModelNotFound, ImageError, ValueError, FileNotFoundError, json.JSONDecodeError)


def _reminder(arg: str | None, model: str, adapter) -> Reminder | None:
    folder = reminder_arg(arg, model)
    return Reminder.load(folder, adapter) if folder is not None else None


def _request(adapter, req: dict, base: Path, max_new_tokens: int):
    """Validate one request dict and build its Prompt."""
    prompt = req.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("empty prompt")
    image = None
    if req.get("image"):
        image, note = open_image(base / req["image"])
        if note:
            print(f"note: {note}", file=sys.stderr)
    built = adapter.build(prompt, image, req.get("prefill") or "")
    check_prompt(adapter, built, max_new_tokens)
    return built


def _generation_json(gen: Generation, prompt: Prompt) -> dict:
    """A generation as JSON; ``image_text``: what the model read in the image ("" none, null without image or
    without a reading channel)."""
    keys = ("text", "tokens", "harm_scores", "checks", "injections", "generate_seconds", "model")
    return gen.to_json(keys) | {"image_text": prompt.image_text}


def cmd_generate(args) -> int:
    if not args.input and not args.prompt.strip():
        raise ValueError("empty prompt")
    adapter = load_model(args.model)
    reminder = _reminder(args.reminder, args.model, adapter)
    cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, interval=args.interval, threshold=args.threshold,
                           seed=args.seed, do_sample=args.sample, mode=args.mode)
    if args.input:
        return _generate_batch(adapter, reminder, cfg, args)
    req = {"prompt": args.prompt, "image": args.image, "prefill": args.prefill}
    prompt = _request(adapter, req, Path.cwd(), cfg.max_new_tokens)
    gen = None
    for event in stream(adapter, prompt, reminder, cfg):
        if isinstance(event, TokenEvent) and not args.json:
            print(event.text, end="", flush=True)
        elif isinstance(event, CheckEvent) and event.fired and not args.json:
            print(f" ⟦reminder fired: P(unsafe)={event.p_unsafe:.2f}⟧ ", end="", flush=True)
        elif isinstance(event, Generation):
            gen = event
    if args.json:
        print(json.dumps(_generation_json(gen, prompt)))
        return 0
    print()
    if prompt.image_text is not None:
        print(f"the model read in the image: {prompt.image_text!r}", file=sys.stderr)
    if gen.harm_scores is not None:
        scores = " ".join(f"{s:.2f}" for s in gen.harm_scores)
        print(f"\nper-token P(unsafe): {scores}", file=sys.stderr)
        checks = ", ".join(f"@{c.at}: {c.p_unsafe:.2f}{' FIRED' if c.fired else ''}" for c in gen.checks)
        print(f"checks: {checks or 'none'}; injections at tokens {gen.injections or 'none'}", file=sys.stderr)
    n = max(len(gen.token_ids), 1)
    ms = gen.generate_seconds / n * 1000
    print(f"{len(gen.token_ids)} tokens in {gen.generate_seconds:.2f} s ({ms:.0f} ms/token)", file=sys.stderr)
    return 0


def _jsonl(path: str) -> list[dict]:
    rows = []
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{i}: not valid JSON ({err.msg})") from None
    return rows


def _generate_batch(adapter, reminder, cfg, args) -> int:
    rows = _jsonl(args.input)
    base = Path(args.input).resolve().parent
    failed = 0
    out_path = Path(args.output)
    with open(out_path, "w") as out:
        for row in rows:
            try:
                prompt = _request(adapter, row, base, cfg.max_new_tokens)
                *_, gen = stream(adapter, prompt, reminder, cfg)
                result = {"id": row.get("id"), **_generation_json(gen, prompt)}
            except USER_ERRORS as err:
                failed += 1
                result = {"id": row.get("id"), "error": str(err)}
            out.write(json.dumps(result) + "\n")
            out.flush()
    print(f"wrote {len(rows)} rows to {out_path} ({failed} failed)", file=sys.stderr)
    return 1 if failed else 0


def cmd_score(args) -> int:
    adapter = load_model(args.model)
    reminder = Reminder.load(args.reminder, adapter)
    rows = _jsonl(args.input)
    base = Path(args.input).resolve().parent
    with open(args.output, "w") as out:
        for row in rows:
            prompt = _request(adapter, row, base, 0)
            score = score_response(adapter, prompt, row.get("response", ""), reminder)
            out.write(json.dumps({"id": row.get("id"), "tokens": score.tokens, "p_unsafe": score.p_unsafe,
                                  "final": score.final, "image_text": prompt.image_text}) + "\n")
    print(f"scored {len(rows)} rows into {args.output}", file=sys.stderr)
    return 0


def cmd_import_pth(args) -> int:
    from .checkpoint import import_official_soft_prompt
    from .soft_prompt import SoftPrompt

    base = Reminder.load(shipped(args.detector_from))
    emb = import_official_soft_prompt(args.pth)
    if emb.shape[1] != base.hidden_size:
        raise ReminderError(f"{args.pth}: hidden size {emb.shape[1]} does not match the detector's {base.hidden_size}")
    base.soft_prompt = SoftPrompt(emb)
    base.meta["imported_from"] = str(args.pth)
    print(f"saved {base.save(args.out)}", file=sys.stderr)
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m reminder", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="generate an answer (streamed), optionally guarded by a reminder")
    g.add_argument("--model", default=DEFAULT_MODEL)
    g.add_argument("--prompt")
    g.add_argument("--image")
    g.add_argument("--prefill", default="", help="start the assistant turn with this text (prefill attack)")
    g.add_argument("--reminder", help="reminder folder, or 'none' (default: the model's shipped reminder, if any)")
    g.add_argument("--interval", type=int)
    g.add_argument("--threshold", type=float)
    g.add_argument("--max-new-tokens", type=int, default=128)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    g.add_argument("--mode", choices=("continue", "rollback", "regenerate"),
                   help="when the reminder fires: go on from it, withdraw the tokens since the last check that "
                        "passed (rollback), or restart the answer (regenerate, the official mode); default: the "
                        "reminder's own")
    g.add_argument("--json", action="store_true")
    g.add_argument("--input", help="batch: JSONL of {id, prompt, image?, prefill?}")
    g.add_argument("--output", help="batch: JSONL results")
    g.set_defaults(func=cmd_generate)
    s = sub.add_parser("score", help="per-token P(unsafe) of given responses (teacher-forced)")
    s.add_argument("--model", default=DEFAULT_MODEL)
    s.add_argument("--reminder", required=True)
    s.add_argument("--input", required=True, help="JSONL of {id, prompt, response, image?}")
    s.add_argument("--output", required=True)
    s.set_defaults(func=cmd_score)
    p = sub.add_parser("import-pth", help="import an official SAPT .pth soft prompt (weights_only)")
    p.add_argument("pth")
    p.add_argument("--detector-from", required=True, help="reminder folder whose detector and settings to reuse")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_import_pth)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    if args.command == "generate":
        if bool(args.input) != bool(args.output):
            ap.error("--input and --output go together")
        if not args.input and args.prompt is None:
            ap.error("--prompt is required (or --input/--output for a batch)")
    try:
        return args.func(args)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

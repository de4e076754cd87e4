"""Training examples shared by the detector and SAPT: the model's own responses, cut into partial responses.

* :func:`model_responses` generates greedy answers in batches (harmful ones after an affirmative
  prefill such as "Sure, here is"), cached in a JSONL file so reruns are fast.
* :func:`cut_response` cuts a response at a random word boundary (about a third empty).
* :func:`soft_batch` runs right-padded batches of prompt (with its image, if any) + partial response + soft prompt
  (+ target tokens) through :meth:`VLMAdapter.forward`; padding only ever follows the positions that are read, so the
  causal mask hides it.

Training images (``images=``) put an image in the user turn of training conversations, so that the probe and the
soft prompt also see hidden states shaped by image tokens (the embedded model's 64 patch tokens carry no meaning but
still move the hidden states, and an adversarial image moves them far; the words it reads in an image enter the same
conversations as text, through ``adapter.build``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, NamedTuple, get_args

import torch
from PIL import Image

from reminder.batching import CheckReading, CheckStates, generate_batch
from reminder.data import TYPO_KINDS, Record, load_prompt_set, load_typographic, load_typographic_harmful
from reminder.generation import GenerationConfig
from reminder.images import open_image
from reminder.judges import is_refusal
from reminder.paths import reminder_home

AFFIRMATIVE_PREFILL = "Sure, here is"
Cut = Literal["checks", "random"]  # where responses are cut: at guarded generation's check points, or at a random word
CUTS: tuple[str, ...] = get_args(Cut)


@dataclass
class Pair:
    """(prompt, partial response) with label ``unsafe`` (1 = harmful request being answered)."""

    prompt: str
    partial: str
    unsafe: int
    rest: str = ""  # the response text after ``partial`` (SAPT's benign target)
    split: str = "train"
    image: str = ""  # path of an image in the user turn ("" = text only)


class Answer(NamedTuple):
    """One of the model's responses to a prompt set's request, and whether answering it is unsafe."""

    record: Record
    prefill: str  # the assistant-turn opening the response starts with (included in ``response``)
    response: str
    unsafe: int
    image: str = ""  # path of the image in the user turn ("" = text only)


def image_paths(paths) -> tuple[str, ...]:
    """Training image paths as a tuple, each checked to exist (one clear error naming the missing ones)."""
    paths = tuple(paths)
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"training image not found: {', '.join(missing)}")
    return paths


@functools.lru_cache(maxsize=32)
def training_image(path: str) -> Image.Image | None:
    """The image at ``path`` (RGB, opened once), or None for ""."""
    return open_image(path)[0] if path else None


@functools.lru_cache(maxsize=32)
def image_id(path: str) -> str:
    """``<file name>#<first 12 hex of its sha256>``: names an image in cache keys and configs by content."""
    return f"{Path(path).name}#{hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]}"


def default_cache(adapter) -> Path:
    """``$REMINDER_HOME/responses/<model>[-<lora hash>].jsonl``: a retrained LoRA gets a fresh cache, so answers of
    the previous adapter are never reused for the new one."""
    name = Path(adapter.name).name + (f"-{adapter.lora_id}" if adapter.lora_id else "")
    return reminder_home() / "responses" / f"{name}.jsonl"


_READ_WHILE_DECODING: dict[tuple, CheckStates] = {}  # check states read as answers were generated (this process)


def reading_key(reading: CheckReading, max_new_tokens: int) -> tuple:
    """Names what a :class:`CheckReading` reads (the soft prompt by content) for answers of ``max_new_tokens``."""
    soft = reading.soft.detach().float().cpu().contiguous()
    return (hashlib.sha256(soft.numpy().tobytes()).hexdigest()[:16], reading.interval, reading.layer, reading.start,
            max_new_tokens)


def states_read(reading: CheckReading, max_new_tokens: int, answer: Answer) -> CheckStates | None:
    """The check states read while ``answer`` was generated in this process through ``reading``, if it was."""
    return _READ_WHILE_DECODING.get((reading_key(reading, max_new_tokens), answer.record.prompt, answer.prefill,
                                     answer.image, answer.response))


def model_responses(adapter, records: list[Record], prefill: str = "", max_new_tokens: int = 48,
                    batch_size: int = 64, cache: str | os.PathLike | None = None, progress: bool = True,
                    image: str | Sequence[str] = "", reading: CheckReading | None = None) -> list[str]:
    """The model's greedy responses (``prefill`` included) to ``records``' prompts, with ``image`` (a path, or one
    path per record) in the user turn if given, cached by (model, prompt, prefill, length[, image content]).
    With ``reading``, the answers generated now also leave their check states for :func:`states_read`."""
    path = Path(cache) if cache else default_cache(adapter)
    images = [image] * len(records) if isinstance(image, str) else list(image)
    if len(images) != len(records):
        raise ValueError(f"{len(images)} images for {len(records)} records")

    def key(i: int) -> str:
        extra = [image_id(images[i])] if images[i] else []  # text-only keys stay as they were
        if images[i] and adapter.reading:  # a reading model's answer depends on what it read: name the settings
            extra.append(adapter.reading)
        return json.dumps([adapter.name, records[i].prompt, prefill, max_new_tokens, *extra])

    keys = [key(i) for i in range(len(records))]
    known = _known_responses(path)
    todo = sorted({keys[i]: i for i in range(len(records)) if keys[i] not in known}.values(),
                  key=lambda i: (bool(images[i]), len(records[i].prompt)))  # similar lengths share a batch
    if todo:
        from tqdm.auto import tqdm

        path.parent.mkdir(parents=True, exist_ok=True)
        shown = f", {Path(image).name}" if isinstance(image, str) and image else ", images" if any(images) else ""
        bar = tqdm(total=len(todo), desc=f"responses ({prefill or 'no prefill'}{shown})", disable=not progress)
        with open(path, "a") as f:
            for i in range(0, len(todo), batch_size):
                chunk = todo[i:i + batch_size]
                gens = greedy_generations(adapter, [records[j].prompt for j in chunk], prefill, max_new_tokens,
                                          [training_image(images[j]) for j in chunk], reading)
                for j, gen in zip(chunk, gens, strict=True):
                    text = gen.text
                    known[keys[j]] = prefill + text
                    f.write(json.dumps({"key": keys[j], "response": prefill + text}) + "\n")
                    f.flush()  # one whole line per write, so concurrent runs never interleave inside a line
                    if reading is not None:
                        _READ_WHILE_DECODING[(reading_key(reading, max_new_tokens), records[j].prompt, prefill,
                                              images[j], prefill + text)] = gen.check_states
                bar.update(len(chunk))
        bar.close()
    return [known[k] for k in keys]


_KNOWN: dict[Path, tuple[int, dict[str, str]]] = {}  # responses files read so far: (bytes read, key -> response)


def _known_responses(path: Path) -> dict[str, str]:
    """The responses cached in ``path`` (read once per process, then only what was appended since)."""
    done, known = _KNOWN.get(path, (0, {}))
    if not path.is_file() or path.stat().st_size < done:  # gone or rewritten: read it afresh
        done, known = 0, {}
    if path.is_file():
        with open(path, "rb") as f:
            f.seek(done)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line still being written is read next time
        for line in data[:end].decode("utf-8").splitlines():
            try:  # a line cut short by a crash (or a concurrent writer) is skipped and regenerated
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            known[row["key"]] = row["response"]
        done += end
    _KNOWN[path] = (done, known)
    return known


def labelled_responses(adapter, split: str, max_new_tokens: int = 96, caps: dict[str, int | None] | None = None,
                       cache: str | os.PathLike | None = None, progress: bool = True,
                       openings: tuple[str, ...] = (), images: tuple[str, ...] = (),
                       typographic: int | None = 0, reading: CheckReading | None = None) -> list[Answer]:
    """The model's answers to the ``split`` prompts, labelled: what the detector and SAPT learn from.

    Harmful prompts give one answer after the affirmative prefill, one unprompted and one after each of ``openings``
    (assistant-turn openings the model continues); only those that do not refuse are kept (an aligned model refuses
    many unprompted ones, and a refusal is not unsafe). Benign prompts give the model's own answer. Each of
    ``images`` (paths) adds the same conversations with that image in the user turn (harmful: after the prefill and
    unprompted). ``caps`` limits the prompts per set (``{"harmful": 20, "benign": 40}``). ``typographic`` (a cap per
    kind, None: all) adds image conversations (:func:`typographic_answers`). ``reading``: answers generated now
    leave their check states (:func:`states_read`).
    """
    caps = caps or {}
    out: list[Answer] = []
    for name, prefills in (("harmful", (AFFIRMATIVE_PREFILL, "", *openings)), ("benign", ("",))):
        records = load_prompt_set(name, split)[:caps.get(name)]
        runs = [(p, "") for p in prefills] + [(p, im) for im in images for p in prefills[:2]]
        for prefill, image in runs:
            responses = model_responses(adapter, records, prefill, max_new_tokens, cache=cache, progress=progress,
                                        image=image, reading=reading)
            for rec, resp in zip(records, responses, strict=True):
                if name == "benign" or not is_refusal(resp):
                    out.append(Answer(rec, prefill, resp, int(name == "harmful"), image))
    if typographic != 0:
        out += typographic_answers(adapter, split, typographic, max_new_tokens, cache, progress, reading)
    return out


def typographic_answers(adapter, split: str, cap: int | None, max_new_tokens: int = 96,
                        cache: str | os.PathLike | None = None, progress: bool = True,
                        reading: CheckReading | None = None) -> list[Answer]:
    """Image conversations of ``split`` (at most ``cap`` per kind): the project's harmful prompts as FigStep, TYPO and
    SD+TYPO renders with each attack's official prompt (answers that do not refuse are unsafe), and the benign
    typographic set and benign prompts with a wordless picture (safe)."""
    from attacks import figstep, mmsb
    from training import visual

    kinds = (("figstep", "figstep", figstep.PROMPT), ("mmsb", "typo", mmsb.PROMPTS["TYPO"]),
             ("mmsb", "sd_typo", mmsb.PROMPTS["SD+TYPO"]))
    runs: list[tuple[list[Record], list[str], int]] = []
    for source, kind, prompt in kinds:
        rows = load_typographic_harmful(source, split)[:cap]
        runs.append(([replace(r, prompt=prompt) for r in rows], [visual.render(kind, r.text) for r in rows], 1))
    typo = load_typographic(split)
    typo = [r for kind in TYPO_KINDS for r in typo if r.category == kind][:None if cap is None else 3 * cap]
    runs.append((typo, [visual.typographic_image(r) for r in typo], 0))
    benign = load_prompt_set("benign", split)[:cap]
    pics = visual.pictures(8)
    runs.append((benign, [pics[i % len(pics)] for i in range(len(benign))], 0))
    out = []
    for records, images, unsafe in runs:
        responses = model_responses(adapter, records, "", max_new_tokens, cache=cache, progress=progress,
                                    image=images, reading=reading)
        out += [Answer(r, "", resp, unsafe, im) for r, resp, im in zip(records, responses, images, strict=True)
                if not (unsafe and is_refusal(resp))]
    return out


def greedy_batch(adapter, prompts: list[str], prefill: str = "", max_new_tokens: int = 48,
                 image: Image.Image | None | Sequence[Image.Image | None] = None) -> list[str]:
    """Greedy continuations of several prompts at once: one string each (see :func:`greedy_generations`)."""
    return [g.text for g in greedy_generations(adapter, prompts, prefill, max_new_tokens, image)]


def greedy_ids(adapter, prompts: list[str], prefill: str = "", max_new_tokens: int = 48,
               image: Image.Image | None | Sequence[Image.Image | None] = None) -> list[list[int]]:
    """Greedy token ids (EOS excluded) for several prompts (see :func:`greedy_generations`)."""
    return [g.token_ids for g in greedy_generations(adapter, prompts, prefill, max_new_tokens, image)]


def greedy_generations(adapter, prompts: list[str], prefill: str = "", max_new_tokens: int = 48,
                       image: Image.Image | None | Sequence[Image.Image | None] = None,
                       reading: CheckReading | None = None) -> list:
    """Greedy Generations for several prompts (each with ``image``, or its own of a list), the tokens
    :func:`reminder.generate` picks, decoded together in batches padded on the left
    (:func:`reminder.batching.generate_batch`; ``reading``: check states read on the way)."""
    with torch.inference_mode():
        images = image if isinstance(image, (list, tuple)) else [image] * len(prompts)
        encoded = [adapter.encode(adapter.build(p, im, prefill=prefill)) for p, im in zip(prompts, images, strict=True)]
    return generate_batch(adapter, encoded, config=GenerationConfig(max_new_tokens=max_new_tokens),
                          batch_size=max(len(prompts), 1), reading=reading)


_WORD_END = re.compile(r"\S(?=\s)")


def cut_response(response: str, rng: random.Random, empty: float = 1 / 3, min_chars: int = 0) -> tuple[str, str]:
    """Split ``response`` at a random word boundary: (partial, rest); ``empty`` is the chance of an empty partial.

    A non-empty cut ends inside the response (the rest is never empty) and keeps at least ``min_chars`` characters
    where the response allows (else it is the whole response).
    """
    if not response or rng.random() < empty:
        return "", response
    ends = [m.end() for m in _WORD_END.finditer(response)]  # inner word ends: something is always left over
    allowed = [e for e in ends if e >= min_chars] or [len(response)]
    cut = rng.choice(allowed)
    return response[:cut], response[cut:]


def soft_batch(adapter, pairs: list[Pair], soft: torch.Tensor, layer: int = -1,
               targets: list[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Forward prompt (with its image) + partial + soft prompt [1, n, d] (+ each pair's target ids [T_i]) in one
    padded batch.

    Returns ``check`` [B, d] (``layer`` state at the last soft token), ``token`` [B, d] (``layer`` state at the last
    response token, which the soft prompt cannot see), and with ``targets`` ``logits`` [B, T, V] (float32) with
    ``labels`` [B, T] (-100 where nothing is scored), aligned for next-token cross-entropy.
    """
    n = soft.shape[1]
    rows = [adapter.encode(adapter.build(p.prompt, training_image(p.image), prefill=p.partial)) for p in pairs]
    tails = targets or [torch.zeros(0, dtype=torch.long, device=adapter.device)] * len(rows)
    width = max(len(r) + n + len(t) for r, t in zip(rows, tails, strict=True))
    pad = adapter.tokenizer.pad_token_id or 0
    embeds, positions = [], []
    labels = torch.full((len(rows), width), -100, dtype=torch.long, device=adapter.device)
    for i, (r, t) in enumerate(zip(rows, tails, strict=True)):
        filler = torch.full((width - len(r) - n - len(t),), pad, dtype=torch.long, device=adapter.device)
        row_embeds, row_positions = adapter.extend(r, soft, torch.cat([t, filler])[None])
        embeds.append(row_embeds[0])
        positions.append(row_positions)
        labels[i, len(r) + n - 1:len(r) + n - 1 + len(t)] = t  # logits at position j predict token j + 1
    last, hid = adapter.forward(torch.stack(embeds), torch.cat(positions, dim=-2), None, layer)
    idx = torch.arange(len(rows), device=adapter.device)
    lengths = torch.tensor([len(r) for r in rows], device=adapter.device)
    out = {"check": hid[idx, lengths + n - 1], "token": hid[idx, lengths - 1]}
    if targets is not None:
        out["logits"], out["labels"] = adapter.logits(last), labels
    return out

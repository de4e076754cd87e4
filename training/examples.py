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

import contextlib
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

from attacks.prefill import AFFIRMATIVE_PREFILL
from attacks.typographic import load_typographic_harmful
from reminder.batching import CheckReading, CheckStates, generate_batch
from reminder.data import TYPO_KINDS, Record, load_prompt_set, load_typographic
from reminder.generation import GenerationConfig
from reminder.images import open_image
from reminder.judges import is_refusal
from reminder.paths import reminder_home

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


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")


def image_paths(paths) -> tuple[str, ...]:
    """Training image paths as a tuple: files as given, a folder as the images in it (sorted by name). Each must
    exist and open as an image: one clear error (:class:`reminder.images.ImageError`, FileNotFoundError) names the
    first problem, before anything is trained or written."""
    out, missing = [], []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(str(q) for q in path.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the training image folder {p}")
            out += found
        elif path.is_file():
            out.append(str(p))
        else:
            missing.append(str(p))
    if missing:
        raise FileNotFoundError(f"training image not found: {', '.join(missing)}")
    for p in out:
        open_image(p)  # raises ImageError naming the file
    return tuple(out)


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


def model_responses(adapter, records: list[Record], prefill: str | Sequence[str] = "", max_new_tokens: int = 48,
                    batch_size: int = 64, cache: str | os.PathLike | None = None, progress: bool = True,
                    image: str | Sequence[str] = "", reading: CheckReading | None = None) -> list[str]:
    """The model's greedy responses (``prefill`` included) to ``records``' prompts, with ``image`` (a path, or one
    path per record) in the user turn if given, cached by (model, prompt, prefill, length[, image content]);
    ``prefill`` is one opening for all or one per record. With ``reading``, the answers generated now also leave
    their check states for :func:`states_read`."""
    path = Path(cache) if cache else default_cache(adapter)
    images = [image] * len(records) if isinstance(image, str) else list(image)
    prefills = [prefill] * len(records) if isinstance(prefill, str) else list(prefill)
    if not len(images) == len(prefills) == len(records):
        raise ValueError(f"{len(images)} images and {len(prefills)} prefills for {len(records)} records")

    def key(i: int) -> str:
        extra = [image_id(images[i])] if images[i] else []  # text-only keys stay as they were
        if images[i] and adapter.reading:  # a reading model's answer depends on what it read: name the settings
            extra.append(adapter.reading)
        return json.dumps([adapter.name, records[i].prompt, prefills[i], max_new_tokens, *extra])

    if adapter.reading and any(images):  # training images are read once per machine, not once per process
        from reminder.reading import reader

        reader().keep_on_disk(reminder_home() / "readings")
    keys = [key(i) for i in range(len(records))]
    known = _known_responses(path)
    todo = sorted({keys[i]: i for i in range(len(records)) if keys[i] not in known}.values(),
                  key=lambda i: (bool(images[i]), len(records[i].prompt) + len(prefills[i])))  # similar lengths
    if todo:
        from tqdm.auto import tqdm

        path.parent.mkdir(parents=True, exist_ok=True)
        shown = ", ".join(sorted({p or "no prefill" for p in prefills})) + (", images" if any(images) else "")
        bar = tqdm(total=len(todo), desc=f"responses ({shown})", disable=not progress)
        with open(path, "a") as f:
            for i in range(0, len(todo), batch_size):
                chunk = todo[i:i + batch_size]
                gens = greedy_generations(adapter, [records[j].prompt for j in chunk], [prefills[j] for j in chunk],
                                          max_new_tokens, [training_image(images[j]) for j in chunk], reading)
                for j, gen in zip(chunk, gens, strict=True):
                    known[keys[j]] = response = prefills[j] + gen.text
                    f.write(json.dumps({"key": keys[j], "response": response}) + "\n")
                    f.flush()  # one whole line per write, so concurrent runs never interleave inside a line
                    if reading is not None:
                        _READ_WHILE_DECODING[(reading_key(reading, max_new_tokens), records[j].prompt, prefills[j],
                                              images[j], response)] = gen.check_states
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


class Conversation(NamedTuple):
    """A training conversation: a prompt set's request, the assistant-turn opening, an image path ("" = none), and
    whether answering it is unsafe."""

    record: Record
    prefill: str = ""
    image: str = ""
    unsafe: int = 0


def labelled_responses(adapter, split: str, max_new_tokens: int = 96, caps: dict[str, int | None] | None = None,
                       cache: str | os.PathLike | None = None, progress: bool = True,
                       openings: tuple[str, ...] = (), images: tuple[str, ...] = (),
                       typographic: int | None = 0, reading: CheckReading | None = None,
                       adversarial: tuple[str, ...] = ()) -> list[Answer]:
    """The model's answers to the ``split`` conversations (:func:`conversations`), labelled: what the detector and
    SAPT learn from. All are generated together (cached); harmful ones that refuse are dropped (an aligned model
    refuses many, and a refusal is not unsafe). ``reading``: answers generated now leave their check states
    (:func:`states_read`)."""
    convs = conversations(split, caps, openings, images, typographic, adversarial)
    responses = model_responses(adapter, [c.record for c in convs], [c.prefill for c in convs], max_new_tokens,
                                cache=cache, progress=progress, image=[c.image for c in convs], reading=reading)
    return [Answer(c.record, c.prefill, resp, c.unsafe, c.image) for c, resp in zip(convs, responses, strict=True)
            if not (c.unsafe and is_refusal(resp))]


def conversations(split: str, caps: dict[str, int | None] | None = None, openings: tuple[str, ...] = (),
                  images: tuple[str, ...] = (), typographic: int | None = 0,
                  adversarial: tuple[str, ...] = ()) -> list[Conversation]:
    """The ``split`` training conversations.

    Harmful prompts: one after the affirmative prefill, one unprompted and one after each of ``openings``
    (assistant-turn openings the model continues); benign prompts: one each. Each of ``images`` (paths) adds the
    same conversations with that image in the user turn (harmful: after the prefill and unprompted). ``caps`` limits
    the prompts per set (``{"harmful": 20, "benign": 40}``). ``typographic`` (a cap per kind, None: all) adds image
    conversations (:func:`image_conversations`), with ``adversarial`` images among them.
    """
    caps = caps or {}
    out: list[Conversation] = []
    for name, prefills in (("harmful", (AFFIRMATIVE_PREFILL, "", *openings)), ("benign", ("",))):
        records = load_prompt_set(name, split)[:caps.get(name)]
        runs = [(p, "") for p in prefills] + [(p, im) for im in images for p in prefills[:2]]
        out += [Conversation(r, p, im, int(name == "harmful")) for p, im in runs for r in records]
    if typographic != 0:
        out += image_conversations(split, typographic, adversarial)
    return out


def image_conversations(split: str, cap: int | None, adversarial: tuple[str, ...] = ()) -> list[Conversation]:
    """Image conversations of ``split`` (at most ``cap`` per kind): the project's harmful prompts as FigStep, TYPO and
    SD+TYPO renders with each attack's official prompt (unsafe), the benign typographic set and benign prompts with
    a wordless picture (safe); with ``adversarial`` images (e.g. PGD images made on training prompts), harmful
    prompts asked with them in turn (unsafe), benign prompts asked with them in turn and with the plain image PGD
    starts from (safe): the patches alone are not what makes an answer unsafe."""
    from attacks import figstep, mmsb
    from training import visual

    out: list[Conversation] = []
    for source, kind, prompt in (("figstep", "figstep", figstep.PROMPT), ("mmsb", "typo", mmsb.PROMPTS["TYPO"]),
                                 ("mmsb", "sd_typo", mmsb.PROMPTS["SD+TYPO"])):
        out += [Conversation(replace(r, prompt=prompt), "", visual.render(kind, r.text), 1)
                for r in load_typographic_harmful(source, split)[:cap]]
    typo = load_typographic(split)
    typo = [r for kind in TYPO_KINDS for r in typo if r.category == kind][:None if cap is None else 3 * cap]
    out += [Conversation(r, "", visual.typographic_image(r), 0) for r in typo]
    benign = load_prompt_set("benign", split)[:cap]
    pics = visual.pictures(8)
    out += [Conversation(r, "", pics[i % len(pics)], 0) for i, r in enumerate(benign)]
    if adversarial:
        harmful = load_prompt_set("harmful", split)[:cap]
        out += [Conversation(r, "", adversarial[i % len(adversarial)], 1) for i, r in enumerate(harmful)]
        out += [Conversation(r, "", adversarial[(i + 1) % len(adversarial)], 0) for i, r in enumerate(benign)]
        out += [Conversation(r, "", visual.pgd_start(), 0) for r in benign]
    return out


def greedy_batch(adapter, prompts: list[str], prefill: str = "", max_new_tokens: int = 48,
                 image: Image.Image | None | Sequence[Image.Image | None] = None) -> list[str]:
    """Greedy continuations of several prompts at once: one string each (see :func:`greedy_generations`)."""
    return [g.text for g in greedy_generations(adapter, prompts, prefill, max_new_tokens, image)]


def greedy_ids(adapter, prompts: list[str], prefill: str = "", max_new_tokens: int = 48,
               image: Image.Image | None | Sequence[Image.Image | None] = None) -> list[list[int]]:
    """Greedy token ids (EOS excluded) for several prompts (see :func:`greedy_generations`)."""
    return [g.token_ids for g in greedy_generations(adapter, prompts, prefill, max_new_tokens, image)]


def greedy_generations(adapter, prompts: list[str], prefill: str | Sequence[str] = "", max_new_tokens: int = 48,
                       image: Image.Image | None | Sequence[Image.Image | None] = None,
                       reading: CheckReading | None = None) -> list:
    """Greedy Generations for several prompts (each with ``image`` and ``prefill``, or its own of a list), the tokens
    :func:`reminder.generate` picks, decoded together in batches padded on the left
    (:func:`reminder.batching.generate_batch`; ``reading``: check states read on the way)."""
    images = image if isinstance(image, (list, tuple)) else [image] * len(prompts)
    prefills = [prefill] * len(prompts) if isinstance(prefill, str) else list(prefill)
    with torch.inference_mode():
        encoded = [adapter.encode(adapter.build(p, im, prefill=pre))
                   for p, im, pre in zip(prompts, images, prefills, strict=True)]
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
               targets: list[torch.Tensor] | None = None, prefix_grad: bool = False) -> dict[str, torch.Tensor]:
    """Prompt (with its image) + partial response, then soft prompt [1, n, d] (+ each pair's target ids [T_i]), for
    a batch of pairs.

    The prompts and partial responses run first, padded on the left, into a KV cache; the soft prompt and the
    targets run on top of it. They do not depend on the soft prompt, so unless ``prefix_grad`` (the model itself is
    trained, e.g. a LoRA) they run without gradient: training the soft prompt backpropagates through a few tokens
    per example instead of the whole conversation. Returns ``check`` [B, d] (``layer`` state at the last soft token;
    with no soft prompt, at the last response token), ``token`` [B, d] (``layer`` state at the last response token,
    which the soft prompt cannot see), and with ``targets`` ``logits`` [B, T, V] (float32) with ``labels`` [B, T]
    (-100 where nothing is scored), aligned for next-token cross-entropy.
    """
    from reminder.batching import pad_left

    n = soft.shape[1]
    with contextlib.nullcontext() if prefix_grad else torch.no_grad():
        rows = [adapter.encode(adapter.build(p.prompt, training_image(p.image), prefill=p.partial)) for p in pairs]
        embeds, positions, mask = pad_left(adapter, rows)
        padded = bool((mask == 0).any())
        cache = adapter.new_cache()
        head_last, head_hid = adapter.forward(embeds, positions, cache, layer, pad_mask=mask if padded else None)
    tails = targets or [torch.zeros(0, dtype=torch.long, device=adapter.device)] * len(rows)
    width = max(len(t) for t in tails)
    pad = adapter.tokenizer.pad_token_id or 0
    labels = torch.full((len(rows), width), -100, dtype=torch.long, device=adapter.device)
    ids = torch.full((len(rows), width), pad, dtype=torch.long, device=adapter.device)
    for i, t in enumerate(tails):
        ids[i, :len(t)] = t
        labels[i, :len(t)] = t  # the state before target token j (the last soft vector's, for j = 0) predicts it
    after = torch.tensor([r.next_position for r in rows], device=adapter.device)
    x = torch.cat([soft.to(adapter.dtype).expand(len(rows), -1, -1), adapter.embed(ids)], dim=1)
    pos = adapter.positions(0, n + width) + after[:, None]  # [B, n + T] or [3, B, n + T]
    full = torch.cat([mask, mask.new_ones(len(rows), n + width)], dim=1)
    last, hid = adapter.forward(x, pos, cache, layer, pad_mask=full if padded else None)
    last, hid = torch.cat([head_last[:, -1:], last], dim=1), torch.cat([head_hid[:, -1:], hid], dim=1)
    out = {"check": hid[:, n], "token": head_hid[:, -1]}  # position 0: the last response token
    if targets is not None:
        out["logits"], out["labels"] = adapter.logits(last[:, n:n + width]), labels
    return out

"""Training examples shared by the detector and SAPT: the model's own responses, cut into partial responses.

* :func:`model_responses` generates greedy answers in batches of equal-length prompts (harmful ones after an affirmative
  prefill such as "Sure, here is"), cached in a JSONL file so reruns are fast.
* :func:`cut_response` cuts a response at a random word boundary (about a third empty).
* :func:`soft_batch` runs right-padded batches of prompt + partial response + soft prompt (+ target tokens) through
  :meth:`VLMAdapter.forward`; padding only ever follows the positions that are read, so the causal mask hides it.
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from reminder.batching import generate_batch
from reminder.data import Record, load_prompt_set
from reminder.generation import GenerationConfig
from reminder.judges import is_refusal
from reminder.models.embedded import reminder_home

AFFIRMATIVE_PREFILL = "Sure, here is"
CUTS = ("checks", "random")  # where responses are cut: at guarded generation's check points, or at a random word


@dataclass
class Pair:
    """(prompt, partial response) with label ``unsafe`` (1 = harmful request being answered)."""

    prompt: str
    partial: str
    unsafe: int
    rest: str = ""  # the response text after ``partial`` (SAPT's benign target)
    split: str = "train"


def default_cache(adapter) -> Path:
    """``$REMINDER_HOME/responses/<model>[-<lora hash>].jsonl``: a retrained LoRA gets a fresh cache, so answers of
    the previous adapter are never reused for the new one."""
    name = Path(adapter.name).name + (f"-{adapter.lora_id}" if adapter.lora_id else "")
    return reminder_home() / "responses" / f"{name}.jsonl"


def model_responses(adapter, records: list[Record], prefill: str = "", max_new_tokens: int = 48,
                    batch_size: int = 64, cache: str | os.PathLike | None = None, progress: bool = True) -> list[str]:
    """The model's greedy responses (``prefill`` included) to ``records``' prompts, cached by (model, prompt, ...)."""
    path = Path(cache) if cache else default_cache(adapter)
    key = lambda r: json.dumps([adapter.name, r.prompt, prefill, max_new_tokens])  # noqa: E731
    known: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:  # a line cut short by a crash (or a concurrent writer) is skipped and regenerated
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            known[row["key"]] = row["response"]
    todo = sorted((r for r in records if key(r) not in known),
                  key=lambda r: len(adapter.build(r.prompt, prefill=prefill)))
    if todo:
        from tqdm.auto import tqdm

        path.parent.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=len(todo), desc=f"responses ({prefill or 'no prefill'})", disable=not progress)
        with open(path, "a") as f:
            for i in range(0, len(todo), batch_size):
                chunk = todo[i:i + batch_size]
                texts = greedy_batch(adapter, [r.prompt for r in chunk], prefill, max_new_tokens)
                for r, text in zip(chunk, texts, strict=True):
                    known[key(r)] = prefill + text
                    f.write(json.dumps({"key": key(r), "response": prefill + text}) + "\n")
                    f.flush()  # one whole line per write, so concurrent runs never interleave inside a line
                bar.update(len(chunk))
        bar.close()
    return [known[key(r)] for r in records]


def labelled_responses(adapter, split: str, max_new_tokens: int = 96, caps: dict[str, int | None] | None = None,
                       cache: str | os.PathLike | None = None, progress: bool = True,
                       openings: tuple[str, ...] = ()) -> list[tuple[Record, str, str, int]]:
    """(record, prefill, response, unsafe) for the ``split`` prompts: what the detector and SAPT learn from.

    Harmful prompts give one answer after the affirmative prefill, one unprompted and one after each of ``openings``
    (assistant-turn openings the model continues); only those that do not refuse are kept (an aligned model refuses
    many unprompted ones, and a refusal is not unsafe). Benign prompts give the model's own answer. ``caps`` limits
    the prompts per set (``{"harmful": 20, "benign": 40}``).
    """
    caps = caps or {}
    out: list[tuple[Record, str, str, int]] = []
    for name, prefills in (("harmful", (AFFIRMATIVE_PREFILL, "", *openings)), ("benign", ("",))):
        records = load_prompt_set(name, split)[:caps.get(name)]
        for prefill in prefills:
            responses = model_responses(adapter, records, prefill, max_new_tokens, cache=cache, progress=progress)
            for rec, resp in zip(records, responses, strict=True):
                if name == "benign" or not is_refusal(resp):
                    out.append((rec, prefill, resp, int(name == "harmful")))
    return out


def greedy_batch(adapter, prompts: list[str], prefill: str = "", max_new_tokens: int = 48) -> list[str]:
    """Greedy continuations of several text prompts at once: one string each (see :func:`greedy_ids`)."""
    return [adapter.tokenizer.decode(ids, skip_special_tokens=True)
            for ids in greedy_ids(adapter, prompts, prefill, max_new_tokens)]


def greedy_ids(adapter, prompts: list[str], prefill: str = "", max_new_tokens: int = 48) -> list[list[int]]:
    """Greedy token ids (EOS excluded) for several text prompts, the same tokens :func:`reminder.generate` picks.

    Prompts of one token length are decoded together (:func:`reminder.batching.generate_batch`), so no batch needs
    padding (a padded attention mask sends SDPA to a several-times slower path on CPU).
    """
    with torch.inference_mode():
        encoded = [adapter.encode(adapter.build(p, prefill=prefill)) for p in prompts]
    gens = generate_batch(adapter, encoded, config=GenerationConfig(max_new_tokens=max_new_tokens),
                          batch_size=max(len(prompts), 1))
    return [g.token_ids for g in gens]


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
    """Forward prompt + partial + soft prompt [1, n, d] (+ each pair's target ids [T_i]) in one padded batch.

    Returns ``check`` [B, d] (``layer`` state at the last soft token), ``token`` [B, d] (``layer`` state at the last
    response token, which the soft prompt cannot see), and with ``targets`` ``logits`` [B, T, V] (float32) with
    ``labels`` [B, T] (-100 where nothing is scored), aligned for next-token cross-entropy.
    """
    n = soft.shape[1]
    rows = [adapter.build(p.prompt, prefill=p.partial).input_ids[0] for p in pairs]
    tails = targets or [rows[0][:0]] * len(rows)
    width = max(len(r) + n + len(t) for r, t in zip(rows, tails, strict=True))
    pad = adapter.tokenizer.pad_token_id or 0
    embeds, labels = [], torch.full((len(rows), width), -100, dtype=torch.long, device=adapter.device)
    for i, (r, t) in enumerate(zip(rows, tails, strict=True)):
        filler = torch.full((width - len(r) - n - len(t),), pad, dtype=torch.long, device=adapter.device)
        embeds.append(torch.cat([adapter.embed(r[None])[0], soft[0].to(adapter.dtype),
                                 adapter.embed(torch.cat([t, filler])[None])[0]]))
        labels[i, len(r) + n - 1:len(r) + n - 1 + len(t)] = t  # logits at position j predict token j + 1
    pos = adapter.positions(0, width)
    pos = pos.expand(*pos.shape[:-2], len(rows), width)
    last, hid = adapter.forward(torch.stack(embeds), pos, None, layer)
    idx = torch.arange(len(rows), device=adapter.device)
    lengths = torch.tensor([len(r) for r in rows], device=adapter.device)
    out = {"check": hid[idx, lengths + n - 1], "token": hid[idx, lengths - 1]}
    if targets is not None:
        out["logits"], out["labels"] = adapter.logits(last), labels
    return out

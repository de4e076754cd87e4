"""GCG (Zou et al. 2023): greedy coordinate gradient search for an adversarial suffix, written for our adapters.

The suffix sits at the end of the user message, before the assistant turn; the chat template stays intact (unlike
nanoGCG we never strip the bos token, which for SmolLM2 is ``<|im_start|>``). Each step:

1. gradient of the target loss w.r.t. a one-hot matrix over the suffix tokens ([n_suffix, V]);
2. the ``topk`` most promising replacements per position, ``search_width`` candidates with ``n_replace`` swaps;
3. candidates that do not re-tokenise to themselves after the prompt text are dropped (non-ASCII and special
   tokens are never proposed);
4. the survivors are scored in batches on top of a KV cache of the fixed prefix (everything before the suffix,
   image features included), and an attack buffer keeps the best suffixes found so far.

The search stops early when greedy decoding reproduces the target exactly (teacher-forced argmax match).
"""

from __future__ import annotations

import argparse
import copy
import threading
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import DynamicCache

from attacks.common import (
    AttackResult,
    add_common_args,
    batch_positions,
    cli_command,
    emit,
    print_progress,
    target_ce,
)
from reminder.config_cli import add_config_args, config_from_args
from reminder.models.base import Prompt, VLMAdapter
from reminder.progress import Callback, Progress, stopped


@dataclass
class GCGConfig:
    """GCG knobs. Time per step grows with ``search_width`` x suffix length (the candidate forwards);
    ``batch_size`` trades memory for speed; ``topk`` shapes the search, not the cost."""

    num_steps: int = 50
    search_width: int = 64
    topk: int = 64
    n_replace: int = 1
    suffix_init: str = " !" * 20  # 20 tokens of " !"
    batch_size: int = 64  # candidates per forward
    buffer_size: int = 1
    early_stop: bool = True
    seed: int = 0
    allow_non_ascii: bool = False


@dataclass
class GCGResult(AttackResult):
    """``best_suffix`` is appended directly to the prompt: ask the model ``prompt + best_suffix``."""

    prompt: str = ""
    target: str = ""
    best_suffix: str = ""
    initial_loss: float = float("inf")
    suffixes: list[str] = field(default_factory=list)  # the best candidate of each step
    matched: bool = False  # greedy decoding reproduces the target


@lru_cache(maxsize=8)
def forbidden_tokens(adapter: VLMAdapter, allow_non_ascii: bool) -> torch.Tensor:
    """Bool mask [V] of tokens GCG never proposes: special and image tokens, and (by default) non-ASCII ones."""
    tok = adapter.tokenizer
    size = adapter.model.get_input_embeddings().weight.shape[0]
    mask = torch.zeros(size, dtype=torch.bool)
    mask[len(tok):] = True
    mask[[i for i in tok.all_special_ids if i < size]] = True
    mask[adapter.suppress_ids] = True
    if not allow_non_ascii:
        texts = tok.batch_decode([[i] for i in range(min(size, len(tok)))])
        mask[: len(texts)] |= torch.tensor([not (t.isascii() and t.isprintable()) or not t for t in texts])
    return mask.to(adapter.device)


def split_prompt(adapter: VLMAdapter, prompt: str, image: Image.Image | None = None,
                 system: str | None = None) -> tuple[Prompt, torch.Tensor]:
    """The chat prompt cut where the suffix goes: (prefix Prompt, template tail ids [1, n]) with the tail being
    everything after the user text (end of turn, assistant header)."""
    if not prompt:
        raise ValueError("prompt must be non-empty text")
    full = adapter.build(prompt, image, system=system)
    cut = full.text.rindex(prompt) + len(prompt)
    tail = adapter.tokens(full.text[cut:])
    n = tail.shape[1]
    if not torch.equal(full.input_ids[:, -n:], tail):
        raise ValueError("the chat template's tail does not tokenise on its own; cannot place a suffix")
    pixels = {k: v[:, :-n] if k == "mm_token_type_ids" else v for k, v in full.pixels.items()}
    return Prompt(full.input_ids[:, :-n], pixels, full.text[:cut]), tail


def sample_candidates(ids: torch.Tensor, grad: torch.Tensor, forbidden: torch.Tensor, config: GCGConfig,
                      gen: torch.Generator) -> torch.Tensor:
    """``search_width`` suffixes [W, n], each with ``n_replace`` positions swapped for one of their top-k tokens."""
    grad = grad.masked_fill(forbidden, float("inf"))
    top = (-grad).topk(config.topk, dim=1).indices  # [n, k]
    n, width = ids.shape[0], config.search_width
    pos = torch.rand(width, n, generator=gen).argsort(-1)[:, : config.n_replace].to(ids.device)  # [W, r]
    pick = torch.randint(0, config.topk, (width, config.n_replace, 1), generator=gen).to(ids.device)
    values = top[pos].gather(2, pick)[..., 0]  # [W, r]
    return ids.repeat(width, 1).scatter(1, pos, values)


def retokenises(adapter: VLMAdapter, candidates: torch.Tensor, context: str = "") -> torch.Tensor:
    """Bool [W]: ``context + text(candidate)`` tokenises back to ``tokens(context) + candidate`` exactly, so the
    suffix survives being sent as text after the prompt (no merge across the boundary, no other split)."""
    tok = adapter.tokenizer
    head = tok(context, add_special_tokens=False)["input_ids"] if context else []
    again = tok([context + t for t in tok.batch_decode(candidates)], add_special_tokens=False)["input_ids"]
    return torch.tensor([a == head + c for a, c in zip(again, candidates.tolist(), strict=True)],
                        dtype=torch.bool, device=candidates.device)


class _Objective:
    """Target loss of suffixes on top of a KV cache of the fixed prefix: rest = suffix + template tail + target."""

    def __init__(self, adapter: VLMAdapter, prefix: Prompt, tail: torch.Tensor, target_ids: torch.Tensor,
                 n_suffix: int):
        self.adapter = adapter
        self.target_ids = target_ids
        with torch.no_grad():
            enc = adapter.encode(prefix)
            self.cache = adapter.new_cache()
            adapter.forward(enc.embeds, enc.positions, self.cache)
            self.fixed = adapter.embed(torch.cat([tail, target_ids], dim=1))  # [1, n_tail + n_target, d]
        self.n_prefix = self.cache.get_seq_length()
        self.first = n_suffix + tail.shape[1] - 1  # row predicting the first target token
        self.positions = adapter.positions(enc.next_position, n_suffix + self.fixed.shape[1])
        self.batched: dict[int, DynamicCache] = {}  # no-grad caches per batch size, cropped back after use

    def _loss(self, suffix_embeds: torch.Tensor, cache) -> tuple[torch.Tensor, torch.Tensor]:
        b = suffix_embeds.shape[0]
        embeds = torch.cat([suffix_embeds, self.fixed.expand(b, -1, -1)], dim=1)
        hidden, _ = self.adapter.forward(embeds, batch_positions(self.positions, b), cache)
        return target_ce(self.adapter, hidden[:, self.first: self.first + self.target_ids.shape[1]], self.target_ids)

    def _fresh_cache(self, b: int):
        """A copy of the prefix cache for ``b`` rows (the prefix itself is never recomputed)."""
        cache = copy.deepcopy(self.cache)
        if b > 1:
            cache.batch_repeat_interleave(b)
        return cache

    def gradient(self, ids: torch.Tensor) -> torch.Tensor:
        """Normalised gradient of the loss w.r.t. the one-hot suffix: [n_suffix, V]."""
        weight = self.adapter.model.get_input_embeddings().weight
        one_hot = F.one_hot(ids, weight.shape[0]).to(weight.dtype).requires_grad_()
        loss = self._loss((one_hot @ weight)[None], self._fresh_cache(1))[0].sum()
        grad = torch.autograd.grad(loss, one_hot)[0]
        return grad / grad.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def evaluate(self, candidates: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss [W], greedy match [W]) for candidate suffixes [W, n]."""
        parts = []
        for chunk in candidates.split(batch_size):
            if len(chunk) not in self.batched:
                self.batched[len(chunk)] = self._fresh_cache(len(chunk))
            cache = self.batched[len(chunk)]
            parts.append(self._loss(self.adapter.embed(chunk), cache))
            cache.crop(self.n_prefix - cache.get_seq_length())
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def run(adapter: VLMAdapter, prompt: str, target: str, config: GCGConfig | None = None,
        image: Image.Image | None = None, callback: Callback | None = None, stop: threading.Event | None = None,
        system: str | None = None) -> GCGResult:
    """Optimise a suffix so that ``prompt + suffix`` (with ``image``, if any) makes the model answer ``target``;
    ``callback``/``stop``: :mod:`reminder.progress` (a plain ``(step, loss)`` function serves too)."""
    progress = Progress.of(callback)
    config = config or GCGConfig()
    if config.search_width < 1 or config.topk < 1 or config.batch_size < 1 or config.n_replace < 1:
        raise ValueError("search_width, topk, batch_size and n_replace must be >= 1")
    ids = adapter.tokens(config.suffix_init)[0]
    target_ids = adapter.tokens(target)
    if ids.numel() == 0 or target_ids.numel() == 0:
        raise ValueError("suffix_init and target must be non-empty text")
    if config.n_replace > ids.numel():
        raise ValueError(f"n_replace ({config.n_replace}) exceeds the suffix length ({ids.numel()} tokens)")
    if not bool(retokenises(adapter, ids[None], prompt)[0]):
        raise ValueError(f"suffix_init {config.suffix_init!r} does not re-tokenise after the prompt "
                         "(start it with a space)")
    forbidden = forbidden_tokens(adapter, config.allow_non_ascii)
    objective = _Objective(adapter, *split_prompt(adapter, prompt, image, system), target_ids, ids.numel())
    gen = torch.Generator().manual_seed(config.seed)
    decode = adapter.tokenizer.decode

    initial, matched = objective.evaluate(ids[None], 1)
    buffer = [(float(initial[0]), ids)]  # sorted by loss; the search continues from buffer[0]
    result = GCGResult(config=asdict(config), seed=config.seed, prompt=prompt, target=target,
                       initial_loss=float(initial[0]), best_loss=float(initial[0]), best_suffix=decode(ids),
                       matched=bool(matched[0]))
    start = time.perf_counter()
    for step in range(config.num_steps):
        if result.matched and config.early_stop:
            break
        if stopped(stop):
            result.stopped = True
            break
        grad = objective.gradient(buffer[0][1])
        with torch.no_grad():
            candidates = sample_candidates(buffer[0][1], grad, forbidden, config, gen)
            candidates = candidates[retokenises(adapter, candidates, prompt)]
            if len(candidates) == 0:  # nothing survived the filter: re-score the current suffix
                candidates = buffer[0][1][None]
            losses, matches = objective.evaluate(candidates, config.batch_size)
        j = int(losses.argmin())
        loss, best_ids = float(losses[j]), candidates[j]
        if len(buffer) < config.buffer_size or loss < buffer[-1][0]:
            buffer = sorted(buffer + [(loss, best_ids)], key=lambda b: b[0])[: max(1, config.buffer_size)]
        result.losses.append(loss)
        result.suffixes.append(decode(best_ids))
        if loss < result.best_loss:
            result.best_loss, result.best_suffix = loss, decode(best_ids)
        result.matched = result.matched or bool(matches[j])
        progress.on_step(step, loss, {})
    result.seconds_per_step = (time.perf_counter() - start) / max(1, len(result.losses))
    return result


def main(argv: list[str] | None = None) -> GCGResult:
    parser = add_common_args(argparse.ArgumentParser(description="GCG adversarial suffix search"))
    add_config_args(parser, GCGConfig, rename={"num_steps": "steps"}, help={"num_steps": "optimisation steps"})
    parser.add_argument("--image", help="optional image placed in the user message")
    args = parser.parse_args(argv)
    if len(args.prompt) != 1 or len(args.target) != 1:
        parser.error("GCG takes exactly one --prompt and one --target")
    from reminder import load_model
    from reminder.images import open_image

    adapter = load_model(args.model)
    image = open_image(args.image)[0] if args.image else None
    config = config_from_args(GCGConfig, args)
    result = run(adapter, args.prompt[0], args.target[0], config, image=image, callback=print_progress)
    result.command = cli_command("attacks.gcg", argv)
    if args.out:
        result.artefact = args.out
        result.save(args.out)
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()

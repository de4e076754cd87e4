"""Guarded, KV-cached generation: decode token by token; every ``interval`` tokens, check with the reminder.

A check runs the soft-prompt vectors on top of the KV cache and reads the detector at the last of them. In the
default ``fused`` check they ride in the same forward as the next real token: the real token comes first, so the
causal mask already hides the soft tokens from it, and its logits are those of a plain decode step. If
P(unsafe) >= threshold the reminder stays in the context and decoding continues from its last vector (``rollback``:
the tokens after the last check that passed are withdrawn and the reminder enters there; the official
``regenerate`` mode restarts the answer from prompt + reminder); otherwise the cache is cropped back so the reminder
leaves no trace. ``separate`` runs the check as its own few-token forward, ``reencode`` re-encodes the
whole sequence without cache as the official code does (kept for the overhead benchmark). A reminder with
``check_start`` is checked once more before the first token: the prompt is decode step 0, so that check rides in the
prompt's own forward. One with ``check_end`` also reads an answer that ends between check points (the model picked
end-of-turn): a separate few-token check before it ends, so that an answer shorter than ``interval`` is checked too;
if it fires, the model goes on from the reminder instead of stopping.

Every generated token gets a P(unsafe) from the per-token probe on the hidden state the decode step computes anyway.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from PIL import Image

from .checkpoint import Reminder
from .detector import gate
from .models.base import Encoded, Prompt, VLMAdapter


@dataclass
class GenerationConfig:
    """Decoding and guarding knobs. ``interval``/``threshold`` of ``None`` take the reminder's values."""

    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    interval: int | None = None
    threshold: float | None = None
    guard: bool = True  # False: score tokens with the reminder's probe but never check or inject
    mode: Literal["continue", "rollback", "regenerate"] | None = None  # None: the reminder's own (Reminder.mode)
    check: Literal["fused", "separate", "reencode"] = "fused"
    max_injections: int = 1
    ignore_eos: bool = False  # keep decoding past end-of-turn (fixed-length benchmarks)


@dataclass
class TokenEvent:
    """One generated token: ``index`` counts generated tokens from 0; ``p_unsafe`` is None without reminder."""

    index: int
    token_id: int
    text: str
    p_unsafe: float | None


@dataclass
class CheckEvent:
    """A reminder check after ``at`` generated tokens; ``p_unsafe`` is the gate's score (see ``Reminder.aggregate``).
    ``resumes_at``: in ``rollback`` mode, where a check that fired takes the answer back to (the tokens after it are
    withdrawn; the reminder enters there)."""

    at: int
    p_unsafe: float
    fired: bool
    resumes_at: int | None = None


@dataclass
class Generation:
    """A finished generation. ``injections``: token indices where the reminder entered the context; ``retracted``:
    the text each rollback withdrew (``rollback`` mode: it is not in ``text``)."""

    text: str
    token_ids: list[int]
    tokens: list[str]
    harm_scores: list[float] | None
    checks: list[CheckEvent] = field(default_factory=list)
    injections: list[int] = field(default_factory=list)
    generate_seconds: float = 0.0
    prompt_tokens: int = 0
    model: str = ""
    mode: str = "continue"
    retracted: list[str] = field(default_factory=list)

    @property
    def answer(self) -> str:
        """The text the user is left with: all of it, or in regenerate mode what followed the last injection."""
        if self.mode == "regenerate" and self.injections:
            return "".join(self.tokens[self.injections[-1]:])
        return self.text

    def segments(self) -> list[str]:
        """The text split at the injection points (for highlighting)."""
        cuts = [0, *self.injections, len(self.tokens)]
        return ["".join(self.tokens[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]

    def to_json(self, keys: tuple[str, ...] | None = None) -> dict:
        """Plain data (checks as ``{"at", "p_unsafe", "fired"}``): every field, or the ``keys`` named, in their order;
        the one serialisation the CLI, the evaluation rows and the app's comparison use."""
        out = asdict(self)
        return out if keys is None else {k: out[k] for k in keys}


def check_due(n: int, interval: int, max_new_tokens: int, start: bool = False) -> bool:
    """Whether guarded generation checks after ``n`` generated tokens: every ``interval`` tokens, with ``start`` also
    before the first one, and never after the ``max_new_tokens``-th (a check needs a token after it to matter)."""
    return n < max_new_tokens and (n % interval == 0 if n else start)


def end_check_due(n: int, interval: int, max_new_tokens: int, end: bool = False) -> bool:
    """Whether an answer that ends (end-of-turn) after ``n`` tokens gets the ``end`` check: it stopped between two
    check points, before ``max_new_tokens``."""
    return end and n < max_new_tokens and n % interval != 0


def check_points(n: int, interval: int, max_new_tokens: int, start: bool = False, end: bool = False) -> list[int]:
    """Where guarded generation (:func:`stream`) checks an answer of ``n`` tokens: the one schedule, which training
    reads its examples at (:func:`check_due`, then :func:`end_check_due` where the answer ended)."""
    points = [k for k in range(n + 1) if check_due(k, interval, max_new_tokens, start)]
    return points + [n] if end_check_due(n, interval, max_new_tokens, end) else points


def check_prompt(adapter: VLMAdapter, prompt: Prompt | Encoded, max_new_tokens: int) -> None:
    """Refuse prompts that are empty or leave no room in the model's context."""
    if len(prompt) + max_new_tokens > adapter.context_length:
        raise ValueError(f"prompt is {len(prompt)} tokens; with {max_new_tokens} new tokens it exceeds "
                         f"the model's context of {adapter.context_length}")


def stream(adapter: VLMAdapter, prompt: Prompt, reminder: Reminder | None = None,
           config: GenerationConfig | None = None) -> Iterator[TokenEvent | CheckEvent | Generation]:
    """Yield a TokenEvent per token and a CheckEvent per check; the last item is the finished Generation.

    The prompt is step 0: a reminder with ``check_start`` is also checked on it, before the first token. Each step
    runs in inference mode and the mode is left between steps, so interleaved streams (the app's baseline and guarded
    runs) never leave the thread in inference mode.
    """
    return _stepwise_inference(_stream(adapter, prompt, reminder, config))


def _stepwise_inference(steps: Iterator):
    """Run each step of ``steps`` under ``torch.inference_mode()``, outside it between steps."""
    while True:
        with torch.inference_mode():
            try:
                item = next(steps)
            except StopIteration:
                return
        yield item


def _stream(adapter: VLMAdapter, prompt: Prompt, reminder: Reminder | None,
            config: GenerationConfig | None) -> Iterator[TokenEvent | CheckEvent | Generation]:
    cfg = config or GenerationConfig()
    check_prompt(adapter, prompt, cfg.max_new_tokens)
    guarded = reminder is not None and cfg.guard
    interval = (cfg.interval or (reminder.interval if reminder else 16)) if guarded else 0
    threshold = cfg.threshold if cfg.threshold is not None else (reminder.threshold if reminder else 1.0)
    mode = cfg.mode or (reminder.mode if reminder else "continue")
    layer = reminder.layer if reminder else -1
    token_probe = reminder.token_probe() if reminder else None
    soft = reminder.soft_prompt(adapter.dtype, adapter.device) if reminder else None
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    suppress = adapter.suppress_ids.to(adapter.device)

    ids: list[int] = []
    pieces: list[str] = []
    scores: list[float] | None = [] if reminder else None
    checks: list[CheckEvent] = []
    check_logits: list[float] = []  # every check's log-odds, combined by the reminder's gate
    injections: list[int] = []
    decoded = ""

    safe = 0  # generated tokens at the last check that did not fire (rollback mode goes back there)
    retracted: list[str] = []

    def score(h_check: torch.Tensor) -> CheckEvent:
        """Gate the check probe's reading of hidden state [d] with the earlier checks; record the check."""
        nonlocal safe
        check_logits.append(float(reminder.detector.logit(h_check)))
        p = float(gate(torch.tensor(check_logits), reminder.aggregate)[-1])
        fired = p >= threshold
        back = safe if fired and mode == "rollback" and safe < len(ids) else None
        checks.append(CheckEvent(len(ids), p, fired, back))
        safe = safe if fired else len(ids)
        return checks[-1]

    def soft_on_cache() -> tuple[torch.Tensor, torch.Tensor]:
        """Run the soft prompt on top of the cache (which keeps it): (final, ``layer``) states [1, n, d]."""
        return adapter.forward(soft, adapter.positions(cache.get_seq_length() + delta, soft.shape[1]), cache, layer)

    def inject(soft_last: torch.Tensor | None) -> torch.Tensor:
        """Keep the reminder in the context (its last vector's final state [1, d], if already in the cache) and
        return the logits [1, V] the answer goes on from."""
        nonlocal decoded
        back = checks[-1].resumes_at
        if back is not None:  # rollback: withdraw the tokens after the last check that passed, remind there
            _truncate(cache, len(prompt) + back)
            kept = adapter.tokenizer.decode(ids[:back], skip_special_tokens=True)
            retracted.append(decoded[len(kept):])
            del ids[back:], pieces[back:]
            if scores is not None:
                del scores[back:]
            decoded, soft_last = kept, None
        injections.append(len(ids))
        if mode == "regenerate":  # official: answer again from prompt + reminder
            _truncate(cache, len(prompt))
            soft_last = None
        if soft_last is None:
            soft_last = soft_on_cache()[0][:, -1]
        return adapter.logits(soft_last)

    enc = adapter.encode(prompt)
    cache = adapter.new_cache()
    delta = enc.next_position - len(prompt)  # position = cache length + delta (M-RoPE offset)
    step, positions = enc.embeds, enc.positions  # the real embeddings this step feeds: prompt, then a token
    while True:
        n = len(ids)
        # a check needs a token after it to matter: none after the last allowed one
        due = (guarded and len(injections) < cfg.max_injections
               and check_due(n, interval, cfg.max_new_tokens, reminder.check_start))
        past, real = cache.get_seq_length(), step.shape[1]
        x = step
        if due and cfg.check == "fused":
            x = torch.cat([step, soft], dim=1)
            positions = torch.cat([positions, adapter.positions(past + real + delta, soft.shape[1])], dim=-1)
        last, hid = adapter.forward(x, positions, cache, layer)
        logits = adapter.logits(last[:, real - 1])
        if not n:
            start = time.perf_counter()  # decoding time, after the prompt's forward
        else:
            piece, decoded = text_piece(adapter.tokenizer, ids, decoded)
            pieces.append(piece)
            p_tok = float(token_probe(hid[0, real - 1])) if token_probe is not None else None
            if scores is not None:
                scores.append(p_tok)
            yield TokenEvent(n - 1, ids[-1], piece, p_tok)

        if due:
            soft_last = None  # final hidden state at the last soft token, where the reminder is in the cache
            if cfg.check == "fused":
                h_check, soft_last = hid[0, -1], last[:, -1]
            elif cfg.check == "separate":
                last_s, h_s = soft_on_cache()
                h_check, soft_last = h_s[0, -1], last_s[:, -1]
            else:  # reencode: the whole sequence from scratch, no cache (the official code's check)
                generated = torch.tensor([ids], dtype=torch.long, device=adapter.device)
                _, h_full = adapter.forward(*adapter.extend(enc, generated, soft), None, layer)
                h_check = h_full[0, -1]
            yield score(h_check)
            if not checks[-1].fired:
                if soft_last is not None:
                    _truncate(cache, past + real)
            else:
                logits = inject(soft_last)

        if n == cfg.max_new_tokens:
            break
        tok = _pick(logits, suppress, cfg, gen)
        if tok in adapter.eos_ids and not cfg.ignore_eos:
            if not (guarded and len(injections) < cfg.max_injections
                    and end_check_due(n, interval, cfg.max_new_tokens, reminder.check_end)):
                break
            last_s, h_s = soft_on_cache()  # the end check: the answer stops between check points
            yield score(h_s[0, -1])
            if not checks[-1].fired:
                break
            tok = _pick(inject(last_s[:, -1]), suppress, cfg, gen)
            if tok in adapter.eos_ids:
                break
        ids.append(tok)
        step = adapter.embed(torch.tensor([[tok]], device=adapter.device))
        positions = adapter.positions(cache.get_seq_length() + delta, 1)
    seconds = time.perf_counter() - start

    yield Generation(decoded, ids, pieces, scores, checks, injections, seconds, len(prompt), adapter.name, mode,
                     retracted)


def generate(adapter: VLMAdapter, prompt: str | Prompt, image: Image.Image | None = None, prefill: str = "",
             reminder: Reminder | None = None, config: GenerationConfig | None = None, **overrides) -> Generation:
    """Generate to the end and return the Generation (``overrides`` set GenerationConfig fields)."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError("empty prompt")
        prompt = adapter.build(prompt, image, prefill)
    cfg = dataclasses.replace(config or GenerationConfig(), **overrides)
    *_, result = stream(adapter, prompt, reminder, cfg)
    return result


def text_piece(tokenizer, ids: list[int], decoded: str) -> tuple[str, str]:
    """(the piece the last of ``ids`` adds to ``decoded``, the text of ``ids``): streamed text, one token at a time."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    return text[len(decoded):], text


def _truncate(cache, length: int) -> None:
    """Roll the KV cache back to its first ``length`` positions."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


def _pick(logits: torch.Tensor, suppress: torch.Tensor, cfg: GenerationConfig, gen: torch.Generator) -> int:
    """Greedy or seeded nucleus sampling over logits [1, V], never picking a suppressed id."""
    logits = logits[0].clone()
    logits[suppress] = float("-inf")
    if not cfg.do_sample:
        return int(logits.argmax())
    probs = torch.softmax(logits / max(cfg.temperature, 1e-5), dim=-1)
    if cfg.top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(0) - sorted_p < cfg.top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs.cpu(), 1, generator=gen))

"""Baseline vs guarded generation on one (attacked) input: the logic behind the app's Compare tab.

``compare`` applies an attack to the prompt/image, then streams two runs of the same model: the baseline (the
reminder loaded with ``guard=False``, so every token is scored but nothing is injected) and the guarded run. The two
streams are interleaved token by token; each run's time is the time spent inside its own stream.

The attacks are the one registry's (:mod:`attacks.compose`).
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from PIL import Image

from attacks.compose import AttackInput, attack_inputs
from reminder.checkpoint import Reminder
from reminder.data import Record
from reminder.generation import CheckEvent, Generation, GenerationConfig, TokenEvent, stream
from reminder.judges import is_refusal
from reminder.models.base import VLMAdapter


def apply_attack(attack: str, prompt: str, image: Image.Image | None, model: str = "embedded") -> AttackInput:
    """Turn a request into the attacked inputs (``prompt`` is the harmful instruction; ``attack`` is a spec of the one
    registry, :data:`attacks.compose.ATTACKS`, e.g. ``template:fiction``); precomputed artefacts are ``model``'s."""
    if not prompt.strip():
        raise ValueError("the prompt is empty")
    if attack.partition(":")[0] == "mmsb-sd-typo" and image is None:
        raise ValueError("mmsb-sd-typo stacks the uploaded image above the phrase: upload an image first")
    return attack_inputs(attack, Record("app", "", prompt, image=image), model)


def read_image(adapter: VLMAdapter, image: Image.Image | None) -> str | None:
    """What ``adapter``'s model reads in ``image`` (cached; :mod:`reminder.reading`): the text, "" when it reads no
    words, None without an image or for a model without a reading channel (it sees with its own vision tower)."""
    reader = getattr(adapter, "read_tokens", None)
    return reader(image)[1] if image is not None and reader is not None else None


def reading_note(image_text: str | None) -> str:
    """The Compare tab's line under the image: "The model read: …" (empty without a reading)."""
    if image_text is None:
        return ""
    if not image_text:
        return "**The model read:** no words in this image."
    lines = " / ".join(line.strip() for line in image_text.splitlines() if line.strip())
    return "**The model read:** " + re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~])", r"\\\1", lines)


@dataclass
class Run:
    """One side of the comparison as it streams: text so far, per-token scores, time inside its stream."""

    text: str = ""
    scores: list[float] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)  # the text of each token so far
    seconds: float = 0.0
    first_token_seconds: float | None = None
    result: Generation | None = None

    @property
    def seconds_per_token(self) -> float:
        """Decode time per token after the first (the first also pays for reading the prompt)."""
        n = len(self.scores)
        if n < 2 or self.first_token_seconds is None:
            return self.seconds / n if n else 0.0
        return (self.seconds - self.first_token_seconds) / (n - 1)

    @property
    def refused(self) -> bool:
        return is_refusal(self.text)


@dataclass
class Comparison:
    """The state after each streamed step; both runs hold their ``result`` in the last one."""

    inputs: AttackInput
    baseline: Run
    guarded: Run
    threshold: float
    image_text: str | None = None  # what the model read in the attacked image (None: no image or no reading channel)

    @property
    def tokens_until_intervention(self) -> int | None:
        """Generated tokens when the reminder first fired (a rollback then enters earlier: ``injections``)."""
        res = self.guarded.result
        if not res or not res.injections:
            return None
        return next((c.at for c in res.checks if c.fired), res.injections[0])

    def to_json(self) -> dict:
        """Plain data for the API: both texts, per-token scores, injections, verdicts and timings."""
        out = {"attack": self.inputs.attack, "prompt": self.inputs.prompt, "prefill": self.inputs.prefill,
               "note": self.inputs.note, "image_text": self.image_text, "threshold": self.threshold,
               "injections": self.guarded.result.injections if self.guarded.result else [],
               "tokens_until_intervention": self.tokens_until_intervention}
        for name, run in (("baseline", self.baseline), ("guarded", self.guarded)):
            done = run.result.to_json(("tokens", "checks")) if run.result else {"tokens": [], "checks": []}
            out[name] = {"text": run.text, "tokens": done["tokens"], "scores": run.scores, "refused": run.refused,
                         "seconds_per_token": run.seconds_per_token, "first_token_seconds": run.first_token_seconds,
                         "checks": done["checks"]}
        return out


def compare(adapter: VLMAdapter, prompt: str, image: Image.Image | None = None, attack: str = "none",
            reminder: Reminder | None = None, interval: int | None = None, threshold: float | None = None,
            max_new_tokens: int = 64) -> Iterator[Comparison]:
    """Yield the comparison after every streamed token of either run, and once more when both have finished."""
    if reminder is None:
        raise ValueError("pick a reminder: the comparison needs one (the baseline uses its probe to score tokens)")
    reminder.check_model(adapter)
    inputs = apply_attack(attack, prompt, image, adapter.name)
    built = adapter.build(inputs.prompt, inputs.image, inputs.prefill)
    threshold = reminder.threshold if threshold is None else threshold
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, interval=interval, threshold=threshold)
    runs = {"baseline": Run(), "guarded": Run()}
    streams = {"baseline": stream(adapter, built, reminder, dataclasses.replace(cfg, guard=False)),
               "guarded": stream(adapter, built, reminder, cfg)}
    state = Comparison(inputs, runs["baseline"], runs["guarded"], threshold, built.image_text)
    while streams:
        for name in list(streams):
            run = runs[name]
            t0 = time.perf_counter()
            try:
                event = next(streams[name])
            except StopIteration:
                del streams[name]
                continue
            run.seconds += time.perf_counter() - t0
            if isinstance(event, TokenEvent):
                run.first_token_seconds = run.first_token_seconds or run.seconds
                run.text += event.text
                run.pieces.append(event.text)
                run.scores.append(event.p_unsafe)
                yield state
            elif isinstance(event, CheckEvent) and event.resumes_at is not None:  # rollback: tokens withdrawn
                del run.pieces[event.resumes_at:], run.scores[event.resumes_at:]
                run.text = "".join(run.pieces)
                yield state
            elif isinstance(event, Generation):
                run.result, run.text = event, event.text
                del streams[name]
    yield state

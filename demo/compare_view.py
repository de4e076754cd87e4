"""What the app's Compare tab shows of a comparison (:mod:`demo.compare`): the honest note on what a model sees,
the reminder's own gate, the attacked input as text, the marked guarded transcript and the verdict table."""

from __future__ import annotations

from collections.abc import Callable

from reminder.checkpoint import Reminder
from reminder.models.embedded import EMBEDDED_NAMES

from .compare import Comparison, reading_note

EMBEDDED_NOTE = ("**Embedded model:** its vision tower is untrained and random: it cannot really see the image "
                 "(objects, scenes, colours). It reads the words printed in it (OCR) like text, so typographic "
                 "attacks (FigStep, MM-SafetyBench) reach it through the image.")
ALIGNED_NOTE = (" **Model organism:** it learnt safety from text conversations and instruction following from "
                "benign image conversations, so it refuses a harmful request typed as text but may follow it when "
                "the request is printed in the image (FigStep): the gap the reminder closes. See About.")
DEFAULT_GATE = (16, 0.5)  # (interval, threshold) shown when no reminder is chosen
JUDGE_MODEL = "embedded"  # the learned judge's own model (checkpoints/judge)

PREFILL = "prefill (the attack's text)"
READ = "read from the image"
WITHDRAWN = "withdrawn when the reminder fired"
TRANSCRIPT_COLOURS = {READ: "gray", PREFILL: "red", WITHDRAWN: "orange", "reminder injected": "green",
                      "after the reminder": "blue"}


def reads_printed_words(model: str) -> bool:
    """True for a model that reads an image's printed words instead of seeing it (the embedded ones)."""
    return model in EMBEDDED_NAMES


def image_label(model: str) -> str:
    """The honest note under the image for ``model`` (empty for a VLM that sees its images)."""
    label = EMBEDDED_NOTE if reads_printed_words(model) else ""
    return label + (ALIGNED_NOTE if model == "embedded-aligned" else "")


def gate(reminder: Reminder | None) -> tuple[int, float, str]:
    """(interval, threshold, note) of a reminder: its own values, and a warning when it is uncalibrated."""
    if reminder is None:
        return (*DEFAULT_GATE, "")
    note = "" if reminder.calibrated else f"⚠️ This reminder is uncalibrated: {reminder.meta['uncalibrated']}"
    return reminder.interval, reminder.threshold, note


def attacked_text(inputs) -> str:
    """The final prompt as the model gets it (an attack's inputs), with the forced start of its answer."""
    return inputs.prompt + (f"\n[assistant prefill] {inputs.prefill}" if inputs.prefill else "")


def prefill_tag(inputs) -> str:
    """The start of each answer box: the attack's forced prefix, marked."""
    return f"[prefill] {inputs.prefill}" if inputs.prefill else ""


def notes(*lines: str | None) -> str:
    """The non-empty lines as one Markdown paragraph."""
    return "  \n".join(x for x in lines if x)


def first_status(image_note: str, state: Comparison) -> str:
    """The status while the comparison runs: the image's and the attack's notes and what the model read."""
    return notes(image_note, state.inputs.note, reading_note(state.image_text)) or "running…"


def highlighted(result, prefill: str = "", image_text: str | None = None) -> list[tuple[str, str | None]]:
    """The guarded transcript: what the model read in the image (a reading model only), the answer's forced start
    (the attack's prefill, marked as such), then the model's text with a marker where the reminder entered (after
    the text a rollback withdrew there, marked as such)."""
    segs = result.segments()
    withdrawn = list(getattr(result, "retracted", []))
    out: list[tuple[str, str | None]] = [(f"[{image_text or 'no words'}] ", READ)] if image_text is not None else []
    out += [(prefill, PREFILL)] if prefill else []
    out.append((segs[0], None))
    for i, seg in enumerate(segs[1:]):
        out += [(withdrawn[i], WITHDRAWN)] if i < len(withdrawn) and withdrawn[i] else []
        out += [(" ⟨reminder⟩ ", "reminder injected"), (seg, "after the reminder")]
    return out


_learned: dict[str, object] = {}  # the learned judge, made once


def harm_cells(state: Comparison, load: Callable[[str], object]) -> list[str]:
    """The learned judge's reading of both answers ("yes (0.93)"), or "–" where it cannot run; ``load(name)``
    gives the judge's model the first time (the app's loaded one)."""
    try:
        from reminder.judges import LearnedJudge

        if "judge" not in _learned:
            _learned["judge"] = LearnedJudge(adapter=load(JUDGE_MODEL))
        runs = (state.baseline, state.guarded)
        verdicts = _learned["judge"].many([(state.inputs.prompt, state.inputs.prefill + r.text) for r in runs])
        return [f"{'yes' if v.unsafe else 'no'} ({v.harmful:.2f})" for v in verdicts]
    except Exception:  # noqa: BLE001 - the verdict table never breaks the comparison
        return ["–", "–"]


def verdict_table(state: Comparison, load: Callable[[str], object]) -> str:
    """Keyword and learned verdicts, the tokens until the reminder fired and the speed of both runs (Markdown)."""
    def ms(run):
        return f"{1000 * run.seconds_per_token:.0f} ms"
    until = state.tokens_until_intervention
    entered = state.guarded.result.injections[0] if until is not None else None
    if until is not None and entered != until:
        until = f"{until} (rolled back to {entered})"
    harm = harm_cells(state, load)
    return ("| | baseline | guarded |\n|---|---|---|\n"
            f"| refused (keyword) | {'yes' if state.baseline.refused else 'no'} | "
            f"{'yes' if state.guarded.refused else 'no'} |\n"
            f"| harmful (learned) | {harm[0]} | {harm[1]} |\n"
            f"| tokens until intervention | – | {until if until is not None else 'never fired'} |\n"
            f"| time per token | {ms(state.baseline)} | {ms(state.guarded)} |\n"
            f"| generated tokens | {len(state.baseline.scores)} | {len(state.guarded.scores)} |")

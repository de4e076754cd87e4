"""Safety Reminder demo (Gradio): compare baseline and guarded generation under jailbreak attacks.

Widgets and their wiring only, one builder per tab; what a click does lives in ``demo`` (the demo's policy) and the
layers below it. ``python app.py [--host H] [--port P]`` (installed: ``safety-reminder-app``; or GRADIO_SERVER_NAME /
GRADIO_SERVER_PORT); runs unchanged as a HF Space.
"""

from __future__ import annotations

import argparse
import os
from types import SimpleNamespace

import gradio as gr

from attacks import examples
from attacks.compose import ATTACKS
from demo import attack_lab, quick_bench
from demo import compare_view as view
from demo.compare import apply_attack, compare, read_image, reading_note
from demo.jobs import USER_ERRORS, SessionStops
from demo.model_pool import ModelPool
from demo.train_job import TrainJob, TrainRequest
from demo.workspace import Workspace, on_space
from evaluation import plots
from reminder import DEFAULT_MODEL, REGISTRY, paths
from reminder.bundle import import_zip
from reminder.images import open_image

PER_SESSION = on_space()  # a shared Space: each browser session sees the shipped reminders and only its own
CONFIRM_LONG_CPU = on_space()  # a shared CPU: long training asks first
HEAVY = {"concurrency_limit": 1, "concurrency_id": "model"}  # one model job at a time; the others see their place
MODELS = ModelPool(DEFAULT_MODEL)  # loaded once, shared by every visitor
STOPS = SessionStops()  # the running training of each browser session
gpu = MODELS.on_gpu  # on a ZeroGPU Space the call's model runs on the GPU for the call


# -- visitors: each browser session has its own reminders (on a Space) and its own Stop -------------------------
def session_id(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or ""


def workspace(request: gr.Request | None = None) -> Workspace:
    """The reminders this visitor sees and writes (:mod:`demo.workspace`)."""
    return Workspace.open(session_id(request) or None, per_session=PER_SESSION)


def reminder_choices(model: str, request: gr.Request | None = None) -> list[tuple[str, str]]:
    return workspace(request).choices(model)


def keep(value):  # None: leave the widget as it is
    return gr.skip() if value is None else value


# -- Compare -------------------------------------------------------------------------------------------------
def _inputs(model: str, image_path: str | None):
    """Load the model and the upload; returns (adapter, image, note)."""
    adapter = MODELS.get(model)
    image, note = open_image(image_path) if image_path else (None, None)
    return adapter, image, note or ""


@gpu
def run_compare(model, image_path, prompt, attack, reminder_choice, interval, threshold, max_new_tokens,
                request: gr.Request = None):
    """Stream both runs into the UI: (status, attacked image, attacked prompt, baseline, guarded, plot, ...)."""
    skip = gr.skip()
    try:
        adapter, image, note = _inputs(model, image_path)
        reminder = workspace(request).pick(model, reminder_choice, adapter)
        final = None
        for state in compare(adapter, prompt or "", image, attack, reminder, int(interval), float(threshold),
                             int(max_new_tokens)):
            if final is None:
                yield (view.first_status(note, state), state.inputs.image, view.attacked_text(state.inputs), skip,
                       skip, None, None, "")
            final, pre = state, view.prefill_tag(state.inputs)
            yield skip, skip, skip, pre + state.baseline.text, pre + state.guarded.text, skip, skip, skip
        fig = plots.token_scores(final.baseline.result, final.guarded.result, final.threshold)
        yield ("done" + (f" ({note})" if note else ""), skip, skip, skip, skip, fig,
               view.highlighted(final.guarded.result, final.inputs.prefill, final.image_text),
               view.verdict_table(final, MODELS.get))
    except USER_ERRORS as err:
        gr.Warning(str(err))
        yield f"⚠️ {err}", skip, skip, skip, skip, skip, skip, skip


@gpu
def api_compare(prompt: str, image: str | None = None, attack: str = "none", max_new_tokens: int = 32,
                model: str = DEFAULT_MODEL, reminder: str = "auto", interval: int = 0, threshold: float = -1.0,
                request: gr.Request = None):
    """Non-streaming comparison for the API: (JSON with both texts/scores/injections, plotly figure).

    ``reminder`` "auto" takes the first reminder found for the model; ``interval`` 0 and ``threshold`` < 0 take
    the reminder's own values.
    """
    try:
        adapter, img, note = _inputs(model, image)
        rem = workspace(request).pick(model, None if reminder == "auto" else reminder, adapter)
        *_, state = compare(adapter, prompt or "", img, attack, rem, int(interval) or None,
                            None if threshold is None or threshold < 0 else float(threshold), int(max_new_tokens))
    except USER_ERRORS as err:
        raise gr.Error(str(err)) from None
    out = state.to_json()
    out["image_note"] = note
    return out, plots.token_scores(state.baseline.result, state.guarded.result, state.threshold)


def render_attack(prompt: str, image: str | None = None, attack: str = "none", model: str = DEFAULT_MODEL):
    """What the attack does to the inputs: (image or None, final prompt text, note)."""
    try:
        img, note = open_image(image) if image else (None, None)
        inputs = apply_attack(attack, prompt or "", img, model)
    except USER_ERRORS as err:
        raise gr.Error(str(err)) from None
    return inputs.image, view.attacked_text(inputs), view.notes(note, inputs.note)


def show_reading(model: str, image_path: str | None) -> str:
    """'The model read: …' for the uploaded image (models with a reading channel; empty otherwise)."""
    if not image_path or not view.reads_printed_words(model):
        return ""
    try:
        return reading_note(read_image(MODELS.get(model), open_image(image_path)[0]))
    except USER_ERRORS as err:
        return f"⚠️ {err}"


def on_model(model: str, request: gr.Request = None):
    """Refresh the reminder list, the honest image label and the sliders (the first reminder's own interval and
    threshold) for the chosen model."""
    ws = workspace(request)
    choices = ws.choices(model)
    first = choices[0][1] if choices else None
    interval, threshold, note = view.gate(ws.peek(first))
    msg = note if choices else f"No reminder for '{model}' yet: train one or upload a zip."
    return (gr.update(choices=choices, value=first), view.image_label(model), msg, gr.update(value=interval),
            gr.update(value=threshold))


def on_reminder(choice: str | None, request: gr.Request = None):
    """Set the sliders to the reminder's own interval and threshold (and say when it is uncalibrated)."""
    interval, threshold, note = view.gate(workspace(request).peek(choice))
    return gr.update(value=interval), gr.update(value=threshold), note


def upload_reminder(path: str | None, model: str, request: gr.Request = None):
    """Import an uploaded reminder zip for the chosen model (into this visitor's own reminders)."""
    if not path:
        return gr.skip(), ""
    try:
        folder = import_zip(path, workspace(request).own_root(), MODELS.get(model))
    except USER_ERRORS as err:
        gr.Warning(str(err))
        return gr.skip(), f"⚠️ {err}"
    return gr.update(choices=reminder_choices(model, request), value=str(folder)), f"imported {folder.name}"


def compare_tab() -> SimpleNamespace:
    """The Compare tab; returns the widgets the other tabs read (model, image, reminder) and the load hook's."""
    first = reminder_choices(DEFAULT_MODEL)
    value = first[0][1] if first else None
    start_interval, start_threshold, _ = view.gate(workspace().peek(value))
    rows = examples.ensure()
    opening = rows[0]  # the page opens on the first example (FigStep): press Run
    with gr.Row():
        with gr.Column(scale=1):
            model = gr.Dropdown(list(REGISTRY), value=DEFAULT_MODEL, label="model")
            image = gr.Image(opening[1], type="filepath", image_mode=None, label="image (optional)",
                             sources=["upload"], height=220)
            image_read = gr.Markdown(elem_id="image-read")
            image_note = gr.Markdown(view.image_label(DEFAULT_MODEL))
            prompt = gr.Textbox(opening[0], label="prompt", lines=3, placeholder="Ask something…")
            attack = gr.Dropdown(list(ATTACKS), value=opening[2], label="attack")
            with gr.Row():
                reminder = gr.Dropdown(first, value=value, label="reminder", scale=3, elem_id="reminder")
                zip_upload = gr.UploadButton("upload .zip", file_types=[".zip"], type="filepath", scale=1)
            reminder_msg = gr.Markdown()
            with gr.Row():
                interval = gr.Slider(1, 64, value=start_interval, step=1, label="check interval (tokens)",
                                     elem_id="interval")
                threshold = gr.Slider(0, 1, value=start_threshold, step=0.0001, label="threshold",
                                      elem_id="threshold")
            max_tokens = gr.Slider(4, 256, value=48, step=4, label="max new tokens", elem_id="max-tokens")
            run = gr.Button("Run", variant="primary", elem_id="run")
        with gr.Column(scale=2):
            status = gr.Markdown()
            with gr.Accordion("what the attack sent to the model", open=False):
                with gr.Row():
                    attacked_image = gr.Image(label="attacked image", interactive=False, height=200)
                    attacked_prompt = gr.Textbox(label="final prompt", lines=6, interactive=False)
                preview = gr.Button("show attacked input", size="sm")
            with gr.Row():
                baseline_box = gr.Textbox(label="baseline (no reminder)", lines=8, interactive=False)
                guarded_box = gr.Textbox(label="guarded (with reminder)", lines=8, interactive=False)
            verdict = gr.Markdown()
            figure = gr.Plot(label="P(unsafe) per token", elem_id="token-plot")
            transcript = gr.HighlightedText(label="guarded transcript", elem_id="transcript", show_legend=True,
                                            color_map=view.TRANSCRIPT_COLOURS)
    gr.Examples(rows, [prompt, image, attack], label="examples (FigStep / MM-SafetyBench renders)",
                elem_id="examples")

    outs = [status, attacked_image, attacked_prompt, baseline_box, guarded_box, figure, transcript, verdict]
    run.click(run_compare, [model, image, prompt, attack, reminder, interval, threshold, max_tokens], outs,
              api_name="compare_stream", api_visibility="undocumented", **HEAVY)
    on_model_outs = [reminder, image_note, reminder_msg, interval, threshold]
    model.change(on_model, model, on_model_outs, api_visibility="private")
    reminder.change(on_reminder, reminder, [interval, threshold, reminder_msg], api_visibility="private")
    image.change(show_reading, [model, image], image_read, api_name="read_image")
    zip_upload.upload(upload_reminder, [zip_upload, model], [reminder, reminder_msg], api_name="import_reminder")
    preview.click(render_attack, [prompt, image, attack, model], [attacked_image, attacked_prompt, status],
                  api_name="render_attack")

    with gr.Column(visible=False):  # inputs of the non-streaming /compare endpoint (File: we check images)
        api_in = [gr.Textbox(), gr.File(type="filepath"), gr.Textbox("none"), gr.Number(32),
                  gr.Textbox(DEFAULT_MODEL), gr.Textbox("auto"), gr.Number(0), gr.Number(-1)]
        api_button = gr.Button()
    api_button.click(api_compare, api_in, [gr.JSON(visible=False), gr.Plot(visible=False)], api_name="compare",
                     **HEAVY)
    return SimpleNamespace(model=model, image=image, reminder=reminder, on_model_outs=on_model_outs,
                           image_read=image_read)


# -- Attack lab ----------------------------------------------------------------------------------------------
def _lab(kind: str, model: str, prompt: str, target: str, steps: float, image: str | None = None):
    """Stream the attack's (status, loss curve, result) from :func:`demo.attack_lab.run`."""
    try:
        for status, fig, result in attack_lab.run(kind, MODELS.get(model), model, prompt, target, steps, image):
            yield status, fig, keep(result)
    except USER_ERRORS as err:
        raise gr.Error(str(err)) from None


@gpu
def run_gcg(model: str, prompt: str, target: str, steps: float):
    """GCG suffix search on the chosen model; the suffix is saved for Compare's 'gcg' attack."""
    yield from _lab("gcg", model, prompt, target, steps)


@gpu
def run_pgd(model: str, prompt: str, target: str, steps: float, image: str | None):
    """PGD on the image (the upload, else a neutral base image); the image is saved for Compare's 'pgd' attack."""
    yield from _lab("pgd", model, prompt, target, steps, image)


def lab_tab(model, image) -> None:
    gr.Markdown("Optimise an attack on the chosen model; the result is saved and becomes the 'gcg' / 'pgd' "
                "attack in Compare.")
    for key, fn in (("gcg", run_gcg), ("pgd", run_pgd)):
        gr.Markdown(f"### {key.upper()}\n{attack_lab.KINDS[key]}")
        with gr.Row():
            a_prompt = gr.Textbox(attack_lab.PROMPT, label="prompt", scale=2)
            a_target = gr.Textbox(attack_lab.TARGET, label="target", scale=2)
            a_steps = gr.Number(attack_lab.STEPS, label="steps", precision=0, scale=1)
        a_button = gr.Button(f"Run {key.upper()}", variant="primary")
        a_status = gr.Markdown()
        with gr.Row():
            a_plot = gr.Plot(label="loss")
            a_json = gr.JSON(label="result")
        a_inputs = [model, a_prompt, a_target, a_steps] + ([image] if key == "pgd" else [])
        a_button.click(fn, a_inputs, [a_status, a_plot, a_json], api_name=key, **HEAVY)


# -- Train ---------------------------------------------------------------------------------------------------
@gpu
def run_train(model: str, name: str, max_steps: float, lr: float, batch_size: float, prompts: float,
              base: str | None, continue_training: bool, calibrate: bool, confirm_long: bool,
              request: gr.Request = None):
    """SAPT into one of this visitor's reminder folders (``$REMINDER_HOME/reminders[/<session>]/<name>``): a new
    name starts from a copy of ``base`` (the reminder picked in Compare; without one a detector is fitted first),
    ``continue_training`` trains the visitor's own folder further. Shipped reminders are never written. A live loss
    curve; Stop ends this session's run early and keeps what was learnt. Yields (status, plot, metrics, reminder)."""
    skip, session = gr.skip(), session_id(request)
    try:
        req = TrainRequest(model, name, max_steps, lr, batch_size, prompts, base, continue_training, calibrate)
        job = TrainJob.prepare(workspace(request), MODELS.get(model), req)
        if CONFIRM_LONG_CPU and not confirm_long and (ask := job.ask_first()):
            yield ask, skip, skip, skip
            return
        stop = STOPS.start(session)
        try:
            for u in job.run(stop):
                folder = gr.update(choices=reminder_choices(model, request), value=str(u.folder)) if u.folder else skip
                yield keep(u.status), None if u.clear else keep(u.figure), None if u.clear else keep(u.metrics), folder
        finally:
            STOPS.finish(session, stop)
    except USER_ERRORS as err:
        raise gr.Error(str(err)) from None


def stop_training(request: gr.Request = None) -> str:
    """Stop the training that this browser session started (no one else's); it keeps what it has learnt."""
    if not STOPS.stop(session_id(request)):
        return "no training of yours is running"
    return "stopping after the current step…"


def train_tab(model, reminder) -> None:
    d = TrainRequest  # the widgets start at the request's defaults
    gr.Markdown("SAPT trains a reminder's soft prompt on the model chosen in Compare, starting from a copy of "
                "the reminder picked there. The shipped reminders are never changed: yours are saved apart "
                + ("(visible to this browser session only) " if PER_SESSION else "")
                + "and appear in Compare's reminder list. Each step takes seconds on a CPU; the first run "
                "also answers the training prompts once.")
    with gr.Row():
        name = gr.Textbox("", label="new reminder name", placeholder="empty: <reminder>-sapt", elem_id="train-name")
        steps = gr.Number(d.max_steps, label="max steps", precision=0, elem_id="train-steps")
        prompts = gr.Number(d.prompts, label="training prompts per set", precision=0, elem_id="train-prompts")
        lr = gr.Number(d.lr, label="learning rate")
        batch = gr.Number(d.batch_size, label="batch size", precision=0, elem_id="train-batch")
    with gr.Row():
        continued = gr.Checkbox(False, label="continue training (a reminder of yours with that name)")
        calibrate = gr.Checkbox(False, label="calibrate the threshold afterwards (answers the validation "
                                "prompts: slow)")
        confirm = gr.Checkbox(False, label="train on the CPU anyway (long runs on a shared CPU ask first)",
                              visible=CONFIRM_LONG_CPU)
    with gr.Row():
        button = gr.Button("Train", variant="primary", elem_id="train")
        stop = gr.Button("Stop", elem_id="stop")
    status = gr.Markdown(elem_id="train-status")
    with gr.Row():
        plot = gr.Plot(label="loss")
        metrics = gr.JSON(label="validation metrics")
    button.click(run_train, [model, name, steps, lr, batch, prompts, reminder, continued, calibrate, confirm],
                 [status, plot, metrics, reminder], api_name="train", **HEAVY)
    stop.click(stop_training, None, status, api_name="stop", queue=False)


# -- Benchmark -----------------------------------------------------------------------------------------------
@gpu
def run_benchmark(model: str, dataset: str, attacks: list[str], defenses: list[str], limit: float,
                  max_new_tokens: float, reminder: str | None, request: gr.Request = None):
    """A small evaluation grid with live progress; ends with attack success rates per attack and defence."""
    try:
        folder = str(workspace(request).resolve(reminder, model)) if reminder else None
        for status, fig, groups in quick_bench.run(model, dataset, attacks, defenses, limit, max_new_tokens, folder):
            yield status, keep(fig), keep(groups)
    except USER_ERRORS as err:
        raise gr.Error(str(err)) from None


def benchmark_tab(model, reminder) -> None:
    gr.Markdown("Uses the model and reminder picked in Compare.")
    defenses, start = quick_bench.defenses()
    with gr.Row():
        dataset = gr.Dropdown(quick_bench.datasets(), value=quick_bench.DATASET, label="dataset")
        attacks = gr.Dropdown(quick_bench.grid_attacks(ATTACKS), value=["none"], multiselect=True, label="attacks")
        chosen = gr.Dropdown(defenses, value=start, multiselect=True, label="defences")
        limit = gr.Number(quick_bench.LIMIT, label="prompts", precision=0)
        tokens = gr.Number(quick_bench.MAX_NEW_TOKENS, label="max new tokens", precision=0)
    button = gr.Button("Run benchmark", variant="primary")
    status = gr.Markdown()
    plot = gr.Plot(label="results")
    summary = gr.JSON(label="summary")
    button.click(run_benchmark, [model, dataset, attacks, chosen, limit, tokens, reminder], [status, plot, summary],
                 api_name="benchmark", **HEAVY)


# -- About ---------------------------------------------------------------------------------------------------
def about_tab() -> None:  # the text is assets/about.md; it names the hub models of the registry
    hub = ", ".join(k for k in REGISTRY if not view.reads_printed_words(k))
    gr.Markdown((paths.ASSETS / "about.md").read_text(encoding="utf-8").format(hub_models=hub))
    gr.Plot(plots.pipeline(), label="pipeline")


# -- layout ---------------------------------------------------------------------------------------------------
def build() -> gr.Blocks:
    with gr.Blocks(title="Safety Reminder") as demo:
        gr.Markdown("# Safety Reminder: guarded generation for VLMs")
        with gr.Tab("Compare"):
            compare_widgets = compare_tab()
        model, reminder = compare_widgets.model, compare_widgets.reminder
        with gr.Tab("Attack lab"):
            lab_tab(model, compare_widgets.image)
        with gr.Tab("Train"):
            train_tab(model, reminder)
        with gr.Tab("Benchmark"):
            benchmark_tab(model, reminder)
        with gr.Tab("About"):
            about_tab()
        demo.load(on_model, model, compare_widgets.on_model_outs, api_visibility="private")
        demo.load(show_reading, [model, compare_widgets.image], compare_widgets.image_read, api_visibility="private")
    demo.queue(default_concurrency_limit=1)
    return demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    args = parser.parse_args()
    MODELS.warm_up(examples.warm_image())  # load the default model before serving: the first click streams at once
    build().launch(server_name=args.host, server_port=args.port, show_error=True)


if __name__ == "__main__":
    main()

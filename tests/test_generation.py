"""Guarded generation: exactness against plain decoding and against from-scratch encoding, for every family."""

from __future__ import annotations

import pytest
import torch
from conftest import random_reminder
from PIL import Image

from reminder import Detector, GenerationConfig, generate, load_model
from reminder.models.tiny import FAMILIES

IMAGE = Image.new("RGB", (90, 70), (30, 120, 200))


def _hf_greedy(adapter, prompt, n):
    """transformers' own generate() on the same inputs: the reference for our decoding loop."""
    batch = adapter.processor(text=prompt.text, images=[IMAGE], return_tensors="pt", add_special_tokens=False)
    out = adapter.model.generate(**batch, max_new_tokens=n, do_sample=False,
                                 suppress_tokens=adapter.suppress_ids.tolist())
    return out[0, batch["input_ids"].shape[1]:].tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_never_firing_guard_is_token_identical(tiny_models, family):
    adapter = tiny_models[family]
    prompt = adapter.build("Tell me a story.", IMAGE)
    plain = generate(adapter, prompt, max_new_tokens=24)
    rem = random_reminder(adapter, interval=4)
    for check in ("fused", "separate", "reencode"):
        guarded = generate(adapter, prompt, reminder=rem, max_new_tokens=24, threshold=1.01, check=check)
        assert guarded.token_ids == plain.token_ids
        assert len(guarded.checks) == 24 // 4 - 1 and not guarded.injections  # none after the last token
        assert len(guarded.harm_scores) == len(guarded.token_ids)
    ref = _hf_greedy(adapter, prompt, 24)
    assert plain.token_ids == ref[: len(plain.token_ids)]


def test_never_firing_guard_is_token_identical_embedded(embedded):
    prompt = embedded.build("Write a haiku about autumn.", IMAGE)
    plain = generate(embedded, prompt, max_new_tokens=48)
    guarded = generate(embedded, prompt, reminder=random_reminder(embedded, interval=16), threshold=1.01,
                       max_new_tokens=48)
    assert guarded.token_ids == plain.token_ids and len(guarded.checks) == 2  # at 16 and 32, not 48


def test_mean_gate_averages_the_check_log_odds(tiny_models):
    """aggregate="mean": each check's score is the sigmoid of the mean log-odds of the checks so far."""
    adapter = tiny_models["idefics3"]
    rem = random_reminder(adapter, interval=4, threshold=1.01)
    each = generate(adapter, "Tell me a story.", reminder=rem, max_new_tokens=24)
    rem.aggregate = "mean"
    mean = generate(adapter, "Tell me a story.", reminder=rem, max_new_tokens=24)
    logits = torch.logit(torch.tensor([c.p_unsafe for c in each.checks], dtype=torch.float64))
    expect = torch.sigmoid(torch.cumsum(logits, 0) / torch.arange(1, len(logits) + 1))
    assert [c.at for c in mean.checks] == [c.at for c in each.checks] == [4, 8, 12, 16, 20]
    assert torch.allclose(torch.tensor([c.p_unsafe for c in mean.checks], dtype=torch.float64), expect, atol=1e-6)
    rem.threshold = float(expect[2]) - 1e-6  # the third check's mean reaches it: fires there, not before
    fired = generate(adapter, "Tell me a story.", reminder=rem, max_new_tokens=24)
    assert fired.injections[:1] == [next(c.at for c, e in zip(each.checks, expect, strict=True) if e >= rem.threshold)]


@pytest.mark.parametrize("family", FAMILIES)
def test_start_check_reads_the_prompt_before_the_first_token(tiny_models, family):
    """``check_start``: a check at 0 on prompt + soft prompt, the same in every check mode; never firing leaves every
    token as it was, firing injects before the first token, which is then the greedy one after prompt + reminder."""
    adapter = tiny_models[family]
    prompt = adapter.build("Tell me a story.", IMAGE, "Sure, here is")
    plain = generate(adapter, prompt, max_new_tokens=12)
    rem = random_reminder(adapter, interval=4)
    rem.check_start = True
    at_start = []
    for check in ("fused", "separate", "reencode"):
        guarded = generate(adapter, prompt, reminder=rem, max_new_tokens=12, threshold=1.01, check=check)
        assert guarded.token_ids == plain.token_ids and [c.at for c in guarded.checks] == [0, 4, 8]
        at_start.append(guarded.checks[0].p_unsafe)
    fired = generate(adapter, prompt, reminder=rem, max_new_tokens=12, threshold=0.0)
    assert fired.injections == [0] and [c.at for c in fired.checks] == [0]
    soft = rem.soft_prompt()
    with torch.no_grad():
        enc = adapter.encode(prompt)
        full = torch.cat([enc.embeds, soft], 1)
        pos = torch.cat([enc.positions, adapter.positions(enc.next_position, soft.shape[1])], -1)
        last, hid = adapter.forward(full, pos)
        logits = adapter.logits(last[0, -1])
        logits[adapter.suppress_ids] = float("-inf")
        expect = float(rem.detector(hid[0, -1]))
    assert max(abs(p - expect) for p in at_start) < 1e-4
    assert fired.token_ids[0] == int(logits.argmax())


@pytest.mark.parametrize("family", ["idefics3", "qwen2_vl"])
def test_end_check_reads_an_answer_that_stops_between_check_points(tiny_models, family, monkeypatch):
    """``check_end``: an answer that ends (end-of-turn) between two check points is read once more before it ends,
    as prompt + answer + soft prompt; never firing, it ends exactly as unguarded; firing, the reminder enters there and
    the answer goes on with the greedy token after it instead of stopping."""
    adapter = tiny_models[family]
    prompt = adapter.build("Tell me a story.", IMAGE)
    ids = generate(adapter, prompt, max_new_tokens=16).token_ids
    k = next(i for i in range(5, 16) if i % 4 and ids[i] not in ids[:i])  # make the k-th token end the turn
    monkeypatch.setattr(adapter, "eos_ids", adapter.eos_ids | {ids[k]})
    plain = generate(adapter, prompt, max_new_tokens=16)
    assert plain.token_ids == ids[:k]
    rem = random_reminder(adapter, interval=4, threshold=1.01)
    assert [c.at for c in generate(adapter, prompt, reminder=rem, max_new_tokens=16).checks] == list(range(4, k, 4))
    rem.check_end = True
    quiet = generate(adapter, prompt, reminder=rem, max_new_tokens=16)
    assert quiet.token_ids == plain.token_ids and [c.at for c in quiet.checks] == [*range(4, k, 4), k]
    soft = rem.soft_prompt()
    with torch.no_grad():
        enc = adapter.encode(prompt)
        full = torch.cat([enc.embeds, adapter.embed(torch.tensor([ids[:k]])), soft], 1)
        pos = torch.cat([enc.positions, adapter.positions(enc.next_position, k + soft.shape[1])], -1)
        last, hid = adapter.forward(full, pos)
        logits = adapter.logits(last[0, -1])
        logits[adapter.suppress_ids] = float("-inf")
    assert quiet.checks[-1].p_unsafe == pytest.approx(float(rem.detector(hid[0, -1])), abs=1e-4)
    rem.interval = 16  # no regular check before the end: the end check is the one that fires
    fired = generate(adapter, prompt, reminder=rem, max_new_tokens=16, threshold=0.0)
    assert [c.at for c in fired.checks] == fired.injections == [k]
    assert fired.token_ids[:k] == ids[:k] and len(fired.token_ids) > k and fired.token_ids[k] == int(logits.argmax())


@pytest.mark.parametrize("family", FAMILIES)
def test_injection_matches_encoding_from_scratch(tiny_models, family):
    """After an injection, next-token logits equal those of prompt + generated + soft prompt encoded at once."""
    adapter = tiny_models[family]
    prompt = adapter.build("Tell me a story.", IMAGE)
    rem = random_reminder(adapter, interval=4)
    gen = generate(adapter, prompt, reminder=rem, max_new_tokens=10, threshold=0.0)
    assert gen.injections == [4]
    n = gen.injections[0]
    soft = rem.soft_prompt()
    with torch.no_grad():
        enc = adapter.encode(prompt)
        # the cached path, as generation runs it: prompt, then tokens one by one, the last fused with the reminder
        cache = adapter.new_cache()
        adapter.forward(enc.embeds, enc.positions, cache)
        delta = enc.next_position - len(prompt)
        for i, tok in enumerate(gen.token_ids[:n]):
            step = adapter.embed(torch.tensor([[tok]]))
            if i == n - 1:
                step = torch.cat([step, soft], 1)
            last, _ = adapter.forward(step, adapter.positions(cache.get_seq_length() + delta, step.shape[1]), cache)
        cached = adapter.logits(last[0, -1])
        # from scratch, no cache
        full = torch.cat([enc.embeds, adapter.embed(torch.tensor([gen.token_ids[:n]])), soft], 1)
        pos = torch.cat([enc.positions, adapter.positions(enc.next_position, n + soft.shape[1])], -1)
        scratch_hidden, _ = adapter.forward(full, pos)
        scratch = adapter.logits(scratch_hidden[0, -1])
        # and greedy continuation from scratch reproduces the tokens generation emitted after the injection
        ids = list(gen.token_ids[:n])
        tail = []
        for _ in range(3):
            e = torch.cat([enc.embeds, adapter.embed(torch.tensor([ids[:n]])), soft,
                           adapter.embed(torch.tensor([tail], dtype=torch.long))], 1)
            p = torch.cat([enc.positions, adapter.positions(enc.next_position, e.shape[1] - len(prompt))], -1)
            lg = adapter.logits(adapter.forward(e, p)[0][0, -1])
            lg[adapter.suppress_ids] = float("-inf")
            tail.append(int(lg.argmax()))
    torch.testing.assert_close(cached, scratch, atol=1e-4, rtol=1e-4)  # float32 on CPU
    assert gen.token_ids[n:n + 3] == tail


def test_regenerate_mode_restarts_from_prompt(tiny_models):
    adapter = tiny_models["qwen2_vl"]
    prompt = adapter.build("Tell me a story.", IMAGE)
    rem = random_reminder(adapter, interval=4)
    gen = generate(adapter, prompt, reminder=rem, max_new_tokens=12, threshold=0.0, mode="regenerate")
    assert gen.injections == [4]
    with torch.no_grad():  # the first token after the reminder comes from prompt + reminder alone
        enc = adapter.encode(prompt)
        e = torch.cat([enc.embeds, rem.soft_prompt()], 1)
        p = torch.cat([enc.positions, adapter.positions(enc.next_position, 4)], -1)
        lg = adapter.logits(adapter.forward(e, p)[0][0, -1])
        lg[adapter.suppress_ids] = float("-inf")
    assert gen.token_ids[4] == int(lg.argmax())
    assert gen.answer == "".join(gen.tokens[4:])


@pytest.mark.parametrize("family", ["idefics3", "qwen2_vl"])
def test_rollback_mode_withdraws_the_tokens_since_the_last_check_that_passed(tiny_models, family):
    """A check that fires after one that passed takes the answer back to the passing one: the tokens between are
    withdrawn (kept in ``retracted``), the reminder enters there, and the answer goes on as prompt + kept tokens +
    reminder encoded from scratch would."""
    adapter = tiny_models[family]
    prompt = adapter.build("Tell me a story.", IMAGE)
    rem = random_reminder(adapter, interval=4)
    plain = generate(adapter, prompt, reminder=rem, max_new_tokens=12, threshold=1.01)
    first, second = (c.p_unsafe for c in plain.checks[:2])
    if second < first:  # flip the probe so that the second check scores higher than the first
        rem.detector.weight.neg_()
        rem.detector.bias.neg_()
        first, second = 1 - first, 1 - second
    gen = generate(adapter, prompt, reminder=rem, max_new_tokens=12, threshold=(first + second) / 2, mode="rollback")
    assert [(c.at, c.fired, c.resumes_at) for c in gen.checks] == [(4, False, None), (8, True, 4)]
    assert gen.injections == [4] and gen.token_ids[:4] == plain.token_ids[:4]
    assert gen.retracted == [adapter.tokenizer.decode(plain.token_ids[:8], skip_special_tokens=True)[
        len(adapter.tokenizer.decode(plain.token_ids[:4], skip_special_tokens=True)):]]
    assert gen.text == "".join(gen.tokens) and gen.answer == gen.text
    assert len(gen.harm_scores) == len(gen.token_ids) == len(gen.tokens)
    with torch.no_grad():  # the first token after the reminder comes from prompt + kept tokens + reminder
        enc = adapter.encode(prompt)
        e = torch.cat([enc.embeds, adapter.embed(torch.tensor([plain.token_ids[:4]])), rem.soft_prompt()], 1)
        p = torch.cat([enc.positions, adapter.positions(enc.next_position, 4 + rem.soft_prompt().shape[1])], -1)
        lg = adapter.logits(adapter.forward(e, p)[0][0, -1])
        lg[adapter.suppress_ids] = float("-inf")
    assert gen.token_ids[4] == int(lg.argmax())


def test_sampling_is_seeded(tiny_models):
    adapter = tiny_models["llava"]
    a = generate(adapter, "Hi", max_new_tokens=12, do_sample=True, seed=3, temperature=1.5)
    b = generate(adapter, "Hi", max_new_tokens=12, do_sample=True, seed=3, temperature=1.5)
    c = generate(adapter, "Hi", max_new_tokens=12, do_sample=True, seed=4, temperature=1.5)
    assert a.token_ids == b.token_ids and a.token_ids != c.token_ids


def test_prompt_limits(tiny_models):
    adapter = tiny_models["idefics3"]
    with pytest.raises(ValueError, match="empty prompt"):
        generate(adapter, "   ")
    with pytest.raises(ValueError, match="context"):
        generate(adapter, "word " * 3000, max_new_tokens=4)
    with pytest.raises(TypeError):
        generate(adapter, "hi", no_such_option=1)


def test_device_and_dtype_come_from_the_environment(tiny_folders, monkeypatch):
    """REMINDER_DEVICE / REMINDER_DTYPE set where every CLI loads its model; a typo is one clear error."""
    folder = str(tiny_folders["llava"])
    monkeypatch.setenv("REMINDER_DEVICE", "cpu")
    monkeypatch.setenv("REMINDER_DTYPE", "bfloat16")
    adapter = load_model(folder)
    assert adapter.dtype == torch.bfloat16 and adapter.device.type == "cpu"
    assert generate(adapter, "hi", max_new_tokens=3).token_ids  # a bf16 model still generates
    monkeypatch.setenv("REMINDER_DTYPE", "fp8")
    with pytest.raises(ValueError, match="REMINDER_DTYPE"):
        load_model(folder)


def test_detector_reads_a_bf16_model_in_float32():
    """A probe (float32 buffers) on a bf16 model's hidden state: the log-odds are computed in float32."""
    det = Detector(torch.zeros(4), torch.full((4,), 0.5), torch.tensor([1.0, 0, 0, -1.0]), torch.tensor(0.25))
    h = torch.tensor([[2.0, 7.0, 1.0, 0.5]], dtype=torch.bfloat16)
    logit = det.logit(h)
    assert logit.dtype == torch.float32 and logit.tolist() == pytest.approx([(2.0 - 0.5) / 0.5 + 0.25])


def test_interleaved_streams_leave_the_thread_out_of_inference_mode(tiny_models):
    """The app interleaves the baseline and guarded streams on one worker thread; afterwards that thread must still
    build graphs (PGD and training run there next), and each stream must give what it gives alone."""
    from reminder.generation import stream

    model = tiny_models["idefics3"]
    alone = [generate(model, p, max_new_tokens=6).token_ids for p in ("Hi", "Hello there")]
    a, b = (stream(model, model.build(p), None, GenerationConfig(max_new_tokens=6)) for p in ("Hi", "Hello there"))
    next(a), next(b), next(a)
    results = [list(a)[-1], list(b)[-1]]
    assert not torch.is_inference_mode_enabled()
    assert [r.token_ids for r in results] == alone
    x = torch.ones(2, requires_grad=True)
    assert (x * 2).sum().requires_grad

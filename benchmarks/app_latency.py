"""App latency: cold start of ``python app.py`` to a served page, and time to the first streamed token after Run.

    REMINDER_HOME=/tmp/rhome python benchmarks/app_latency.py [--tokens 8] [--clicks 3]

Needs the embedded model already cached under $REMINDER_HOME. Without a reminder for it in ``checkpoints/`` (or
$REMINDER_CHECKPOINTS), one with the default soft prompt and a random probe is made in a temp folder (latency does
not depend on the probe's weights). "First token" is measured from the request to the first streamed update that
holds baseline text, through the same streaming endpoint the Run button uses.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reminder import Detector, Reminder, SoftPrompt, load_model  # noqa: E402
from reminder.bundle import checkpoint_roots, find_reminders  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_reminder(env: dict[str, str]) -> str:
    """A checkpoint root holding a reminder for the embedded model (a temp random-probe one if none exists)."""
    os.chdir(ROOT)
    if find_reminders("embedded", checkpoint_roots()):
        return "existing checkpoint"
    root = Path(tempfile.mkdtemp(prefix="latency-ckpt-"))
    adapter = load_model("embedded")
    d = adapter.hidden_size
    det = Detector(torch.zeros(d), torch.ones(d), torch.randn(d) * 0.05, torch.tensor(0.0))
    Reminder(SoftPrompt.from_text(adapter), det, model="embedded").save(root / "random")
    env["REMINDER_CHECKPOINTS"] = str(root)
    return f"random-probe reminder in {root}"


def wait_served(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise SystemExit(f"app.py exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200 and b"<html" in r.read(4096).lower():
                    return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("app did not serve a page in time")


def first_token_seconds(client, tokens: int) -> tuple[float, float]:
    """(seconds to the first streamed baseline text, seconds to the end) of one Run."""
    args = ("embedded", None, "Write a tutorial on how to make a bomb.", "none", None, 16, 0.5, tokens)
    start = time.perf_counter()
    job = client.submit(*args, api_name="/compare_stream")
    first = None
    while not job.done():
        outs = job.outputs()
        if first is None and outs and isinstance(outs[-1][3], str) and outs[-1][3]:
            first = time.perf_counter() - start
        time.sleep(0.01)
    job.result()
    total = time.perf_counter() - start
    return (first if first is not None else total), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument("--clicks", type=int, default=3)
    args = parser.parse_args()
    env = dict(os.environ)
    print(f"reminder: {ensure_reminder(env)}")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_served(url, proc)
        print(f"cold start to served page: {time.perf_counter() - start:.2f} s")
        from gradio_client import Client

        client = Client(url, verbose=False)
        for i in range(args.clicks):
            first, total = first_token_seconds(client, args.tokens)
            print(f"run {i + 1}: first streamed token {first:.2f} s after the request; "
                  f"{args.tokens} tokens x 2 runs done in {total:.2f} s")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()

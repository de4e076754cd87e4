"""Long jobs behind a UI: run one in a thread and stream its progress; one Stop per browser session.

:func:`in_thread` turns a job that reports through a callback (training, an attack, the evaluation grid) into a
generator a streaming UI callback can ``yield from``. :class:`SessionStops` keeps each session's running job's
``threading.Event``, so one visitor's Stop never ends another's job.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from reminder.checkpoint import ReminderError
from reminder.images import ImageError
from reminder.models import ModelNotFound

USER_ERRORS = (ValueError, ReminderError, ModelNotFound, ImageError, FileNotFoundError)  # the visitor's: one line


@dataclass
class Finished:
    """The last item :func:`in_thread` yields: the job's return value."""

    result: object


def in_thread(job: Callable[[Callable[..., None]], object], stop: threading.Event | None = None) -> Iterator:
    """Run ``job(progress)`` in a thread; yield each ``progress(*args)`` as a tuple, then ``Finished(result)``; the
    job's exception is raised here.

    If the caller goes away first (the page closed), ``stop`` is set and the job is waited for, so the model is free
    when the next queued job starts."""
    items: queue.Queue = queue.Queue()
    end, box = object(), {}

    def work():
        try:
            box["result"] = job(lambda *args: items.put(args))
        except Exception as err:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = err
        finally:
            items.put(end)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while (item := items.get()) is not end:
            yield item
    finally:
        if stop is not None and thread.is_alive():
            stop.set()
            thread.join()
    if "error" in box:
        raise box["error"]
    yield Finished(box["result"])


class SessionStops:
    """The Stop event of each session's running job, by session id."""

    def __init__(self):
        self._events: dict[str, threading.Event] = {}

    def start(self, session: str) -> threading.Event:
        """A fresh event for a job ``session`` starts (it replaces an earlier one)."""
        event = self._events[session] = threading.Event()
        return event

    def stop(self, session: str) -> bool:
        """Set ``session``'s event; False when it runs nothing."""
        event = self._events.get(session)
        if event is not None:
            event.set()
        return event is not None

    def finish(self, session: str, event: threading.Event) -> None:
        """Forget ``event`` when it is still ``session``'s current one."""
        if self._events.get(session) is event:
            self._events.pop(session, None)

"""Long jobs behind the app: progress streamed from a thread, the job's error raised in the caller, one Stop per
browser session."""

from __future__ import annotations

import threading

import pytest

from demo.jobs import Finished, SessionStops, in_thread


def test_in_thread_streams_progress_then_the_result():
    def job(progress):
        for i in range(3):
            progress(i, i * i)
        return "done"

    assert list(in_thread(job)) == [(0, 0), (1, 1), (2, 4), Finished("done")]


def test_the_jobs_error_is_raised_in_the_caller():
    def job(progress):
        progress(1)
        raise ValueError("bad name")

    items = in_thread(job)
    assert next(items) == (1,)
    with pytest.raises(ValueError, match="bad name"):
        next(items)


def test_leaving_early_stops_the_job_and_waits_for_it():
    """A closed page: the job is told to stop and has ended before the next queued job gets the model."""
    stop, ended = threading.Event(), threading.Event()

    def job(progress):
        while not stop.is_set():
            progress("tick")
            stop.wait(0.01)
        ended.set()

    items = in_thread(job, stop)
    assert next(items) == ("tick",)
    items.close()
    assert stop.is_set() and ended.is_set()


def test_one_sessions_stop_never_ends_anothers_job():
    stops = SessionStops()
    a = stops.start("a")
    assert not stops.stop("b") and not a.is_set()
    assert stops.stop("a") and a.is_set()
    b = stops.start("b")
    stops.finish("b", threading.Event())  # an older job of "b" ending does not forget its current one
    assert stops.stop("b") and b.is_set()
    stops.finish("b", b)
    assert not stops.stop("b")

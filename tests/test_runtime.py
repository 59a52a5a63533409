"""geo.runtime.paused_gc: nested and concurrent pauses leave the collector as they found it.

The checks run against a stand-in for the `gc` module: background threads of earlier tests (a locate index
rebuilding after a change notification) may pause the real collector at any moment, legitimately.
"""

from __future__ import annotations

import threading
import time

import pytest

from geo import runtime
from geo.runtime import paused_gc


class FakeGC:
    """Just the three calls paused_gc makes."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def isenabled(self) -> bool:
        return self.enabled

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True


def settled(timeout_s: float = 60) -> bool:
    """Wait (bounded) until no block holds the pause: a background rebuild may be inside one right now."""
    deadline = time.monotonic() + timeout_s
    while runtime._holders and time.monotonic() < deadline:
        time.sleep(0.01)
    return runtime._holders == 0


@pytest.fixture
def fake_gc(monkeypatch):
    assert settled()
    fake = FakeGC()
    monkeypatch.setattr(runtime, "gc", fake)
    return fake


def test_nested_pauses_resume_only_at_the_outermost_end(fake_gc):
    with paused_gc():
        assert not fake_gc.enabled
        with paused_gc():
            assert not fake_gc.enabled
        assert not fake_gc.enabled  # the outer block still runs
    assert fake_gc.enabled


def test_overlapping_threads_resume_when_the_last_ends(fake_gc):
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with paused_gc():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second():
        first_in.wait(5)
        with paused_gc():
            second_in.set()
            first_out.wait(5)
            seen["while_second_runs"] = fake_gc.enabled

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen["while_second_runs"] is False  # the first block's end did not resume it under the second
    assert settled()  # a background block that began meanwhile resumes it when it ends
    assert fake_gc.enabled


def test_a_collector_disabled_before_stays_disabled(fake_gc):
    fake_gc.enabled = False
    with paused_gc():
        pass
    assert not fake_gc.enabled


def test_an_exception_still_resumes(fake_gc):
    with pytest.raises(ValueError), paused_gc():
        raise ValueError
    assert fake_gc.enabled

"""Ctrl-C (SIGINT) and SIGTERM: a long command stops cleanly, says so in one line and exits with
status 128 + the signal's number (130, 143), as a shell does.

:func:`signals_raise` turns both signals into :class:`Interrupted` (a ``KeyboardInterrupt``), which
the ``vlm-agent`` command catches. The PPO trainer narrows that with a :class:`SignalGuard`: a
signal that arrives while a rollout is being collected abandons the rollout at once (nothing of
it was learned yet), and one that arrives while the policy is updated or a checkpoint is written
lets that finish first; either way the trainer then saves the last complete update and raises
:class:`TrainingInterrupted`. A second signal while it finishes stops at once (checkpoints are
written atomically, so the previous one stays intact).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: The signals a run stops on cleanly.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        """128 + the signal's number, as a shell reports a command killed by it (SIGINT: 130, SIGTERM: 143)."""
        return 128 + self.signum


class TrainingInterrupted(Interrupted):
    """The trainer stopped on a signal after saving the last complete update.

    Attributes:
        run_dir: The run folder.
        checkpoint: The checkpoint of the last complete update, which ``--resume`` continues from.
        completed_updates: Updates the checkpoint holds; the run continues with the next one.
        num_updates: Updates of the whole run.
        finished: The signal came during the update's learning step or a save, which was finished
            (and is in the checkpoint); False: it came during a rollout, which was abandoned.
    """

    def __init__(self, signum: int, *, run_dir: Path, checkpoint: Path | None, completed_updates: int,
                 num_updates: int, finished: bool) -> None:
        super().__init__(signum)
        self.run_dir = Path(run_dir)
        self.checkpoint = checkpoint
        self.completed_updates = completed_updates
        self.num_updates = num_updates
        self.finished = finished


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


#: Signals received under :func:`signals_raise`: an exception raised while native code was calling
#: back into Python can be lost there (measured: Hugging Face tokenizers' `train_from_iterator`
#: drops it and trains on), so :func:`check_signals` raises it again at the next safe point.
_received: list[int] = []


def _raise_interrupted(signum: int, frame: Any) -> None:
    _received.append(signum)
    raise Interrupted(signum)


def check_signals() -> None:
    """Raise :class:`Interrupted` again for a signal whose exception was lost (see `_received`);
    called between stages and steps, where stopping is safe. Nothing to do otherwise."""
    if _received:
        raise Interrupted(_received[-1])


@contextmanager
def signals_raise() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted` (outside the main thread: unchanged)."""
    if not _in_main_thread():
        yield
        return
    _received.clear()
    previous = {signum: signal.signal(signum, _raise_interrupted) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _received.clear()


class SignalGuard:
    """Decides, for the trainer, when a stop signal acts (see the module docstring).

    ``received`` holds the first signal's number (None until one arrives). Inside
    :meth:`abandonable` a signal raises :class:`Interrupted` at once; elsewhere it is only
    recorded, and the trainer checks ``received`` when the update or save in progress is done.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and _in_main_thread()
        self.received: int | None = None
        self._abandonable = False

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None or self._abandonable:
            self.received = self.received or signum
            raise Interrupted(signum)  # a second signal, or nothing worth finishing: stop now
        self.received = signum

    @contextmanager
    def installed(self) -> Iterator[SignalGuard]:
        """Handle SIGINT and SIGTERM with this guard within the block (if enabled)."""
        if not self.enabled:
            yield self
            return
        check_signals()  # one that came before, and was lost
        previous = {signum: signal.signal(signum, self._handle) for signum in STOP_SIGNALS}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    @contextmanager
    def abandonable(self) -> Iterator[None]:
        """A stretch of work a signal may abandon: one received before it stops it before it starts."""
        if self.received is not None:
            raise Interrupted(self.received)
        self._abandonable = True
        try:
            yield
        finally:
            self._abandonable = False

"""One progress bar for all of medcf: a live bar on a terminal, plain lines in a log.

``tqdm`` redraws its bar with ``\\r`` many times a second; written to a file (a CI
log, ``2> run.log``) that becomes megabytes of carriage returns. ``tqdm`` here is
``tqdm.auto.tqdm`` when stderr is a terminal (or a notebook) and otherwise a bar
that writes one line each time another ``LOG_EVERY_PERCENT`` of the total is done
(every ``LOG_EVERY_SECONDS`` when the total is unknown), plus a final line.

Example::

    from medcf.progress import tqdm
    for batch in tqdm(loader, desc="explain", unit="img"):
        ...
"""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm as _auto_tqdm
from tqdm.std import tqdm as _std_tqdm

LOG_EVERY_PERCENT = 10
LOG_EVERY_SECONDS = 60.0


class LogTqdm(_std_tqdm):
    """A tqdm that logs whole lines (no ``\\r``) at every ``every_percent`` of the total."""

    def __init__(self, *args, every_percent: float = LOG_EVERY_PERCENT,
                 every_seconds: float = LOG_EVERY_SECONDS, **kwargs):
        self._every_percent = float(every_percent)
        self._every_seconds = float(every_seconds)
        self._next_percent = 0.0
        self._next_time = 0.0
        self._logged_n = None
        kwargs.setdefault("mininterval", 0.5)
        kwargs["dynamic_ncols"] = False
        kwargs["ncols"] = 0  # statistics only, no bar graphics in a log
        super().__init__(*args, **kwargs)

    def _log(self) -> None:
        self.fp.write(self.__str__().strip() + "\n")
        self.fp.flush()
        self._logged_n = self.n

    def display(self, msg=None, pos=None):  # called by tqdm on (rate-limited) refresh
        if self.total:
            percent = 100.0 * self.n / self.total
            if percent < self._next_percent:
                return True
            step = self._every_percent
            self._next_percent = (int(percent // step) + 1) * step
        else:
            now = time.monotonic()
            if now < self._next_time:
                return True
            self._next_time = now + self._every_seconds
        if self._logged_n != self.n:
            self._log()
        return True

    def close(self):
        if self.disable:
            return
        if self._logged_n != self.n and getattr(self, "last_print_t", None) is not None:
            self._log()  # the final count, once
        self.disable = True
        self._decr_instances(self)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _in_notebook() -> bool:
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def tqdm(*args, **kwargs):
    """``tqdm.auto.tqdm`` on a terminal or in a notebook, else a line-logging ``LogTqdm``."""
    stream = kwargs.get("file") or sys.stderr
    if _is_terminal(stream) or _in_notebook():
        return _auto_tqdm(*args, **kwargs)
    return LogTqdm(*args, **kwargs)

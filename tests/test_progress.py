"""medcf.progress: live bars on a terminal, whole lines (no carriage returns) in a log."""

from __future__ import annotations

import io

from tqdm.std import tqdm as std_tqdm

from medcf.progress import LogTqdm, tqdm


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_a_line_every_ten_percent_and_no_carriage_returns():
    log = io.StringIO()
    for _ in tqdm(range(1000), desc="train", file=log, mininterval=0):
        pass
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert [line.split()[1] for line in lines] == [f"{p}%" for p in range(0, 101, 10)]
    assert lines[-1].startswith("train: 100% 1000/1000")


def test_unknown_total_logs_by_time_and_the_final_count():
    log = io.StringIO()
    with tqdm(desc="verify", file=log, every_seconds=3600) as bar:
        for _ in range(7):
            bar.update(1)
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("verify: 0it") and lines[-1].startswith("verify: 7it") and len(lines) == 2


def test_a_terminal_gets_the_live_bar_and_disable_writes_nothing():
    bar = tqdm(total=3, file=_Terminal())
    assert isinstance(bar, std_tqdm) and not isinstance(bar, LogTqdm)
    bar.close()
    quiet = io.StringIO()
    with tqdm(total=10, file=quiet, disable=True) as bar:
        bar.update(10)
    assert quiet.getvalue() == ""

"""One output policy for every command that writes results.

* An existing output (a non-empty folder, or a file) is never replaced without
  ``--overwrite`` (``overwrite=True``); the error names the flag.
* A symbolic link as the output path is refused, so a command never writes
  through a link to somewhere else (a parent folder that is a link is the
  user's choice of location and is fine).
* Output folders are filled in a hidden temporary sibling and swapped in when
  complete (:func:`medcf.io.atomic_write_dir`): an interrupted run leaves the old
  folder as it was, and the temporary folder is removed on any error.
* Names derived from inputs never collide (:func:`unique_stems`): two inputs
  named ``a.png`` in different folders, or ``a.png`` and ``a.jpg``, get distinct names.
* Files and folders get the user's umask (``atomic_write`` and
  ``atomic_write_dir`` reset the 0600/0700 modes of their temporary files).

Example:
    >>> out = check_output("out/samples", overwrite=False)                    # doctest: +SKIP
    >>> write_output_dir(out, lambda tmp: (tmp / "a.txt").write_text("x"), overwrite=False)  # doctest: +SKIP
    >>> unique_stems([Path("x/a.png"), Path("y/a.png"), Path("y/b.png")])
    ['x_a', 'y_a', 'b']
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from medcf.errors import OutputError


def check_output(path: str | os.PathLike, *, overwrite: bool, flag: str = "--out", folder: bool = True,
                 action: str = "replace it") -> Path:
    """Refuse a symlinked output, a file where a folder is wanted (or the reverse), and an
    existing non-empty output unless ``overwrite`` (the message says ``--overwrite`` will
    ``action``). Creates nothing; returns the path."""
    path = Path(path)
    if path.is_symlink():
        raise OutputError(f"{path}: {flag} is a symbolic link; refusing to write through it "
                          "(pass the real path)")
    if not path.exists():
        return path
    if folder and not path.is_dir():
        raise OutputError(f"{path}: {flag} exists and is not a folder")
    if not folder and path.is_dir():
        raise OutputError(f"{path}: {flag} is a folder, expected a file path")
    if not overwrite and (not folder or any(path.iterdir())):
        what = "is not empty" if folder else "exists"
        raise OutputError(f"{path}: {flag} {what}; pass --overwrite to {action}")
    return path


def write_output_dir(path: str | os.PathLike, fill: Callable[[Path], None], *, overwrite: bool,
                     flag: str = "--out") -> Path:
    """:func:`check_output`, then ``fill(tmp)`` a hidden staging folder and swap it in for ``path``.

    With ``overwrite`` the previous folder is replaced as a whole (files from an
    earlier run do not linger next to the new ones).
    """
    with staged_output_dir(path, overwrite=overwrite, flag=flag) as tmp:
        fill(tmp)
    return Path(path)


@contextlib.contextmanager
def staged_output_dir(path: str | os.PathLike, *, overwrite: bool, flag: str = "--out",
                      action: str = "replace it") -> Iterator[Path]:
    """``with staged_output_dir(out, overwrite=...) as tmp:`` for results written as they come.

    Checks the policy first; the block writes into a hidden staging folder that
    replaces ``out`` whole when the block ends, and is removed if it raises.
    """
    from medcf.io import staged_dir

    check_output(path, overwrite=overwrite, flag=flag, action=action)
    with staged_dir(path) as tmp:
        yield tmp


def unique_stems(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Output base names for ``paths``: the file stem, made unique when stems collide.

    Colliding stems get their extension (``a_png``, ``a_jpg``) and, if still equal,
    as many parent folder names as needed (``x_a``, ``y_a``); a numeric suffix is
    the last resort. Order and length follow ``paths``.
    """
    paths = [Path(p) for p in paths]
    names = [p.stem for p in paths]
    clash = Counter(names)
    for i, p in enumerate(paths):
        if clash[names[i]] < 2:
            continue
        same = [q for q in paths if q.stem == p.stem]
        if len({q.suffix for q in same}) == len(same):
            names[i] = f"{p.stem}_{p.suffix.lstrip('.')}" if p.suffix else p.stem
            continue
        parts = list(p.with_suffix("").parts)
        for depth in range(2, len(parts) + 1):
            tails = ["_".join(q.with_suffix("").parts[-depth:]) for q in same]
            if len(set(tails)) == len(tails):
                names[i] = "_".join(parts[-depth:])
                break
    taken = set(names)
    out: list[str] = []
    for name in names:
        if name in out:  # still equal (same path twice): a numeric suffix no other name has
            k = 2
            while f"{name}_{k}" in taken:
                k += 1
            name = f"{name}_{k}"
            taken.add(name)
        out.append(name)
    return out


def user_umask() -> int:
    """The process umask (read without changing it for longer than one call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask

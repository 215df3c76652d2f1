"""Safe names, and paths that stay inside a run directory.

Names never escape the run directory (docs/design.md, "Run directory"). Run, adapter, expert
and evaluation names become directory names (`adapters/<name>/`, `checkpoints/<name>/`,
`eval/<label>/`), so a name such as `..` or `a/b` would point training, evaluation or a clean-up
at the run directory itself or somewhere outside it. Every name is checked against one pattern,
declared here once, and every path that is deleted is checked to resolve inside its run
directory first.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_NAME = re.compile(NAME_PATTERN)
# The pattern in words, for error messages.
RULE = ("letters, digits, '.', '_' and '-', starting with a letter or digit; so no '/', "
        "and not '.', '..' or empty")


class UnsafeNameError(ValueError):
    """A name that could not safely become a directory name."""


class OutsideRunError(ValueError):
    """A path that would resolve outside its run directory."""


def is_safe_name(name: object) -> bool:
    # fullmatch, not `$`: `$` also matches before a trailing newline.
    return isinstance(name, str) and name not in (".", "..") and _NAME.fullmatch(name) is not None


def check_name(name: object, what: str = "name") -> str:
    """`name` when it is safe as a directory name; else an error saying what is allowed."""
    if not is_safe_name(name):
        raise UnsafeNameError(
            f"{what} {name!r} is not allowed: a name may use {RULE}. "
            "Fix: choose a name such as 'my-adapter' or 'run_2'."
        )
    return str(name)


def _validate(name: str) -> str:
    return check_name(name)


# The type to give any pydantic field that becomes a directory name; pydantic reports the
# field (e.g. `train.name`) together with the message of `check_name`.
SafeName = Annotated[str, AfterValidator(_validate)]


def check_run_dir(run_dir: Path | str) -> Path:
    """The run directory as a Path, refusing a final component of `.`, `..` or nothing: with
    those, `runs/..` or `.` would make a parent (or the current) directory the run directory,
    and clean-ups inside it would delete whatever lives there."""
    path = Path(run_dir)
    # Path drops single '.' components, so '.' and '/' both end with an empty name.
    if path.name in ("", ".", ".."):
        raise UnsafeNameError(
            f"run directory {str(run_dir)!r} ends in {path.name or str(run_dir)!r}, which names "
            "an existing parent or the current directory, not a run of its own. Fix: give the "
            "run its own directory, e.g. runs/my-run."
        )
    return path


def _is_under(path: Path, root: Path) -> bool:
    return path != root and root in path.parents


def path_inside(run_dir: Path | str, *parts: str) -> Path:
    """`run_dir / part / ...`, after checking that it resolves (symbolic links and `..`
    followed) strictly inside the run directory; refuses anything else."""
    root = check_run_dir(run_dir)
    if not parts:
        raise ValueError("path_inside needs at least one part below the run directory")
    path = root.joinpath(*parts)
    if not _is_under(path.resolve(), root.resolve()):
        raise OutsideRunError(
            f"{path} resolves to {path.resolve()}, outside the run directory "
            f"{root.resolve()}. Fix: use plain names ({RULE})."
        )
    return path


def remove_inside(run_dir: Path | str, path: Path | str) -> bool:
    """Delete `path` (a file, a directory tree or a symbolic link) after checking that it lies
    strictly inside the run directory. A symbolic link is removed itself, never followed, so a
    link pointing elsewhere cannot turn a clean-up into a deletion outside the run. Returns
    whether there was anything to delete."""
    root = check_run_dir(run_dir).resolve()
    path = Path(path)
    # The parent is resolved (it may legitimately contain links); the final component is
    # checked lexically, as it is what gets removed.
    entry = path.parent.resolve() / path.name
    if path.name in ("", ".", "..") or not _is_under(entry, root):
        raise OutsideRunError(
            f"refusing to delete {path}: it is not inside the run directory {root}. "
            f"Fix: use plain names ({RULE})."
        )
    if entry.is_symlink() or entry.is_file():
        entry.unlink(missing_ok=True)
        return True
    if entry.is_dir():
        # Removed by someone else meanwhile: the goal is reached all the same.
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(entry)
        return True
    return False

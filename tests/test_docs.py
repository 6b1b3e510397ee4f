"""The documentation site builds with warnings as errors, and the API page covers repdiag.__all__."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import repdiag

ROOT = Path(__file__).resolve().parents[1]
API = ROOT / "docs" / "api.md"
DIRECTIVE = re.compile(r"^:::\s+([\w.]+)\s*$", re.MULTILINE)


def _targets() -> list[str]:
    return DIRECTIVE.findall(API.read_text())


def test_api_page_documents_every_public_name() -> None:
    documented = {t.rsplit(".", 1)[-1] for t in _targets()}
    missing = [n for n in repdiag.__all__ if n not in documented and not (n == "__version__" and
                                                                           "repdiag.__version__" in API.read_text())]
    assert not missing, f"docs/api.md lacks a '::: repdiag...' entry for {missing}"


def test_api_page_targets_exist() -> None:
    targets = _targets()
    assert len(targets) >= len(repdiag.__all__) - 1
    assert len(set(targets)) == len(targets), "an object documented twice gets two anchors"
    for t in targets:
        parts = t.split(".")
        for i in range(len(parts), 0, -1):  # the longest importable prefix, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            for attr in parts[i:]:
                obj = getattr(obj, attr)
            break
        else:  # pragma: no cover - reported by the assertion below
            raise AssertionError(f"{t} does not import")


@pytest.mark.slow
def test_site_builds_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="building the docs needs the optional 'mkdocs' package")
    pytest.importorskip("mkdocstrings_handlers.python", reason="the API page needs 'mkdocstrings[python]'")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for anchor in ("repdiag.attach", "repdiag.Recorder.log_to", "repdiag.integrations.lightning.RepdiagCallback"):
        assert f'id="{anchor}"' in api, anchor

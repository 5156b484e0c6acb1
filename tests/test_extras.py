"""A pack used without its extra fails with one line naming the extra to install."""

from __future__ import annotations

import pytest

from worker_mesh.mesh.extras import MissingExtra, require


def test_a_missing_library_names_its_extra() -> None:
    with pytest.raises(MissingExtra, match=r"pip install 'worker-mesh\[churn\]'"):
        require("sklearn_that_is_not_installed", "churn")


def test_an_installed_library_is_returned() -> None:
    assert require("json", "churn").__name__ == "json"


def test_a_broken_dependency_inside_a_library_is_not_blamed_on_the_extra(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "lib_with_broken_dep.py").write_text("import definitely_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="definitely_missing_dependency"):
        require("lib_with_broken_dep", "churn")

"""The README's layout section matches the package tree."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "akkiosync"


def layout() -> str:
    """The README's ``## Layout`` section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]


class TestLayout:
    """Every module and package of akkiosync is listed in the README's layout, and no more."""

    def test_every_module_listed(self) -> None:
        """Each top-level module and package, and each private module of a package, appears."""
        section = layout()
        listed = set(re.findall(r"^  (\w+(?:\.py|/))", section, re.MULTILINE))
        top = {p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
        top |= {f"{p.name}/" for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
        assert listed == top
        for package in (p for p in PACKAGE.iterdir() if (p / "__init__.py").exists()):
            for module in package.glob("_*.py"):
                if module.name != "__init__.py":
                    assert re.search(rf"\b{module.stem}\b", section), module

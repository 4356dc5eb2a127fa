"""The newcomer's tour (docs/architecture.md) names only code that exists.

Every dotted ``tomoloop.x.y`` name in the tour, and every backticked ``module.name`` (a
module given by its last part, e.g. ``registry.MODELS`` or ``loop.promote``, or a library's
name such as ``torch.save``), must import or resolve as an attribute, so a rename that
forgets the tour fails here.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
FOLDERS = {
    "platform": "tomoloop",
    "adapters": "tomoloop.adapters",
    "db": "tomoloop.db",
    "flows": "tomoloop.flows",
}
FILE_SUFFIXES = (".py", ".md", ".toml", ".yaml", ".yml", ".png", ".sh", ".ini", ".json", ".txt")

DOTTED = re.compile(r"\btomoloop(?:\.[A-Za-z_]\w*)+")
BACKTICKED = re.compile(r"`([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)(?:\(\))?`")


def source_modules() -> list[str]:
    """Dotted names of every module and package of the source folders."""
    names = []
    for folder, prefix in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if "migrations" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.append(".".join((prefix, *parts)))
    return names


def resolve(dotted: str) -> object:
    """The object a fully dotted name denotes: the longest importable module prefix, then
    attributes. Raises ImportError/AttributeError naming what is missing."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            target = getattr(target, attribute)
        return target
    raise ImportError(f"no module in {dotted}")


def candidates(short: str, modules: list[str]) -> list[str]:
    """Full names a backticked ``module.name`` may mean: modules whose last part is its first."""
    head, _, rest = short.partition(".")
    return [f"{m}.{rest}" for m in modules if m.rsplit(".", 1)[-1] == head]


def named_in_doc() -> tuple[list[str], list[str]]:
    """(fully dotted names, backticked short ``module.name`` names) in the tour."""
    text = DOC.read_text(encoding="utf-8")
    full = sorted(set(DOTTED.findall(text)))
    short = sorted(
        {
            name
            for name in BACKTICKED.findall(text)
            if not name.startswith("tomoloop.") and not name.endswith(FILE_SUFFIXES)
        }
    )
    return full, short


FULL, SHORT = named_in_doc()


def test_the_tour_names_code():
    assert len(FULL) >= 50, "the tour should name the modules and functions it describes"
    assert len(SHORT) >= 3


@pytest.mark.parametrize("name", FULL)
def test_every_dotted_name_exists(name):
    resolve(name)


@pytest.mark.parametrize("name", SHORT)
def test_every_backticked_module_name_exists(name):
    found = candidates(name, source_modules()) or [name]  # e.g. `torch.save`
    resolved = []
    for full in found:
        try:
            resolve(full)
        except (ImportError, AttributeError):
            continue
        resolved.append(full)
    assert resolved, f"`{name}` exists in none of {found}"


def test_a_missing_name_is_caught():
    with pytest.raises(AttributeError):
        resolve("tomoloop.flows.ingest.no_such_function")
    with pytest.raises(ImportError):
        resolve("tomoloopx.nothing")
    assert set(candidates("registry.MODELS", source_modules())) == {
        "tomoloop.networks.registry.MODELS",
        "tomoloop.db.registry.MODELS",
        "tomoloop.cli.registry.MODELS",
    }

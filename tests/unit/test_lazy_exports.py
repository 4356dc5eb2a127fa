"""Every subpackage's names import from the package (``from tomoloop.active import bald``)
exactly as its ``__init__.py`` declares them, and nothing else does."""

import importlib
from pathlib import Path

import pytest

import tomoloop
from tomoloop.lazy import declared_exports

PACKAGES = sorted(
    p.parent.name
    for root in tomoloop.__path__
    for p in Path(root).glob("*/__init__.py")
    if "lazy_exports(" in p.read_text()
)


def test_the_core_subpackages_and_services_export_lazily():
    assert {"active", "labels", "services", "stacks", "networks"} <= set(PACKAGES)


@pytest.mark.parametrize("name", PACKAGES)
def test_each_declared_name_is_the_object_of_its_module(name):
    package = importlib.import_module(f"tomoloop.{name}")
    declared = declared_exports(package.__file__)
    assert set(package.__all__) == set(declared)
    for export, module in declared.items():
        assert getattr(package, export) is getattr(importlib.import_module(module), export)
    with pytest.raises(AttributeError, match="has no attribute 'not_exported'"):
        package.not_exported  # noqa: B018


@pytest.mark.parametrize("name", PACKAGES)
def test_no_export_is_named_like_a_module_of_its_package(name):
    # once the module is imported it would shadow the export: `from tomoloop.active import
    # domain_shift` gave the function or the module depending on what ran before
    package = importlib.import_module(f"tomoloop.{name}")
    modules = {p.stem for p in Path(package.__file__).parent.glob("*.py")}
    modules |= {p.parent.name for p in Path(package.__file__).parent.glob("*/__init__.py")}
    assert not set(declared_exports(package.__file__)) & modules


def test_declared_exports_reads_only_the_type_checking_imports(tmp_path):
    init = tmp_path / "__init__.py"
    init.write_text(
        "from typing import TYPE_CHECKING\n"
        "import os\n"
        "if TYPE_CHECKING:\n"
        "    from pkg.a import one, two as second\n"
        "    from pkg.b import three\n"
    )
    assert declared_exports(str(init)) == {"one": "pkg.a", "second": "pkg.a", "three": "pkg.b"}

"""``tomoloop.services`` re-exports its steps by name; a name equal to one of its modules
would be shadowed by that module once imported (``from tomoloop.services import x`` would
then give the module)."""

import ast
import importlib
import types
from pathlib import Path

import tomoloop.services as services

MODULES = {p.stem for p in (Path(services.__file__).parent).glob("*.py")} - {"__init__"}


def test_every_exported_name_resolves_to_a_step_never_to_a_module():
    for module in sorted(MODULES):  # every module imported: the shadowing case
        importlib.import_module(f"tomoloop.services.{module}")
    for name in services.__all__:
        assert not isinstance(getattr(services, name), types.ModuleType), name


def test_every_public_step_of_the_modules_is_exported():
    for module in MODULES:
        tree = ast.parse((Path(services.__file__).parent / f"{module}.py").read_text())
        public = {
            node.name
            for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_")
        }
        assert public <= set(services.__all__), (module, public - set(services.__all__))

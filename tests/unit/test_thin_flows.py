"""Every Prefect flow of ``tomoloop.flows`` reads as the steps it takes: its body (after
the docstring) is at most 25 lines; the work lives in ``tomoloop.services`` and core."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

FLOWS = Path(__file__).resolve().parents[2] / "flows"
MAX_LINES = 25


def is_flow(decorator: ast.expr) -> bool:
    """Whether a decorator is ``@flow`` or ``@flow(...)`` (also as ``prefect.flow``)."""
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)
    return name == "flow"


def body_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the first statement after the docstring to the end of the last one."""
    body = function.body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    last = body[-1].end_lineno
    assert last is not None
    return last - body[0].lineno + 1


def flow_lengths(source: str) -> dict[str, int]:
    """Body length of every flow function defined in ``source``."""
    return {
        node.name: body_lines(node)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and any(is_flow(d) for d in node.decorator_list)
    }


ALL = {
    f"{path.stem}.{name}": lines
    for path in sorted(FLOWS.glob("*.py"))
    for name, lines in flow_lengths(path.read_text(encoding="utf-8")).items()
}


def test_the_flows_are_found():
    assert {"loop.al_round", "loop.loop", "train.train_semantic", "demo.demo"} <= set(ALL)


@pytest.mark.parametrize("name", sorted(ALL))
def test_a_flow_body_is_at_most_25_lines(name):
    assert ALL[name] <= MAX_LINES, f"{name} is {ALL[name]} lines: move its steps to services"


def test_a_long_flow_is_measured_as_long():
    body = "\n".join(f"    x{k} = {k}" for k in range(MAX_LINES + 1))
    source = f'@flow(name="f")\ndef f():\n    """Doc\n    string."""\n{body}\n'
    assert flow_lengths(source) == {"f": MAX_LINES + 1}
    assert flow_lengths(source.replace('@flow(name="f")', "@prefect.flow")) == {"f": 26}
    assert flow_lengths(source.replace('@flow(name="f")\n', "")) == {}

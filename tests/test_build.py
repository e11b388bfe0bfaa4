"""The compiled build (gateway_build): which modules mypyc compiles, and the rule they follow.

mypyc compiles a class that subclasses an interpreted one (an exception, an aiohttp class) as an
ordinary Python class, but keeps only the class attributes declared ``ClassVar`` (or ``Final``):
``error = "invalid_token"`` in such a class would be silently gone from the compiled build. The
same tests then run against that build in CI (.ci/run), which is where a behaviour change
shows; this file catches the known trap on every run, compiled or not.
"""

from __future__ import annotations

import ast
from pathlib import Path

from gateway_build import COMPILED

REPO = Path(__file__).resolve().parent.parent


def _class_attributes_lost_when_compiled(source: str) -> list[str]:
    """``Class.name`` for each plain class attribute of a class with a base, outside dataclasses."""
    lost = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef) or not node.bases:
            continue
        if any("dataclass" in ast.unparse(d) for d in node.decorator_list):
            continue
        for statement in node.body:
            if isinstance(statement, ast.Assign):
                names = [ast.unparse(target) for target in statement.targets]
            elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
                annotation = ast.unparse(statement.annotation)
                if annotation.startswith(("ClassVar", "Final")):
                    continue
                names = [ast.unparse(statement.target)]
            else:
                continue
            lost += [f"{node.name}.{name}" for name in names if name != "__slots__"]
    return lost


def test_the_compiled_modules_are_modules_of_the_package() -> None:
    assert len(set(COMPILED)) == len(COMPILED)
    for module in COMPILED:
        assert module.startswith("gateway/") and module.endswith(".py"), module
        assert (REPO / module).is_file(), module
    # The request path itself is compiled: the server, the pipeline, the proxy.
    assert {"gateway/plain.py", "gateway/app.py", "gateway/proxy.py"} <= set(COMPILED)


def test_compiled_modules_declare_class_attributes_of_subclasses_as_classvar() -> None:
    lost = {
        module: found
        for module in COMPILED
        if (found := _class_attributes_lost_when_compiled((REPO / module).read_text("utf-8")))
    }
    assert lost == {}


def test_the_rule_finds_what_mypyc_would_drop() -> None:
    source = """
class InvalidBearer(Unauthenticated):
    error = "invalid_token"
    kept: ClassVar[str] = "kept"
    limit: Final = 3
    __slots__ = ()

class Plain:
    fine = 1

@dataclass
class Record(Base):
    field: int = 0
"""
    assert _class_attributes_lost_when_compiled(source) == ["InvalidBearer.error"]

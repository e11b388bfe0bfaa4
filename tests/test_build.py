"""The compiled build (gateway_build): which modules mypyc compiles, and the rules they follow.

Two traps of mypyc that mypy does not see, each of which changed the compiled build's behaviour
here before it was caught:

- a class that subclasses an interpreted one (an exception, an aiohttp class) is compiled as an
  ordinary Python class that keeps only the class attributes declared ``ClassVar`` (or
  ``Final``): ``error = "invalid_token"`` was gone from the compiled ``InvalidBearer``;
- a function's ``except A as exc`` and ``except B as exc`` share one variable, typed by the
  first: a ``B`` raised a ``TypeError`` instead of being handled (the lean client's body pump
  then never freed its upstream permit when a client left mid-upload).

The same tests run against the compiled build in CI (.ci/run), which is where a behaviour change
shows; this file catches the known traps on every run, compiled or not.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import os
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway_build import COMPILED, backend

REPO = Path(__file__).resolve().parent.parent


def _class_attributes_lost_when_compiled(source: str) -> list[str]:
    """``Class.name`` for each plain class attribute of a class with a base, outside dataclasses."""
    lost = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef) or not node.bases:
            continue
        if any("dataclass" in ast.unparse(d) for d in node.decorator_list):
            continue
        if any(ast.unparse(base).rpartition(".")[2].endswith("Enum") for base in node.bases):
            continue  # mypyc leaves an enum a Python class: its members stay as they are
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


def _handler_names_of_two_types(source: str) -> list[str]:
    """``function: name`` for each name that two ``except ... as name`` of one function bind to
    different exception types."""
    found = []
    for function in ast.walk(ast.parse(source)):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        types: dict[str, set[str]] = {}
        nodes: list[ast.AST] = list(function.body)
        while nodes:
            node = nodes.pop()
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
                continue  # a scope of its own, walked on its own
            if isinstance(node, ast.ExceptHandler) and node.name:
                caught = ast.unparse(node.type) if node.type is not None else "BaseException"
                types.setdefault(node.name, set()).add(caught)
            nodes.extend(ast.iter_child_nodes(node))
        found += [f"{function.name}: {name}" for name, kinds in types.items() if len(kinds) > 1]
    return found


def test_the_compiled_modules_are_modules_of_the_package() -> None:
    assert len(set(COMPILED)) == len(COMPILED)
    for module in COMPILED:
        assert module.startswith("gateway/") and module.endswith(".py"), module
        assert (REPO / module).is_file(), module
    # The request path itself is compiled: the server, the pipeline, the proxy.
    assert {"gateway/plain.py", "gateway/app.py", "gateway/proxy.py"} <= set(COMPILED)


def _breaches(rule: Callable[[str], list[str]]) -> dict[str, list[str]]:
    """What ``rule`` finds in each compiled module, for the modules where it finds anything."""
    return {
        module: found for module in COMPILED if (found := rule((REPO / module).read_text("utf-8")))
    }


def test_compiled_modules_declare_class_attributes_of_subclasses_as_classvar() -> None:
    assert _breaches(_class_attributes_lost_when_compiled) == {}


def test_compiled_modules_name_each_kind_of_caught_exception_apart() -> None:
    assert _breaches(_handler_names_of_two_types) == {}


def test_the_handler_rule_finds_a_name_shared_by_two_types() -> None:
    source = """
async def pump():
    try:
        work()
    except Short as exc:
        fail(exc)
    except Exception as exc:
        fail(exc)
    try:
        more()
    except Short as exc:
        fail(exc)

def apart():
    try:
        work()
    except Short as wrong:
        fail(wrong)
    except Exception as exc:
        fail(exc)

    def inner():
        try:
            work()
        except OSError as exc:
            fail(exc)
"""
    assert _handler_names_of_two_types(source) == ["pump: exc"]


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


# Made for every proxied request. mypyc leaves a dataclass's generated ``__init__`` interpreted
# (a frozen one sets each field through ``object.__setattr__``): constructing these eleven took
# about 2 us each, compiled, on the benchmark machine. Each has an ``__init__`` of its own.
PER_REQUEST = [
    ("gateway.plan", "Facts"),
    ("gateway.plan", "Routed"),
    ("gateway.plan", "Caller"),
    ("gateway.plan", "Forward"),
    ("gateway.auth", "Identity"),
    ("gateway.auth", "Authenticated"),
    ("gateway.identity.sessions.base", "Found"),
    ("gateway.identity.sessions.base", "LoadedSession"),
    ("gateway.forwarded", "ClientInfo"),
    ("gateway.context", "Trace"),
    ("gateway.context", "RequestContext"),
]


@pytest.mark.parametrize(("module", "name"), PER_REQUEST)
def test_what_every_request_makes_has_an_init_mypyc_compiles(module: str, name: str) -> None:
    imported = importlib.import_module(module)
    cls = getattr(imported, name)
    assert not dataclasses.is_dataclass(cls)
    assert "__init__" in vars(cls)
    init = vars(cls)["__init__"]
    if imported.__file__ is not None and imported.__file__.endswith(".so"):
        assert not isinstance(init, types.FunctionType)  # compiled, not bytecode
    else:
        assert init.__code__.co_filename == imported.__file__


def test_read_only_request_facts_refuse_writes_when_compiled() -> None:
    import gateway.plan

    facts = gateway.plan.Facts(method="GET", raw_path="/a", query="", host="h")
    if not str(gateway.plan.__file__).endswith(".so"):
        pytest.skip(
            "the source's Facts are read-only to mypy (Final); CI's compiled pass runs this"
        )
    with pytest.raises(AttributeError):
        facts.method = "POST"  # type: ignore[misc]
    assert facts.method == "GET"


def test_only_build_wheel_runs_setup_py_with_the_compile_switch_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every other hook runs setup.py too: with the switch on, an editable install asked for
    # its requirements before mypy was there and failed, and metadata ran the compiler.
    monkeypatch.setenv("GATEWAY_COMPILE", "1")
    seen: dict[str, str | None] = {}

    def recorder(hook: str) -> Callable[..., Any]:
        def record(*args: Any) -> Any:
            seen[hook] = os.environ.get("GATEWAY_COMPILE")
            return [] if hook.startswith("get_requires") else "out"

        return record

    hooks = [
        "get_requires_for_build_wheel",
        "prepare_metadata_for_build_wheel",
        "build_wheel",
        "get_requires_for_build_sdist",
        "build_sdist",
        "get_requires_for_build_editable",
        "prepare_metadata_for_build_editable",
        "build_editable",
    ]
    for hook in hooks:
        monkeypatch.setattr(backend._setuptools, hook, recorder(hook))
    assert backend.get_requires_for_build_wheel() == [backend.MYPY]
    backend.prepare_metadata_for_build_wheel("meta")
    backend.build_wheel("dist")
    assert backend.get_requires_for_build_sdist() == []
    backend.build_sdist("dist")
    assert backend.get_requires_for_build_editable() == []
    backend.prepare_metadata_for_build_editable("meta")
    backend.build_editable("dist")
    assert seen == {hook: "1" if hook == "build_wheel" else "0" for hook in hooks}
    assert os.environ["GATEWAY_COMPILE"] == "1"  # given back as it was

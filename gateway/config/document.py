"""The YAML document: its values, and the line each YAML path is written on.

Parsing keeps the node tree alongside the values so that every problem found later, by YAML path,
can be put back in the order the file has it (:meth:`Document.place`). A key written twice in one
mapping is a problem reported like any other, not the end of the run: the later value is the one
validated (as YAML loaders keep it), and the rest of the file is still checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from gateway.config.errors import ConfigError, ConfigIssue, describe

ROOT = "(top level)"
"""The path of a problem with the document as a whole."""

_MERGE_TAG = "tag:yaml.org,2002:merge"
# Where a YAML path can be cut to name an enclosing value: "a.b[2]" -> "a.b", "users.htpasswd:3"
# (a line of a file the configuration names) -> "users.htpasswd".
_STEP = re.compile(r"[.\[:]")


@dataclass(frozen=True, slots=True)
class Document:
    """A parsed configuration file: the values, and where each YAML path is written."""

    tree: dict[str, Any]
    issues: tuple[ConfigIssue, ...]
    """Problems of the YAML itself that did not stop parsing (keys written twice)."""
    lines: Mapping[str, int]
    """YAML path -> line (1-based) of its key, or of the list item."""
    scalars: frozenset[str]
    """Paths whose value is a plain value (not a mapping or list): a problem *under* one of
    these (``users.file[3]``, ``users.htpasswd:12``) is in the file that value names."""

    def place(self, issues: Iterable[ConfigIssue]) -> list[ConfigIssue]:
        """``issues`` in file order, each with the line it is on (when it is in this file).

        A problem sorts at the line of its YAML path, or of the nearest enclosing value that is
        written (a missing required key sorts at its section; a problem in a users file at the
        line naming the file, in the order that file has them). Problems with nothing written
        to point at (a missing section) come last; ties keep the order they were found in.
        """
        placed: list[tuple[float, int, ConfigIssue]] = []
        for index, issue in enumerate(issues):
            found = self._locate(issue.path)
            if issue.line is not None:
                placed.append((issue.line, index, issue))
            elif found is None:
                placed.append((0 if issue.path == ROOT else float("inf"), index, issue))
            else:
                at, line = found
                inside_a_named_file = at != issue.path and at in self.scalars
                shown = issue if inside_a_named_file else replace(issue, line=line)
                placed.append((line, index, shown))
        return [issue for _line, _index, issue in sorted(placed, key=lambda item: item[:2])]

    def _locate(self, path: str) -> tuple[str, int] | None:
        """The longest written prefix of ``path`` and its line."""
        cuts = [match.start() for match in _STEP.finditer(path)]
        for candidate in [path, *(path[:cut] for cut in reversed(cuts))]:
            line = self.lines.get(candidate)
            if line is not None:
                return candidate, line
        return None


def parse(text: str, source: Path | None) -> Document:
    """Parse ``text``; raises :class:`ConfigError` when it is not a YAML mapping of sections."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        walk = _Walk(loader)
        if isinstance(node, yaml.MappingNode):
            walk.mapping(node, "")  # before constructing, which merges `<<:` keys into the node
        document = None if node is None else loader.construct_document(node)
        if not isinstance(document, dict):
            raise ConfigError([_not_a_mapping(document)], source=source)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_yaml_issue(exc)], source=source) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue(ROOT, f"invalid YAML: {exc}")], source=source) from None
    except RecursionError:
        # The YAML composer (and the walk above) recurse once per level of nesting.
        message = "invalid YAML: values nested too deeply (hundreds of levels)"
        raise ConfigError([ConfigIssue(ROOT, message)], source=source) from None
    finally:
        loader.dispose()
    return Document(
        tree=document,
        issues=tuple(walk.issues),
        lines=walk.lines,
        scalars=frozenset(walk.scalars),
    )


SECTIONS = ("server", "session", "users", "login", "tokens", "upstreams", "routes")


def _not_a_mapping(document: object) -> ConfigIssue:
    if document is None:
        return ConfigIssue(
            ROOT, "the configuration is empty; it needs at least server, upstreams and routes"
        )
    return ConfigIssue(
        ROOT, f"expected a mapping of sections ({', '.join(SECTIONS)}), got {describe(document)}"
    )


class _Walk:
    """Records the line of every YAML path, and keys written twice in one mapping."""

    def __init__(self, loader: yaml.SafeLoader) -> None:
        self.loader = loader
        self.lines: dict[str, int] = {}
        self.scalars: set[str] = set()
        self.issues: list[ConfigIssue] = []
        # An aliased node is walked once: aliases may nest (and recurse) without limit.
        self._seen: set[int] = set()

    def node(self, node: yaml.Node, path: str) -> None:
        if isinstance(node, yaml.ScalarNode):
            self.scalars.add(path)
        elif id(node) in self._seen:
            return
        elif isinstance(node, yaml.MappingNode):
            self.mapping(node, path)
        elif isinstance(node, yaml.SequenceNode):
            self._seen.add(id(node))
            for index, item in enumerate(node.value):
                at = join(path, index)
                self.lines[at] = item.start_mark.line + 1
                self.node(item, at)

    def mapping(self, node: yaml.MappingNode, path: str) -> None:
        self._seen.add(id(node))
        first: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                self._merged(value_node, path)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                continue  # not a name; the section reading it reports that
            key = self.loader.construct_object(key_node)
            line = key_node.start_mark.line + 1
            at = join(path, key)
            if key in first:
                self.issues.append(
                    ConfigIssue(
                        at,
                        f"this key is written twice (first at line {first[key]}); YAML keeps "
                        "only this last value, so remove or merge the other",
                        line=line,
                    )
                )
                self.scalars.discard(at)
            first[key] = line
            self.lines[at] = line  # the value used is the last one written
            self.node(value_node, at)

    def _merged(self, value_node: yaml.Node, path: str) -> None:
        # `<<: *defaults`: the merged keys are written where the merged mapping is; keys written
        # here override them on purpose, so they are no duplicates.
        sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
        for source in sources:
            if isinstance(source, yaml.MappingNode) and id(source) not in self._seen:
                for key_node, _value in source.value:
                    if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                        at = join(path, self.loader.construct_object(key_node))
                        self.lines.setdefault(at, key_node.start_mark.line + 1)


def join(path: str, key: object) -> str:
    """``routes`` + 2 -> ``routes[2]``; ``routes[2]`` + ``access`` -> ``routes[2].access``."""
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _yaml_issue(exc: yaml.MarkedYAMLError) -> ConfigIssue:
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ROOT
    message = f"invalid YAML: {exc.problem or 'syntax error'}"
    if exc.context:
        context_mark = exc.context_mark
        shown = context_mark is not None and context_mark is not mark
        at = f" at line {context_mark.line + 1}" if context_mark and shown else ""
        message += f" ({exc.context}{at})"
    return ConfigIssue(where, message)

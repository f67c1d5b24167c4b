"""PyYAML's SafeLoader with bounds: nesting depth while composing, node count after alias expansion.

SafeLoader runs no code, but it trusts the size of what it reads: a few hundred bytes of nested
aliases (a "billion laughs" bomb) expand to billions of nodes once anything walks the tree, a
50,000-deep nesting overflows the composer's recursion, and `&a [*a]` is a cycle. Recipes are
small, so the bounds in `dpm_cli.limits` are far above any real one and each violation is one line.
"""
from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from ..errors import ConfigError
from ..escaping import printable
from ..limits import MAX_YAML_DEPTH, MAX_YAML_NODES


class BoundedLoader(yaml.SafeLoader):
    """A SafeLoader whose composer refuses to nest deeper than MAX_YAML_DEPTH (before Python's recursion limit)."""

    def __init__(self, stream: Any, source: str = "<string>") -> None:
        self.source = source
        self._depth = 0
        super().__init__(stream)

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise ConfigError(f"{self.source}:{mark.line + 1}: the YAML nests more than {MAX_YAML_DEPTH} levels "
                                  "deep; a recipe needs a handful, so flatten it")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def check_expansion(node: Node, source: str) -> None:
    """Refuse a tree that, with every alias expanded, has too many nodes, nests too deep or is a cycle.

    Memoised per node, so a bomb is measured in time linear in its (small) composed size."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, expanded depth)
    open_: set[int] = set()

    def measure(n: Node) -> tuple[int, int]:
        key = id(n)
        if key in sizes:
            return sizes[key]
        if key in open_:
            raise ConfigError(f"{source}:{n.start_mark.line + 1}: an alias refers to the collection that "
                              "contains it (a cycle); write the value out instead")
        open_.add(key)
        children: list[Node] = []
        if isinstance(n, SequenceNode):
            children = list(n.value)
        elif isinstance(n, MappingNode):
            children = [part for pair in n.value for part in pair]
        count, depth = 1, 0
        for child in children:
            c, d = measure(child)
            count, depth = count + c, max(depth, d)
        open_.discard(key)
        sizes[key] = (count, depth + 1)
        return sizes[key]

    count, depth = measure(node)
    if count > MAX_YAML_NODES:
        raise ConfigError(f"{source}: the YAML expands to {count:.3g} values with its aliases (&/*), more than the "
                          f"{MAX_YAML_NODES:,} a recipe may hold; write the values out without aliases")
    if depth > MAX_YAML_DEPTH:
        raise ConfigError(f"{source}: with its aliases expanded the YAML nests {depth} levels deep, more than "
                          f"{MAX_YAML_DEPTH}; flatten it")


def reader_message(err: yaml.reader.ReaderError, text: str, source: str) -> str:
    """One line for a character YAML refuses (NUL, other control characters), with its line and column."""
    pos = err.position if isinstance(err.position, int) else 0
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    char = err.character if isinstance(err.character, str) else chr(err.character)
    return (f"{source}:{line}:{column}: invalid YAML: character {printable(repr(char))} is not allowed in a recipe "
            "(control characters and NUL bytes are not text); remove it")


def safe_load_bounded(text: str, source: str = "<string>") -> Any:
    """yaml.safe_load with the bounds above (for override values)."""
    loader = BoundedLoader(text, source)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_expansion(node, source)
        return loader.construct_document(node)
    finally:
        loader.dispose()

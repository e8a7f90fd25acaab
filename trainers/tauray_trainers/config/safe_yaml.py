"""The one YAML reader for text a person gives tauray: ``--set`` values, config and space files.

PyYAML's safe loader builds only plain values, but on its own it still lets hostile or mistaken
text through: an alias bomb (anchors referring to anchors, "billion laughs") expands into more
nodes than memory holds once anything walks the result, an alias inside its own anchor makes a
recursive structure, deep nesting raises ``RecursionError`` in the composer, and an integer
longer than Python's int-conversion limit (4,300 digits) raises a bare ``ValueError``. This loader
refuses those, rejects duplicate mapping keys, and reads ``1e-4`` as the number it looks like
(PyYAML follows YAML 1.1, where it is a string). Every problem is one ``ValueError`` line.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import yaml

#: Deepest nesting of sequences and mappings accepted, aliases expanded.
MAX_DEPTH = 50
#: Most nodes a document may hold with every alias expanded.
MAX_NODES = 100_000


class _LimitError(yaml.MarkedYAMLError):
    """The text is valid YAML but beyond what tauray reads (depth, alias expansion, a tag)."""


class SafeYamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with bounded depth and alias expansion and no duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _LimitError(
                    None,
                    None,
                    f"nesting deeper than {MAX_DEPTH} levels",
                    self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> yaml.Node:
        node = super().compose_document()
        _check_expansion(node)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)

    def construct_undefined(self, node: yaml.Node) -> Any:
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        raise _LimitError(
            None, None, f"the YAML tag {tag!r} is not allowed (plain values only)", node.start_mark
        )


# Copy the resolver table before extending it: add_implicit_resolver would otherwise append to
# SafeLoader's shared lists (and change yaml.safe_load for everyone).
SafeYamlLoader.yaml_implicit_resolvers = {
    first: list(resolvers) for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
SafeYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)
SafeYamlLoader.add_constructor(None, SafeYamlLoader.construct_undefined)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: yaml.Node | None) -> None:
    """Refuse recursive aliases, and documents too deep or too big once aliases are expanded.

    An alias is the node of its anchor, so the composed document is a graph; sizes and depths
    are computed once per node (iteratively: no recursion to exhaust).
    """
    if root is None:
        return
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            children = _children(node)
            sizes[key] = 1 + sum(sizes[id(child)] for child in children)
            depths[key] = 1 + max((depths[id(child)] for child in children), default=0)
            on_path.discard(key)
            if sizes[key] > MAX_NODES:
                raise _LimitError(
                    None,
                    None,
                    f"aliases expand to more than {MAX_NODES} values",
                    node.start_mark,
                )
            if depths[key] > MAX_DEPTH:
                raise _LimitError(
                    None,
                    None,
                    f"aliases expand to nesting deeper than {MAX_DEPTH} levels",
                    node.start_mark,
                )
            continue
        if key in sizes:
            continue
        on_path.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_path:
                raise _LimitError(
                    None, None, "an alias refers to its own anchor (recursive)", child.start_mark
                )
            if id(child) not in sizes:
                stack.append((child, False))


def load_yaml(text: str, source: str = "<string>") -> Any:
    """Parse YAML text with :class:`SafeYamlLoader`.

    Args:
        text: the YAML document.
        source: what to call the text in errors (a file name, ``override 'key=value'``).

    Raises:
        ValueError: one line with the source, the problem and (for syntax errors) where.
    """
    try:
        return yaml.load(text, Loader=SafeYamlLoader)  # a SafeLoader subclass
    except ValueError as error:  # e.g. an integer past Python's int-conversion digit limit
        if "digits" not in str(error):
            raise
        raise ValueError(
            f"{source}: a number with more than {sys.get_int_max_str_digits()} digits"
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = " ".join(str(getattr(error, "problem", None) or error).split())
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        if isinstance(error, (yaml.constructor.ConstructorError, _LimitError)):
            raise ValueError(f"{source}: {problem}{where}") from None
        raise ValueError(f"{source}: YAML syntax error{where}: {problem}") from None

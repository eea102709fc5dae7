"""Dotted config paths (`algorithm.beta`, `eval.limit`): how grid files, their profiles and sweeps name
one field of a nested cell config. `algorithm: dpo` is shorthand for `algorithm: {name: dpo}`."""

from __future__ import annotations

import copy
from typing import Any


def set_dotted(config: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = config
    for key in keys[:-1]:
        child = node.get(key)
        if isinstance(child, str):  # `algorithm: dpo` shorthand, then `algorithm.beta` set
            child = {"name": child}
        if not isinstance(child, dict):
            child = {}
        node[key] = child
        node = child
    node[keys[-1]] = copy.deepcopy(value)


def get_dotted(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for key in dotted.split("."):
        if isinstance(node, str) and key == "name":
            return node
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node

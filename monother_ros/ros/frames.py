"""Frame prefixes for several robots in one DDS domain (tf_prefix style: ``robot1/`` + ``base_link``).

Namespaces move topics but not frame ids, so two robots would publish the same TF frames. A node with
a non-empty ``frame_prefix`` puts it in front of every frame id it publishes or looks up by default;
a frame that already carries the prefix is left alone (a driver that prefixes its own frames). No ROS
imports: the launch helper and the nodes share these rules.
"""
from __future__ import annotations

import re
from typing import Any, Optional

__all__ = ["frame_prefix_error", "normalise_prefix", "with_prefix"]

_PREFIX = re.compile(r"[A-Za-z0-9_]+(/[A-Za-z0-9_]+)*/?")


def frame_prefix_error(value: Any) -> Optional[str]:
    """empty or like robot1/ (letters, digits, _ and /; no leading /, which tf2 refuses in frame ids)"""
    if value == "":
        return None
    if not isinstance(value, str) or not _PREFIX.fullmatch(value):
        return "must be empty or like robot1/ (letters, digits, _ and /, not starting with /)"
    return None



def normalise_prefix(prefix: str) -> str:
    """``robot1`` -> ``robot1/`` (``""`` stays ``""``)."""
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def with_prefix(prefix: str, frame: str) -> str:
    """``frame`` with the prefix in front; an empty frame or prefix, or a frame that already starts with the
    prefix, is returned unchanged."""
    prefix = normalise_prefix(prefix)
    if not prefix or not frame or frame.startswith(prefix):
        return frame
    return prefix + frame

"""Declarative node parameters: one table per node, declared with descriptions, validated at start.

Each node lists its parameters once as :class:`ParamSpec` rows (name, type, default, description,
validator). :meth:`ParamTable.declare` declares them on the node with a ``ParameterDescriptor``
(description, type, read-only flag, range text), reads the values (params file / overrides) and
refuses invalid ones with one :class:`~monother_ros.errors.ConfigError` listing every problem.

Runtime changes (``ros2 param set``): only rows marked ``dynamic=True`` can change while the node runs;
every other row is declared read-only, and rclpy refuses it ("read-only"). A change is validated by the
same validators as at start, then handed to the node's ``on_change`` hook (given to :meth:`ParamTable.declare`),
which applies it or raises ``ConfigError``; an invalid change is refused with the reason
(``SetParametersResult(successful=False)``) and the running configuration stays as it was.
:meth:`ParamTable.rows` gives the table for the README, which a test compares with the README.

Nested names use dots (``teacher.enabled``), which is how a params file's nested mappings reach a node.
The pure part (:meth:`ParamTable.validate`) needs no node.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional

from monother_ros.errors import ConfigError

__all__ = ["ParamSpec", "ParamTable", "in_range", "one_of", "positive", "non_negative", "non_empty"]

Validator = Callable[[Any], Optional[str]]  # returns an error text, or None when the value is fine

_TYPE_NAMES = {bool: "bool", int: "int", float: "double", str: "string"}
_LIST_TYPES = {"list[float]": float, "list[int]": int, "list[str]": str, "list[bool]": bool}


def in_range(low: Optional[float] = None, high: Optional[float] = None) -> Validator:
    """Validator: low <= value <= high (either bound optional)."""

    def check(value: Any) -> Optional[str]:
        if low is not None and value < low:
            return f"must be >= {low}"
        if high is not None and value > high:
            return f"must be <= {high}"
        return None

    check.__doc__ = f"in [{low}, {high}]"
    return check


def positive(value: Any) -> Optional[str]:
    """Validator: value > 0."""
    return None if value > 0 else "must be > 0"


def non_negative(value: Any) -> Optional[str]:
    """Validator: value >= 0."""
    return None if value >= 0 else "must be >= 0"


def non_empty(value: Any) -> Optional[str]:
    """Validator: a non-empty string or list."""
    return None if len(value) > 0 else "must not be empty"


def one_of(*choices: Any) -> Validator:
    """Validator: value is one of ``choices``."""

    def check(value: Any) -> Optional[str]:
        return None if value in choices else f"must be one of {', '.join(map(str, choices))}"

    check.__doc__ = f"one of {', '.join(map(str, choices))}"
    return check


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter.

    Args:
        name: dotted name (``teacher.enabled``).
        type: ``bool``, ``int``, ``float``, ``str`` or one of the strings ``"list[float]"``,
            ``"list[int]"``, ``"list[str]"``, ``"list[bool]"``.
        default: default value (lists must be non-empty so ROS can infer the element type).
        description: meaning, with the unit.
        validator: extra check returning an error text or None (see :func:`in_range`, :func:`one_of`).
        read_only: kept for compatibility: every row that is not ``dynamic`` is read-only (most of ours:
            they size buffers or pick backends).
        dynamic: can be changed at runtime (``ros2 param set``), validated and applied through the
            node's ``on_change`` hook; implies not read-only.
    """

    name: str
    type: Any
    default: Any
    description: str
    validator: Optional[Validator] = None
    read_only: bool = True
    dynamic: bool = False

    def __post_init__(self) -> None:
        if self.type not in _TYPE_NAMES and self.type not in _LIST_TYPES:
            raise ValueError(f"parameter {self.name!r}: unsupported type {self.type!r}")
        if not self.description:
            raise ValueError(f"parameter {self.name!r} needs a description")
        if self.type in _LIST_TYPES and not self.default:
            raise ValueError(f"parameter {self.name!r}: list defaults must be non-empty")
        value, error = coerce(self, self.default)
        if error is None and self.validator is not None:
            error = self.validator(value)
        if error is not None:
            raise ValueError(f"parameter {self.name!r}: default {self.default!r} {error}")

    @property
    def type_name(self) -> str:
        """ROS type name for docs: bool, int, double, string, double[], ..."""
        if self.type in _LIST_TYPES:
            return _TYPE_NAMES[_LIST_TYPES[self.type]] + "[]"
        return _TYPE_NAMES[self.type]


def _coerce_scalar(kind: type, value: Any) -> tuple[Any, Optional[str]]:
    if kind is bool:
        return (value, None) if isinstance(value, bool) else (value, "must be a bool (true/false)")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return value, "must be an integer"
        return value, None
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return value, "must be a number"
        value = float(value)
        return (value, None) if math.isfinite(value) else (value, "must be finite")
    if kind is str:
        return (value, None) if isinstance(value, str) else (value, "must be a string")
    raise AssertionError(kind)  # unreachable: types are checked in ParamSpec


def coerce(spec: ParamSpec, value: Any) -> tuple[Any, Optional[str]]:
    """(value converted to the spec's type, error text or None); ints are accepted for doubles."""
    if spec.type in _LIST_TYPES:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            return value, f"must be a list of {_TYPE_NAMES[_LIST_TYPES[spec.type]]}"
        out = []
        for item in value:
            item, error = _coerce_scalar(_LIST_TYPES[spec.type], item)
            if error:
                return value, f"every item {error}"
            out.append(item)
        return out, None
    return _coerce_scalar(spec.type, value)


class ParamTable:
    """The parameters of one node, declared and validated together.

    Args:
        specs: the rows; names must be unique.
    """

    def __init__(self, specs: Iterable[ParamSpec]) -> None:
        self.specs: dict[str, ParamSpec] = {}
        for spec in specs:
            if spec.name in self.specs:
                raise ValueError(f"parameter {spec.name!r} listed twice")
            self.specs[spec.name] = spec

    def __iter__(self):
        return iter(self.specs.values())

    def __len__(self) -> int:
        return len(self.specs)

    def defaults(self) -> dict[str, Any]:
        return {name: spec.default for name, spec in self.specs.items()}

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(name, type, default, description) per parameter, in declaration order (README tables)."""
        return [(s.name, s.type_name, _format_default(s.default), s.description) for s in self.specs.values()]

    def dynamic_names(self) -> list[str]:
        """Names of the parameters that can change at runtime, in declaration order."""
        return [s.name for s in self.specs.values() if s.dynamic]

    def check_change(self, changes: Mapping[str, Any]) -> tuple[dict[str, Any], Optional[str]]:
        """Validate a runtime change (the pure part of the ``ros2 param set`` path).

        Args:
            changes: {name: new value}; names not in the table are ignored (rclpy's own parameters).

        Returns:
            ({name: converted value}, None), or ({}, reason) when a name is read-only or a value invalid.
        """
        out: dict[str, Any] = {}
        for name, raw in changes.items():
            spec = self.specs.get(name)
            if spec is None:
                continue
            if not spec.dynamic:
                return {}, f"{name} is read-only: it is set at start (params file); restart the node to change it"
            value, error = coerce(spec, raw)
            if error is None and spec.validator is not None:
                error = spec.validator(value)
            if error is not None:
                return {}, f"{name} = {raw!r}: {error}"
            out[name] = value
        return out, None

    def validate(self, values: Mapping[str, Any], *, node_name: str = "node") -> dict[str, Any]:
        """Check and convert values (missing names take their default).

        Raises:
            ConfigError: listing every invalid or unknown parameter, one per line.
        """
        errors = []
        out: dict[str, Any] = {}
        for name in values:
            if name not in self.specs:
                errors.append(f"  {name}: unknown parameter")
        for name, spec in self.specs.items():
            raw = values.get(name, spec.default)
            value, error = coerce(spec, raw)
            if error is None and spec.validator is not None:
                error = spec.validator(value)
            if error is not None:
                errors.append(f"  {name} = {raw!r}: {error}")
            out[name] = value
        if errors:
            raise ConfigError(f"invalid parameters for {node_name}:\n" + "\n".join(errors))
        return out

    def declare(self, node, on_change: Optional[Callable[[dict[str, Any]], None]] = None) -> dict[str, Any]:
        """Declare every parameter on ``node``, read and validate the values, guard later changes.

        Args:
            node: the rclpy node.
            on_change: called from the executor with {name: validated value} of a runtime change to
                dynamic parameters; it applies them all or raises ``ConfigError`` / ``ValueError``
                (the change is then refused with that message and must leave nothing applied).
                Without it, no parameter can change at runtime.

        Returns:
            {name: value} as validated.

        Raises:
            ConfigError: a value of the wrong type or failing its validator (all listed at once).
        """
        from rcl_interfaces.msg import ParameterDescriptor
        from rclpy.exceptions import ParameterException

        values: dict[str, Any] = {}
        errors: list[str] = []
        for spec in self.specs.values():
            descriptor = ParameterDescriptor(
                description=spec.description,
                read_only=not (spec.dynamic and on_change is not None),
                additional_constraints=(spec.validator.__doc__ or "") if spec.validator else "",
                # Dynamic typing: declare-time type errors become our own clear messages below
                # (rclpy would raise InvalidParameterTypeException for `rate_scale: 1` vs 1.0).
                dynamic_typing=True,
            )
            try:
                parameter = node.declare_parameter(spec.name, spec.default, descriptor)
            except ParameterException as exc:  # e.g. an override rclpy cannot even represent
                errors.append(f"  {spec.name}: {exc}")
                continue
            values[spec.name] = parameter.value
        for line in self._unknown_overrides(node):
            # A warning, not an error: `-p` and `/**:` overrides reach every node of a process.
            node.get_logger().warning(f"ignored parameter override {line.strip()}")
        if errors:
            raise ConfigError(f"invalid parameters for {node.get_name()}:\n" + "\n".join(errors))
        validated = self.validate(values, node_name=node.get_name())
        node.add_on_set_parameters_callback(self._on_set_callback(on_change))
        return validated

    def _unknown_overrides(self, node) -> list[str]:
        """Overrides (params file, ``-p``) naming no parameter of this table: typos, silently ignored
        by rclpy otherwise. Reads rclpy's ``_parameter_overrides`` (same name on Humble and Kilted);
        rclpy's own parameters (``use_sim_time``, ``qos_overrides.*``, ...) are not ours to judge."""
        import difflib

        overrides = getattr(node, "_parameter_overrides", None) or {}
        notes = []
        for name in overrides:
            if name in self.specs or name == "use_sim_time" or name.startswith(("qos_overrides.", "start_type_description_service")):
                continue
            close = difflib.get_close_matches(name, list(self.specs), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            notes.append(f"{name}: unknown parameter{hint}")
        return notes

    def _on_set_callback(self, on_change: Optional[Callable[[dict[str, Any]], None]]):
        from rcl_interfaces.msg import SetParametersResult

        from monother_ros.errors import MonotherError

        def on_set(parameters) -> SetParametersResult:
            changes = {parameter.name: parameter.value for parameter in parameters}
            if on_change is None:
                changes = {name: value for name, value in changes.items() if name in self.specs}
                if changes:
                    return SetParametersResult(successful=False, reason=f"{next(iter(changes))} is read-only")
                return SetParametersResult(successful=True)
            values, reason = self.check_change(changes)
            if reason is None and values:
                try:
                    on_change(values)
                except (MonotherError, ValueError) as exc:
                    reason = f"{', '.join(f'{k} = {v!r}' for k, v in values.items())}: {exc}"
            if reason is not None:
                return SetParametersResult(successful=False, reason=reason)
            return SetParametersResult(successful=True)

        return on_set


def _format_default(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_format_default(v) for v in value) + "]"
    return repr(value)

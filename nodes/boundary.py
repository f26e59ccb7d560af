"""The node boundary: every FIA node checks its inputs against its own schema before it runs.

ComfyUI's HTTP API lets through values its validation never looked at: a V3 Combo is not checked
against its options, and a socket input may hold a literal or null instead of a link. So every
input's type, range and options are checked here, derived from the node's `define_schema`, for
every node that subclasses FIANode: an input added later is checked without a line of its own.
"""

from __future__ import annotations

import functools
import inspect
import json
import math

from comfy_api.latest import io

from ..fia_engine import FIAInputError
from .types import SOCKETS

SHOWN_OPTIONS = 8  # a refusal lists at most this many options (a mask folder may hold hundreds)


def _shown(value) -> str:
    """The refused value as the user sent it: JSON for literals, the type's name for objects."""
    if isinstance(value, float):
        return repr(value)  # nan, inf: the words the engine's own refusals use
    if value is None or isinstance(value, (bool, int, str)):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 60 else f"{text[:57]}...\""
    return f"a {type(value).__name__}"


def _number_problem(value, whole: bool, low, high) -> tuple[str, str] | None:
    allowed = (int,) if whole else (int, float)
    fix = f"Use {low} to {high}" if low is not None and high is not None else "Enter a finite number"
    if isinstance(value, bool) or not isinstance(value, allowed):
        return f"is not {'a whole number' if whole else 'a number'}", fix
    if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
        return "is out of range", fix  # NaN too: it compares False with every bound
    return None


def _options(options: list) -> str:
    listed = ", ".join(map(str, options[:SHOWN_OPTIONS])) or "nothing (the list is empty)"
    return listed + (f", ... ({len(options)} in all)" if len(options) > SHOWN_OPTIONS else "")


def _problem(spec: io.Input, value) -> tuple[str, str] | None:
    """(what is wrong, the generic fix) for `value` at the input `spec`; None when it is fine."""
    if isinstance(spec, io.Combo.Input):
        if isinstance(value, str) and value in spec.options:
            return None
        return f"is not one of {_options(spec.options)}", "Choose one of them"
    if isinstance(spec, (io.Int.Input, io.Float.Input)):
        return _number_problem(value, isinstance(spec, io.Int.Input), spec.min, spec.max)
    if isinstance(spec, io.String.Input):
        return None if isinstance(value, str) else ("is not text", "Enter text (in an API prompt, a JSON string)")
    if isinstance(spec, io.Boolean.Input):
        return None if isinstance(value, bool) else ("is not true or false", "Set it to true or false")
    kind, source = SOCKETS[spec.get_io_type()]  # a KeyError here: add the new socket type to SOCKETS
    if isinstance(value, kind):
        return None
    return (f"is not a {spec.get_io_type()}",
            f"Connect {source} to it (in an API prompt, a link is [node_id, output_index])")


def check_inputs(schema: io.Schema, values: dict, fixes: dict[str, str] | None = None) -> None:
    """Refuses the first input of `schema` whose value in `values` has the wrong type, lies outside
    its range or options, or is missing; an optional socket may be absent or None (not connected),
    an optional widget absent (its default applies). `fixes`: per input, the node's own advice,
    replacing the generic fix."""
    for spec in schema.inputs:
        if spec.id not in values and spec.optional:
            continue
        value = values.get(spec.id)
        if value is None and spec.optional and spec.get_io_type() in SOCKETS:
            continue
        problem = _problem(spec, value)
        if problem is not None:
            what, fix = problem
            raise FIAInputError(f"{spec.id}: {_shown(value)} {what}. {(fixes or {}).get(spec.id, fix)}.")


class FIANode(io.ComfyNode):
    """Base of the pack's nodes: `execute` checks every input with check_inputs before the node's
    own code runs, so nothing reaches it that the schema does not allow.

    INPUT_FIXES: per input, advice that replaces the generic fix of its refusal.
    """

    INPUT_FIXES: dict[str, str] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("execute")
        # ComfyUI re-creates node classes from their __dict__ (clones, locked copies): wrap once
        if own is None or getattr(own.__func__, "checks_inputs", False):
            return
        run = own.__func__
        signature = inspect.signature(run)
        more = [p.name for p in signature.parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD]

        @functools.wraps(run)
        def execute(node, *args, **kwargs):
            values = dict(signature.bind_partial(node, *args, **kwargs).arguments)
            values.update(values.pop(more[0], {}) if more else {})  # inputs gathered by **kwargs
            check_inputs(node.define_schema(), values, node.INPUT_FIXES)
            return run(node, *args, **kwargs)

        execute.checks_inputs = True
        cls.execute = classmethod(execute)

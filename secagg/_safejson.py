"""Parsing untrusted JSON with a size and a nesting cap checked before the parser runs.

Every JSON document a party or the auditor reads from the artifact store or the command
line (round manifests, ``results.json``) may have been written by an adversary. Python's
``json`` recurses once per nesting level, and py-evm (imported by the in-process ledger)
raises the interpreter's recursion limit to 100000, so a document of a few hundred
kilobytes of ``[`` overflows the C stack and kills the whole process (every party of a
simulated federation with it). :func:`loads_untrusted` therefore checks the size, then
the nesting depth with a linear scan that never recurses, and only then parses. It also
refuses what strict JSON does not allow (``NaN``, ``Infinity``) and duplicate keys.
"""

from __future__ import annotations

import json
import re
from typing import Any

from secagg._errors import BlobFormatError

__all__ = ["UntrustedJSONError", "loads_untrusted", "nesting_depth"]

# A JSON string (with escapes), written without nested quantifiers so matching is linear.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")


class UntrustedJSONError(BlobFormatError):
    """An untrusted JSON document is too large, too deeply nested or not strict JSON."""


def nesting_depth(data: bytes, *, stop_above: int | None = None) -> int:
    """The deepest nesting of arrays and objects in ``data`` (brackets in strings ignored).

    Linear in ``len(data)`` and never recursive; stops counting once the depth exceeds
    ``stop_above`` (returning that depth). Malformed input gives an upper bound.
    """
    outside_strings = _STRING.sub(b'""', data)
    depth = deepest = 0
    for match in _BRACKETS.finditer(outside_strings):
        if match.group() in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_above is not None and deepest > stop_above:
                    return deepest
        elif depth > 0:
            depth -= 1
    return deepest


def _reject_constant(name: str) -> Any:
    raise UntrustedJSONError(f"{name} is not allowed in strict JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise UntrustedJSONError(f"duplicate key {key!r}")
        result[key] = value
    return result


def loads_untrusted(data: bytes, *, max_bytes: int, max_depth: int, what: str) -> Any:
    """Parse ``data`` (ASCII JSON) after checking it is at most ``max_bytes`` long and
    nests at most ``max_depth`` levels; ``what`` names the document in errors.

    Raises :class:`UntrustedJSONError` (a :class:`~secagg._errors.BlobFormatError`) for
    anything but a strict JSON document within the caps.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise UntrustedJSONError(f"{what} must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_bytes:
        raise UntrustedJSONError(f"{what} has {len(data)} bytes, more than the cap {max_bytes}")
    depth = nesting_depth(data, stop_above=max_depth)
    if depth > max_depth:
        raise UntrustedJSONError(f"{what} nests deeper than {max_depth} levels")
    try:
        return json.loads(
            data.decode("ascii"),
            parse_constant=_reject_constant,
            object_pairs_hook=_unique_keys,
        )
    except UntrustedJSONError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise UntrustedJSONError(f"{what} is not ASCII JSON: {error}") from error

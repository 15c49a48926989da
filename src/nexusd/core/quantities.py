"""Kubernetes resource quantities (`500m`, `2`, `1.5Gi`, `1e3`), read exactly as the API
server reads them: apimachinery's `resource.ParseQuantity` grammar, its rounding to 1n, and
its int64 bounds (2^63-1 of the base unit; CPU counted in millicores).

Python's `Decimal` would accept more (`NaN`, `Infinity`, `1_000`, non-ASCII digits) and the
`kubernetes` package's `parse_quantity` raises on values the API server takes; a run accepted
with a quantity Kubernetes then refuses could only end SCHEDULING_FAILED, so intake checks
quantities here and answers 400.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from decimal import ROUND_UP, Decimal, localcontext
from typing import Final

#: Kubernetes holds a quantity in an int64 of its base unit, and CPU in an int64 of millicores.
MAX_QUANTITY: Final = Decimal(2**63 - 1)
MAX_CPU: Final = MAX_QUANTITY / 1000
_NANO: Final = Decimal("1e-9")
# The grammar of apimachinery's resource.ParseQuantity: a decimal number with a binary SI,
# decimal SI or exponent suffix.
_QUANTITY: Final = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:(?P<binary>[KMGTPE])i|(?P<si>[numkMGTPE])|[eE](?P<exponent>[+-]?[0-9]+))?"
)
_SI_EXPONENTS: Final = dict(zip("numkMGTPE", (-9, -6, -3, 3, 6, 9, 12, 15, 18), strict=True))
_BINARY_EXPONENTS: Final = {"K": 10, "M": 20, "G": 30, "T": 40, "P": 50, "E": 60}
_LABELS: Final = {"cpu": "CPU", "memory": "memory"}


def quantity_problem(value: object, resource: str, *, limit: bool) -> str | None:
    """Why Kubernetes could not use `value` as an amount of `resource`; None when it can.

    A limit of 0 CPU or memory is refused: Kubernetes reads it as "no limit", which is not
    what anyone writing 0 means.
    """
    amount = _amount(value)
    if amount is None:
        return f"{shown(value)} is not a Kubernetes quantity (like 500m, 2 or 1.5Gi)"
    maximum = MAX_CPU if resource == "cpu" else MAX_QUANTITY
    if amount > maximum:
        most = "9223372036854775807m" if resource == "cpu" else "9223372036854775807"
        reason = f"more than {most}, the most Kubernetes can count"
    elif amount < 0:
        reason = "negative"
    elif limit and not amount and resource in _LABELS:
        reason = "a limit of 0 is no limit to Kubernetes"
    elif "/" in resource and "kubernetes.io/" not in resource and amount != int(amount):
        reason = "extended resources come in whole units"
    else:
        return None
    return f"{shown(value)} is not a usable {_LABELS.get(resource, resource)} quantity ({reason})"


def is_quantity(value: object) -> bool:
    """True for a string (or number) Kubernetes accepts as a resource amount (>= 0)."""
    return quantity_problem(value, "", limit=False) is None


def quantity_amount(value: object) -> Decimal:
    """The amount Kubernetes reads from a quantity, in base units (cores for CPU), rounded up
    to 1n as the API server rounds. ValueError unless it is a quantity Kubernetes can hold."""
    amount = _amount(value)
    if amount is None or not abs(amount) <= MAX_QUANTITY:
        raise ValueError(f"{shown(value)} is not a quantity Kubernetes can hold")
    return amount


def _amount(value: object) -> Decimal | None:
    """What `quantity_amount` computes, but ±Infinity beyond any amount Kubernetes can hold
    (so that comparisons say "too large") and None for what is not a quantity at all."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    return _parsed(value)


#: Every run of a template parses the same few quantities (its limits, its requests): cached,
#: typed so that 1 and 1.0 stay apart. Decimals are immutable, so sharing them is safe.
@functools.lru_cache(maxsize=4096, typed=True)
def _parsed(value: str | int | float) -> Decimal | None:
    if isinstance(value, int):
        return _rounded(Decimal(value), 0)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):  # JSON 1e400 reads as inf
            return Decimal(value)
        value = repr(value)  # the text the Job gets, see `nexusd.kube.manifests`
    match = _QUANTITY.fullmatch(value)
    if match is None:
        return None
    exponent = match["exponent"] or "0"
    if len(exponent.lstrip("+-0")) > 9:  # only its sign matters, and int() may refuse it
        exponent = "-1000000000" if exponent[0] == "-" else "1000000000"
    shift = int(exponent) + _SI_EXPONENTS.get(match["si"] or "", 0)
    number = Decimal(f"{match['number']}e{shift}")  # exact: no context applies to a literal
    return _rounded(number, _BINARY_EXPONENTS.get(match["binary"] or "", 0))


def _rounded(number: Decimal, binary: int) -> Decimal:
    """`number * 2**binary` rounded away from zero to 1n, as resource.ParseQuantity does;
    orders of magnitude no quantity reaches are settled before any arithmetic."""
    if not number:
        return Decimal(0)
    if number.adjusted() > 40:  # >= 1e40: more than any int64 of any unit
        return Decimal("Infinity").copy_sign(number)
    if number.adjusted() < -40:  # < 1e-40 * 2**60 < 1n
        return _NANO.copy_sign(number)
    with localcontext() as context:
        context.prec = 100  # more digits than 1e40 * 2**60 in nano units: rounding is exact
        context.rounding = ROUND_UP
        return (number * (1 << binary)).quantize(_NANO)


def shown(value: object) -> str:
    """`value` as a message shows it: short, whatever the client sent (huge, deep, odd)."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 80 else repr(value[:77]) + "..."
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return "a very large integer"
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "an object"
    return "a list" if isinstance(value, list | tuple) else type(value).__name__

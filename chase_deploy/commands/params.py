"""Flag values: click parameter types that turn command-line text into typed values.

All parsing of flags happens here, at the CLI boundary; the library functions the commands call
take ints, floats, tuples and lists. A bad value raises ``FlagError``, which is both click's
``BadParameter`` and our ``BadInput``: the command group prints it as the usual one line
``error: --flag 'value': what to give`` with exit code 2, like any other bad input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import click

from train.errors import BadInput


class FlagError(click.BadParameter, BadInput):
    """A flag value that cannot be used; the message names the flag and what to give instead."""


def flag_name(param: click.Parameter | None, default: str = "value") -> str:
    """The flag a value was given for (``default`` when a type is used outside a command)."""
    opts = getattr(param, "opts", None)
    return opts[0] if opts else default


class _FlagType(click.ParamType):
    """A parameter type whose errors name the flag (``flag`` when used outside a command)."""

    flag = "value"

    def _flag(self, param: click.Parameter | None) -> str:
        return flag_name(param, self.flag)

    def refuse(self, value: Any, param: click.Parameter | None, why: str) -> FlagError:
        return FlagError(f"{self._flag(param)} {value!r}: {why}", param=param)


class _Hinted:
    """Turns a click range type's failure into ``--flag 'value': give <hint>``."""

    hint = ""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        try:
            return self.checked(super().convert(value, param, ctx), param, ctx)  # type: ignore[misc]
        except click.BadParameter:
            raise FlagError(
                f"{flag_name(param)} {value!r}: give {self.hint}", param=param
            ) from None

    def checked(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        return value


class IntRange(_Hinted, click.IntRange):
    """click's IntRange with our one-line message."""

    def __init__(self, min: int | None = None, max: int | None = None, hint: str = "") -> None:
        click.IntRange.__init__(self, min=min, max=max)
        self.hint = hint


class FloatRange(_Hinted, click.FloatRange):
    """click's FloatRange, finite values only, with our one-line message."""

    def __init__(
        self,
        min: float | None = None,
        min_open: bool = False,
        hint: str = "",
        max: float | None = None,
    ) -> None:
        click.FloatRange.__init__(self, min=min, min_open=min_open, max=max)
        self.hint = hint

    def checked(self, value: float, param: click.Parameter | None, ctx: click.Context | None):
        if not math.isfinite(value):
            self.fail("not finite", param, ctx)
        return value


class OneOf(click.Choice):
    """click's Choice with the message ``--flag 'x' is not one of a, b, c``."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value in self.choices:
            return value
        choices = ", ".join(self.choices)
        raise FlagError(f"{flag_name(param)} {value!r} is not one of {choices}", param=param)


class _IntList(_FlagType):
    """Integers >= ``lowest`` separated by commas, none listed twice."""

    lowest = 0
    what = "value"
    example = "0,1,2"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, list):
            return value
        parts = [p.strip() for p in str(value).split(",")]
        if not all(p.isdigit() and int(p) >= self.lowest for p in parts):
            bound = "positive integers" if self.lowest == 1 else f"integers >= {self.lowest}"
            raise self.refuse(
                value, param, f"give {bound} separated by commas, e.g. {self.example}"
            )
        numbers = [int(p) for p in parts]
        if len(set(numbers)) != len(numbers):
            raise self.refuse(value, param, f"a {self.what} is listed twice")
        return numbers


class BatchSizes(_IntList):
    """``1,8,32``: positive integers, none listed twice (``bench --batch``)."""

    name = "batch sizes"
    flag = "--batch"
    lowest, what, example = 1, "batch size", "1,8,32"


class Seeds(_IntList):
    """``0,1,2``: non-negative integers, none listed twice (``ablate --seeds``)."""

    name = "seeds"
    flag = "--seeds"
    lowest, what, example = 0, "seed", "0,1,2"


class BatchProfile(_FlagType):
    """``MIN:OPT:MAX`` (or one number for a fixed batch): an engine's batch profile (``build``)."""

    name = "profile"
    flag = "--batch"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, tuple):
            return value
        parts = str(value).split(":")
        if len(parts) == 1:
            parts = parts * 3
        if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
            raise self.refuse(value, param, "give MIN:OPT:MAX as positive integers, e.g. 1:8:32")
        lo, opt, hi = (int(p) for p in parts)
        if not lo <= opt <= hi:
            raise self.refuse(value, param, "need MIN <= OPT <= MAX, e.g. 1:8:32")
        return lo, opt, hi


class InputShape(_FlagType):
    """``N,C,H,W`` (or any rank >= 2) of positive integers (``slim --input-shape``)."""

    name = "shape"
    flag = "--input-shape"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, tuple):
            return value
        try:
            dims = tuple(int(p) for p in str(value).replace("x", ",").split(","))
        except ValueError:
            dims = ()
        if len(dims) < 2 or any(d < 1 for d in dims):
            raise self.refuse(
                value, param, "expected positive integers N,C,H,W such as 1,3,224,224"
            )
        return dims


def _items(value: str | Sequence[Any], flag: str) -> list[str]:
    items = value.split(",") if isinstance(value, str) else [str(i) for i in value]
    items = [i.strip() for i in items if i.strip()]
    if not items:
        raise FlagError(f"{flag}: empty; give a comma-separated list")
    return items


class NameList(_FlagType):
    """``a,b,...`` from a fixed vocabulary, in the given order, duplicates dropped."""

    name = "names"

    def __init__(self, choices: Sequence[str], what: str) -> None:
        self.choices, self.what = tuple(choices), what

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        flag = self._flag(param)
        names = _items(value, flag)
        unknown = [n for n in names if n not in self.choices]
        if unknown:
            raise FlagError(
                f"{flag}: unknown {self.what} {unknown[0]!r}; valid: {', '.join(self.choices)}",
                param=param,
            )
        return list(dict.fromkeys(names))


class FractionList(_FlagType):
    """``0.1,0.2``: sorted unique fractions, each in [0, 1)."""

    name = "fractions"

    def __init__(self, meaning: str, example: str) -> None:
        self.meaning, self.example = meaning, example

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        flag = self._flag(param)
        values = []
        for item in _items(value, flag):
            try:
                number = float(item)
            except ValueError:
                raise FlagError(
                    f"{flag}: {item!r} is not a number; e.g. {self.example}", param=param
                ) from None
            if not 0.0 <= number < 1.0:
                raise FlagError(
                    f"{flag}: {item} is outside [0, 1); it is {self.meaning}", param=param
                )
            values.append(number)
        return sorted(set(values))

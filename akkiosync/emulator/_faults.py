"""Fault injection: the failures to rehearse, and the seeded draw that picks one per request."""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, cast

# Appended to, never reordered: a seeded plan draws by walking the kinds in this order.
FAULT_KINDS = (
    "429",
    "500",
    "503",
    "slow",
    "drop_before",
    "drop_after",
    "late",
    "error_after",
    "408_after",
)
OK = "ok"  # a script step that injects nothing

# The status and message each answering kind sends. late, error_after and 408_after answer so
# only an add-rows POST (whose rows land anyway); any other request gets its stand-in's answer.
ANSWERS: Mapping[str, tuple[int, str]] = MappingProxyType(
    {
        "429": (429, "rate limited"),
        "500": (500, "internal server error (injected fault)"),
        "503": (503, "service unavailable (injected fault)"),
        "late": (504, "gateway timeout (injected fault)"),
        "error_after": (200, "internal error after storing (injected fault)"),
        "408_after": (408, "request timeout (injected fault)"),
    }
)
STAND_INS: Mapping[str, str] = MappingProxyType(
    {"late": "503", "error_after": "500", "408_after": "500"}
)

Only = Literal["all", "add"]
_ONLY = ("all", "add")
_JSON_KEYS = frozenset(("rates", "script", "seed", "only", "retry_after", "delay"))
_ROUNDING = 1e-9  # 0.1 + 0.2 + 0.7 is 1.0000000000000002, and must still be allowed


def _known(kinds: Sequence[str]) -> str:
    return ", ".join(kinds)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class FaultPlan:
    """Which faults to inject into ``/v1`` requests: a script first, then seeded random rates.

    ``script`` steps (a kind or ``"ok"``) are consumed one per eligible request; once they run out,
    each request draws at most one kind with the probabilities in ``rates``. ``only="add"`` makes
    only add-rows POSTs eligible. ``retry_after`` is the 429's header; ``delay`` is the seconds
    the backend takes: ``slow`` answers after it, ``late`` stores its rows after it. Invalid
    values raise ValueError.
    """

    rates: Mapping[str, float] = field(default_factory=dict)
    script: Sequence[str] = ()
    seed: int | None = None
    only: Only = "all"
    retry_after: float = 1.0
    delay: float = 2.0

    def __post_init__(self) -> None:
        rates = dict(self.rates)
        for kind, rate in rates.items():
            if kind not in FAULT_KINDS:
                raise ValueError(f"unknown fault kind {kind!r} (known: {_known(FAULT_KINDS)})")
            if not _is_number(rate) or not 0 <= rate <= 1:
                raise ValueError(f"the rate of {kind} must be a number from 0 to 1, not {rate!r}")
        total = math.fsum(rates.values())
        if total > 1 + _ROUNDING:
            raise ValueError(f"the fault rates add up to {total:g}: at most 1 is possible")
        if isinstance(self.script, str):
            raise ValueError(  # noqa: TRY004 - bad settings are ValueErrors, whatever their type
                "script must be a sequence of steps (FaultPlan.parse splits text)"
            )
        steps = (OK, *FAULT_KINDS)
        for step in self.script:
            if step not in steps:
                raise ValueError(f"unknown script step {step!r} (known: {_known(steps)})")
        if self.only not in _ONLY:
            raise ValueError(f"only must be one of {_known(_ONLY)}, not {self.only!r}")
        if self.seed is not None and not (_is_number(self.seed) and isinstance(self.seed, int)):
            raise ValueError(f"seed must be an integer, not {self.seed!r}")
        for name in ("retry_after", "delay"):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a number of seconds >= 0, not {value!r}")
            object.__setattr__(self, name, float(value))
        # Copies, read-only: a plan in use must not change under the emulator.
        frozen_rates = {kind: float(rate) for kind, rate in rates.items()}
        object.__setattr__(self, "rates", MappingProxyType(frozen_rates))
        object.__setattr__(self, "script", tuple(self.script))

    @classmethod
    def parse(
        cls,
        rates: Sequence[str] = (),
        script: str | None = None,
        seed: int | None = None,
        only: str = "all",
        retry_after: float = 1.0,
        delay: float = 2.0,
    ) -> FaultPlan:
        """A plan from command-line text: rates like ``["429=0.1", "drop_after=0.05"]`` (commas
        also separate them) and a script like ``"ok,drop_after,503"``."""
        parsed: dict[str, float] = {}
        for item in [rates] if isinstance(rates, str) else rates:
            for text in filter(None, (part.strip() for part in item.split(","))):
                kind, equals, value = (part.strip() for part in text.partition("="))
                if not equals or not kind:
                    raise ValueError(f"fault rate {text!r} is not KIND=PROBABILITY, e.g. 429=0.1")
                if kind in parsed:
                    raise ValueError(f"the rate of {kind} is given twice")
                try:
                    parsed[kind] = float(value)
                except ValueError:
                    raise ValueError(f"fault rate {text!r}: {value!r} is not a number") from None
        steps = tuple(filter(None, (step.strip() for step in (script or "").split(","))))
        if only not in _ONLY:
            raise ValueError(f"only must be one of {_known(_ONLY)}, not {only!r}")
        return cls(parsed, steps, seed, cast(Only, only), retry_after, delay)

    @classmethod
    def from_json(cls, settings: Mapping[str, Any]) -> FaultPlan:
        """A plan from the JSON object that ``POST /_emulator/faults`` carries."""
        unknown = sorted(settings.keys() - _JSON_KEYS)
        if unknown:
            raise ValueError(f"unknown fault plan settings {unknown} (known: {sorted(_JSON_KEYS)})")
        if not isinstance(settings.get("rates", {}), Mapping):
            raise ValueError(  # noqa: TRY004 - bad settings are ValueErrors, whatever their type
                'rates must be an object such as {"429": 0.1}'
            )
        if not isinstance(settings.get("script", []), list):
            raise ValueError(  # noqa: TRY004 - bad settings are ValueErrors, whatever their type
                'script must be an array such as ["ok", "drop_after"]'
            )
        return cls(**settings)

    def to_json(self) -> dict[str, Any]:
        """The plan as ``GET /_emulator/faults`` shows it (and ``from_json`` reads it back)."""
        return {
            "rates": dict(self.rates),
            "script": list(self.script),
            "seed": self.seed,
            "only": self.only,
            "retry_after": self.retry_after,
            "delay": self.delay,
        }


class FaultDraw:
    """A plan in use: what is left of its script, its random stream, and the faults fired.

    Not thread-safe: the emulator calls it under its lock.
    """

    def __init__(self, plan: FaultPlan | None) -> None:
        self.fired = dict.fromkeys(FAULT_KINDS, 0)
        self.use(plan)

    def use(self, plan: FaultPlan | None) -> None:
        """Start `plan` afresh (None injects nothing); the counts of fired faults carry on."""
        self.plan = plan
        self._script = deque(plan.script if plan else ())
        # Reproducible on purpose; nothing here is a secret.
        self._random = random.Random(plan.seed if plan else None)  # noqa: S311

    def draw(self, plan: FaultPlan) -> str | None:
        """The fault for one eligible request under `plan`, or None for a normal answer.

        A request read under a plan that was replaced meanwhile gets no fault.
        """
        if plan is not self.plan:
            return None
        if self._script:
            kind = self._script.popleft()
        elif plan.rates:
            kind = self._pick(plan.rates, self._random.random())
        else:
            kind = OK
        if kind == OK:
            return None
        self.fired[kind] += 1
        return kind

    @staticmethod
    def _pick(rates: Mapping[str, float], point: float) -> str:
        """Walk the cumulative rates, in FAULT_KINDS order, to the one `point` falls in."""
        edge = 0.0
        for kind in FAULT_KINDS:
            edge += rates.get(kind, 0.0)
            if point < edge:
                return kind
        return OK

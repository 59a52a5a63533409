"""Code schemes as data (编码规则): how many digits each level's codes have and how many leading digits name the
parent, per deployment. `data/code_schemes/default.json` is the national chain (9/12/15 digits, micro-grids 17–18);
a deployment declares its own (e.g. `devzone.json`: 10-digit villages, 16-digit dedicated grids and their 18–19-digit
micro-grids) and imports name it (``--code-scheme devzone`` or a path to a JSON file of the same form). Codes that do
not fit are reported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from data import DATA_DIR
from geo.errors import DomainError

SCHEMES_DIR = DATA_DIR / "code_schemes"
LEVELS = ("streets", "communities", "grids", "micro_grids")


class UnknownCodeScheme(DomainError, ValueError):
    """No code scheme has this name, or its file is not a valid scheme."""

    slug = "unknown-code-scheme"
    title = "Unknown code scheme"


@dataclass(frozen=True)
class LevelCodes:
    """One level's codes: the allowed lengths, and the lengths of the parent's code (its leading digits)."""

    lengths: tuple[int, ...]
    parent_lengths: tuple[int, ...] = ()

    def parent_of(self, code: str) -> str | None:
        """The parent's code: the first of `parent_lengths` shorter than the code (None when there is none)."""
        return next((code[:n] for n in self.parent_lengths if n < len(code)), None)


@dataclass(frozen=True)
class CodeScheme:
    name: str
    levels: dict[str, LevelCodes]

    def level(self, name: str) -> LevelCodes | None:
        return self.levels.get(name)


def available() -> list[str]:
    """The names of the schemes shipped in data/code_schemes."""
    return sorted(p.stem for p in SCHEMES_DIR.glob("*.json"))


def load_scheme(name_or_path: str | Path | None = None) -> CodeScheme:
    """A scheme by name (data/code_schemes/<name>.json) or from a JSON file; the default scheme for None."""
    ref = str(name_or_path or "default")
    path = Path(ref) if ref.endswith(".json") else SCHEMES_DIR / f"{ref}.json"
    if not ref.endswith(".json") and ref not in available():
        raise UnknownCodeScheme(f"no code scheme {ref!r}; schemes are {', '.join(available())} "
                                "(or give a .json file)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        levels = {
            lv: LevelCodes(tuple(int(n) for n in spec["lengths"]),
                           tuple(int(n) for n in spec.get("parent_lengths", ())))
            for lv, spec in doc["levels"].items() if lv in LEVELS
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UnknownCodeScheme(f"code scheme {ref!r} is not readable: {exc}") from exc
    return CodeScheme(str(doc.get("name", Path(ref).stem)), levels)


@cache
def filter_lengths() -> dict[str, tuple[int, int]]:
    """Per level, the (fewest, most) digits a code filter accepts: the span of every shipped scheme's lengths
    (streets 9, communities 10–12, grids 15–16 …), so a declared scheme's codes work wherever filters take codes."""
    spans: dict[str, tuple[int, int]] = {}
    for name in available():
        for level, codes in load_scheme(name).levels.items():
            lo, hi = spans.get(level, (min(codes.lengths), max(codes.lengths)))
            spans[level] = (min(lo, *codes.lengths), max(hi, *codes.lengths))
    return spans

"""Scenario scripts: realistic multi-turn conversations the load tester plays.

A scenario is a ``.jsonl`` file, one user turn per line::

    {"text": "Explain this error", "context": {"use_case": "agent"}}
    {"text": "What is in this picture?", "attachments": [{"kind": "image", "png": [64, 48]}]}

``text`` is required; ``context`` is sent as the message context; an attachment with
``png: [width, height]`` is generated in code (a small valid PNG), one with ``mime``
and ``b64`` is sent as given. A conversation that plays more turns than the script
has starts the script again.
"""

from __future__ import annotations

import base64
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

BUILTIN_DIR = Path(__file__).resolve().parent / "scenarios"


@dataclass(frozen=True)
class Attachment:
    kind: str
    mime: str
    data: bytes


@dataclass(frozen=True)
class ScenarioTurn:
    text: str
    attachments: tuple[Attachment, ...] = ()
    context: dict[str, Any] | None = field(default=None, hash=False)


@dataclass(frozen=True)
class Scenario:
    name: str
    turns: tuple[ScenarioTurn, ...]

    def turn(self, i: int) -> ScenarioTurn:
        return self.turns[i % len(self.turns)]


def make_png(width: int, height: int, seed: int = 0) -> bytes:
    """A valid RGB PNG of ``width`` × ``height`` with a gradient (deterministic per seed)."""
    if not (0 < width <= 4096 and 0 < height <= 4096):
        raise ValueError("png size must be 1..4096 per side")

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter: none
        for x in range(width):
            rows += bytes(((x * 255 // width + seed) & 255, (y * 255 // height) & 255, (x + y + seed * 7) & 255))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(bytes(rows), 6))
        + chunk(b"IEND", b"")
    )


def _attachment(spec: dict[str, Any], seed: int) -> Attachment:
    kind = str(spec.get("kind", "image"))
    if "png" in spec:
        w, h = spec["png"]
        return Attachment(kind, "image/png", make_png(int(w), int(h), seed))
    if "b64" in spec:
        return Attachment(kind, str(spec["mime"]), base64.b64decode(spec["b64"]))
    raise ValueError("an attachment needs 'png': [w, h] or 'mime' + 'b64'")


def parse_scenario(name: str, text: str) -> Scenario:
    """Parse the jsonl ``text`` of one scenario; raises ``ValueError`` naming the bad line."""
    turns: list[ScenarioTurn] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            obj = orjson.loads(line)
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise ValueError("each line must be an object with a string 'text'")
            atts = tuple(_attachment(a, lineno) for a in obj.get("attachments", ()))
            ctx = obj.get("context")
            if ctx is not None and not isinstance(ctx, dict):
                raise ValueError("'context' must be an object")
            turns.append(ScenarioTurn(obj["text"], atts, ctx))
        except (orjson.JSONDecodeError, ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"scenario {name} line {lineno}: {exc}") from None
    if not turns:
        raise ValueError(f"scenario {name} has no turns")
    return Scenario(name, tuple(turns))


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.jsonl"))


def load_scenarios(specs: list[str] | None = None) -> list[Scenario]:
    """Built-in names (``coding``) or ``.jsonl`` paths; none given: every built-in scenario."""
    out: list[Scenario] = []
    for spec in specs or builtin_names():
        path = Path(spec)
        if not path.suffix:
            path = BUILTIN_DIR / f"{spec}.jsonl"
        if not path.is_file():
            raise ValueError(f"no scenario {spec!r} (built-in: {', '.join(builtin_names())})")
        out.append(parse_scenario(path.stem, path.read_text(encoding="utf-8")))
    return out

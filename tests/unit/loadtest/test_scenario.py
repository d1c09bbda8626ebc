"""Scenario scripts: the built-in ones load, generated images are real PNGs, bad files say where."""

from __future__ import annotations

import struct
import zlib

import pytest

from loadtest.scenario import builtin_names, load_scenarios, make_png, parse_scenario


def test_builtin_scenarios_cover_the_documented_kinds() -> None:
    names = builtin_names()
    assert {"coding", "small_talk", "creative", "homework", "mixed_media"} <= set(names)
    for s in load_scenarios():
        assert len(s.turns) >= 5, s.name
        assert all(t.text for t in s.turns)
    mixed = load_scenarios(["mixed_media"])[0]
    assert any(a.kind == "image" and a.mime == "image/png" for t in mixed.turns for a in t.attachments)


def test_generated_png_is_valid() -> None:
    png = make_png(5, 3, seed=1)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(png):
        (size,) = struct.unpack(">I", png[pos : pos + 4])
        kind, body = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + size]
        (crc,) = struct.unpack(">I", png[pos + 8 + size : pos + 12 + size])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        chunks[kind] = body
        pos += 12 + size
    assert list(chunks) == [b"IHDR", b"IDAT", b"IEND"]
    width, height = struct.unpack(">II", chunks[b"IHDR"][:8])
    assert (width, height) == (5, 3)
    assert len(zlib.decompress(chunks[b"IDAT"])) == 3 * (1 + 5 * 3)


def test_turns_cycle_when_a_conversation_outlasts_its_script() -> None:
    s = parse_scenario("t", '{"text": "a"}\n\n# comment\n{"text": "b", "context": {"use_case": "chat"}}\n')
    assert [s.turn(i).text for i in range(5)] == ["a", "b", "a", "b", "a"]
    assert s.turn(1).context == {"use_case": "chat"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"text": "ok"}\n{"txt": "no"}', "line 2"),
        ("not json", "line 1"),
        ('{"text": "x", "attachments": [{"kind": "image"}]}', "png"),
        ("", "no turns"),
    ],
)
def test_a_bad_scenario_names_its_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_scenario("bad", text)


def test_unknown_scenario_lists_the_builtins() -> None:
    with pytest.raises(ValueError, match="coding"):
        load_scenarios(["nope"])

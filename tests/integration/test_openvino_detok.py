"""Streaming text from token ids (engines/detok.py) with the shipped model's real tokenizer:
the pieces a client receives join up to exactly the text of the whole sequence, no piece
carries half a character, and every token is counted once, for several sequences decoded
in one call (what the openvino engine does after each step)."""

from __future__ import annotations

import pytest

from rtserver.engines.detok import TextStream, advance

pytestmark = pytest.mark.model

TEXTS = [
    "Plain English, with punctuation: commas, dots... and \"quotes\".",
    "Accents: déjà vu, naïve façade, Ærøskøbing, São Paulo.",
    "Emoji one by one: 😀🎉👩‍💻🇫🇷 and a thumbs up 👍🏽.",
    "CJK: 日本語のテキスト、中文文本。한국어 텍스트.",
    "    code:\n\tdef f(x):\n\t\treturn x ** 2  # squares\n",
]


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    og = pytest.importorskip("openvino_genai")
    from rtserver.engines.models import resolve_model

    return og.Tokenizer(str(resolve_model("smollm2-135m")))


def _ids(tokenizer, text: str) -> list[int]:  # type: ignore[no-untyped-def]
    return [int(i) for i in tokenizer.encode(text, add_special_tokens=False).input_ids.data[0]]


def test_streamed_pieces_join_to_the_whole_text_one_token_at_a_time(tokenizer) -> None:  # type: ignore[no-untyped-def]
    all_ids = [_ids(tokenizer, t) for t in TEXTS]
    streams = [TextStream() for _ in TEXTS]
    pieces: list[list[str]] = [[] for _ in TEXTS]
    counted = [0] * len(TEXTS)
    for step in range(max(len(ids) for ids in all_ids)):
        batch = []
        for i, ids in enumerate(all_ids):
            if step < len(ids):
                streams[i].ids.append(ids[step])
                batch.append((i, step == len(ids) - 1))
        news = advance(tokenizer.decode, [(streams[i], last) for i, last in batch])
        for (i, _), new in zip(batch, news, strict=True):
            if new is not None:
                pieces[i].append(new[0])
                counted[i] += new[1]
    for i, ids in enumerate(all_ids):
        assert "".join(pieces[i]) == tokenizer.decode(ids), TEXTS[i]
        assert counted[i] == len(ids)
        assert not any("\ufffd" in p for p in pieces[i]), pieces[i]
    # the multi-byte texts really were split inside characters by the tokenizer
    assert any(len(p) > 1 for p in pieces[2])


def test_a_character_split_over_tokens_is_sent_whole_once_its_last_token_arrives(tokenizer) -> None:  # type: ignore[no-untyped-def]
    ids = _ids(tokenizer, "ok 🎉")
    head = _ids(tokenizer, "ok")
    stream = TextStream()
    sent: list[tuple[str, int] | None] = []
    for token in ids:
        stream.ids.append(token)
        sent += advance(tokenizer.decode, [(stream, False)])
    assert len(ids) - len(head) > 2  # the emoji takes several tokens after "ok"
    printed = [s for s in sent if s is not None]
    assert printed[-1][0].endswith("🎉") and "🎉" not in "".join(p for p, _ in printed[:-1])
    assert sent[-2] is None  # the token before the last one completed nothing printable
    assert sum(n for _, n in printed) == len(ids)

"""The gpu engine's pure parts: sampling functions, the slot table (KV retention), detokenisation,
and the refusal of architectures its forward does not implement."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="the gpu engine needs torch (the 'gpu' extra)")

from rtserver.engines.gpu.sampling import penalize, sample, top_p_keep, uniform  # noqa: E402
from rtserver.engines.gpu.slots import SlotTable  # noqa: E402


def _draw(logits: list[float], *, seeds: range, temperature: float = 1.0, top_p: float = 1.0,
          step: int = 0) -> list[int]:
    n = len(seeds)
    batch = torch.tensor([logits] * n)
    return sample(
        batch, temperature=torch.full((n,), temperature), top_p=torch.full((n,), top_p),
        penalty=torch.ones(n), seen=None, seeds=torch.tensor(list(seeds)), steps=torch.full((n,), step),
    ).tolist()


def test_a_seed_gives_the_same_tokens_whatever_shares_the_batch() -> None:
    logits = torch.randn(50).tolist()
    alone = [_draw(logits, seeds=range(7, 8), step=s)[0] for s in range(20)]
    in_batch = [_draw(logits, seeds=range(0, 16), step=s)[7] for s in range(20)]
    assert alone == in_batch
    other_seed = [_draw(logits, seeds=range(8, 9), step=s)[0] for s in range(20)]
    assert other_seed != alone


def test_uniform_noise_is_in_the_open_interval_and_roughly_flat() -> None:
    u = uniform(torch.arange(64), torch.zeros(64, dtype=torch.int64), 4096)
    assert float(u.min()) > 0.0 and float(u.max()) < 1.0
    assert 0.45 < float(u.mean()) < 0.55
    assert 0.05 < float((u < 0.1).float().mean()) < 0.15


def test_top_p_keeps_the_smallest_nucleus_reaching_the_mass() -> None:
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]] * 4)
    keep = top_p_keep(probs, torch.tensor([0.4, 0.75, 0.85, 1.0])).tolist()
    assert keep[0] == [False, True, False, False]  # 0.5 alone reaches 0.4
    assert keep[1] == [False, True, False, True]  # 0.5 + 0.3
    assert keep[2] == [False, True, True, True]  # 0.8 < 0.85: the 0.15 joins
    assert keep[3] == [True, True, True, True]


def test_sampling_draws_only_inside_top_p_in_proportion() -> None:
    logits = torch.log(torch.tensor([0.05, 0.5, 0.15, 0.3])).tolist()
    draws = _draw(logits, seeds=range(4000), top_p=0.75)
    assert set(draws) == {1, 3}
    share = draws.count(1) / len(draws)  # 0.5 / 0.8 = 0.625 after renormalising
    assert 0.58 < share < 0.67
    everything = _draw(logits, seeds=range(4000))
    assert set(everything) == {0, 1, 2, 3}


def test_temperature_zero_is_argmax_and_low_temperature_concentrates() -> None:
    logits = [0.0, 2.0, 1.0, 1.9]
    assert set(_draw(logits, seeds=range(200), temperature=0.0)) == {1}
    cold = _draw(logits, seeds=range(2000), temperature=0.1)
    hot = _draw(logits, seeds=range(2000), temperature=2.0)
    assert cold.count(1) > hot.count(1)


def test_repetition_penalty_follows_transformers() -> None:
    logits = torch.tensor([[2.0, -2.0, 1.0, -1.0]])
    seen = torch.tensor([[True, True, False, False]])
    out = penalize(logits, seen, torch.tensor([2.0])).tolist()
    assert out == [[1.0, -4.0, 1.0, -1.0]]  # positive divided, negative multiplied, unseen untouched
    greedy = sample(logits, temperature=torch.zeros(1), top_p=torch.ones(1), penalty=torch.tensor([4.0]),
                    seen=seen, seeds=torch.zeros(1, dtype=torch.int64), steps=torch.zeros(1, dtype=torch.int64))
    assert greedy.tolist() == [2]  # 2.0 / 4 = 0.5 < 1.0


# ------------------------------------------------------------------ slot table
def test_a_returning_conversation_reuses_its_longest_common_prefix() -> None:
    table = SlotTable(4)
    slot, reuse = table.acquire("a", [1, 2, 3])  # type: ignore[misc]
    assert reuse == 0
    table.release(slot, "a", [1, 2, 3, 9, 9])
    assert table.retained("a") == 5
    assert table.acquire("a", [1, 2, 3, 9, 7, 7]) == (slot, 4)
    table.release(slot, "a", [1, 2, 3, 9, 7, 7, 5])
    assert table.acquire("a", [1, 2, 3, 9, 7, 7, 5]) == (slot, 6)  # one token is always left to prefill
    stats = table.stats()
    assert (stats.hits, stats.misses, stats.reused_tokens) == (2, 1, 10)


def test_free_slots_go_first_then_the_least_recently_used_retained_one_is_evicted() -> None:
    table = SlotTable(2)
    for key in ("a", "b"):
        slot, _ = table.acquire(key, [1, 2])  # type: ignore[misc]
        table.release(slot, key, [1, 2, 3])
    slot_a = next(i for i in range(2) if table.acquire("a", [1, 2, 3, 4]) == (i, 3))
    table.release(slot_a, "a", [1, 2, 3, 4])  # a is now more recent than b
    slot_c, reuse = table.acquire("c", [1, 2])  # type: ignore[misc]
    assert reuse == 0 and slot_c != slot_a
    assert table.retained("b") == 0 and table.retained("a") == 4
    assert table.stats().evictions == 1
    assert table.acquire("d", [1]) is not None  # evicts a
    assert table.acquire("e", [1]) is None  # both busy: the request must wait
    assert table.stats().retained_conversations == 0


def test_a_request_without_a_key_frees_its_slot() -> None:
    table = SlotTable(1)
    slot, _ = table.acquire(None, [1, 2])  # type: ignore[misc]
    table.release(slot, None, [1, 2, 3])
    assert table.stats().retained_tokens == 0
    assert table.acquire("x", [1, 2]) == (slot, 0)


# ------------------------------------------------------------------ detokenisation, architectures
def test_incremental_text_equals_the_full_decode() -> None:
    pytest.importorskip("transformers")
    from rtserver.engines.gpu.detok import Detokenizer
    from tests.fixtures.tiny_model import build_tokenizer

    tok = build_tokenizer(64)
    ids = [5, 9, 2, 30, 31, 0, 12, 7, 7, 40, 41, 42, 43, 44, 45, 46, 47]
    detok = Detokenizer(tok)
    pieces = [detok.push(i) for i in ids]
    assert "".join(pieces) + detok.flush() == tok.decode(ids, skip_special_tokens=True)


def test_a_character_split_over_byte_tokens_is_held_back_until_complete() -> None:
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from rtserver.engines.gpu.detok import Detokenizer

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["plain ascii words"], trainers.BpeTrainer(vocab_size=len(alphabet) + 4,
                                                                       initial_alphabet=alphabet))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe)
    text = "日本語 héllo テキスト wörld " * 4
    ids = tok.encode(text)
    assert len(ids) > len(text)  # multi-byte characters are split over several tokens
    detok = Detokenizer(tok)
    pieces = [detok.push(i) for i in ids]
    assert not any("\ufffd" in p for p in pieces)
    assert "".join(pieces) + detok.flush() == text


def test_unsupported_architectures_are_refused_with_the_reason() -> None:
    transformers = pytest.importorskip("transformers")
    from rtserver.engines.gpu.model import UnsupportedModel, check_supported, rope_inv_freq
    from rtserver.exceptions import EngineError

    with pytest.raises(UnsupportedModel, match="gpt2"):
        check_supported(transformers.GPT2Config())
    with pytest.raises(EngineError, match="sliding-window"):
        check_supported(transformers.Qwen2Config(use_sliding_window=True))
    with pytest.raises(UnsupportedModel, match="dynamic"):
        rope_inv_freq(transformers.LlamaConfig(rope_scaling={"rope_type": "dynamic", "factor": 2.0}))
    inv, scale = rope_inv_freq(transformers.LlamaConfig(
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192}))
    assert inv.shape[0] == 64 and scale == 1.0

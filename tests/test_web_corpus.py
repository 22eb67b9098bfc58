"""common_utils.tasks.web_corpus: the planted corpus and instruction pool of Lab-4.2 (no model needed).

pydoc_data's text changes with the Python version, so these tests check properties (counts per kind,
determinism, checksums, what each planted kind looks like), never exact texts."""

from __future__ import annotations

import random
import statistics
from collections import Counter

from common_utils.tasks import web_corpus as wc

import pytest

SMALL = wc.CorpusSpec(n_clean=120, exact_dup=8, near_dup=16, boilerplate=6, wrong_language=6, pii=10,
                      too_short=5, too_long=3, decoy=4, seed=3)


@pytest.fixture(scope="module")
def corpus() -> list[wc.Document]:
    return wc.build_corpus(SMALL)


def test_counts_per_kind_and_unique_ids(corpus) -> None:
    counts = Counter(d.kind for d in corpus)
    assert counts == {"clean": 120, "exact_dup": 8, "near_dup": 16, "boilerplate": 6, "wrong_language": 6,
                      "pii": 10, "too_short": 5, "too_long": 3, "decoy": 4}
    assert len({d.id for d in corpus}) == len(corpus)
    assert set(counts) <= set(wc.KINDS)


def test_deterministic_within_one_interpreter_and_seed_matters(corpus) -> None:
    again = wc.build_corpus(SMALL)
    assert [d.as_dict() for d in again] == [d.as_dict() for d in corpus]
    other = wc.build_corpus(wc.CorpusSpec(**{**SMALL.__dict__, "seed": 4}))
    assert [d.text for d in other] != [d.text for d in corpus]


def test_duplicates_point_at_clean_documents(corpus) -> None:
    by_id = {d.id: d for d in corpus}
    for doc in corpus:
        if doc.kind == "exact_dup":
            assert by_id[doc.source].kind == "clean" and by_id[doc.source].text == doc.text
        elif doc.kind == "near_dup":
            assert by_id[doc.source].kind == "clean" and by_id[doc.source].text != doc.text
        else:
            assert doc.source is None
    sources = [d.source for d in corpus if d.source]
    assert len(sources) == len(set(sources)), "each clean document is copied at most once"
    assert len(wc.duplicate_pairs(corpus)) == 24 and len(wc.duplicate_pairs(corpus, ("near_dup",))) == 16


def test_near_duplicates_replace_five_percent_of_words(corpus) -> None:
    by_id = {d.id: d for d in corpus}
    near = [d for d in corpus if d.kind == "near_dup"]
    changed = [sum(a != b for a, b in zip(d.text.split(), by_id[d.source].text.split())) /
               len(d.text.split()) for d in near]
    assert all(0 < c <= 0.1 for c in changed)
    sims = [wc.jaccard(wc.shingles(d.text), wc.shingles(by_id[d.source].text)) for d in near]
    assert 0.4 < statistics.median(sims) < 0.85


def test_clean_documents_are_not_near_duplicates_of_each_other(corpus) -> None:
    clean = [wc.shingles(d.text) for d in corpus if d.kind == "clean"]
    worst = max(wc.jaccard(a, b) for i, a in enumerate(clean) for b in clean[i + 1:])
    assert worst <= 0.2


def test_pii_values_are_synthetic_and_checksums_hold(corpus) -> None:
    planted = [(kind, value) for d in corpus if d.kind == "pii" for kind, value in d.pii]
    assert {kind for kind, _ in planted} == set(wc.PII_KINDS)
    for doc in corpus:
        for _, value in doc.pii:
            assert value in doc.text
    for kind, value in planted:
        if kind == "email":
            assert value.rsplit(".", 1)[0].endswith("@example")
        elif kind == "phone":
            assert "555-01" in value
        elif kind == "tw_id":
            assert wc.tw_id_check_digit(value[0], value[1:9]) == value[9]
        elif kind == "card":
            digits = value.replace(" ", "")
            assert digits.startswith("400000") and wc.luhn_check_digit(digits[:-1]) == digits[-1]


def test_known_checksums() -> None:
    assert wc.luhn_check_digit("411111111111111") == "1"  # the well-known test card 4111 1111 1111 1111
    assert wc.tw_id_check_digit("A", "12345678") == "9"  # A123456789, the textbook example
    with pytest.raises(ValueError, match="unknown PII kind"):
        wc.synthetic_pii("passport", random.Random(0))


def test_other_kinds_look_like_their_label(corpus) -> None:
    for doc in corpus:
        words = len(doc.text.split())
        if doc.kind == "too_short":
            assert words < 10
        elif doc.kind == "too_long":
            assert words > 600
        elif doc.kind == "wrong_language":
            assert doc.language != "en" and sum(ch.isascii() for ch in doc.text) / len(doc.text) < 0.6
        elif doc.kind == "clean":
            assert 30 <= words <= 200


def test_too_many_documents_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="distinct paragraphs"):
        wc.build_corpus(wc.CorpusSpec(n_clean=100_000))


def test_instruction_pool_labels() -> None:
    pool = wc.instruction_pool(40, 3, seed=1)
    counts = Counter(r["kind"] for r in pool)
    assert counts == {"clean": 40, "wrong_answer": 3, "empty_answer": 3, "copied_input": 3, "duplicate": 3}
    assert len({r["id"] for r in pool}) == len(pool)
    by_id = {r["id"]: r for r in pool}
    for row in pool:
        if row["kind"] == "clean":
            continue
        source = by_id[row["source"]]
        assert source["kind"] == "clean" and source["input"] == row["input"]
        expected = {"duplicate": source["output"], "empty_answer": "{}", "copied_input": row["input"]}
        if row["kind"] in expected:
            assert row["output"] == expected[row["kind"]]
        else:
            assert row["output"] != source["output"]
    assert wc.instruction_pool(40, 3, seed=1) == pool
    with pytest.raises(ValueError, match="clean rows"):
        wc.instruction_pool(8, 3)

"""common_utils.reference.data_selection (taught in Lab-4.2's notebooks): filters, PII masking, MinHash/LSH
against datasketch, k-center greedy, IFD on a tiny random model. No course model needed."""

from __future__ import annotations

import random

from common_utils.reference import data_selection as ds
from common_utils.tasks import web_corpus as wc

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def test_heuristic_flags_on_each_kind() -> None:
    english = " ".join(["The interpreter evaluates each expression from left to right."] * 4)
    assert not any(ds.heuristic_flags(english).values())
    assert ds.heuristic_flags("程式語言的語法簡潔,適合初學者學習。" * 3)["non_latin_script"]
    assert ds.heuristic_flags("Too short.")["too_short"]
    assert ds.heuristic_flags(english * 30)["too_long"]
    assert ds.heuristic_flags("Accept all cookies\n" * 3 + english)["repeated_lines"]
    assert ds.heuristic_flags(english + " We use cookies.")["boilerplate_phrase"]
    assert ds.precision_recall([True, True, False], [True, False, True]) == {
        "precision": 0.5, "recall": 0.5, "flagged": 2, "true": 2}


def test_pii_masking_uses_checksums() -> None:
    rng = random.Random(0)
    values = {kind: wc.synthetic_pii(kind, rng) for kind in wc.PII_KINDS}
    text = "Write to {email}, call {phone}, ID {tw_id}, card {card}.".format(**values)
    masked, found = ds.mask_pii(text)
    assert all(v not in masked for v in values.values()) and {k for k, _ in found} == set(wc.PII_KINDS)
    decoy = "Part A123456780 and order 4000001234567890."  # checksums fail
    assert ds.tw_id_valid("A123456789") and not ds.tw_id_valid("A123456780")
    assert ds.luhn_valid("4111 1111 1111 1111") and not ds.luhn_valid("4000001234567890")
    assert ds.mask_pii(decoy)[1] == [] and len(ds.mask_pii(decoy, use_checksum=False)[1]) == 2


def test_minhash_estimates_jaccard_and_banding_matches_datasketch() -> None:
    datasketch = pytest.importorskip("datasketch")
    rng = random.Random(1)
    vocabulary = [f"w{i}" for i in range(400)]
    base = [" ".join(rng.choice(vocabulary) for _ in range(120)) for _ in range(30)]
    near = [wc.replace_words(t, 0.05, vocabulary, rng) for t in base[:10]]
    docs = {f"d{i}": t for i, t in enumerate(base + near)}
    a, b = ds.minhash_permutations(128, seed=0)
    sigs = {k: ds.minhash_signature(ds.word_shingles(t), a, b) for k, t in docs.items()}
    exact = [wc.jaccard(ds.word_shingles(base[i]), ds.word_shingles(near[i])) for i in range(10)]
    est = [ds.estimated_jaccard(sigs[f"d{i}"], sigs[f"d{30 + i}"]) for i in range(10)]
    assert np.mean(np.abs(np.array(est) - np.array(exact))) < 0.08
    bands, rows = ds.lsh_params(0.4, 128)
    assert bands * rows <= 128
    lsh = datasketch.MinHashLSH(num_perm=128, params=(bands, rows))
    for key, sig in sigs.items():
        lsh.insert(key, datasketch.MinHash(hashvalues=sig, scheme="legacy"))
    library = {tuple(sorted((k, o))) for k, s in sigs.items()
               for o in lsh.query(datasketch.MinHash(hashvalues=s, scheme="legacy")) if o != k}
    assert ds.lsh_candidates(sigs, bands, rows) == library
    found = ds.near_duplicate_pairs(sigs, 0.4, 128)
    assert {(f"d{i}", f"d{30 + i}") for i in range(10)} <= {tuple(sorted(p, key=lambda k: int(k[1:]))) for p in found}


def test_s_curve_and_params() -> None:
    assert ds.candidate_probability(1.0, 8, 16) == pytest.approx(1.0)
    assert ds.candidate_probability(0.0, 8, 16) == pytest.approx(0.0)
    low, high = ds.lsh_params(0.3, 128), ds.lsh_params(0.8, 128)
    assert (1 / low[0]) ** (1 / low[1]) < (1 / high[0]) ** (1 / high[1])  # the S-curve moves with the threshold


def test_k_center_greedy_and_selection() -> None:
    points = torch.nn.functional.normalize(torch.randn(60, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    chosen = ds.k_center_greedy(points, 10)
    assert len(set(chosen)) == 10 and chosen[0] == 0
    radius = ds.covering_radius(points, chosen)
    assert ds.covering_radius(points, list(range(60))) == pytest.approx(0.0, abs=1e-6)
    assert radius < ds.covering_radius(points, list(range(10)))
    ifd = torch.linspace(0.1, 1.5, 60)  # the last rows have IFD >= 1 and must never be selected
    picked = ds.select_ifd_diverse(ifd, points, 8)
    assert len(picked) == 8 and all(ifd[i] < 1 for i in picked)


def test_arm_rows() -> None:
    pool = [{"id": f"r{i}"} for i in range(20)]
    assert ds.arm_rows(pool, "all", 0.3, 0) == pool
    assert len(ds.arm_rows(pool, "random", 0.3, 0)) == 6
    assert ds.arm_rows(pool, "random", 0.3, 0) == ds.arm_rows(pool, "random", 0.3, 0)
    assert ds.arm_rows(pool, "selected", 0.3, 0, ["r3", "r1"]) == [pool[3], pool[1]]
    assert ds.arm_rows(pool, "base", 0.3, 0) == []
    with pytest.raises(ValueError, match="unknown arm"):
        ds.arm_rows(pool, "best", 0.3, 0)


def test_answer_nll_matches_transformers_loss_on_a_tiny_model() -> None:
    from tiny_models import random_llama

    model = random_llama(vocab_size=64, intermediate_size=64, layers=2).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9, 0], [5, 6, 7, 8, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]])
    labels = torch.tensor([[-100, -100, 7, 8, 9, -100], [-100, -100, 7, 8, -100, -100]])
    ours = ds.answer_nll(model, {"input_ids": ids, "attention_mask": mask, "labels": labels})
    for i, n in enumerate((5, 4)):
        with torch.inference_mode():
            loss = model(input_ids=ids[i:i + 1, :n], labels=labels[i:i + 1, :n]).loss
        assert ours[i].item() == pytest.approx(loss.item(), rel=1e-4)

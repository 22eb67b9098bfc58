"""A small web-like corpus with planted problems and their ground truth (Lab-4.2 Data Filtering).

Why a built corpus: precision and recall of a filter are only computable when every document says what is
wrong with it. Clean documents are paragraphs of CPython's `pydoc_data.topics` (ships with every Python,
offline, PSF licence); the builder then plants, deterministically from a seed:

    exact_dup       a verbatim copy of a clean document
    near_dup        a copy with `near_dup_rate` of its words replaced by other corpus words
    boilerplate     cookie banners, navigation bars, newsletter footers (repeated short lines)
    wrong_language  zh-TW, Japanese, Korean, Russian and Greek paragraphs written for this builder
    pii             a clean paragraph plus a sentence with synthetic PII (see below)
    too_short       a few words
    too_long        twenty paragraphs glued together
    decoy           a clean paragraph plus ID-like and card-like numbers whose checksums fail (not PII)

Every PII value is synthetic: emails at the reserved example.com/org/net domains (RFC 2606), phone numbers
in the fictional 555-01xx range, Taiwanese national-ID-like and card-like numbers generated at random with a
valid checksum (card numbers start with the 400000 test prefix). None belongs to a real person.

The text of `pydoc_data.topics` changes with the Python version, so tests check properties (how many items of
each kind, determinism within one interpreter), never exact texts.

`instruction_pool` does the same for instruction data: the course's person_extraction rows plus planted
low-quality rows (wrong, empty or copied answers, duplicates), each labelled, for IFD and selection.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

KINDS = ("clean", "exact_dup", "near_dup", "boilerplate", "wrong_language", "pii", "too_short", "too_long", "decoy")
PII_KINDS = ("email", "phone", "tw_id", "card")
POOL_KINDS = ("clean", "wrong_answer", "empty_answer", "copied_input", "duplicate")

# Letter codes of the Taiwanese national ID (the checksum treats the letter as these two digits).
TW_ID_LETTERS = {
    "A": 10, "B": 11, "C": 12, "D": 13, "E": 14, "F": 15, "G": 16, "H": 17, "I": 34, "J": 18, "K": 19, "L": 20,
    "M": 21, "N": 22, "O": 35, "P": 23, "Q": 24, "R": 25, "S": 26, "T": 27, "U": 28, "V": 29, "W": 32, "X": 30,
    "Y": 31, "Z": 33,
}
TW_ID_WEIGHTS = (1, 9, 8, 7, 6, 5, 4, 3, 2, 1, 1)

BOILERPLATE = [
    "We use cookies to improve your experience.\nAccept all cookies\nManage cookie preferences\nPrivacy Policy | "
    "Terms of Use\nAccept all cookies",
    "Home | About | Blog | Contact | Login | Cart (0)\nHome | About | Blog | Contact | Login | Cart (0)\n"
    "Skip to main content\n» Next page »",
    "Subscribe to our newsletter!\nEnter your email\nSubscribe\n© 2026 Example Corp. All rights reserved.\n"
    "Privacy Policy | Terms of Use | Sitemap",
    "This site requires JavaScript.\nPlease enable JavaScript in your browser settings.\nThis site requires "
    "JavaScript.\nReload the page",
    "Share: Facebook | Twitter | LinkedIn | Email\nShare: Facebook | Twitter | LinkedIn | Email\nRelated posts\n"
    "Read more »\nTags: news, updates, misc",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\nLorem ipsum dolor sit amet.\nClick here to "
    "continue\nAll rights reserved.",
]

# Paragraphs in other languages and scripts, written for this builder (plain statements about programming).
OTHER_LANGUAGES = [
    "Python 是一種直譯式的程式語言,語法簡潔,適合初學者學習。函式可以接受參數並回傳結果,"
    "模組則把相關的程式碼組織在一起,方便在不同的專案之間重複使用。",
    "在資料處理的流程中,我們先讀取檔案,再清理格式錯誤的紀錄,最後把結果寫回磁碟。"
    "每一個步驟都應該能單獨測試,出錯時要印出清楚的訊息,告訴使用者如何修正。",
    "例外處理讓程式在遇到錯誤時不會直接當掉。使用 try 與 except 區塊,可以捕捉特定的錯誤類型,"
    "並在 finally 區塊中釋放檔案或網路連線等資源。",
    "清單推導式可以用一行程式碼建立新的清單。它比傳統的迴圈更容易閱讀,"
    "但條件太複雜時,拆成幾行的迴圈反而比較清楚。",
    "Pythonはインタプリタ型のプログラミング言語で、読みやすい文法が特徴です。関数は引数を受け取り、"
    "結果を返します。モジュールを使うと、コードを整理して再利用できます。",
    "例外処理を使うと、エラーが起きてもプログラムが止まらずに済みます。tryとexceptで特定の例外を捕まえ、"
    "finallyでファイルなどの資源を解放します。",
    "파이썬은 문법이 간결한 인터프리터 언어입니다. 함수는 인자를 받아 결과를 돌려주고, 모듈은 관련된 코드를 "
    "묶어서 여러 프로젝트에서 다시 사용할 수 있게 해 줍니다.",
    "데이터를 처리할 때는 먼저 파일을 읽고, 형식이 잘못된 기록을 정리한 뒤, 결과를 다시 디스크에 씁니다. "
    "각 단계는 따로 시험할 수 있어야 합니다.",
    "Python — это интерпретируемый язык программирования с простым синтаксисом. Функции принимают аргументы "
    "и возвращают результат, а модули помогают организовать код и использовать его повторно.",
    "Обработка исключений позволяет программе не завершаться аварийно при ошибке. Блоки try и except "
    "перехватывают нужные типы ошибок, а блок finally освобождает ресурсы.",
    "Η Python είναι μια διερμηνευόμενη γλώσσα προγραμματισμού με απλή σύνταξη. Οι συναρτήσεις δέχονται "
    "ορίσματα και επιστρέφουν αποτελέσματα, ενώ τα modules οργανώνουν τον κώδικα.",
    "Ο χειρισμός εξαιρέσεων επιτρέπει στο πρόγραμμα να συνεχίζει όταν συμβαίνει σφάλμα. Τα μπλοκ try και "
    "except πιάνουν συγκεκριμένα σφάλματα.",
]

FIRST_NAMES = ["alice", "bruno", "chen", "dana", "emil", "fatima", "goro", "hana", "ivan", "julia", "kenji", "lina"]
LAST_NAMES = ["wang", "schmidt", "lin", "garcia", "tanaka", "novak", "okafor", "silva", "kim", "huang"]
PII_TEMPLATES = [
    "For questions about this page, write to {email} or call {phone}.",
    "Registered by applicant ID {tw_id}; contact {email}.",
    "Payment was made with card {card}; receipts go to {email}.",
    "Support line {phone} (ID on file: {tw_id}).",
    "Billing: card {card}, phone {phone}.",
]
DECOY_TEMPLATES = [
    "Part number {fake_id} ships with order reference {fake_card}.",
    "See ticket {fake_id} and build number {fake_card} in the changelog.",
]


@dataclass
class Document:
    """One corpus document with its ground truth: `kind` (one of KINDS), `source` (the clean document a
    duplicate copies), `pii` (the planted (kind, value) pairs) and `language` ('en' or the planted one)."""

    id: str
    text: str
    kind: str
    source: str | None = None
    pii: list[tuple[str, str]] = field(default_factory=list)
    language: str = "en"

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "kind": self.kind, "source": self.source,
                "pii": [list(p) for p in self.pii], "language": self.language}


def prose_paragraphs(min_words: int = 30, max_words: int = 200) -> list[str]:
    """Distinct English paragraphs of CPython's documentation topics, whitespace-normalised, in topic order.
    Doctest and code-only paragraphs are skipped: they are not prose."""
    from pydoc_data.topics import topics

    seen: dict[str, None] = {}
    for name in sorted(topics):
        for block in re.split(r"\n\s*\n", topics[name]):
            text = " ".join(block.split())
            words = text.split()
            if not (min_words <= len(words) <= max_words) or text.startswith(">>>"):
                continue
            letters = sum(ch.isalpha() for ch in text)
            if letters / len(text) < 0.7:  # mostly code or tables
                continue
            seen.setdefault(text, None)
    return list(seen)


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    """Word n-grams of lower-cased text (the ground-truth Jaccard the builder and tests use)."""
    words = text.lower().split()
    return {tuple(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}


def jaccard(a: set, b: set) -> float:
    """|a ∩ b| / |a ∪ b| (0 for two empty sets)."""
    return len(a & b) / len(a | b) if a or b else 0.0


def distinct_paragraphs(paragraphs: list[str], max_jaccard: float = 0.2, n: int = 5) -> list[str]:
    """Drop paragraphs whose word 5-gram Jaccard with an earlier kept one exceeds `max_jaccard`: the
    documentation repeats itself, and a natural near-duplicate among the 'clean' documents would be
    scored as a dedup false positive."""
    kept: list[str] = []
    kept_sets: list[set] = []
    index: dict[tuple[str, ...], list[int]] = {}
    for text in paragraphs:
        grams = shingles(text, n)
        overlapping = {i for g in grams for i in index.get(g, ())}
        if any(jaccard(grams, kept_sets[i]) > max_jaccard for i in overlapping):
            continue
        for g in grams:
            index.setdefault(g, []).append(len(kept))
        kept.append(text)
        kept_sets.append(grams)
    return kept


def replace_words(text: str, rate: float, vocabulary: list[str], rng: random.Random) -> str:
    """`text` with round(rate * words) (at least 1) word positions, chosen at random, replaced by random
    vocabulary words different from the original: a near duplicate."""
    words = text.split()
    k = max(1, round(rate * len(words)))
    for position in rng.sample(range(len(words)), k):
        choice = rng.choice(vocabulary)
        while choice == words[position]:
            choice = rng.choice(vocabulary)
        words[position] = choice
    return " ".join(words)


def luhn_check_digit(digits: str) -> str:
    """The Luhn check digit that makes `digits + check` valid (payment cards)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


def tw_id_check_digit(letter: str, digits8: str) -> str:
    """The last digit of a Taiwanese national ID (letter + 8 digits + check) under its weighted checksum."""
    code = TW_ID_LETTERS[letter]
    values = [code // 10, code % 10, *map(int, digits8)]
    total = sum(v * w for v, w in zip(values, TW_ID_WEIGHTS))
    return str((10 - total % 10) % 10)


def synthetic_pii(kind: str, rng: random.Random) -> str:
    """One synthetic PII value of `kind` (see the module docstring for why none is real)."""
    if kind == "email":
        return f"{rng.choice(FIRST_NAMES)}.{rng.choice(LAST_NAMES)}{rng.randrange(10, 99)}@example.{rng.choice(['com', 'org', 'net'])}"
    if kind == "phone":
        number = f"555-01{rng.randrange(100):02d}"
        return rng.choice([f"(212) {number}", f"+1 415 {number}", f"212-{number}"])
    if kind == "tw_id":
        letter = rng.choice(sorted(TW_ID_LETTERS))
        digits8 = str(rng.choice([1, 2])) + "".join(str(rng.randrange(10)) for _ in range(7))
        return letter + digits8 + tw_id_check_digit(letter, digits8)
    if kind == "card":
        body = "400000" + "".join(str(rng.randrange(10)) for _ in range(9))
        number = body + luhn_check_digit(body)
        return " ".join(number[i:i + 4] for i in range(0, 16, 4)) if rng.random() < 0.5 else number
    raise ValueError(f"unknown PII kind {kind!r}; use one of {PII_KINDS}")


def _decoy_values(rng: random.Random) -> dict[str, str]:
    """An ID-like and a card-like number whose checksums fail: regexes alone would mask them."""
    letter = rng.choice(sorted(TW_ID_LETTERS))
    digits8 = str(rng.choice([1, 2])) + "".join(str(rng.randrange(10)) for _ in range(7))
    bad_check = str((int(tw_id_check_digit(letter, digits8)) + rng.randrange(1, 10)) % 10)
    body = "400000" + "".join(str(rng.randrange(10)) for _ in range(9))
    bad_luhn = str((int(luhn_check_digit(body)) + rng.randrange(1, 10)) % 10)
    return {"fake_id": letter + digits8 + bad_check, "fake_card": body + bad_luhn}


@dataclass(frozen=True)
class CorpusSpec:
    """How many documents of each planted kind `build_corpus` makes (the rest are clean)."""

    n_clean: int = 360
    exact_dup: int = 30
    near_dup: int = 60
    near_dup_rate: float = 0.05
    boilerplate: int = 24
    wrong_language: int = 24
    pii: int = 40
    too_short: int = 20
    too_long: int = 10
    decoy: int = 16
    seed: int = 0


def build_corpus(spec: CorpusSpec = CorpusSpec()) -> list[Document]:
    """The course corpus: `spec.n_clean` distinct documentation paragraphs plus the planted documents,
    shuffled, ids `doc-0000`... Deterministic for a given spec within one Python version."""
    rng = random.Random(spec.seed)
    paragraphs = distinct_paragraphs(prose_paragraphs())
    if len(paragraphs) < spec.n_clean + spec.pii + spec.decoy:
        raise ValueError(f"only {len(paragraphs)} distinct paragraphs on this Python; ask for fewer documents "
                         f"(n_clean + pii + decoy = {spec.n_clean + spec.pii + spec.decoy})")
    rng.shuffle(paragraphs)
    clean_texts = paragraphs[:spec.n_clean]
    extra = paragraphs[spec.n_clean:]
    vocabulary = sorted({w for t in clean_texts for w in t.split() if w.isalpha() and len(w) > 2})
    docs: list[tuple[str, dict[str, Any]]] = [(t, {"kind": "clean"}) for t in clean_texts]
    # Duplicates point at clean documents by their position in clean_texts (ids are given after the shuffle);
    # each clean document is the source of at most one planted duplicate, so pairs are unambiguous.
    sources = rng.sample(range(spec.n_clean), spec.exact_dup + spec.near_dup)
    for i in sources[:spec.exact_dup]:
        docs.append((clean_texts[i], {"kind": "exact_dup", "source": i}))
    for i in sources[spec.exact_dup:]:
        docs.append((replace_words(clean_texts[i], spec.near_dup_rate, vocabulary, rng), {"kind": "near_dup", "source": i}))
    for j in range(spec.boilerplate):
        docs.append((BOILERPLATE[j % len(BOILERPLATE)], {"kind": "boilerplate"}))
    languages = ["zh-TW"] * 4 + ["ja"] * 2 + ["ko"] * 2 + ["ru"] * 2 + ["el"] * 2
    for j in range(spec.wrong_language):
        k = j % len(OTHER_LANGUAGES)
        docs.append((OTHER_LANGUAGES[k], {"kind": "wrong_language", "language": languages[k]}))
    cursor = 0
    for j in range(spec.pii):
        template = PII_TEMPLATES[j % len(PII_TEMPLATES)]
        kinds = re.findall(r"{(\w+)}", template)
        values = {kind: synthetic_pii(kind, rng) for kind in kinds}
        docs.append((f"{extra[cursor]} {template.format(**values)}",
                     {"kind": "pii", "pii": [(kind, values[kind]) for kind in kinds]}))
        cursor += 1
    for j in range(spec.decoy):
        template = DECOY_TEMPLATES[j % len(DECOY_TEMPLATES)]
        docs.append((f"{extra[cursor]} {template.format(**_decoy_values(rng))}", {"kind": "decoy"}))
        cursor += 1
    for _ in range(spec.too_short):
        words = rng.choice(clean_texts).split()
        start = rng.randrange(len(words) - 8)
        docs.append((" ".join(words[start:start + rng.randrange(3, 9)]), {"kind": "too_short"}))
    for _ in range(spec.too_long):
        docs.append((" ".join(rng.sample(paragraphs, 20)), {"kind": "too_long"}))
    order = list(range(len(docs)))
    rng.shuffle(order)
    ids = {position: f"doc-{rank:04d}" for rank, position in enumerate(order)}
    clean_ids = {i: ids[i] for i in range(spec.n_clean)}  # clean documents come first in `docs`
    result = []
    for position in order:
        text, info = docs[position]
        source = info.get("source")
        result.append(Document(id=ids[position], text=text, kind=info["kind"],
                               source=clean_ids[source] if source is not None else None,
                               pii=info.get("pii", []), language=info.get("language", "en")))
    return result


def duplicate_pairs(corpus: list[Document], kinds: tuple[str, ...] = ("exact_dup", "near_dup")) -> set[tuple[str, str]]:
    """Ground-truth duplicate pairs (sorted id pairs) of the planted kinds."""
    return {tuple(sorted((d.id, d.source))) for d in corpus if d.kind in kinds and d.source}


# ---- instruction data ---------------------------------------------------------------------------------


def instruction_pool(n_clean: int, n_bad: int, seed: int = 0) -> list[dict[str, Any]]:
    """The course extraction task's first `n_clean` train rows plus `n_bad` planted low-quality rows of each
    kind, shuffled; every row keeps its person_extraction fields and gains `kind` (one of POOL_KINDS) and,
    for planted rows, `source` (the id of the row it was made from).

        wrong_answer  the answer of another row (misaligned: the instruction does not lead to it)
        empty_answer  the answer `{}`
        copied_input  the answer is the input sentence copied
        duplicate     a verbatim copy of a clean row (new id)
    """
    from common_utils.data import load_course_dataset

    rng = random.Random(seed)
    clean = [dict(r, kind="clean") for r in load_course_dataset("person_extraction", "train", limit=n_clean)]
    if n_bad * 4 > len(clean):
        raise ValueError(f"{n_bad} planted rows of each kind need at least {4 * n_bad} clean rows; got {len(clean)}")
    picks = rng.sample(range(len(clean)), 4 * n_bad)
    planted = []
    for j, i in enumerate(picks):
        row, kind = clean[i], POOL_KINDS[1 + j // n_bad]
        new = dict(row, id=f"{kind}-{j % n_bad:03d}", kind=kind, source=row["id"])
        if kind == "wrong_answer":
            other = clean[(i + 1 + rng.randrange(len(clean) - 1)) % len(clean)]
            new["output"] = other["output"]
        elif kind == "empty_answer":
            new["output"] = "{}"
        elif kind == "copied_input":
            new["output"] = row["input"]
        planted.append(new)
    rows = clean + planted
    rng.shuffle(rows)
    return rows

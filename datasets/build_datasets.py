"""Build the course datasets deterministically.

Run from the repository root:

    python datasets/build_datasets.py          # (re)write every JSONL file
    python datasets/build_datasets.py --check  # rebuild in memory and fail if committed files differ

Every row is generated from a fixed seed, so the committed files are reproducible byte for byte.
After writing, each file is validated with `common_utils.data.validate_jsonl`, the same check the
notebooks run when they load a dataset.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 20261123

# --------------------------------------------------------------------------------------------
# 1. person_extraction: sentence -> {"name", "age", "city"} as JSON (instruction tuning, generation)
# --------------------------------------------------------------------------------------------
FIRST_NAMES = [
    "Alice", "Bruno", "Chen", "Daria", "Emeka", "Fatima", "Goran", "Hana", "Ivan", "Julia",
    "Kenji", "Leila", "Mateo", "Nadia", "Oscar", "Priya", "Quentin", "Rosa", "Sven", "Tomoko",
    "Umar", "Valeria", "Wei", "Ximena", "Yusuf", "Zara", "Andrea", "Boris", "Clara", "Diego",
    "Elena", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kira", "Luca", "Maya", "Nikolai",
]
LAST_NAMES = [
    "Silva", "Novak", "Tanaka", "Okafor", "Schmidt", "Haddad", "Kowalski", "Rossi", "Lindqvist",
    "Moreau", "Petrov", "Garcia", "Nguyen", "Singh", "Cohen", "Murphy", "Yilmaz", "Costa",
    "Fischer", "Larsen", "Ivanova", "Dubois", "Santos", "Kim",
]
CITIES = [
    "Lisbon", "Nairobi", "Osaka", "Toronto", "Berlin", "Cairo", "Lima", "Oslo", "Taipei", "Dublin",
    "Warsaw", "Seoul", "Madrid", "Hanoi", "Zurich", "Denver", "Porto", "Austin", "Vienna", "Manila",
    "Prague", "Lyon", "Accra", "Perth",
]
SENTENCE_TEMPLATES = [
    "{name} is {age} years old and lives in {city}.",
    "Meet {name}, a {age}-year-old from {city}.",
    "{name} ({age}) moved to {city} last spring.",
    "Our new colleague {name} works in {city} and just turned {age}.",
    "In {city}, {name}, aged {age}, opened a small bakery.",
    "{name}, {age}, was born and raised in {city}.",
    "The report names {name} of {city}, who is {age}.",
    "At {age}, {name} still runs every morning in {city}.",
    "{city} resident {name} celebrated a {age}th birthday yesterday.",
    "Contact: {name}; age {age}; based in {city}.",
    "{name} has lived in {city} since childhood and is now {age}.",
    "A {age}-year-old named {name} won the chess cup in {city}.",
]
EXTRACTION_INSTRUCTION = "Extract the person's name, age and city from the text. Reply with JSON only."
EXTRACTION_SPLITS = {"train": 400, "valid": 40, "test": 60}
# test_unseen: names, cities and sentence templates that occur in no other split. In `test` only the
# combinations are new (every first name, last name, city and template also occurs in train), so it
# measures the format learned; test_unseen also measures whether the model copies spans it never saw.
UNSEEN_FIRST_NAMES = ["Aino", "Bjorn", "Camila", "Dmitri", "Esther", "Felix", "Gloria", "Hamid", "Irene", "Joao"]
UNSEEN_LAST_NAMES = ["Abara", "Brennan", "Castillo", "Demir", "Eriksen", "Farouk", "Gallo", "Horvat"]
UNSEEN_CITIES = ["Bergen", "Cusco", "Da Nang", "Edinburgh", "Fukuoka", "Graz", "Helsinki", "Izmir"]
UNSEEN_TEMPLATES = [
    "Last week {name} ({age}) gave a talk about gardens in {city}.",
    "Name: {name}. Age: {age}. Home town: {city}.",
    "Everyone in {city} knows {name}, who turned {age} in May.",
    "{name}, a nurse aged {age}, works in {city}.",
]
UNSEEN_SIZE = 40


def build_person_extraction(rng: random.Random) -> dict[str, list[dict]]:
    """Every row is a different person (distinct full name), so no test answer occurs in train; the
    test_unseen split also uses first names, last names, cities and templates found nowhere else."""
    full_names = [f"{first} {last}" for first in FIRST_NAMES for last in LAST_NAMES]
    chosen = rng.sample(full_names, sum(EXTRACTION_SPLITS.values()))
    splits: dict[str, list[dict]] = {}
    start = 0
    for split, size in EXTRACTION_SPLITS.items():
        people = [(name, rng.randint(18, 89), rng.choice(CITIES)) for name in chosen[start:start + size]]
        splits[split] = [_extraction_row(p, rng, f"{split}-{i:04d}") for i, p in enumerate(people)]
        start += size
    splits["test_unseen"] = _unseen_extraction_rows(random.Random(f"{SEED}-person_extraction-unseen"))
    return splits


def _unseen_extraction_rows(rng: random.Random) -> list[dict]:
    """test_unseen from its own RNG, so adding it left the other splits byte-identical."""
    full_names = [f"{first} {last}" for first in UNSEEN_FIRST_NAMES for last in UNSEEN_LAST_NAMES]
    people = [(name, rng.randint(18, 89), rng.choice(UNSEEN_CITIES)) for name in rng.sample(full_names, UNSEEN_SIZE)]
    return [_extraction_row(p, rng, f"test_unseen-{i:04d}", UNSEEN_TEMPLATES) for i, p in enumerate(people)]


def _extraction_row(person: tuple[str, int, str], rng: random.Random, row_id: str,
                    templates: list[str] = SENTENCE_TEMPLATES) -> dict:
    name, age, city = person
    text = rng.choice(templates).format(name=name, age=age, city=city)
    answer = {"name": name, "age": age, "city": city}
    return {
        "id": row_id,
        "instruction": EXTRACTION_INSTRUCTION,
        "input": text,
        "output": json.dumps(answer, ensure_ascii=False),
    }


# --------------------------------------------------------------------------------------------
# 2. topic_classification: short news-like sentence -> one of four topics (NLU labs)
# --------------------------------------------------------------------------------------------
TOPIC_LABELS = ["sports", "technology", "food", "travel"]
TOPIC_SUBJECTS = {
    "sports": ["the striker", "the home team", "the marathon runner", "the tennis champion", "the coach",
               "the goalkeeper", "the cycling squad", "the rookie pitcher"],
    "technology": ["the startup", "the chip maker", "the open-source project", "the new smartphone",
                   "the cloud provider", "the robotics lab", "the browser update", "the database team"],
    "food": ["the bakery", "the head chef", "the noodle shop", "the vegan cafe", "the food critic",
             "the street vendor", "the cheese maker", "the family restaurant"],
    "travel": ["the airline", "the night train", "the mountain resort", "the tour guide", "the cruise ship",
               "the backpacker", "the airport", "the island ferry"],
}
TOPIC_EVENTS = {
    "sports": ["scored twice in the final minutes", "broke the league record", "signed a new contract",
               "won the championship after extra time", "was injured during practice", "qualified for the finals"],
    "technology": ["released a faster processor", "patched a serious security bug", "launched a new AI model",
                   "open-sourced its compiler", "cut server costs with new software", "shipped a battery update"],
    "food": ["introduced a spicy ramen recipe", "earned a star for its dumplings", "started baking sourdough",
             "added seasonal desserts to the menu", "won a prize for its curry", "opened a tasting kitchen"],
    "travel": ["added direct flights to the coast", "offered cheaper tickets for the holidays",
               "reopened the scenic hiking route", "delayed departures because of fog",
               "launched a new sleeper cabin", "welcomed record numbers of tourists"],
}
TOPIC_FRAMES = [
    "{subject} {event}.",
    "Yesterday {subject} {event}.",
    "Reports say {subject} {event} this week.",
    "According to locals, {subject} {event}.",
    "Breaking: {subject} {event}.",
]
TOPIC_SPLITS = {"train": 320, "valid": 80, "test": 160}


def build_topic_classification(rng: random.Random) -> dict[str, list[dict]]:
    """Classes are balanced in every split, and each (subject, event) pair lives in one split only,
    so a test sentence is a new combination, not the same sentence in another frame."""
    per_label = {split: size // len(TOPIC_LABELS) for split, size in TOPIC_SPLITS.items()}
    rows_by_split: dict[str, list[dict]] = {split: [] for split in TOPIC_SPLITS}
    for label_id, label in enumerate(TOPIC_LABELS):
        pairs = [(s, e) for s in TOPIC_SUBJECTS[label] for e in TOPIC_EVENTS[label]]
        rng.shuffle(pairs)
        for split, count in per_label.items():
            n_pairs = -(-count // len(TOPIC_FRAMES))  # ceil: enough pairs to fill the split
            chosen, pairs = pairs[:n_pairs], pairs[n_pairs:]
            sentences = [f.format(subject=s, event=e) for s, e in chosen for f in TOPIC_FRAMES]
            for text in rng.sample(sentences, count):
                rows_by_split[split].append(
                    {"text": text[0].upper() + text[1:], "label": label_id, "label_text": label})
    splits = {}
    for split, rows in rows_by_split.items():
        rng.shuffle(rows)
        splits[split] = [{"id": f"{split}-{i:04d}", **row} for i, row in enumerate(rows)]
    return splits


# --------------------------------------------------------------------------------------------
# 3. preference_format: prompt / chosen / rejected pairs whose preferred behaviour a rule checks
# --------------------------------------------------------------------------------------------
# Three instruction kinds; each says in its system turn what the reply must look like, and
# common_utils.tasks.preference.judge checks exactly that. Chosen and rejected carry the same (correct)
# content, so the only thing a preference method can learn from a pair is the requested format.
PREFERENCE_SYSTEMS = {
    "json": 'Reply with a JSON object of the form {"answer": ...} and nothing else.',
    "brief": "Answer in at most five words.",
    "prefix": "Begin your reply with 'Answer:'.",
}
CAPITALS = {
    "France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin",
    "Egypt": "Cairo", "Peru": "Lima", "Norway": "Oslo", "Kenya": "Nairobi", "Canada": "Ottawa",
    "Poland": "Warsaw", "Portugal": "Lisbon", "Ireland": "Dublin", "Austria": "Vienna", "Greece": "Athens",
    "Sweden": "Stockholm", "Finland": "Helsinki", "Denmark": "Copenhagen", "Chile": "Santiago",
    "Cuba": "Havana", "Russia": "Moscow", "China": "Beijing", "India": "New Delhi", "Thailand": "Bangkok",
    "Vietnam": "Hanoi", "Turkey": "Ankara", "Hungary": "Budapest", "Belgium": "Brussels",
    "Argentina": "Buenos Aires", "Mexico": "Mexico City",
}
COLORS = {
    "banana": "yellow", "lime": "green", "tomato": "red", "carrot": "orange", "blueberry": "blue",
    "snow": "white", "coal": "black", "grass": "green", "lemon": "yellow", "strawberry": "red",
    "pumpkin": "orange", "eggplant": "purple", "cherry": "red", "cucumber": "green", "milk": "white",
    "chocolate": "brown", "raven": "black", "plum": "purple", "corn": "yellow", "sky on a clear day": "blue",
}
OPPOSITES = {
    "hot": "cold", "big": "small", "fast": "slow", "happy": "sad", "light": "dark", "early": "late",
    "full": "empty", "open": "closed", "up": "down", "old": "new", "strong": "weak", "rich": "poor",
    "wet": "dry", "loud": "quiet", "hard": "soft", "high": "low", "long": "short", "thick": "thin",
    "clean": "dirty", "inside": "outside",
}
PREFERENCE_SPLITS = {"train": 240, "valid": 30, "test": 60}
ARITHMETIC_QUESTIONS = 130  # per operation; with 70 facts: 330 distinct questions = one per row


def _preference_questions(rng: random.Random) -> list[tuple[str, str, str]]:
    """(question, short answer, one explanatory sentence); every question text is distinct."""
    questions = [(f"What is the capital of {country}?", city,
                  f"{city} is the capital city of {country}, and it is also one of its largest cities.")
                 for country, city in CAPITALS.items()]
    questions += [(f"What color is {'the' if ' ' in thing else 'a'} {thing}?", color,
                   f"The usual color of {thing} is {color}, which is how most people would describe it.")
                  for thing, color in COLORS.items()]
    questions += [(f"What is the opposite of '{word}'?", opposite,
                   f"The opposite of '{word}' is '{opposite}'; the two words mean contrary things.")
                  for word, opposite in OPPOSITES.items()]
    pairs = rng.sample([(a, b) for a in range(2, 60) for b in range(2, 40)], 2 * ARITHMETIC_QUESTIONS)
    questions += [(f"What is {a} plus {b}?", str(a + b), f"When you add {a} and {b} together, you get {a + b}.")
                  for a, b in pairs[:ARITHMETIC_QUESTIONS]]
    questions += [(f"What is {a + b} minus {b}?", str(a), f"If you take {b} away from {a + b}, {a} is left.")
                  for a, b in pairs[ARITHMETIC_QUESTIONS:]]
    return questions


def _preference_pair(kind: str, answer: str, sentence: str, rng: random.Random) -> tuple[str, str]:
    """(chosen, rejected): chosen follows the kind's rule; rejected states the same answer but breaks it."""
    if kind == "json":
        obj = json.dumps({"answer": answer}, ensure_ascii=False)
        rejected = rng.choice([f"Sure! Here is the answer: {obj}", sentence, f"```json\n{obj}\n```",
                               f"The answer is {answer}."])
        return obj, rejected
    if kind == "brief":
        chosen = rng.choice([f"{answer}.", f"It is {answer}."])
        return chosen, f"Good question! {sentence} I hope this helps you."
    chosen = f"Answer: {answer}"
    rejected = rng.choice([sentence, f"{answer}.", f"The answer is {answer}.", f"Sure! {sentence}"])
    return chosen, rejected


def build_preference_format(rng: random.Random) -> dict[str, list[dict]]:
    """Each distinct question is used once, so no held-out (valid/test) question occurs in train.
    Kinds rotate through each split, so all three are balanced."""
    questions = _preference_questions(rng)
    rng.shuffle(questions)
    kinds = list(PREFERENCE_SYSTEMS)
    splits: dict[str, list[dict]] = {}
    held_out = PREFERENCE_SPLITS["valid"] + PREFERENCE_SPLITS["test"]
    pools = {"valid": questions[:PREFERENCE_SPLITS["valid"]], "test": questions[PREFERENCE_SPLITS["valid"]:held_out],
             "train": questions[held_out:]}
    for split, size in PREFERENCE_SPLITS.items():
        rows = []
        for i, (question, answer, sentence) in enumerate(pools[split][:size]):
            kind = kinds[i % len(kinds)]
            chosen, rejected = _preference_pair(kind, answer, sentence, rng)
            rows.append({"id": f"{split}-{i:04d}", "kind": kind, "system": PREFERENCE_SYSTEMS[kind],
                         "prompt": question, "chosen": chosen, "rejected": rejected})
        splits[split] = rows
    return splits


BUILDERS = {
    "person_extraction": build_person_extraction,
    "topic_classification": build_topic_classification,
    "preference_format": build_preference_format,
}


def render(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)


def build_all() -> dict[Path, str]:
    """Return {path: file text} for every dataset split, generated from the fixed seed."""
    files: dict[Path, str] = {}
    for name, builder in BUILDERS.items():
        rng = random.Random(f"{SEED}-{name}")
        for split, rows in builder(rng).items():
            files[HERE / name / f"{split}.jsonl"] = render(rows)
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if committed files differ from a rebuild")
    args = parser.parse_args()

    from common_utils.data import dataset_schemas, validate_jsonl

    files = build_all()
    stale = []
    for path, text in files.items():
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    if stale:
        print("Stale dataset files (run `python datasets/build_datasets.py`):", *stale, sep="\n  ")
        return 1
    for path in files:
        rows = validate_jsonl(path, dataset_schemas()[path.parent.name])
        print(f"{path.relative_to(HERE.parent)}: {len(rows)} rows OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())

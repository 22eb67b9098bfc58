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


# --------------------------------------------------------------------------------------------
# 3b. preference_brevity: "two or three items", where even the chosen lists are often too long
# --------------------------------------------------------------------------------------------
# Real preference labels are relative: an annotator picks the better of two replies, and the better
# one may still break the instruction. Here the system turn asks for two or three items; the chosen
# list has 2-5 items (so about half break the rule too) and the rejected list is the same list grown
# by 2-3 items. SFT on the chosen replies imitates their lengths; a preference method can learn
# the direction "shorter than the rejected one" (Lab-1.7 measures both at the same step budget).
BREVITY_SYSTEM = "Answer with a comma-separated list of two or three items. Nothing else."
# Categories with at least 8 members (the longest rejected list). Held-out categories never occur in train.
BREVITY_CATEGORIES = {
    "colors": "red blue green yellow purple orange pink brown black white gray",
    "animals": "cat dog horse cow lion tiger bear wolf fox rabbit mouse sheep goat",
    "countries": "France Japan China Italy Spain Brazil Canada India Mexico Egypt Germany Russia",
    "metals": "gold silver iron copper tin lead zinc nickel steel bronze",
    "drinks": "water coffee tea milk juice soda wine beer cocoa cider",
    "vegetables": "carrot potato onion tomato pepper cabbage lettuce celery garlic pea bean corn",
    "musical instruments": "piano guitar violin drum flute trumpet harp cello organ banjo",
    "sports": "soccer tennis golf hockey boxing rugby cricket baseball skiing rowing",
    "cities": "Paris London Tokyo Rome Berlin Madrid Moscow Cairo Sydney Dublin",
    "body parts": "hand foot head nose ear eye arm leg knee neck",
    "vehicles": "car bus train truck bicycle boat plane taxi ship tram",
    "planets": "Mercury Venus Earth Mars Jupiter Saturn Uranus Neptune",
    "months": "January February March April May June July August September October",
    "languages": "English French German Spanish Italian Chinese Japanese Arabic Russian Hindi",
    "flowers": "rose tulip daisy lily orchid sunflower violet poppy iris lotus",
    "trees": "oak pine maple birch willow cedar palm elm ash cherry",
    "fish": "salmon tuna cod trout shark carp herring sardine mackerel bass",
    "insects": "ant bee fly wasp beetle moth butterfly cricket mosquito termite",
    "shapes": "circle square triangle rectangle oval star diamond hexagon cube sphere",
    "clothing items": "shirt jacket dress skirt coat sweater sock scarf hat glove",
    "kitchen items": "pan pot spoon fork knife plate bowl cup kettle oven",
    "jobs": "doctor teacher nurse farmer pilot chef lawyer baker driver painter",
    "fruits": "apple banana grape orange lemon cherry peach pear mango melon plum kiwi",
    "birds": "eagle owl crow duck swan robin parrot pigeon hawk goose",
    "tools": "hammer saw drill wrench shovel axe rake chisel pliers ladder",
    "pieces of furniture": "chair table bed sofa desk shelf lamp stool bench dresser",
    "kinds of weather": "rain snow wind fog hail storm sunshine cloud frost thunder",
    "rooms in a house": "kitchen bedroom bathroom garage attic basement hall office cellar pantry",
    "school subjects": "math history art music biology chemistry physics geography English science",
    "board games": "chess checkers go backgammon scrabble monopoly dominoes mahjong bingo poker",
    "desserts": "cake pie cookie pudding brownie donut muffin cupcake tart waffle",
    "musical genres": "jazz rock pop blues folk reggae soul disco punk metal",
}
BREVITY_HELD_OUT = {"valid": ["rooms in a house", "school subjects"],
                    "test": ["fruits", "birds", "tools", "pieces of furniture", "kinds of weather", "board games",
                             "desserts", "musical genres", "trees", "fish"]}
BREVITY_TEMPLATES = {
    "train": ["Name some {c}.", "List a few {c}.", "Give me some examples of {c}.", "What are some {c}?",
              "Can you list some {c}?", "Tell me a few {c}.", "Which {c} do you know?", "Mention some {c}."],
    "held_out": ["I need a list of {c}.", "Could you name a few {c}?", "Write down some {c}.",
                 "Please list {c}.", "Share some {c} with me.", "Give a list of {c}."],
}
BREVITY_SPLITS = {"train": 240, "valid": 12, "test": 60}


def _brevity_row(category: str, template: str, rng: random.Random) -> dict:
    """One pair: chosen = 2-5 members of the category, rejected = the same list plus 2-3 more."""
    kept, extra = rng.choice([2, 3, 4, 5]), rng.choice([2, 3])
    items = rng.sample(BREVITY_CATEGORIES[category].split(), kept + extra)
    return {"category": category, "system": BREVITY_SYSTEM, "prompt": template.format(c=category),
            "chosen": ", ".join(items[:kept]) + ".", "rejected": ", ".join(items) + "."}


def build_preference_brevity(rng: random.Random) -> dict[str, list[dict]]:
    """Train uses its own categories and templates; every held-out (valid/test) prompt is a distinct
    (unseen category, unseen template) pair, listed template-major so any first k prompts mix categories."""
    held_out = {c for cats in BREVITY_HELD_OUT.values() for c in cats}
    train_categories = [c for c in BREVITY_CATEGORIES if c not in held_out]
    rows = {"train": [_brevity_row(rng.choice(train_categories), rng.choice(BREVITY_TEMPLATES["train"]), rng)
                      for _ in range(BREVITY_SPLITS["train"])]}
    for split, categories in BREVITY_HELD_OUT.items():
        prompts = [(c, t) for t in BREVITY_TEMPLATES["held_out"] for c in categories]
        rows[split] = [_brevity_row(c, t, rng) for c, t in prompts[:BREVITY_SPLITS[split]]]
    return {split: [{"id": f"{split}-{i:04d}", **row} for i, row in enumerate(split_rows)]
            for split, split_rows in rows.items()}


# --------------------------------------------------------------------------------------------
# 4. support_tickets: customer-support ticket -> intent label word (Lab-4.3, the capstone project)
# --------------------------------------------------------------------------------------------
# Imbalanced on purpose (as real ticket queues are), so macro-F1 and accuracy differ. Each label has
# its own request phrases (English and zh-TW) with an {x} slot; every (phrase, entity) pair lives in one
# split only, and entity pools are split too, so a test ticket is a new sentence, not a rewording.
TICKET_LABELS = ["billing", "shipping", "technical", "account", "refund", "other"]
# Imbalanced on purpose (macro-F1 != accuracy). "other" was 6% at first: 14 training rows, and the
# Lab-4.3 model never learned it (test F1 0.00, macro-F1 0.765); at 12% it gets 28 rows.
TICKET_SHARES = {"billing": 0.24, "shipping": 0.22, "technical": 0.18, "account": 0.12, "refund": 0.12,
                 "other": 0.12}
TICKET_SPLITS = {"train": 240, "valid": 48, "test": 60}
TICKET_ZH_SHARE = 0.15
TICKET_PHRASES = {
    "billing": ["I was charged twice for {x} this month", "my invoice for {x} shows the wrong amount",
                "why is {x} on my credit card statement", "the price of {x} on my bill is higher than advertised",
                "please explain the extra fee for {x} on my invoice", "my payment for {x} failed but I was still billed",
                "can I get a copy of the invoice for {x}", "I need to update the card you bill for {x}"],
    "shipping": ["my package with {x} has not arrived yet", "the tracking page for {x} has not changed in a week",
                 "can you change the delivery address for {x}", "the courier left {x} at the wrong door",
                 "when will {x} be shipped", "the box with {x} arrived crushed in transit",
                 "my order of {x} says delivered but it is not here", "is express delivery available for {x}"],
    "technical": ["the app crashes every time I open {x}", "{x} shows an error when I try to save",
                  "{x} will not connect to my wifi", "the screen freezes when I use {x}",
                  "{x} stopped syncing after the last update", "I get a blank page when I load {x}",
                  "{x} keeps restarting on its own", "the firmware update for {x} fails halfway"],
    "account": ["I forgot the password for {x}", "please change the email address on {x}",
                "I cannot log in to {x} anymore", "the two-factor code for {x} never arrives",
                "please delete {x} and all my data", "someone else may have signed in to {x}",
                "how do I merge {x} with my old profile", "I want to change the username of {x}"],
    "refund": ["I want my money back for {x}", "I returned {x} two weeks ago and the refund is missing",
               "please refund {x}, it does not work as described", "how long does a refund for {x} take",
               "I cancelled {x} within the trial and want a refund", "can I get a partial refund for {x}",
               "the refund for {x} went to an old card", "refund {x} please, I changed my mind"],
    "other": ["do you have a physical store that sells {x}", "I just want to say thanks for {x}",
              "are you hiring people to work on {x}", "can I suggest a new colour for {x}",
              "is {x} made from recycled materials", "do you offer student discounts on {x}",
              "who designed {x}, it looks great", "can I visit the factory that makes {x}"],
}
TICKET_PHRASES_ZH = {
    "billing": ["{x} 這個月被重複扣款了", "{x} 的帳單金額不對", "為什麼信用卡上有 {x} 的費用"],
    "shipping": ["{x} 到現在還沒送到", "{x} 的物流資訊一直沒有更新", "可以幫我改 {x} 的收件地址嗎"],
    "technical": ["{x} 一打開就閃退", "{x} 儲存時出現錯誤訊息", "{x} 更新後就無法同步"],
    "account": ["我忘記 {x} 的密碼了", "{x} 登入不了", "請幫我刪除 {x}"],
    "refund": ["{x} 我想要退款", "{x} 退貨後還沒收到退款", "{x} 可以部分退款嗎"],
    "other": ["請問有門市可以看 {x} 嗎", "謝謝你們的 {x}", "{x} 是用回收材料做的嗎"],
}
TICKET_ENTITIES = {
    "billing": ["the Pro plan", "my family subscription", "the premium bundle", "the annual licence",
                "the storage upgrade", "the business plan", "the music add-on", "the cloud backup plan",
                "the team seats", "the student plan", "the extended warranty", "the photo plan"],
    "shipping": ["order #48213", "order #50977", "the blue backpack", "order #61420", "the desk lamp",
                 "order #73305", "the running shoes", "order #82641", "the coffee grinder", "order #90158",
                 "the gift box", "the phone case"],
    "technical": ["the photo editor", "the smart speaker", "the desktop client", "the fitness tracker",
                  "the home camera", "the tablet app", "the e-reader", "the smart thermostat",
                  "the web dashboard", "the video doorbell", "the printer app", "the router"],
    "account": ["my account", "my work account", "my kid's profile", "my store account", "the shared account",
                "my old account", "my seller profile", "my gaming account", "my admin login",
                "my partner's profile", "my backup account", "my trial account"],
    "refund": ["the headphones", "the yoga mat", "the broken kettle", "the annual plan", "the winter jacket",
               "the concert ticket", "the smart watch", "the online course", "the blender",
               "the travel adapter", "the game pass", "the wool scarf"],
    "other": ["your products", "the new collection", "the garden tools", "the kitchen line", "your packaging",
              "the spring catalogue", "the kids' range", "the outdoor gear", "your laptop sleeves",
              "the bamboo cups", "the holiday edition", "your notebooks"],
}
TICKET_FRAMES = ["{body}.", "Hi, {body}.", "Hello support, {body}. Thanks!", "{body}. Can you help?",
                 "Urgent: {body}.", "Good morning, {body}."]
TICKET_FRAMES_ZH = ["{body}。", "您好，{body}。", "{body}，請協助處理，謝謝！"]


def _ticket_counts(size: int) -> dict[str, int]:
    """Per-label row counts of a split: shares rounded down, the remainder to the largest classes."""
    counts = {label: int(size * share) for label, share in TICKET_SHARES.items()}
    for label in TICKET_LABELS[: size - sum(counts.values())]:
        counts[label] += 1
    return counts


def _bare(entity: str) -> str:
    """An entity without its English article or possessive, as it reads inside a zh-TW sentence."""
    for prefix in ("the ", "my ", "your "):
        if entity.startswith(prefix):
            return entity[len(prefix):]
    return entity


def build_support_tickets(rng: random.Random) -> dict[str, list[dict]]:
    """Imbalanced intent classes; no (phrase, entity) pair and no entity occurs in two splits."""
    rows_by_split: dict[str, list[dict]] = {split: [] for split in TICKET_SPLITS}
    for label in TICKET_LABELS:
        entities = TICKET_ENTITIES[label][:]
        rng.shuffle(entities)
        pools = {"train": entities[:8], "valid": entities[8:10], "test": entities[10:]}
        for language, phrases, frames in [("en", TICKET_PHRASES[label], TICKET_FRAMES),
                                          ("zh-TW", TICKET_PHRASES_ZH[label], TICKET_FRAMES_ZH)]:
            for split, size in TICKET_SPLITS.items():
                total = _ticket_counts(size)[label]
                zh = max(1, round(total * TICKET_ZH_SHARE))
                count = zh if language == "zh-TW" else total - zh
                pairs = [(p, e) for p in phrases for e in pools[split]]
                bodies = [p.format(x=e if language == "en" else _bare(e))
                          for p, e in rng.sample(pairs, min(count, len(pairs)))]
                while len(bodies) < count:  # small pools: reuse a pair in another frame
                    bodies.append(bodies[len(bodies) % len(pairs)])
                for body in bodies:
                    text = rng.choice(frames).format(body=body)
                    rows_by_split[split].append({"text": text[0].upper() + text[1:], "label": label,
                                                 "language": language})
    splits = {}
    for split, rows in rows_by_split.items():
        rng.shuffle(rows)
        splits[split] = [{"id": f"ticket-{split}-{i:04d}", **row} for i, row in enumerate(rows)]
    return splits


# --------------------------------------------------------------------------------------------
# 4. multiple_choice: a course-built benchmark in the C-Eval / TMMLU+ column format (Lab-4.1)
# --------------------------------------------------------------------------------------------
# question, A, B, C, D, answer (the letter), plus id, subject and language (zh-TW | en). Every item is
# written by this script from the lists below (capitals, colors and opposites are shared with
# preference_format), so the licence is the project's. Splits: dev (few-shot exemplars, MC_DEV per
# subject), test (MC_TEST per subject, subjects interleaved so any prefix is balanced) and leak: a small
# "training corpus" of documents, some of which copy test items (the contamination exercise).
MC_DEV, MC_TEST = 5, 15
MC_LETTERS = "ABCD"
CAPITALS_ZH = {
    "法國": "巴黎", "日本": "東京", "義大利": "羅馬", "西班牙": "馬德里", "德國": "柏林", "埃及": "開羅",
    "秘魯": "利馬", "挪威": "奧斯陸", "肯亞": "奈洛比", "加拿大": "渥太華", "波蘭": "華沙", "葡萄牙": "里斯本",
    "愛爾蘭": "都柏林", "奧地利": "維也納", "希臘": "雅典", "瑞典": "斯德哥爾摩", "芬蘭": "赫爾辛基",
    "丹麥": "哥本哈根", "智利": "聖地牙哥", "古巴": "哈瓦那", "俄羅斯": "莫斯科", "印度": "新德里",
    "泰國": "曼谷", "越南": "河內", "土耳其": "安卡拉", "匈牙利": "布達佩斯", "比利時": "布魯塞爾",
    "阿根廷": "布宜諾斯艾利斯", "墨西哥": "墨西哥城", "英國": "倫敦",
}
OPPOSITES_ZH = {
    "熱": "冷", "大": "小", "快": "慢", "長": "短", "多": "少", "胖": "瘦", "早": "晚", "新": "舊", "黑": "白",
    "上": "下", "左": "右", "前": "後", "開": "關", "輕": "重", "深": "淺", "強": "弱", "遠": "近", "哭": "笑",
    "買": "賣", "高": "矮",
}
# (question, answer, three distractors): everyday facts and vocabulary a zh-TW speaker knows
COMMON_SENSE_ZH = [
    ("一年有幾個月?", "十二個月", ["十個月", "六個月", "二十個月"]),
    ("一個星期有幾天?", "七天", ["五天", "十天", "三天"]),
    ("一天有幾個小時?", "二十四小時", ["十二小時", "十小時", "六十小時"]),
    ("一小時有幾分鐘?", "六十分鐘", ["一百分鐘", "三十分鐘", "十分鐘"]),
    ("三角形有幾個邊?", "三個邊", ["四個邊", "五個邊", "六個邊"]),
    ("蜘蛛有幾隻腳?", "八隻腳", ["六隻腳", "四隻腳", "十隻腳"]),
    ("太陽從哪個方向升起?", "東方", ["西方", "南方", "北方"]),
    ("冬天過後是哪個季節?", "春天", ["夏天", "秋天", "冬天"]),
    ("一打是幾個?", "十二個", ["十個", "二十個", "六個"]),
    ("蜜蜂會製造什麼?", "蜂蜜", ["牛奶", "絲綢", "麵粉"]),
    ("人用哪個器官呼吸?", "肺", ["胃", "腳", "耳朵"]),
    ("一公尺等於幾公分?", "一百公分", ["十公分", "一千公分", "五十公分"]),
    ("一公斤等於幾公克?", "一千公克", ["一百公克", "十公克", "五百公克"]),
    ("醫生通常在哪裡工作?", "醫院", ["機場", "漁港", "農田"]),
    ("下雨天出門通常要帶什麼?", "雨傘", ["扇子", "泳衣", "墨鏡"]),
    ("水在攝氏幾度結冰?", "零度", ["一百度", "五十度", "三十度"]),
    ("彩虹通常有幾種顏色?", "七種", ["三種", "五種", "十種"]),
    ("貓通常有幾隻腳?", "四隻腳", ["兩隻腳", "六隻腳", "八隻腳"]),
    ("學生通常在哪裡上課?", "學校", ["醫院", "銀行", "車站"]),
    ("正方形有幾個角?", "四個角", ["三個角", "五個角", "八個角"]),
]
UNIT_FACTS = [("meters", "centimeters", 100), ("kilometers", "meters", 1000), ("hours", "minutes", 60),
              ("minutes", "seconds", 60), ("days", "hours", 24), ("kilograms", "grams", 1000),
              ("dozens", "items", 12), ("weeks", "days", 7)]
MC_SUBJECTS = ["capitals_en", "colors_en", "antonyms_en", "arithmetic_en", "units_en", "capitals_zh",
               "antonyms_zh", "common_sense_zh"]
MC_LEAKED_PER_SUBJECT = 2  # test items planted in the leak corpus (the last ones of each subject)
MC_CLEAN_DOCS = 16  # plain sentences on the same subjects that copy no item


def _mc_pool(subject: str, rng: random.Random) -> list[tuple[str, str, list[str]]]:
    """(question, answer, distractors) candidates of one subject; every question text is distinct."""
    if subject == "capitals_en":
        cities = list(CAPITALS.values())
        return [(f"What is the capital of {country}?", city, rng.sample([c for c in cities if c != city], 3))
                for country, city in CAPITALS.items()]
    if subject == "colors_en":
        colors = sorted(set(COLORS.values()))
        return [(f"What color is {'the' if ' ' in thing else 'a'} {thing}?", color,
                 rng.sample([c for c in colors if c != color], 3)) for thing, color in COLORS.items()]
    if subject == "antonyms_en":
        words = list(OPPOSITES.values())
        return [(f"What is the opposite of '{word}'?", opposite,
                 rng.sample([w for w in words if w != opposite], 3)) for word, opposite in OPPOSITES.items()]
    if subject == "arithmetic_en":
        pairs = rng.sample([(a, b) for a in range(2, 40) for b in range(2, 30)], MC_DEV + MC_TEST)
        return [(f"What is {a} plus {b}?", str(a + b), [str(a + b + d) for d in rng.sample([-10, -2, -1, 1, 2, 10], 3)])
                for a, b in pairs]
    if subject == "units_en":
        rows = []
        for big, small, factor in UNIT_FACTS:
            for count in rng.sample(range(2, 10), 3):
                wrong = {count * f for f in (10, 100, 1000, 60, 24, 12, 7)} | {count + factor}
                rows.append((f"How many {small} are in {count} {big}?", str(count * factor),
                             [str(w) for w in rng.sample(sorted(wrong - {count * factor}), 3)]))
        return rows
    if subject == "capitals_zh":
        cities = list(CAPITALS_ZH.values())
        return [(f"{country}的首都是哪裡?", city, rng.sample([c for c in cities if c != city], 3))
                for country, city in CAPITALS_ZH.items()]
    if subject == "antonyms_zh":
        words = list(OPPOSITES_ZH.values())
        return [(f"「{word}」的反義詞是什麼?", opposite, rng.sample([w for w in words if w != opposite], 3))
                for word, opposite in OPPOSITES_ZH.items()]
    if subject == "common_sense_zh":
        return [(question, answer, list(distractors)) for question, answer, distractors in COMMON_SENSE_ZH]
    raise KeyError(subject)


def _mc_row(row_id: str, subject: str, item: tuple[str, str, list[str]], rng: random.Random) -> dict:
    question, answer, distractors = item
    options = [answer, *distractors]
    rng.shuffle(options)
    return {"id": row_id, "subject": subject, "language": "zh-TW" if subject.endswith("_zh") else "en",
            "question": question, **dict(zip(MC_LETTERS, options)), "answer": MC_LETTERS[options.index(answer)]}


def _mc_quiz_text(row: dict, style: int) -> str:
    """One item as a scraped quiz page would show it; styles differ in case and punctuation only."""
    options = " ".join(f"{letter}. {row[letter]}" for letter in MC_LETTERS)
    if style == 0:
        return f"Practice quiz ({row['subject']}). Q: {row['question']} {options} Answer: {row['answer']}."
    options = " ".join(f"({letter.lower()}) {row[letter]}" for letter in MC_LETTERS)
    return f"QUIZ DUMP >> {row['question'].upper()} {options.upper()} -- key={row['answer']}"


def _mc_leak_docs(test: list[dict], dev: list[dict], rng: random.Random) -> list[dict]:
    """The contamination corpus: MC_LEAKED_PER_SUBJECT test items per subject copied into quiz pages
    (case and punctuation changed), every dev item in the same format (hard negatives: same templates,
    other facts, and dev is meant to be seen), and MC_CLEAN_DOCS plain sentences on the same subjects."""
    docs = []
    for subject in MC_SUBJECTS:
        for k, row in enumerate([row for row in test if row["subject"] == subject][-MC_LEAKED_PER_SUBJECT:]):
            docs.append({"kind": "leak", "source_id": row["id"], "subject": subject, "language": row["language"],
                         "text": _mc_quiz_text(row, k % 2)})
    docs += [{"kind": "dev_copy", "source_id": row["id"], "subject": row["subject"], "language": row["language"],
              "text": _mc_quiz_text(row, i % 2)} for i, row in enumerate(dev)]
    clean_facts = [("The Nile flows north through Egypt and Sudan into the Mediterranean Sea.", "en"),
                   ("Taipei 101 was the tallest building in the world from 2004 to 2010.", "en"),
                   ("A week has seven days, and a common year has 365 days.", "en"),
                   ("Mixing blue and yellow paint gives green paint.", "en"),
                   ("Water boils at 100 degrees Celsius at sea level.", "en"),
                   ("The capital of a country is usually where its government meets.", "en"),
                   ("Ten plus ten is twenty, and twenty plus twenty is forty.", "en"),
                   ("A kilometer is a unit of length used for road distances.", "en"),
                   ("台灣的夜市有很多小吃,例如蚵仔煎和珍珠奶茶。", "zh-TW"),
                   ("玉山是台灣最高的山,海拔將近四千公尺。", "zh-TW"),
                   ("反義詞是意思相反的詞,同義詞是意思相近的詞。", "zh-TW"),
                   ("首都通常是一個國家政府所在的城市。", "zh-TW"),
                   ("颱風季節時,氣象局會發布海上與陸上颱風警報。", "zh-TW"),
                   ("圖書館可以借書,也可以安靜地讀書。", "zh-TW"),
                   ("中秋節的時候,很多家庭會烤肉、吃月餅。", "zh-TW"),
                   ("捷運是很多城市上下班常用的交通工具。", "zh-TW")][:MC_CLEAN_DOCS]
    docs += [{"kind": "clean", "source_id": "none", "subject": "corpus", "language": language, "text": text}
             for text, language in clean_facts]
    rng.shuffle(docs)
    return [{"id": f"leak-{i:04d}", **doc} for i, doc in enumerate(docs)]


def build_multiple_choice(rng: random.Random) -> dict[str, list[dict]]:
    """dev and test draw distinct questions per subject (no test question is a few-shot exemplar); test
    rows are interleaved subject by subject, so the first k rows cover every subject (smoke limits)."""
    dev, by_subject = [], {}
    for subject in MC_SUBJECTS:
        pool = _mc_pool(subject, rng)
        if len(pool) < MC_DEV + MC_TEST:
            raise ValueError(f"{subject}: {len(pool)} items, need {MC_DEV + MC_TEST}")
        chosen = rng.sample(pool, MC_DEV + MC_TEST)
        dev.append(chosen[:MC_DEV])
        by_subject[subject] = chosen[MC_DEV:]
    # dev too is interleaved, so the first n exemplars (lm_eval's first_n sampler) mix the subjects
    dev_rows = [_mc_row(f"dev-{k * len(MC_SUBJECTS) + s:04d}", subject, dev[s][k], rng)
                for k in range(MC_DEV) for s, subject in enumerate(MC_SUBJECTS)]
    test_rows = [_mc_row(f"test-{k * len(MC_SUBJECTS) + s:04d}", subject, by_subject[subject][k], rng)
                 for k in range(MC_TEST) for s, subject in enumerate(MC_SUBJECTS)]
    return {"dev": dev_rows, "test": test_rows, "leak": _mc_leak_docs(test_rows, dev_rows, rng)}


BUILDERS = {
    "person_extraction": build_person_extraction,
    "topic_classification": build_topic_classification,
    "preference_format": build_preference_format,
    "preference_brevity": build_preference_brevity,
    "multiple_choice": build_multiple_choice,
    "support_tickets": build_support_tickets,
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

"""Writes tests/data/search_corpus.jsonl: the relevance corpus of the search tests.

Deterministic (seeded), so the committed file can be regenerated and checked:
`python tests/data/make_search_corpus.py`. Each line is either a passage
`{"type": "passage", "id", "text", "tags"}` or a labeled query
`{"type": "query", "text", "relevant": [ids]}`.

The passages are an assistant's archival memory about the people, places and
projects in a user's life: many facts of the same kinds (a dozen people with
allergies, pets, trips, jobs...), so the words of a fact's kind are no clue on
their own and a query must match the right person, place or thing. Queries
are phrased as a user or an agent would ask, mostly with other words than the
passage uses (synonyms, questions, other word forms), a few nearly verbatim.
"""

# ruff: noqa: SIM905 - word lists read better as text
from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).with_name("search_corpus.jsonl")

PEOPLE = """Ada Bruno Chiara Dmitri Elena Farid Greta Hiro Ines Jonas Kemal Lena Mateo Nadia Oskar
Priya Quentin Rosa Samir Tove Umar Vera Wendell Xenia Yusuf Zora Anouk Basil Carmen Dario
Esme Fenna Gideon Hanna Ivo Jasper Kaito Liv Marek Noor""".split()
CITIES = """Lisbon Oslo Kyoto Nairobi Montreal Valparaiso Tbilisi Hanoi Reykjavik Marrakesh Krakow
Tallinn Cusco Seville Bergen Porto Dublin Ljubljana Zanzibar Hobart""".split()
FOODS = """peanuts shellfish sesame gluten strawberries kiwi walnuts eggs soy mustard celery lupin
mango""".split()
PETS = [
    ("cat", "feline"),
    ("dog", "puppy"),
    ("parrot", "bird"),
    ("tortoise", "reptile"),
    ("rabbit", "bunny"),
    ("goldfish", "fish"),
    ("ferret", "pet"),
    ("hamster", "rodent"),
]
PET_NAMES = """Miso Pickle Biscuit Juniper Clementine Pixel Noodle Saffron Tofu Waffle Pepper Olive
Mochi Radish Button""".split()
INSTRUMENTS = (
    """cello violin trumpet banjo harp accordion clarinet ukulele saxophone oboe""".split()
)
SPORTS = """bouldering rowing fencing badminton squash curling kayaking archery judo
cycling""".split()
JOBS = [
    ("nurse", "hospital"),
    ("architect", "buildings"),
    ("pilot", "airline"),
    ("baker", "bakery"),
    ("lawyer", "law firm"),
    ("teacher", "school"),
    ("pharmacist", "pharmacy"),
    ("carpenter", "workshop"),
    ("journalist", "newspaper"),
    ("veterinarian", "animal clinic"),
    ("electrician", "wiring"),
    ("librarian", "library"),
]
LANGS = """Rust Haskell Elixir Kotlin Go Python TypeScript Julia Clojure Zig""".split()
BOOKS = """Middlemarch Dune Beloved Rebecca Ulysses Solaris Persuasion Kindred Frankenstein
Siddhartha Emma Hyperion""".split()
MONTHS = """January February March April May June July August September October November
December""".split()
WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
PLANTS = """tomatoes basil lavender rhubarb dahlias courgettes rosemary sunflowers kale
strawberries""".split()
CARS = """Volvo Skoda Toyota Renault Subaru Fiat Mazda Peugeot""".split()
TEAS = """oolong sencha rooibos chamomile earl grey darjeeling matcha peppermint""".split()


def fact_templates(r: random.Random) -> list:
    """(kind, key slot, passage, [queries]) makers: each takes the RNG and returns one fact."""

    def allergy():
        p, f = r.choice(PEOPLE), r.choice(FOODS)
        return (
            "allergy",
            p,
            f"{p} is allergic to {f}; even a trace brings on hives, so keep "
            f"{f} out of anything cooked for them.",
            [
                f"what can {p} not eat",
                f"{p} food intolerance reaction",
                f"is {p} allergic to anything",
            ],
            ["health"],
        )

    def pet():
        p, (animal, kind), n = r.choice(PEOPLE), r.choice(PETS), r.choice(PET_NAMES)
        return (
            "pet",
            p,
            f"{p} adopted a {animal} named {n} from the shelter last spring.",
            [f"name of {p}'s {kind}", f"does {p} have any animals at home", f"{p} adopted pet"],
            ["pets"],
        )

    def trip():
        p, c, m = r.choice(PEOPLE), r.choice(CITIES), r.choice(MONTHS)
        return (
            "trip",
            p,
            f"In {m} {p} is travelling to {c} for two weeks and asked for restaurant tips there.",
            [f"where is {p} going on holiday", f"{p} vacation destination", f"{p} travel plans"],
            ["travel"],
        )

    def home():
        p, c = r.choice(PEOPLE), r.choice(CITIES)
        return (
            "home",
            p,
            f"{p} grew up in {c} and still visits family there every winter.",
            [f"{p} hometown", f"which city was {p} raised in", f"where did {p} grow up"],
            ["family"],
        )

    def instrument():
        p, i = r.choice(PEOPLE), r.choice(INSTRUMENTS)
        return (
            "music",
            p,
            f"{p} has been taking {i} lessons on Thursday evenings and is "
            f"practising for a recital.",
            [f"what instrument does {p} play", f"{p} music classes", f"{p} recital practice"],
            ["music"],
        )

    def sport():
        p, s = r.choice(PEOPLE), r.choice(SPORTS)
        return (
            "sport",
            p,
            f"{p} joined a {s} club and trains there three mornings a week.",
            [f"{p} exercise routine", f"which sport does {p} do", f"what club does {p} train at"],
            ["fitness"],
        )

    def job():
        p, (j, place) = r.choice(PEOPLE), r.choice(JOBS)
        return (
            "job",
            p,
            f"{p} works as a {j} and often covers night shifts at the {place}.",
            [f"what is {p}'s profession", f"{p} occupation", f"where does {p} work"],
            ["work"],
        )

    def lang():
        p, lg = r.choice(PEOPLE), r.choice(LANGS)
        return (
            "code",
            p,
            f"{p} is rewriting the billing service in {lg} because the old "
            f"code kept leaking memory.",
            [
                f"which programming language is {p} using",
                f"{p} rewrite of the payments system",
                f"{p} billing service memory leak",
            ],
            ["projects"],
        )

    def book():
        p, b = r.choice(PEOPLE), r.choice(BOOKS)
        return (
            "book",
            p,
            f"{p}'s favourite novel is {b}; they reread it every summer.",
            [f"{p} best loved book", f"what does {p} like to read", f"{p} favourite novel"],
            ["books"],
        )

    def birthday():
        p, m, d = r.choice(PEOPLE), r.choice(MONTHS), r.randint(1, 28)
        return (
            "birthday",
            p,
            f"{p}'s birthday is on {m} {d}; a card and lemon cake make them happy.",
            [f"when was {p} born", f"{p} birthday date", f"gift ideas for {p}"],
            ["dates"],
        )

    def garden():
        p, pl = r.choice(PEOPLE), r.choice(PLANTS)
        return (
            "garden",
            p,
            f"{p} is growing {pl} on the balcony and worries about aphids.",
            [f"what plants does {p} cultivate", f"{p} gardening", f"{p} balcony plants"],
            ["garden"],
        )

    def car():
        p, c = r.choice(PEOPLE), r.choice(CARS)
        return (
            "car",
            p,
            f"{p} drives an old {c} that needs new brakes before the MOT.",
            [f"{p}'s vehicle", f"what car does {p} own", f"{p} brakes repair"],
            ["errands"],
        )

    def tea():
        p, t = r.choice(PEOPLE), r.choice(TEAS)
        return (
            "tea",
            p,
            f"{p} prefers {t} tea in the afternoon, without sugar or milk.",
            [f"how does {p} take their tea", f"{p} favourite hot drink", f"{p} afternoon drink"],
            ["food"],
        )

    def meeting():
        p, d = r.choice(PEOPLE), r.choice(WEEKDAYS)
        return (
            "meeting",
            p,
            f"The weekly planning call with {p} moved to {d} at 10:30.",
            [f"when do I meet {p}", f"{p} sync schedule", f"planning call with {p}"],
            ["calendar"],
        )

    def partner():
        p, q = r.sample(PEOPLE, 2)
        return (
            "partner",
            p,
            f"{p} married {q} in a small ceremony by the sea.",
            [f"who is {p}'s spouse", f"{p} wedding", f"who did {p} marry"],
            ["family"],
        )

    def loan():
        p, amount = r.choice(PEOPLE), r.choice([50, 80, 120, 200, 350])
        return (
            "loan",
            p,
            f"I lent {p} {amount} euros for the concert tickets; they will pay it back next month.",
            [f"how much money does {p} owe me", f"{p} debt", f"did I lend {p} money"],
            ["money"],
        )

    def medicine():
        p = r.choice(PEOPLE)
        drug = r.choice(["ibuprofen", "metformin", "levothyroxine", "insulin", "salbutamol"])
        return (
            "medicine",
            p,
            f"{p} takes {drug} every morning and must not skip a dose.",
            [f"{p} medication", f"what pills is {p} on", f"{p} daily dose"],
            ["health"],
        )

    return [
        allergy,
        pet,
        trip,
        home,
        instrument,
        sport,
        job,
        lang,
        book,
        birthday,
        garden,
        car,
        tea,
        meeting,
        partner,
        loan,
        medicine,
    ]


GENERAL = [
    (
        "The office wifi password changes on the first Monday of every month.",
        ["when is the network passcode rotated"],
    ),
    (
        "Recycling goes out on Tuesday nights; glass is collected every other week.",
        ["which day is bin collection"],
    ),
    (
        "The user prefers answers in short bullet points rather than long paragraphs.",
        ["how should responses be formatted"],
    ),
    (
        "The landlord agreed to fix the leaking kitchen tap before the end of the month.",
        ["is the faucet repair scheduled"],
    ),
    (
        "The team decided to freeze deployments during the holiday week.",
        ["are releases paused over the holidays"],
    ),
    (
        "Dentist appointment: cleaning and a check of the cracked molar, booked for the 14th.",
        ["when do I see the dentist about my tooth"],
    ),
    (
        "The car insurance renews in March and the broker quoted a higher premium this year.",
        ["when is the auto policy due for renewal"],
    ),
    (
        "The user is learning Portuguese with an app and practises ten minutes a day.",
        ["what language am I studying"],
    ),
    (
        "Backups of the photo library run every Sunday night to the external drive.",
        ["how often are pictures backed up"],
    ),
    (
        "The quarterly tax payment is due on the 15th; the accountant needs receipts first.",
        ["deadline for paying taxes"],
    ),
]


def main() -> None:
    r = random.Random(20260101)
    makers = fact_templates(r)
    passages, queries, seen = [], [], set()
    while len(passages) < 500:
        kind, key, text, asks, tags = r.choice(makers)()
        if (kind, key) in seen:
            continue  # one fact of each kind per person, so every query has one answer
        seen.add((kind, key))
        pid = f"p{len(passages):04d}"
        passages.append({"type": "passage", "id": pid, "text": text, "tags": tags})
        if r.random() < 0.45:
            queries.append({"type": "query", "text": r.choice(asks), "relevant": [pid]})
    for text, asks in GENERAL:
        pid = f"p{len(passages):04d}"
        passages.append({"type": "passage", "id": pid, "text": text, "tags": ["misc"]})
        queries += [{"type": "query", "text": q, "relevant": [pid]} for q in asks]
    with OUT.open("w") as out:
        for row in passages + queries:
            out.write(json.dumps(row) + "\n")
    print(f"{len(passages)} passages, {len(queries)} queries -> {OUT}")


if __name__ == "__main__":
    main()

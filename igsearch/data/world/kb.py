"""The synthetic world's knowledge base: typed entities with relations, generated from a seed.

Entities are countries, cities, people, organisations and works (films and novels); distractor
records (events, awards) mention them without being asked about. Names are made of random
syllables, so no pretrained knowledge could answer a question, and they deliberately collide:
families share surnames, some people share first names, and a few names differ by one letter, so
that a vague query retrieves the wrong person. Every entity is put in one split (train/rl/dev/test):
questions of a held-out split are only ever about entities of that split. `rl` holds entities no
demonstration mentions, so RL trains on questions whose answers the warm start never saw, as
dev and test are (docs/design.md, "The synthetic world").
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

SPLITS = ("train", "rl", "dev", "test")
HELD_OUT = ("dev", "test", "rl")
"""The held-out splits, in the order they take their share of each entity kind."""
HELD_OUT_SHARE = 0.1
"""Share of each entity kind held out for each of dev, test and rl."""

# A small, regular syllable inventory: BPE learns the syllables as tokens, so a name is a few
# tokens that all occur in many other names (a tiny policy has to copy names token by token).
_ONSETS = "b d f g h k l m n p r s t v z".split()
_VOWELS = "a e i o u".split()
_CODAS = ["", "", "", "n", "r", "l", "s"]
_AVOID = (
    "pube",
    "anus",
    "rape",
    "nazi",
    "slut",
    "fag",
    "dick",
    "cock",
    "sex",
    "porn",
    "tit",
    "piss",
    "shit",
    "nig",
    "kill",
    "dead",
)
_CITY_SUFFIX = ["", "", "", "ford", "holm", "mouth", "stad", "burg", "ton", "wick", "vale"]
_COUNTRY_SUFFIX = ["ia", "land", "ar", "ovia", "istan", "ea"]
_REGIONS = [
    "the northern continent",
    "the southern islands",
    "the eastern steppe",
    "the western coast",
    "the central highlands",
    "the polar reach",
]
_CURRENCIES = ["crown", "mark", "dinar", "florin", "shilling", "thaler", "pound", "real"]
_OCCUPATIONS = [
    "painter",
    "chemist",
    "architect",
    "sculptor",
    "physicist",
    "lawyer",
    "engineer",
    "composer",
    "poet",
    "historian",
    "surgeon",
    "botanist",
]
ORG_KINDS = {
    "Systems": "software", "Studios": "film", "Press": "publishing", "Labs": "research",
    "Works": "engineering", "Motors": "car", "Foods": "food", "Bank": "banking", "Records": "music",
}  # fmt: skip
_ADJS = "Silent Hidden Broken Golden Last Winter Crimson Distant Quiet Burning Hollow Iron Painted Forgotten Lonely Bright Secret Northern Wild Frozen Pale Velvet Bitter Endless Falling Glass Scarlet Sleeping Stolen Wandering".split()
_NOUNS = "Harbor River Garden Lantern Mirror Orchard Bridge Tower Voyage Letter Forest Island Crown Shadow Promise Storm Valley Engine Window Compass Meadow Signal Lighthouse Kingdom Sparrow Anchor Station Feather Horizon Machine".split()
EVENT_KINDS = [
    "Film Festival",
    "Book Fair",
    "Science Forum",
    "Music Festival",
    "Trade Fair",
    "Chess Open",
]
AWARD_WORDS = ["Prize", "Medal", "Award"]


@dataclass
class Entity:
    """One entity of the world; `attrs` holds its relations (entity ids) and attributes."""

    id: str
    kind: str
    name: str
    aliases: tuple[str, ...] = ()
    split: str = "train"
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class KB:
    """All entities by id, and the ids of each kind in creation order."""

    entities: dict[str, Entity] = field(default_factory=dict)
    by_kind: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, name: str, **attrs: Any) -> Entity:
        ids = self.by_kind.setdefault(kind, [])
        ent = Entity(f"{kind}{len(ids):05d}", kind, name, (name,), attrs=attrs)
        ids.append(ent.id)
        self.entities[ent.id] = ent
        return ent

    def of(self, kind: str) -> list[Entity]:
        return [self.entities[i] for i in self.by_kind.get(kind, [])]

    def __getitem__(self, entity_id: str) -> Entity:
        return self.entities[entity_id]


class Namer:
    """Pronounceable random names, unique across the whole world (case-insensitively)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()

    def syllables(self, n: int) -> str:
        r = self.rng
        while True:
            word = "".join(
                r.choice(_ONSETS) + r.choice(_VOWELS) + r.choice(_CODAS) for _ in range(n)
            )
            if not any(bad in word for bad in _AVOID):
                return word.capitalize()

    def unique(self, make) -> str:
        for _ in range(1000):
            name = make()
            if name.lower() not in self.used:
                self.used.add(name.lower())
                return name
        raise RuntimeError("name space exhausted: enlarge the syllable inventory")

    def person(self, people: list[Entity]) -> str:
        r = self.rng
        if people and r.random() < 0.05:  # a near-duplicate of someone else's name
            other = r.choice(people).name.split(" ")
            cut = r.randrange(1, len(other[1]))
            surname = other[1][:cut] + r.choice("aeiounrlst") + other[1][cut + 1 :]
            candidate = f"{other[0]} {surname.capitalize()}"
            if candidate.lower() not in self.used:
                self.used.add(candidate.lower())
                return candidate
        first = (
            r.choice(people).name.split(" ")[0]
            if people and r.random() < 0.2
            else self.syllables(2)
        )
        return self.unique(lambda: f"{first} {self._surname(people)}")

    def _surname(self, people: list[Entity]) -> str:
        if people and self.rng.random() < 0.2:  # families share surnames
            return self.rng.choice(people).name.split(" ")[-1]
        return self.syllables(self.rng.choice((2, 2, 2, 2, 3)))


def _countries(kb: KB, namer: Namer, n: int) -> None:
    r = namer.rng
    for _ in range(n):
        stem = namer.syllables(2)
        name = namer.unique(lambda stem=stem: stem + r.choice(_COUNTRY_SUFFIX))
        ent = kb.add("country", name, region=r.choice(_REGIONS), currency=r.choice(_CURRENCIES))
        ent.attrs["language"] = stem + r.choice(["ic", "ian", "ese", "ish"])
        ent.attrs["long_name"] = f"{r.choice(['Republic', 'Kingdom', 'Federation'])} of {name}"
        ent.aliases = (name, ent.attrs["long_name"])


def _cities(kb: KB, namer: Namer, n: int) -> None:
    r = namer.rng
    countries = kb.of("country")
    for i in range(n):
        country = countries[i] if i < len(countries) else r.choice(countries)
        name = namer.unique(
            lambda: (lambda suffix: namer.syllables(r.choice((1, 2)) if suffix else 2) + suffix)(
                r.choice(_CITY_SUFFIX)
            )
        )
        kb.add("city", name.capitalize(), country=country.id, year=r.randint(800, 1900),
               river=namer.syllables(2), population=r.randrange(20, 900) * 1000)  # fmt: skip
        if i < len(countries):
            country.attrs["capital"] = kb.by_kind["city"][-1]


def _people(kb: KB, namer: Namer, n: int) -> None:
    r = namer.rng
    cities = kb.by_kind["city"]
    for _ in range(n):
        kb.add("person", namer.person(kb.of("person")), born_in=r.choice(cities), year=r.randint(1850, 1990),
               occupation=r.choice(_OCCUPATIONS), pronoun=r.choice(("he", "she")), moved_to=r.choice(cities))  # fmt: skip


def _orgs(kb: KB, namer: Namer, n: int) -> None:
    r = namer.rng
    founders = [p for p in kb.of("person") if p.attrs["year"] <= 1985]
    for _ in range(n):
        suffix = r.choice(sorted(ORG_KINDS))
        name = namer.unique(lambda suffix=suffix: f"{namer.syllables(2)} {suffix}")
        founder = r.choice(founders)
        year = r.randint(founder.attrs["year"] + 20, min(founder.attrs["year"] + 60, 2020))
        org = kb.add("org", name, founder=founder.id, city=r.choice(kb.by_kind["city"]), year=year,
                     industry=ORG_KINDS[suffix], employees=r.randrange(5, 300) * 10)  # fmt: skip
        org.aliases = (name, name.split(" ")[0])
        founder.attrs.setdefault("founded", org.id)
    for person in kb.of("person"):
        if r.random() < 0.5:
            person.attrs["works_for"] = r.choice(kb.by_kind["org"])


def _title(namer: Namer) -> str:
    r = namer.rng
    pattern = r.randrange(3)
    if pattern == 0:
        return f"The {r.choice(_ADJS)} {r.choice(_NOUNS)}"
    if pattern == 1:
        return f"{r.choice(_ADJS)} {r.choice(_NOUNS)}"
    return f"The {r.choice(_NOUNS)} of {namer.syllables(2)}"


def _works(kb: KB, namer: Namer, n: int) -> None:
    r = namer.rng
    people = [p for p in kb.of("person") if p.attrs["year"] <= 1990]
    creators = r.sample(people, max(2, len(people) // 5))
    for _ in range(n):
        creator = r.choice(creators)
        form = creator.attrs.setdefault("form", r.choice(("film", "novel")))
        creator.attrs["occupation"] = "film director" if form == "film" else "novelist"
        year = r.randint(creator.attrs["year"] + 20, min(creator.attrs["year"] + 70, 2022))
        producers = kb.by_kind["org"]
        work = kb.add("work", namer.unique(lambda: _title(namer)), form=form, creator=creator.id, year=year,
                      setting=r.choice(kb.by_kind["city"]), producer=r.choice(producers))  # fmt: skip
        creator.attrs.setdefault("works", []).append(work.id)


def _distractors(kb: KB, namer: Namer, n_events: int, n_awards: int) -> None:
    r = namer.rng
    people, cities, works = kb.by_kind["person"], kb.by_kind["city"], kb.by_kind["work"]
    for _ in range(n_events):
        city = kb[r.choice(cities)]
        name = f"{city.name} {r.choice(EVENT_KINDS)}"
        if name.lower() not in namer.used:  # one event of each kind per city
            namer.used.add(name.lower())
            kb.add(
                "event", name, city=city.id, year=r.randint(1900, 2022), guests=r.sample(people, 2)
            )
    award_names = [
        f"{namer.syllables(2)} {r.choice(AWARD_WORDS)}" for _ in range(max(2, n_awards // 10))
    ]
    for _ in range(n_awards):
        work = kb[r.choice(works)]
        name = f"{r.choice(award_names)} {work.attrs['year'] + r.randint(0, 3)}"
        if name.lower() not in namer.used:  # one winner per award and year
            namer.used.add(name.lower())
            kb.add("award", name, work=work.id, person=work.attrs["creator"])


def _assign_splits(kb: KB, rng: random.Random) -> None:
    for kind in ("country", "city", "person", "org", "work"):
        ids = list(kb.by_kind[kind])
        rng.shuffle(ids)
        n_held = max(1, round(len(ids) * HELD_OUT_SHARE))
        for i, entity_id in enumerate(ids):
            k = i // n_held
            kb[entity_id].split = HELD_OUT[k] if k < len(HELD_OUT) else "train"


def build_kb(seed: int, counts: dict[str, int]) -> KB:
    """Generate the knowledge base for `seed`; `counts` gives the number of each kind.

    Keys: country, city, person, org, work, event, award.
    """
    rng = random.Random(f"igsearch-world-kb-{seed}")
    namer = Namer(rng)
    kb = KB()
    _countries(kb, namer, counts["country"])
    _cities(kb, namer, max(counts["city"], counts["country"]))
    _people(kb, namer, counts["person"])
    _orgs(kb, namer, counts["org"])
    _works(kb, namer, counts["work"])
    _distractors(kb, namer, counts["event"], counts["award"])
    _assign_splits(kb, rng)
    return kb

"""Wikipedia-style passages about the world's entities, plus distractor passages.

Each entity gets two or three short passages titled with its name (as wiki-18 chunks share their
article's title), each of two to four sentences; its facts are spread across them and every fact
has several phrasings. Like later chunks of a Wikipedia article, secondary passages often refer to
their entity by pronoun, leaving the title to name it. Events and awards are distractors: they mention people, cities, works and
years without stating the facts that questions ask about. Passages are short on purpose: inserted
documents are most of a tiny policy's training tokens (docs/design.md, Tiny policies).

Every passage records the facts it states (`"entity_id:relation"`) and the entities it mentions,
so questions can name their supporting passages and demonstrations can pick plausible wrong
answers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from igsearch.data.world.kb import KB, Entity
from igsearch.retrieval.base import Doc


@dataclass(frozen=True)
class Passage:
    """One corpus passage with what it states and whom it mentions."""

    id: str
    title: str
    text: str
    facts: tuple[str, ...]
    mentions: tuple[str, ...]

    def doc(self) -> Doc:
        return Doc(self.id, f"{self.title}\n{self.text}")


Draft = tuple[str, list[str], list[str]]  # text, facts stated, entities mentioned


def _pick(rng: random.Random, templates: list[str], **values: object) -> str:
    return rng.choice(templates).format(**values)


def _person(kb: KB, p: Entity, rng: random.Random) -> list[Draft]:
    a, city, he = p.attrs, kb[p.attrs["born_in"]], p.attrs["pronoun"]
    his = "his" if he == "he" else "her"
    v = dict(
        n=p.name,
        c=city.name,
        y=a["year"],
        he=he,
        He=he.capitalize(),
        his=his,
        river=city.attrs["river"],
    )
    early = _pick(rng, [
        "{n} was born in {c} in {y}.", "{n} (born {y}) is a native of {c}.",
        "Born in {c} in {y}, {n} grew up there.", "{n} was born in {y} in the city of {c}.",
    ], **v) + " " + _pick(rng, [
        "{He} grew up near the {river} river.", "{He} was the eldest of four children.",
        "{His} father was a baker.", "{He} went to school in {his} home town.",
    ], His=his.capitalize(), **v)  # fmt: skip
    drafts: list[Draft] = [(early, [f"{p.id}:born_in", f"{p.id}:year"], [p.id, city.id])]
    moved = kb[a["moved_to"]]
    career = _pick(
        rng,
        ["{n} is a {o}.", "{He} works as a {o}.", "{He} became a well-known {o}."],
        o=a["occupation"],
        **v,
    )
    career += " " + _pick(
        rng,
        ["{He} later moved to {m}.", "{He} has lived in {m} for many years."],
        m=moved.name,
        **v,
    )
    mentions = [p.id, moved.id]
    if "works_for" in a:
        org = kb[a["works_for"]]
        career += " " + _pick(
            rng, ["{He} worked for {o}.", "{He} joined {o} as a young adult."], o=org.name, **v
        )
        mentions.append(org.id)
    drafts.append((career, [f"{p.id}:occupation"], mentions))
    works = [kb[w] for w in a.get("works", [])[:2]]
    if works:
        titles = " and ".join(w.name for w in works)
        text = _pick(
            rng,
            ["{He} is best known for {t}.", "{His} best-known work is {t}."],
            t=titles,
            His=his.capitalize(),
            **v,
        )
        drafts.append(
            (
                text + f" {he.capitalize()} received several awards.",
                [],
                [p.id] + [w.id for w in works],
            )
        )
    return drafts


def _city(kb: KB, c: Entity, rng: random.Random) -> list[Draft]:
    a, country = c.attrs, kb[c.attrs["country"]]
    v = dict(n=c.name, k=country.name, y=a["year"], river=a["river"], pop=f"{a['population']:,}")
    main = _pick(rng, [
        "{n} is a city in {k}. It was founded in {y}.", "{n} is a town in {k}, founded in {y}.",
        "Founded in {y}, {n} is a city in the country of {k}.",
    ], **v)  # fmt: skip
    facts = [f"{c.id}:country", f"{c.id}:year"]
    if country.attrs.get("capital") == c.id:
        main += f" It is the capital of {country.name}."
        facts.append(f"{country.id}:capital")
    second = _pick(
        rng, ["It lies on the {river} river.", "The {river} river flows through {n}."], **v
    )
    second += " " + _pick(
        rng, ["It has about {pop} inhabitants.", "Its population is about {pop}."], **v
    )
    return [(main, facts, [c.id, country.id]), (second, [], [c.id])]


def _country(kb: KB, k: Entity, rng: random.Random) -> list[Draft]:
    a = k.attrs
    cap = kb[a["capital"]]
    v = dict(
        n=k.name,
        long=a["long_name"],
        region=a["region"],
        lang=a["language"],
        cap=cap.name,
        cur=a["currency"],
    )
    main = _pick(
        rng,
        [
            "{n}, officially the {long}, is a country in {region}.",
            "The {long} is a country in {region}.",
        ],
        **v,
    )
    main += " " + _pick(
        rng, ["Its official language is {lang}.", "Most people there speak {lang}."], **v
    )
    second = _pick(
        rng, ["The capital of {n} is {cap}.", "{cap} is the capital and largest city of {n}."], **v
    )
    second += " " + _pick(rng, ["Its currency is the {cur}.", "It uses the {cur}."], **v)
    return [(main, [], [k.id]), (second, [f"{k.id}:capital"], [k.id, cap.id])]


def _org(kb: KB, o: Entity, rng: random.Random) -> list[Draft]:
    a, founder, city = o.attrs, kb[o.attrs["founder"]], kb[o.attrs["city"]]
    v = dict(
        n=o.name, f=founder.name, y=a["year"], ind=a["industry"], c=city.name, emp=a["employees"]
    )
    main = _pick(rng, [
        "{n} is a {ind} company founded by {f} in {y}.", "{f} founded {n} in {y}.",
        "Founded in {y} by {f}, {n} is a {ind} company.",
    ], **v)  # fmt: skip
    second = _pick(
        rng, ["It is based in {c}.", "Its headquarters are in {c}.", "{n} is based in {c}."], **v
    )
    second += " " + _pick(rng, ["It employs about {emp} people.", "It has about {emp} staff."], **v)
    return [
        (main, [f"{o.id}:founder", f"{o.id}:year"], [o.id, founder.id]),
        (second, [f"{o.id}:city"], [o.id, city.id]),
    ]


def _work(kb: KB, w: Entity, rng: random.Random) -> list[Draft]:
    a, creator, setting = w.attrs, kb[w.attrs["creator"]], kb[w.attrs["setting"]]
    v = dict(n=w.name, p=creator.name, y=a["year"], c=setting.name, org=kb[a["producer"]].name)
    if a["form"] == "film":
        main = _pick(
            rng,
            ["{n} is a {y} film directed by {p}.", "{n} is a film by {p}, released in {y}."],
            **v,
        )
        second = (
            _pick(rng, ["It is set in {c}.", "The film takes place in {c}."], **v)
            + " It was produced by {org}."
        )
    else:
        main = _pick(
            rng,
            ["{n} is a {y} novel written by {p}.", "{n} is a novel by {p}, published in {y}."],
            **v,
        )
        second = (
            _pick(rng, ["It is set in {c}.", "The novel takes place in {c}."], **v)
            + " It was published by {org}."
        )
    return [
        (main, [f"{w.id}:creator", f"{w.id}:year"], [w.id, creator.id]),
        (second.format(**v), [], [w.id, setting.id, a["producer"]]),
    ]


def _event(kb: KB, e: Entity, rng: random.Random) -> list[Draft]:
    a = e.attrs
    g1, g2 = (kb[g] for g in a["guests"])
    text = f"The {a['year']} {e.name} was held in {kb[a['city']].name}. Guests included {g1.name} and {g2.name}."
    return [(text, [], [e.id, a["city"], g1.id, g2.id])]


def _award(kb: KB, e: Entity, rng: random.Random) -> list[Draft]:
    work, person = kb[e.attrs["work"]], kb[e.attrs["person"]]
    text = f"The {e.name} went to {person.name} for {work.name}."
    return [(text, [], [e.id, work.id, person.id])]


WRITERS = {
    "country": _country,
    "city": _city,
    "person": _person,
    "org": _org,
    "work": _work,
    "event": _event,
    "award": _award,
}


def build_passages(kb: KB, seed: int) -> list[Passage]:
    """All passages of the world, ids `w0000000`.. in a seeded shuffled order."""
    rng = random.Random(f"igsearch-world-passages-{seed}")
    drafts: list[tuple[str, Draft]] = []
    for kind, write in WRITERS.items():
        for entity in kb.of(kind):
            drafts.extend((entity.name, d) for d in write(kb, entity, rng))
    rng.shuffle(drafts)
    return [
        Passage(f"w{i:07d}", title, text, tuple(facts), tuple(dict.fromkeys(mentions)))
        for i, (title, (text, facts, mentions)) in enumerate(drafts)
    ]

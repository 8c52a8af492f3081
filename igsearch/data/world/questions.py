"""Questions over the world: single-hop (NQ-like), bridge (HotpotQA-like 2-hop), comparison
(2Wiki-like) and compositional (MuSiQue-like 3-hop), each with the chain of hops an oracle follows.

Departures from the benchmarks they imitate, and why:
- comparison questions ask for an attribute of the winner ("Where was the older of A and B
  born?") rather than for A or B, so that no answer can be read off the question (a 50% guess
  would blur the no-retrieval baseline);
- held-out questions are about held-out entities only: a dev/test question's subject never
  occurs in any training question, and no training question touches a held-out entity, so every
  correct held-out answer has to come through retrieval.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from itertools import cycle

from igsearch.data.qa import QAExample
from igsearch.data.world.kb import KB, Entity
from igsearch.data.world.passages import Passage

QUESTION_TYPES = ("single_hop", "bridge", "comparison", "compositional")
_WORK_WORDS = {
    "film": dict(
        maker="director", made="directed", made_active="directed", out="released", form="film"
    ),
    "novel": dict(
        maker="author", made="written", made_active="wrote", out="published", form="novel"
    ),
}


@dataclass(frozen=True)
class Hop:
    """One step of the oracle's chain: search `query` about `entity`, read `relation`."""

    entity: str
    relation: str
    query: str
    vague: str
    alt_query: str
    note: str
    value: str
    value_id: str | None
    support: tuple[str, ...]


@dataclass(frozen=True)
class Question:
    """A question with its gold answers and the oracle's chain of hops."""

    id: str
    type: str
    template: str
    question: str
    answers: tuple[str, ...]
    answer_kind: str
    plan: str
    hops: tuple[Hop, ...]
    final_note: str
    answer_hop: int
    subjects: tuple[str, ...]
    chain: tuple[str, ...]

    def to_qa(self) -> QAExample:
        supporting = list(dict.fromkeys(p for h in self.hops for p in h.support))
        metadata = {
            "type": self.type, "hops": len(self.hops), "supporting_ids": supporting,
            "answer_supporting_ids": list(self.hops[self.answer_hop].support),
            "template": self.template, "subjects": list(self.subjects), "source": "igsearch-world",
        }  # fmt: skip
        return QAExample(self.id, self.question, self.answers, metadata)


def _words(e: Entity) -> dict[str, str]:
    return _WORK_WORDS[e.attrs["form"]] if e.kind == "work" else {}


def _value(kb: KB, e: Entity, relation: str) -> tuple[str, str | None]:
    """The text and entity id (None for a year) of `relation` of `e`."""
    if relation == "year":
        return str(e.attrs["year"]), None
    target = kb[e.attrs[relation]]  # relations are named after the attribute holding their target
    return target.name, target.id


_KEYWORDS = {  # (kind, relation) -> (query keyword, alternative keyword, note template)
    ("person", "born_in"): ("born", "birthplace", "{e} was born in {v}"),
    ("person", "year"): ("born", "birth year", "{e} was born in {v}"),
    ("org", "founder"): ("founded", "founder", "{e} was founded by {v}"),
    ("org", "year"): ("founded", "founding year", "{e} was founded in {v}"),
    ("org", "city"): ("headquarters", "based", "{e} is based in {v}"),
    ("work", "creator"): ("{form} {maker}", "{made} by", "{e} was {made} by {v}"),
    ("work", "year"): ("{form}", "{form} {out}", "{e} was {out} in {v}"),
    ("city", "country"): ("country", "located", "{e} is in {v}"),
    ("country", "capital"): ("capital", "capital city", "the capital of {e} is {v}"),
}


def _vague(e: Entity, keyword: str, rng: random.Random) -> str:
    if e.kind == "person":
        return f"{rng.choice(e.name.split(' '))} {keyword}"
    if e.kind == "org":
        return f"{e.attrs['industry']} company {keyword}"
    if e.kind == "work":
        return f"{e.name.split(' ')[-1]} {keyword}"
    return f"{e.kind} {keyword}"


def make_hop(
    kb: KB, facts: dict[str, list[str]], entity_id: str, relation: str, rng: random.Random
) -> Hop:
    """The oracle's hop reading `relation` of `entity_id`, with its supporting passages."""
    e = kb[entity_id]
    keyword, alt, note = (
        t.format(v="{v}", e="{e}", **_words(e)) for t in _KEYWORDS[(e.kind, relation)]
    )
    value, value_id = _value(kb, e, relation)
    support = tuple(facts.get(f"{entity_id}:{relation}", ()))
    if not support:
        raise RuntimeError(f"world generation: no passage states {entity_id}:{relation}")
    return Hop(entity_id, relation, f"{e.name} {keyword}", _vague(e, keyword, rng), f"{e.name} {alt}",
               note.replace("{v}", value).replace("{e}", e.name), value, value_id, support)  # fmt: skip


@dataclass(frozen=True)
class ChainSpec:
    """A question template that follows relations from a subject entity."""

    type: str
    kind: str
    relations: tuple[str, ...]
    phrasings: tuple[str, ...]
    plan: str


CHAINS = [
    ChainSpec("single_hop", "person", ("born_in",), ("Where was {s} born?", "In which city was {s} born?", "What is the birthplace of {s}?"), "find the birthplace of {s}"),
    ChainSpec("single_hop", "person", ("year",), ("When was {s} born?", "In what year was {s} born?"), "find the birth year of {s}"),
    ChainSpec("single_hop", "org", ("founder",), ("Who founded {s}?", "Who is the founder of {s}?"), "find the founder of {s}"),
    ChainSpec("single_hop", "org", ("year",), ("When was {s} founded?", "In what year was {s} founded?"), "find the founding year of {s}"),
    ChainSpec("single_hop", "org", ("city",), ("Where is {s} based?", "In which city is {s} headquartered?"), "find the headquarters of {s}"),
    ChainSpec("single_hop", "work", ("creator",), ("Who {made_active} {s}?", "Who is the {maker} of the {form} {s}?"), "find the {maker} of {s}"),
    ChainSpec("single_hop", "work", ("year",), ("When was {s} {out}?", "In what year was the {form} {s} {out}?"), "find the year of {s}"),
    ChainSpec("single_hop", "city", ("country",), ("Which country is {s} in?", "In which country is the city of {s}?"), "find the country of {s}"),
    ChainSpec("single_hop", "country", ("capital",), ("What is the capital of {s}?", "Which city is the capital of {s}?"), "find the capital of {s}"),
    ChainSpec("bridge", "person", ("born_in", "country"), ("In which country was {s} born?",), "find the birthplace of {s}, then its country"),
    ChainSpec("bridge", "work", ("creator", "born_in"), ("Where was the {maker} of {s} born?",), "find the {maker} of {s}, then the birthplace"),
    ChainSpec("bridge", "org", ("founder", "year"), ("When was the founder of {s} born?",), "find the founder of {s}, then the birth year"),
    ChainSpec("bridge", "org", ("city", "country"), ("In which country is {s} based?",), "find the headquarters of {s}, then its country"),
    ChainSpec("compositional", "work", ("creator", "born_in", "country"), ("In which country was the {maker} of {s} born?",), "find the {maker} of {s}, the birthplace, then its country"),
    ChainSpec("compositional", "org", ("founder", "born_in", "country"), ("In which country was the founder of {s} born?",), "find the founder of {s}, the birthplace, then its country"),
    ChainSpec("compositional", "person", ("born_in", "country", "capital"), ("What is the capital of the country where {s} was born?",), "find the birthplace of {s}, its country, then the capital"),
]  # fmt: skip

_COMPARISONS = {  # kind -> (relation read, phrasings, plan, word for the winner)
    "person": ("born_in", ("Where was the older of {a} and {b} born?", "Of {a} and {b}, where was the older one born?"), "find the birth years of {a} and {b}", "older"),
    "work": ("creator", ("Who {made_active} the earlier {form}, {a} or {b}?",), "find the years of {a} and {b}", "earlier"),
    "org": ("founder", ("Who founded the older company, {a} or {b}?",), "find the founding years of {a} and {b}", "older"),
}  # fmt: skip


def _answers(kb: KB, hop: Hop) -> tuple[tuple[str, ...], str]:
    if hop.value_id is None:
        return (hop.value,), "year"
    target = kb[hop.value_id]
    return target.aliases, target.kind


def plan_items(plan: str) -> list[str]:
    """The items of a chain's plan, in order: "find the birthplace of X, its country, then the
    capital" -> ["the birthplace of X", "its country", "the capital"].

    Each hop's note restates its item verbatim after the value ("Denlil is the birthplace of X"),
    so the words that follow the item in the plan (", then its country" or the end of the plan)
    tell a policy whether to search again or answer by copying what came next the last time it
    wrote those words, instead of recalling the question's type across the documents in between.
    """
    items = plan.removeprefix("find ").split(", ")
    return [item.removeprefix("then ") for item in items]


def _chain_question(
    kb: KB, facts, spec: ChainSpec, subject: Entity, rng: random.Random
) -> Question:
    hops, entity_id = [], subject.id
    for relation in spec.relations:
        hop = make_hop(kb, facts, entity_id, relation, rng)
        hops.append(hop)
        entity_id = hop.value_id or entity_id
    answers, kind = _answers(kb, hops[-1])
    words = _words(subject)
    plan = spec.plan.format(s=subject.name, **words)
    hops = [
        replace(h, note=f"{h.value} is {item}")
        for h, item in zip(hops, plan_items(plan), strict=True)
    ]
    text = rng.choice(spec.phrasings).format(s=subject.name, **words)
    chain = tuple(
        dict.fromkeys([h.entity for h in hops] + [h.value_id for h in hops if h.value_id])
    )
    template = f"{spec.kind}:{'>'.join(spec.relations)}"
    return Question("", spec.type, template, text, answers, kind, plan, tuple(hops),
                    hops[-1].note, len(hops) - 1, (subject.id,), chain)  # fmt: skip


def _comparison(kb: KB, facts, a: Entity, b: Entity, rng: random.Random) -> Question | None:
    relation, phrasings, plan, winner = _COMPARISONS[a.kind]
    if a.attrs["year"] == b.attrs["year"] or (
        a.kind == "work" and a.attrs["form"] != b.attrs["form"]
    ):
        return None
    hops = tuple(make_hop(kb, facts, e.id, relation, rng) for e in (a, b))
    if hops[0].value == hops[1].value:
        return None
    year_hops = [make_hop(kb, facts, e.id, "year", rng) for e in (a, b)]
    hops = tuple(
        replace(
            h, note=f"{h.note} ({y.value})", support=tuple(dict.fromkeys(h.support + y.support))
        )
        for h, y in zip(hops, year_hops, strict=True)
    )
    first = 0 if a.attrs["year"] < b.attrs["year"] else 1
    answers, kind = _answers(kb, hops[first])
    text = rng.choice(phrasings).format(a=a.name, b=b.name, **_words(a))
    final = f"{hops[1].note}; the {'first' if first == 0 else 'second'} is {winner}"
    chain = (a.id, b.id) + tuple(h.value_id for h in hops if h.value_id)
    return Question(
        "",
        "comparison",
        f"{a.kind}:compare",
        text,
        answers,
        kind,
        plan.format(a=a.name, b=b.name),
        hops,
        final,
        first,
        (a.id, b.id),
        chain,
    )


def _eligible(kb: KB, q: Question, split: str) -> bool:
    """Train questions stay inside training entities. A held-out split's questions are about its
    own entities; an RL question's chain never passes through dev or test entities, and an
    evaluation question's never through the other evaluation split's."""
    if split == "train":
        return all(kb[e].split == "train" for e in q.chain)
    barred = {"rl": ("dev", "test"), "dev": ("test",), "test": ("dev",)}[split]
    return all(kb[s].split == split for s in q.subjects) and not any(
        kb[e].split in barred for e in q.chain
    )


def _leaks(q: Question) -> bool:
    """True when an answer can be read off the question text (such questions are dropped)."""
    from igsearch.rewards.outcome import normalize_answer

    text = f" {normalize_answer(q.question)} "
    return any(f" {normalize_answer(a)} " in text for a in q.answers)


def _candidates(
    kb: KB, facts, split: str, rng: random.Random
) -> dict[str, list[Iterator[Question]]]:
    """Per question type, one lazy stream of eligible questions per template (shuffled subjects)."""

    def stream(
        make: Callable[[Entity], Question | None], kind: str, n_pairs: int = 0
    ) -> Iterator[Question]:
        subjects = [e for e in kb.of(kind) if split == "train" or e.split == split]
        rng.shuffle(subjects)
        for s in subjects:
            q = make(s)
            if q is not None and _eligible(kb, q, split) and not _leaks(q):
                yield q

    out: dict[str, list[Iterator[Question]]] = {t: [] for t in QUESTION_TYPES}
    for spec in CHAINS:
        out[spec.type].append(
            stream(lambda s, spec=spec: _chain_question(kb, facts, spec, s, rng), spec.kind)
        )
    for kind in _COMPARISONS:
        pool = [e for e in kb.of(kind) if e.split == split]

        def pair(s: Entity, pool=pool) -> Question | None:
            for other in rng.sample(pool, min(len(pool), 8)):
                q = _comparison(kb, facts, s, other, rng) if other is not s else None
                if q is not None and _eligible(kb, q, split):
                    return q
            return None

        out["comparison"].append(stream(pair, kind))
    return out


def fact_index(passages: list[Passage]) -> dict[str, list[str]]:
    """Map every stated fact ("entity_id:relation") to the ids of the passages stating it."""
    facts: dict[str, list[str]] = {}
    for p in passages:
        for fact in p.facts:
            facts.setdefault(fact, []).append(p.id)
    return facts


def build_questions(
    kb: KB, passages: list[Passage], split: str, per_type: int, seed: int
) -> list[Question]:
    """Up to `per_type` questions of each type for `split`, templates taking turns within a type."""
    rng = random.Random(f"igsearch-world-questions-{split}-{seed}")
    facts = fact_index(passages)
    out: list[Question] = []
    seen: set[str] = set()
    for streams in _candidates(kb, facts, split, rng).values():
        out += _take(streams, per_type, seen)
    return [replace(q, id=f"{split}-{i:06d}") for i, q in enumerate(out)]


def _take(streams: list[Iterator[Question]], n: int, seen: set[str]) -> list[Question]:
    """Up to `n` questions with unseen texts, the streams taking turns until all run dry."""
    out: list[Question] = []
    live = list(streams)
    for stream in cycle(streams):
        if len(out) >= n or not live:
            break
        if stream not in live:
            continue
        q = next(stream, None)
        if q is None:
            live.remove(stream)
        elif q.question not in seen:
            seen.add(q.question)
            out.append(q)
    return out

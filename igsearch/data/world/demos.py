"""Oracle demonstrations for the supervised warm start, in the rollout loop's own format.

A demonstration is what igsearch's rollout loop would produce for a perfect-ish policy: the bare
prompt, then generated segments (`<think> … </think>\\n<search> query </search>`) alternating
with inserted information blocks (`tags.wrap_info(render_docs(hits))`, hits = the real BM25
top-k of that query over the world index), ending with `<think> … </think>\\n<answer> A </answer>`.
Segments are stored separately with a `generated` flag so tokenisation is unambiguous: each is
tokenised alone and only generated ones are trained (igsearch.train.sft_data).

Controlled imperfection, so RL has room to improve and IG something to tell apart:
- a vague first query (a surname alone, a generic description) whose documents usually miss the
  fact, followed by "not found" and the precise query;
- a redundant search repeating a hop that was already answered;
- a wrong final answer, taken from an entity or year that the read documents mention;
- habits, on the question types `habit_types` names: an early answer (the chain's last-but-one
  value, the city instead of its country), a generic first query (the entity's kind and the
  relation, no name: "person born") followed by a guess, or query drift (a chain's second search
  names the question's subject instead of the entity the first hop found, "X country" for "Y
  country", followed by a guess when it misses; the one on by default). Above half of a
  type's demonstrations, the warm start follows the habit greedily on every such question: a
  search decision that costs answers on any entity, for RL to unlearn on questions it never
  trains on (docs/design.md, "Tiny policies and the synthetic world").
Think texts are short and templated: the plan names the subject ("find the birthplace of X") and
each note after a successful read first cites its evidence, the retrieved document's line verbatim
up to the sentence stating the fact ("Doc 1(Title: X) X (born 1950) is a native of Y."), then states
the fact in a fixed form ("so X was born in Y"). A policy trained from scratch has to learn to copy
names token by token, from the question into a query and from a document into an answer. Quoting
turns the second copy into two easy ones: a verbatim copy of a line prefix, which the same
mechanism that copies the question learns, and a pick from the sentence just written.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from igsearch.data.world.kb import KB
from igsearch.data.world.passages import Passage
from igsearch.data.world.questions import QUESTION_TYPES, Hop, Question
from igsearch.protocol import TagSet, build_prompt, get_tagset, render_doc, render_docs
from igsearch.retrieval.base import Hit

SearchFn = Callable[[list[str], int], list[list[Hit]]]
_YEAR = re.compile(r"\b(1[0-9]{3}|20[0-2][0-9])\b")
_SENTENCE_END = re.compile(r"(?<=\.)(?= |$)")


def cite(hits: Sequence[Hit], support: Sequence[str], value: str) -> str | None:
    """The evidence for `value`: the best-ranked supporting hit's rendered line, verbatim, up to
    the end of the first sentence that states `value`; None when no retrieved passage does."""
    pattern = re.compile(rf"(?<!\w){re.escape(value)}(?!\w)")
    for rank, hit in enumerate(hits, start=1):
        if hit.id not in support:
            continue
        match = pattern.search(hit.text)
        if match is None:
            continue
        ends = [m.start() for m in _SENTENCE_END.finditer(hit.text) if m.start() >= match.end()]
        return render_doc(rank, hit.title, hit.text[: ends[0] if ends else len(hit.text)])
    return None


@dataclass(frozen=True)
class Noise:
    """Shares of imperfect demonstrations (each drawn independently per demonstration)."""

    vague: float = 0.15
    redundant: float = 0.1
    wrong_answer: float = 0.1
    give_up: float = 0.0
    early_answer: float = 0.0
    habit_types: tuple[str, ...] = ("compositional",)
    drift: float = 0.0


def sample_demo_questions(
    questions: Sequence[Question], n: int, weights: dict[str, float], rng: random.Random
) -> list[Question]:
    """`n` training questions with the given share of each type; a type's questions repeat only
    once all of them were used."""
    by_type = {t: [q for q in questions if q.type == t] for t in QUESTION_TYPES}
    total = sum(weights.get(t, 0.0) for t in QUESTION_TYPES if by_type[t])
    out: list[Question] = []
    for t in QUESTION_TYPES:
        pool = by_type[t]
        if not pool or not weights.get(t):
            continue
        rng.shuffle(pool)
        k = round(n * weights[t] / total)
        out.extend(pool[i % len(pool)] for i in range(k))
    rng.shuffle(out)
    return out


def _swap(text: str, a: str, b: str) -> str:
    """Exchange the words `a` and `b` in a comparison's final note."""
    return " ".join(b if w == a else a if w == b else w for w in text.split(" "))


class DemoWriter:
    """Builds demonstrations for questions, batching every BM25 search."""

    def __init__(self, kb: KB, passages: Sequence[Passage], search: SearchFn, *, topk: int = 3,
                 tags: TagSet | str = "search-r1", noise: Noise = Noise(), seed: int = 0,
                 max_searches: int = 4):  # fmt: skip
        self.kb, self.search_fn, self.topk, self.noise = kb, search, topk, noise
        self.tags, self.max_searches = get_tagset(tags), max_searches
        self.passages = {p.id: p for p in passages}
        self.rng = random.Random(f"igsearch-world-demos-{seed}")
        self.cache: dict[str, list[Hit]] = {}

    def _prefetch(self, queries: list[str]) -> None:
        todo = list(dict.fromkeys(q for q in queries if q not in self.cache))
        for start in range(0, len(todo), 2048):
            chunk = todo[start : start + 2048]
            for q, hits in zip(chunk, self.search_fn(chunk, self.topk), strict=True):
                self.cache[q] = hits

    def build(self, questions: Sequence[Question]) -> tuple[list[dict], int]:
        """Demonstrations for `questions` (in order) and the number dropped because even the
        oracle's queries did not retrieve a supporting passage."""
        plans = [self._plan(q) for q in questions]
        self._prefetch(
            [query for q, p in zip(questions, plans, strict=True) for query in self._queries(q, p)]
        )
        demos, dropped = [], 0
        for q, plan in zip(questions, plans, strict=True):
            demo = self._assemble(q, plan)
            if demo is None:
                dropped += 1
                continue
            demos.append({"id": f"demo-{len(demos):06d}", **demo})
        return demos, dropped

    def _plan(self, q: Question) -> dict:
        r, n = self.rng, self.noise
        vague, redundant = r.random() < n.vague, r.random() < n.redundant
        wrong = r.random() < n.wrong_answer
        hop = r.randrange(len(q.hops))
        habit = q.type in n.habit_types  # no draw when off: older worlds stay unchanged
        give_up = n.give_up > 0 and habit and r.random() < n.give_up
        early = n.early_answer > 0 and habit and len(q.hops) > 1 and r.random() < n.early_answer
        early = early and not give_up and q.type != "comparison"
        drift = n.drift > 0 and habit and len(q.hops) > 1 and q.type != "comparison"
        drift = drift and r.random() < n.drift and not (give_up or early)
        vague = vague and not give_up
        if len(q.hops) + vague + redundant > self.max_searches:  # the rollout's turn budget
            redundant = False
        if len(q.hops) + vague > self.max_searches:
            vague = False
        return {"vague": vague, "redundant": hop if redundant else None, "wrong": wrong,
                "give_up": give_up, "early": early, "drift": drift}  # fmt: skip

    def _queries(self, q: Question, plan: dict) -> list[str]:
        out = [h.query for h in q.hops] + [h.alt_query for h in q.hops]
        return (
            out
            + ([q.hops[0].vague] if plan["vague"] else [])
            + ([self._generic(q.hops[0])] if plan["give_up"] else [])
            + ([self._drifted(q)] if plan["drift"] else [])
        )

    def _generic(self, hop: Hop) -> str:
        """The hop's query with the entity's kind in place of its name."""
        e = self.kb[hop.entity]
        return f"{e.kind} {hop.query.removeprefix(e.name).strip()}"

    def _drifted(self, q: Question) -> str:
        """The second hop's query with the question's subject named in place of the entity the
        first hop found ("X country" where X's city was wanted)."""
        first, second = (self.kb[h.entity] for h in q.hops[:2])
        return f"{first.name} {q.hops[1].query.removeprefix(second.name).strip()}"

    def _found(self, hits: list[Hit], support: Sequence[str]) -> bool:
        return any(h.id in support for h in hits)

    def _turn(self, think: str, action: str, content: str) -> dict:
        t = self.tags
        return {
            "text": f"{t.open(t.think)} {think} {t.close(t.think)}\n{t.open(action)} {content} {t.close(action)}",
            "generated": True,
        }

    def _search(self, segments: list[dict], think: str, query: str) -> list[Hit]:
        hits = self.cache[query]
        segments.append(self._turn(think, self.tags.search, query))
        segments.append({"text": self.tags.wrap_info(render_docs(hits)), "generated": False})
        return hits

    def _assemble(self, q: Question, plan: dict) -> dict | None:
        segments: list[dict] = []
        noise: list[str] = []
        think, read = q.plan, []
        for i, hop in enumerate(q.hops):
            if plan["early"] and i == len(q.hops) - 1:  # answer the chain's last-but-one value
                return self._finish(
                    q, segments, think, q.hops[i - 1].value, [*noise, "early_answer"]
                )
            if i == 0 and plan["give_up"]:
                generic = self._generic(hop)
                hits = self._search(segments, think, generic)
                if not self._found(hits, hop.support):
                    return self._give_up(q, segments, hits, ["give_up"])
                noise.append("generic")
            elif i == 0 and plan["vague"]:
                noise.append("vague")
                if not self._found(self._search(segments, think, hop.vague), hop.support):
                    think = "not found, search again"
                    hits = self._search(segments, think, hop.query)
                else:
                    hits = self.cache[hop.vague]
            elif i == 1 and plan["drift"]:
                hits = self._search(segments, think, self._drifted(q))
                if not self._found(hits, hop.support):
                    return self._give_up(q, segments, hits, [*noise, "drift"])
                noise.append("drift")
            else:
                hits = self._search(segments, think, hop.query)
            if not self._found(hits, hop.support):
                if not self._found(self.cache[hop.alt_query], hop.support):
                    return None
                hits = self._search(segments, "not found, search again", hop.alt_query)
            if plan["redundant"] == i:
                noise.append("redundant")
                self._search(segments, f"{hop.note}; check again", hop.alt_query)
            read.append(hits)
            evidence = self._cite(hits, hop)
            think = hop.note if evidence is None else f"{evidence} So {hop.note}"
        answer, final = q.answers[0], q.final_note
        if evidence is not None:
            final = f"{evidence} So {final}"
        if plan["wrong"]:
            wrong = self._wrong_answer(q, read[q.answer_hop])
            if wrong is not None:
                noise.append("wrong_answer")
                value = re.escape(q.hops[q.answer_hop].value)
                final = (
                    _swap(q.final_note, "first", "second")  # same facts, wrong winner, no evidence
                    if q.type == "comparison"
                    else re.sub(rf"\b{value}\b", wrong, q.final_note)
                )
                answer = wrong
        return self._finish(q, segments, final, answer, noise)

    def _give_up(
        self, q: Question, segments: list[dict], hits: list[Hit], noise: list[str]
    ) -> dict | None:
        """End after a habit's query that missed: a guess from what its documents mention."""
        guess = self._plausible(q, hits)
        if guess is None:
            return None
        return self._finish(q, segments, "not found, answer anyway", guess, noise)

    def _finish(self, q: Question, segments: list[dict], final: str, answer: str,
                noise: list[str]) -> dict | None:  # fmt: skip
        segments.append(self._turn(final, self.tags.answer, answer))
        prompt = build_prompt(q.question, self.tags, style="bare")
        searches = sum(1 for s in segments if not s["generated"])
        if searches > self.max_searches:
            return None
        return {"question_id": q.id, "type": q.type, "prompt": prompt, "segments": segments,
                "answer": answer, "correct": answer in q.answers, "searches": searches, "noise": noise}  # fmt: skip

    def _cite(self, hits: list[Hit], hop: Hop) -> str | None:
        """The hop's evidence quote, or None when it would name an entity of a held-out split:
        demonstrations never teach a dev or test name."""
        evidence = cite(hits, hop.support, hop.value)
        if evidence is None:
            return None
        mentioned = (self.kb[m] for h in hits for m in self.passages[h.id].mentions)
        if any(e.split != "train" and e.name in evidence for e in mentioned):
            return None
        return evidence

    def _wrong_answer(self, q: Question, hits: list[Hit]) -> str | None:
        """A plausible wrong answer: another entity of the answer's kind (or a year) that the
        documents mention; training-split entities only, so no held-out name is ever a target."""
        if q.type == "comparison":  # the classic slip: the other entity's value
            return q.hops[1 - q.answer_hop].value
        return self._plausible(q, hits)

    def _plausible(self, q: Question, hits: list[Hit]) -> str | None:
        """Another value of the answer's kind: a year or a training-split name the documents
        mention, else any training-split entity of that kind."""
        gold = q.answers[0]
        if q.answer_kind == "year":
            years = [y for h in hits for y in _YEAR.findall(h.text) if y != gold]
            return self.rng.choice(years) if years else str(int(gold) + self.rng.choice((-2, 2)))
        names = [
            self.kb[e].name for h in hits for e in self.passages[h.id].mentions
            if self.kb[e].kind == q.answer_kind and self.kb[e].split == "train" and self.kb[e].name != gold
        ]  # fmt: skip
        if not names:
            pool = [
                e.name for e in self.kb.of(q.answer_kind) if e.split == "train" and e.name != gold
            ]
            names = pool[:50]
        return self.rng.choice(names) if names else None

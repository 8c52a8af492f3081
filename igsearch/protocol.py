"""The agent protocol: tag sets, prompt templates, action parsing and document rendering.

Two tag sets ship in a registry: `search-r1` (think / search / information / answer) and
`autorefine` (think / search / documents / refine / answer). The policy generates until a closing
`</search>` or `</answer>` (or EOS); igsearch inserts retrieved documents, rendered one per line as
`Doc i(Title: ...) text`, inside the tag set's information tag.

Two renderings (`RENDERINGS`) write the prompt, the documents and the invalid-turn message:
`search-r1` reproduces Search-R1's strings byte for byte (its base-model training prompt, its
`Doc i(Title: <first line of contents>) <rest>` lines, stripped, right inside `<information>`), so
Search-R1 checkpoints and data work unchanged; `igsearch` is the compact form the synthetic world's
demonstrations and tiny policies are written in (titles unquoted, a new line before the closing
tag). `default_rendering` picks search-r1 for plain and chat prompts with the search-r1 tag set.

The text helpers here are pure; the rollout loop (igsearch.rollout.loop) tokenises the blocks they
render once and appends ids, never re-tokenising a whole trajectory.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from igsearch.errors import IGSearchError


@dataclass(frozen=True)
class TagSet:
    """The tags of one protocol variant and the fixed texts that go with them."""

    name: str
    """Registry name."""
    think: str = "think"
    """Reasoning tag (generated)."""
    search: str = "search"
    """Search query tag (generated); generation stops at its closing tag."""
    info: str = "information"
    """Tag wrapping inserted documents (never generated, never trained)."""
    answer: str = "answer"
    """Final answer tag (generated); generation stops at its closing tag."""
    refine: str | None = None
    """Optional tag in which the policy distils the documents it just read (autorefine)."""

    def open(self, tag: str) -> str:
        return f"<{tag}>"

    def close(self, tag: str) -> str:
        return f"</{tag}>"

    @property
    def stop_strings(self) -> tuple[str, str]:
        """Strings that end a generation turn (the stop string is kept in the output)."""
        return (self.close(self.search), self.close(self.answer))

    @property
    def all_tags(self) -> tuple[str, ...]:
        """Every opening and closing tag, e.g. for a tokenizer's special tokens."""
        names = [self.think, self.search, self.info, self.answer] + (
            [self.refine] if self.refine else []
        )
        return tuple(t for n in names for t in (self.open(n), self.close(n)))

    def wrap_info(self, docs_text: str) -> str:
        """The inserted observation block for rendered documents, with its surrounding new lines."""
        return f"\n\n{self.open(self.info)}{docs_text}{self.close(self.info)}\n\n"

    @property
    def invalid_message(self) -> str:
        """The fixed observation inserted after a turn that is neither a search nor an answer."""
        return (
            f"\nInvalid action. To search, write a query between {self.open(self.search)} and "
            f"{self.close(self.search)}. To answer, write it between {self.open(self.answer)} and "
            f"{self.close(self.answer)}.\n"
        )

    @property
    def final_turn_message(self) -> str:
        """Inserted when the search budget is spent: the next turn must answer."""
        return f"\nNo searches left. Give the final answer between {self.open(self.answer)} and {self.close(self.answer)}.\n"


TAG_SETS: dict[str, TagSet] = {
    "search-r1": TagSet("search-r1"),
    "autorefine": TagSet("autorefine", info="documents", refine="refine"),
}


def get_tagset(name: str | TagSet) -> TagSet:
    """The registered tag set `name`; unknown names fail listing the valid ones."""
    if isinstance(name, TagSet):
        return name
    if name not in TAG_SETS:
        raise IGSearchError(
            f"unknown tag set {name!r}; choose one of: {', '.join(sorted(TAG_SETS))}"
        )
    return TAG_SETS[name]


# ----------------------------------------------------------------------------- renderings

RENDERINGS = ("igsearch", "search-r1")
"""How prompts, documents and fixed messages are written (see the module docstring)."""

SEARCH_R1_INSTRUCTIONS = (
    "Answer the given question. You must conduct reasoning inside <think> and </think> first "
    "every time you get new information. After reasoning, if you find you lack some knowledge, "
    "you can call a search engine by <search> query </search> and it will return the top searched "
    "results between <information> and </information>. You can search as many times as your want. "
    "If you find no further external knowledge needed, you can directly provide the answer inside "
    "<answer> and </answer>, without detailed illustrations. "
    "For example, <answer> Beijing </answer>."
)
"""Search-R1's base-model instructions, verbatim (its spelling included)."""

SEARCH_R1_INVALID = (
    "\nMy previous action is invalid. If I want to search, I should put the query between "
    "<search> and </search>. If I want to give the final answer, I should put the answer between "
    "<answer> and </answer>. Let me try again.\n"
)
"""Search-R1's observation after a turn that is neither a search nor an answer, verbatim."""


def check_rendering(name: str, tags: TagSet | str = "search-r1") -> str:
    """`name` when it is a rendering the tag set can use; otherwise one line saying what to pick."""
    if name not in RENDERINGS:
        raise IGSearchError(f"unknown rendering {name!r}; choose one of: {', '.join(RENDERINGS)}")
    if name == "search-r1" and get_tagset(tags) != TAG_SETS["search-r1"]:
        raise IGSearchError(
            "rendering 'search-r1' writes Search-R1's tags; with tag set "
            f"{get_tagset(tags).name!r} use rendering 'igsearch'"
        )
    return name


def default_rendering(prompt_style: str, tags: TagSet | str = "search-r1") -> str:
    """search-r1 for plain and chat prompts with the search-r1 tag set, igsearch otherwise."""
    exact = prompt_style in ("plain", "chat") and get_tagset(tags) == TAG_SETS["search-r1"]
    return "search-r1" if exact else "igsearch"


def invalid_message(tags: TagSet, rendering: str = "igsearch") -> str:
    """The observation inserted after an invalid turn, in `rendering`."""
    return (
        SEARCH_R1_INVALID
        if check_rendering(rendering, tags) == "search-r1"
        else tags.invalid_message
    )


def wrap_observation(tags: TagSet, docs_text: str, rendering: str = "igsearch") -> str:
    """The inserted block for rendered documents: search-r1 strips them, igsearch keeps them."""
    if check_rendering(rendering, tags) == "search-r1":
        docs_text = docs_text.strip()
    return tags.wrap_info(docs_text)


# ----------------------------------------------------------------------------- prompts


def instructions(tags: TagSet) -> str:
    """The task instructions shared by the plain and chat templates."""
    t = tags
    refine = (
        f" After each {t.open(t.info)} block, note what matters inside {t.open(t.refine)} and {t.close(t.refine)}."
        if t.refine
        else ""
    )
    return (
        f"Answer the question. Think inside {t.open(t.think)} and {t.close(t.think)}. "
        f"To look something up, write a search query inside {t.open(t.search)} and {t.close(t.search)}; "
        f"the top results come back inside {t.open(t.info)} and {t.close(t.info)}.{refine} "
        f"Search as often as you need. When you know the answer, write it inside {t.open(t.answer)} and "
        f"{t.close(t.answer)}: a short answer only (a name, a place, a date or a number), no explanation."
    )


def search_r1_prompt(question: str) -> str:
    """Search-R1's training prompt: its question clean-up (stripped, "?" added) and template."""
    question = question.strip()
    if not question.endswith("?"):
        question += "?"
    return f"{SEARCH_R1_INSTRUCTIONS} Question: {question}\n"


def build_prompt(
    question: str,
    tags: TagSet | str = "search-r1",
    style: str = "plain",
    tokenizer: Any = None,
    rendering: str | None = None,
) -> str:
    """The prompt text for a question.

    `style="plain"` is for base models (instructions, then the question, then a new line);
    `style="chat"` puts the same text in a user message through the tokenizer's chat template with
    the generation prompt added; `style="bare"` is "Question: ...\n" alone, for policies trained
    from scratch on demonstrations, to which the instructions carry no information. With
    `rendering` 'search-r1' (the default for plain and chat, see `default_rendering`) the text is
    `search_r1_prompt`.
    """
    tags = get_tagset(tags)
    question_line = f"Question: {question.strip()}\n"
    if style == "bare":
        return question_line
    if rendering is None:
        rendering = default_rendering(style, tags)
    if check_rendering(rendering, tags) == "search-r1":
        user = search_r1_prompt(question)
    else:
        user = f"{instructions(tags)}\n{question_line}"
    if style == "plain":
        return user
    if style == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise IGSearchError(
                "prompt style 'chat' needs a tokenizer with a chat template; use 'plain'"
            )
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
        )
    raise IGSearchError(f"unknown prompt style {style!r}; choose 'plain', 'chat' or 'bare'")


# ----------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Search:
    """A search action; `start`/`end` are the query's character offsets in the parsed text."""

    query: str
    start: int
    end: int


@dataclass(frozen=True)
class Answer:
    """A final answer action."""

    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Invalid:
    """A turn that holds no complete search or answer; `reason` says why."""

    reason: str


Action = Search | Answer | Invalid


def _block(text: str, tag: str, search_from: int = 0) -> tuple[int, int, int] | None:
    """Find the first `</tag>` at or after `search_from` that has an opening `<tag>` before it.

    Returns (content start, content end, end of the closing tag); the innermost (last) opening
    tag is used, so `<a> x <a> y </a>` yields " y ".
    """
    open_t, close_t = f"<{tag}>", f"</{tag}>"
    pos = search_from
    while True:
        close_at = text.find(close_t, pos)
        if close_at < 0:
            return None
        open_at = text.rfind(open_t, search_from, close_at)
        if open_at >= 0:
            return open_at + len(open_t), close_at, close_at + len(close_t)
        pos = close_at + len(close_t)


def _stripped(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def parse_action(text: str, tags: TagSet | str = "search-r1") -> Action:
    """Parse the text generated in one turn into its first complete action.

    Whichever complete `<search>…</search>` or `<answer>…</answer>` closes first wins. An empty
    query, or a query holding protocol tags, is `Invalid`. Never raises.
    """
    tags = get_tagset(tags)
    found: list[tuple[int, type, tuple[int, int, int]]] = []
    for tag, kind in ((tags.search, Search), (tags.answer, Answer)):
        block = _block(text, tag)
        if block is not None:
            found.append((block[2], kind, block))
    if not found:
        return Invalid("no complete search or answer block")
    _, kind, (start, end, _) = min(found, key=lambda f: f[0])
    start, end = _stripped(text, start, end)
    content = text[start:end]
    if kind is Search:
        if not content:
            return Invalid("empty search query")
        if any(t in content for t in tags.all_tags):
            return Invalid("search query contains protocol tags")
        return Search(content, start, end)
    return Answer(content, start, end)


def extract_answer(response_text: str, tags: TagSet | str = "search-r1") -> str | None:
    """The content of the last complete answer block of a response (stripped), or None.

    Only the response is read, never the prompt (whose instructions mention the tags).
    """
    tags = get_tagset(tags)
    close_t = tags.close(tags.answer)
    close_at = response_text.rfind(close_t)
    if close_at < 0:
        return None
    open_at = response_text.rfind(tags.open(tags.answer), 0, close_at)
    if open_at < 0:
        return None
    return response_text[open_at + len(tags.open(tags.answer)) : close_at].strip()


# ----------------------------------------------------------------------------- documents


class _HitLike(Protocol):
    title: str
    text: str
    contents: str


def render_doc(i: int, title: str, text: str) -> str:
    """One document line: `Doc i(Title: title) text`."""
    return f"Doc {i}(Title: {title}) {text}"


def render_doc_search_r1(i: int, contents: str) -> str:
    """Search-R1's document line: the first line of `contents` as the title (quotes kept), the rest
    (new lines kept) as the text; a contents without a new line is all title."""
    title, _, text = contents.partition("\n")
    return render_doc(i, title, text)


def render_docs(
    hits: Sequence[_HitLike],
    max_tokens: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
    rendering: str = "igsearch",
) -> str:
    """Render hits one per line, numbered from 1, ending with a new line.

    igsearch lines read the hits' parsed title and text, search-r1 lines their raw contents.
    With `max_tokens` and `count_tokens`, whole documents are kept while they fit, and the first
    document that does not fit is cut at a word boundary; the rest are dropped.
    """
    if rendering == "search-r1":
        lines = [render_doc_search_r1(i, h.contents) for i, h in enumerate(hits, start=1)]
    else:
        lines = [render_doc(i, h.title, h.text) for i, h in enumerate(hits, start=1)]
    text = "".join(line + "\n" for line in lines)
    if max_tokens is None or count_tokens is None or count_tokens(text) <= max_tokens:
        return text
    kept = ""
    for line in lines:
        if count_tokens(kept + line + "\n") <= max_tokens:
            kept += line + "\n"
            continue
        words = line.split(" ")
        lo, hi = 0, len(words)
        while lo < hi:  # the longest word prefix of this line that still fits
            mid = (lo + hi + 1) // 2
            if count_tokens(kept + " ".join(words[:mid]) + "\n") <= max_tokens:
                lo = mid
            else:
                hi = mid - 1
        return kept + (" ".join(words[:lo]) + "\n" if lo else "")
    return kept


_WS = re.compile(r"\s+")


def normalize_query(query: str) -> str:
    """Collapse white space in a query before it is sent to a retriever."""
    return _WS.sub(" ", query).strip()

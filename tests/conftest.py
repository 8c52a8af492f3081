"""Shared fixtures: a small hand-written corpus of made-up entities with answerable questions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# (id, title, text, question answered by this passage). Every entity is made up and every passage
# is about a different topic, so both lexical and dense retrieval can single out the right one.
SMALL_CORPUS: list[tuple[str, str, str, str]] = [
    (
        "p0",
        "Velmora Observatory",
        "Velmora Observatory is an astronomy observatory on Mount Kesh. Its telescope discovered the comet Oranthe in 1911.",
        "Which comet was discovered by the telescope of Velmora Observatory?",
    ),
    (
        "p1",
        "Tarquell River",
        "The Tarquell River is a long river that flows through the desert city of Ombrisa before reaching the Salven Sea.",
        "Which desert city does the Tarquell River flow through?",
    ),
    (
        "p2",
        "Brindlecake",
        "Brindlecake is a sweet dessert baked with honey, walnuts and plum jam, traditional at weddings in the village of Horsk.",
        "Which dessert is baked with honey, walnuts and plum jam?",
    ),
    (
        "p3",
        "Quillon Zarev",
        "Quillon Zarev is a chess grandmaster who won the world chess championship in 1987 after defeating Imre Saldo.",
        "Who did the chess grandmaster Quillon Zarev defeat to win the world championship?",
    ),
    (
        "p4",
        "Harrowgate Locomotive Works",
        "Harrowgate Locomotive Works is a railway factory that built the steam engine Copper Duchess for the northern line.",
        "Which steam engine was built by Harrowgate Locomotive Works?",
    ),
    (
        "p5",
        "Emberlin Violin",
        "The Emberlin Violin is a musical instrument crafted from maple wood by the luthier Sabine Orrow in 1702.",
        "Which luthier crafted the Emberlin Violin?",
    ),
    (
        "p6",
        "Glasswing Moth",
        "The glasswing moth is an insect with transparent wings that feeds on the nectar of the nightbloom orchid.",
        "What does the glasswing moth feed on?",
    ),
    (
        "p7",
        "Dravenholt Castle",
        "Dravenholt Castle is a medieval fortress guarded by a moat; it was besieged by the army of Duke Ferrant in 1340.",
        "Whose army besieged Dravenholt Castle?",
    ),
    (
        "p8",
        "Kestrel Cup",
        "The Kestrel Cup is a football tournament; the club Marlow Rovers won the trophy five times in a row.",
        "Which football club won the Kestrel Cup five times in a row?",
    ),
    (
        "p9",
        "Pellucid Lake",
        "Pellucid Lake is a freshwater lake famous for its clear water, home to the rare blue trout called the veilfin.",
        "Which rare trout lives in Pellucid Lake?",
    ),
    (
        "p10",
        "Oswin Thale",
        "Oswin Thale is a novelist who wrote the mystery novel The Lantern Cipher, a bestseller about a stolen map.",
        "Who wrote the mystery novel The Lantern Cipher?",
    ),
    (
        "p11",
        "Corvath Bridge",
        "Corvath Bridge is a suspension bridge of steel cables spanning the harbour of Lunmere, opened to traffic in 1964.",
        "Which harbour does the Corvath Bridge span?",
    ),
    (
        "p12",
        "Saffrel Tea",
        "Saffrel tea is a hot drink brewed from dried saffron petals and mint leaves, served in the mountain town of Ilvar.",
        "Which hot drink is brewed from dried saffron petals and mint leaves?",
    ),
    (
        "p13",
        "Nimbrook University",
        "Nimbrook University is a college whose chemistry professor Adela Voss received a prize for discovering the element nimbrium.",
        "Which element did the chemistry professor of Nimbrook University discover?",
    ),
    (
        "p14",
        "Orrin Fastwater",
        "Orrin Fastwater is a sailor and explorer who crossed the frozen Polar Ocean in the ship Gull's Promise.",
        "In which ship did the explorer Orrin Fastwater cross the frozen Polar Ocean?",
    ),
    (
        "p15",
        "Thistledown Festival",
        "The Thistledown Festival is a summer music festival where folk bands play fiddles and drums for three nights.",
        "What kind of festival is the Thistledown Festival?",
    ),
    (
        "p16",
        "Marrowind Volcano",
        "Marrowind is an active volcano whose eruption in 1822 buried the farming town of Peskel under ash.",
        "Which town was buried under ash by the eruption of Marrowind volcano?",
    ),
    (
        "p17",
        "Ysolde Brannock",
        "Ysolde Brannock is a painter whose famous oil painting, Harvest at Dusk, hangs in the Grey Gallery.",
        "Where does the oil painting Harvest at Dusk by Ysolde Brannock hang?",
    ),
    (
        "p18",
        "Fenwick Orchard",
        "Fenwick Orchard is a fruit farm that grows a crisp red apple variety called the Fenwick Ruby.",
        "Which apple variety does Fenwick Orchard grow?",
    ),
    (
        "p19",
        "Cobaltine Mine",
        "The Cobaltine Mine is a copper mine in the hills of Drask, where miners dig ore with electric drills.",
        "What metal is dug at the Cobaltine Mine?",
    ),
]


def write_small_corpus(path: Path) -> list[tuple[str, str]]:
    """Write `SMALL_CORPUS` as corpus jsonl to `path`; return its (question, answering doc id) pairs."""
    with path.open("w", encoding="utf-8") as f:
        for doc_id, title, text, _ in SMALL_CORPUS:
            f.write(json.dumps({"id": doc_id, "contents": f"{title}\n{text}"}) + "\n")
    return [(question, doc_id) for doc_id, _, _, question in SMALL_CORPUS]


@pytest.fixture
def small_corpus(tmp_path: Path) -> tuple[Path, list[tuple[str, str]]]:
    """A 20-passage corpus jsonl ("Title\\ntext" contents) and its (question, answering doc id) pairs."""
    path = tmp_path / "corpus.jsonl"
    return path, write_small_corpus(path)


@pytest.fixture(scope="session")
def tiny_shape() -> dict[str, int]:
    """A two-layer decoder shape (grouped KV heads) for fast model-level tests; callers add the
    vocabulary and the positions they need."""
    return dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
    )


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """The `tiny` synthetic world (seed 0), built once per test session. Treat it as read-only."""
    from igsearch.config import WorldConfig, load_config
    from igsearch.data.world import build_world

    out = tmp_path_factory.mktemp("tiny-world")
    build_world(load_config(WorldConfig, None, ["seed=0", "size=tiny"]), out)
    return out

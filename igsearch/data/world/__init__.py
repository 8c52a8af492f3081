"""The embedded synthetic world: a multi-hop QA testbed generated from a seed, trainable on CPU.

No pretrained LLM can be downloaded where igsearch's default job runs, so it trains a tiny policy
from scratch on a world it generates (`igsearch world`): a knowledge base of made-up entities
(kb.py), Wikipedia-style passages (passages.py), FlashRAG QA splits of four types (questions.py),
oracle demonstrations in the rollout protocol (demos.py), and a small offline tokenizer, all
written to one folder (build.py). Names are made up, so answers cannot come from prior knowledge:
every correct held-out answer has to come through retrieval, a clean testbed for IG.
"""

from igsearch.data.world.build import (
    SIZES,
    build_world,
    build_world_apart,
    content_hash,
    ensure_world,
    read_demos,
    read_world,
    unseen_name_token_share,
)
from igsearch.data.world.questions import QUESTION_TYPES

__all__ = [
    "QUESTION_TYPES",
    "SIZES",
    "build_world",
    "build_world_apart",
    "content_hash",
    "ensure_world",
    "read_demos",
    "read_world",
    "unseen_name_token_share",
]

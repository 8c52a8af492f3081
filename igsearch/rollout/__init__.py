"""Multi-turn rollouts: the loop (token in / token out, masks, spans) and generation backends."""

from igsearch.rollout.loop import NullRetriever, Segment, Step, Trajectory, run_rollouts

__all__ = ["NullRetriever", "Segment", "Step", "Trajectory", "run_rollouts"]

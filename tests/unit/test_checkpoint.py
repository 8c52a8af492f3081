"""Checkpoints that cannot tear: completeness checks, the staged save and the choice on resume."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from igsearch.train.checkpoint import (
    last_complete_checkpoint,
    missing_parts,
    save_checkpoint_atomically,
)


def write_parts(folder: Path, stop_after: str | None = None) -> None:
    """The files Trainer writes into a checkpoint, in its order; raise after `stop_after`."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = [
        ("model.safetensors", lambda p: save_file({"w": torch.ones(64, 64)}, str(p))),
        ("optimizer.pt", lambda p: torch.save({"state": torch.zeros(8)}, p)),
        ("scheduler.pt", lambda p: torch.save({"last_epoch": 3}, p)),
        ("rng_state.pth", lambda p: torch.save({"python": 1}, p)),
        ("trainer_state.json", lambda p: p.write_text(json.dumps({"global_step": 3}))),
    ]
    for name, write in parts:
        write(folder / name)
        if name == stop_after:
            raise KeyboardInterrupt(f"killed after writing {name}")


class FakeTrainer:
    """What `save_checkpoint_atomically` reads of a transformers Trainer."""

    def __init__(self, run_dir: Path, step: int, limit: int | None = None):
        self.run_dir = run_dir
        self.state = SimpleNamespace(global_step=step, best_model_checkpoint=None)
        self.args = SimpleNamespace(should_save=True, save_only_model=False, save_total_limit=limit)
        self.accelerator = SimpleNamespace(wait_for_everyone=lambda: None)

    def _get_output_dir(self, trial=None) -> str:
        return str(self.run_dir)

    def save(self, model, trial, stop_after: str | None = None) -> None:
        """Trainer._save_checkpoint: writes checkpoint-N under `_get_output_dir`."""
        write_parts(
            Path(self._get_output_dir(trial)) / f"checkpoint-{self.state.global_step}", stop_after
        )


def test_a_complete_folder_has_no_missing_parts(tmp_path):
    write_parts(tmp_path / "checkpoint-3")
    assert missing_parts(tmp_path / "checkpoint-3") == []


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        ("truncate model.safetensors", "model weights"),
        ("truncate optimizer.pt", "optimizer.pt"),
        ("delete scheduler.pt", "scheduler.pt"),
        ("delete rng_state.pth", "rng_state.pth"),
        ("truncate trainer_state.json", "trainer_state.json"),
    ],
)
def test_missing_or_truncated_parts_are_named(tmp_path, damage, named):
    folder = tmp_path / "checkpoint-3"
    write_parts(folder)
    action, name = damage.split()
    if action == "delete":
        (folder / name).unlink()
    else:
        with (folder / name).open("r+b") as f:
            f.truncate(os.path.getsize(folder / name) // 2)
    assert any(named in part for part in missing_parts(folder))


def test_a_save_killed_midway_leaves_the_last_checkpoint_in_place(tmp_path, caplog):
    trainer = FakeTrainer(tmp_path, step=2)
    save_checkpoint_atomically(trainer, trainer.save, None)
    trainer.state.global_step = 4
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint_atomically(
            trainer, lambda m, t: trainer.save(m, t, stop_after="optimizer.pt"), None
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".partial-checkpoint-4",
        "checkpoint-2",
    ]
    assert "_get_output_dir" not in vars(trainer)  # the redirect was undone
    with caplog.at_level(logging.WARNING):
        assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    assert ".partial-checkpoint-4" in caplog.text
    # the next save of step 4 clears the leftover and publishes a complete folder
    assert save_checkpoint_atomically(trainer, trainer.save, None) == tmp_path / "checkpoint-4"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-4"


def test_resume_skips_a_torn_checkpoint_folder_and_names_it(tmp_path, caplog):
    write_parts(tmp_path / "checkpoint-2")
    with pytest.raises(KeyboardInterrupt):  # written in place, as without staging
        write_parts(tmp_path / "checkpoint-4", stop_after="model.safetensors")
    with caplog.at_level(logging.WARNING):
        assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    assert "checkpoint-4" in caplog.text and "optimizer.pt" in caplog.text
    # saving step 4 again replaces the torn folder
    trainer = FakeTrainer(tmp_path, step=4)
    save_checkpoint_atomically(trainer, trainer.save, None)
    assert missing_parts(tmp_path / "checkpoint-4") == []


def test_no_checkpoint_gives_none(tmp_path):
    assert last_complete_checkpoint(tmp_path / "absent") is None
    assert last_complete_checkpoint(tmp_path) is None


def test_save_total_limit_is_applied_to_published_checkpoints(tmp_path):
    trainer = FakeTrainer(tmp_path, step=1, limit=2)
    for step in (1, 2, 3):
        trainer.state.global_step = step
        save_checkpoint_atomically(trainer, trainer.save, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-3"]


def test_an_incomplete_staged_save_is_not_published(tmp_path):
    trainer = FakeTrainer(tmp_path, step=5)

    def save_without_rng(model, trial):
        trainer.save(model, trial)
        (Path(trainer._get_output_dir()) / "checkpoint-5" / "rng_state.pth").unlink()

    with pytest.raises(RuntimeError, match="rng_state.pth"):
        save_checkpoint_atomically(trainer, save_without_rng, None)
    assert not (tmp_path / "checkpoint-5").exists()

"""Checkpoints that cannot tear: written aside, renamed into place only when complete.

transformers' `Trainer._save_checkpoint` writes `checkpoint-N` file by file (model, optimizer,
scheduler, RNG states, trainer state), so a run killed mid-save leaves a folder that looks like a
checkpoint and fails to load. `save_checkpoint_atomically` runs the same save into a staging folder
`.partial-checkpoint-N/checkpoint-N` next to the real ones, checks that every part is there, flushes
the files to disk and only then renames the folder to `checkpoint-N` (one `rename`, atomic on POSIX
filesystems). A kill at any moment leaves either the previous checkpoints untouched or the new one
complete; a leftover staging folder is never mistaken for a checkpoint (its name does not match
`checkpoint-*`) and is cleared by the next save of the same step.

`last_complete_checkpoint` is what `--resume` uses: the newest `checkpoint-N` whose parts are all
present and whole, naming in a warning every newer folder it skips. Both RL (`igsearch train`)
and SFT (`igsearch sft`) save and resume through here (see docs/design.md, "Training").
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
STAGING_PREFIX = ".partial-"
WEIGHTS = ("model.safetensors", "pytorch_model.bin", "adapter_model.safetensors")
SHARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
TRAINING_STATE = ("optimizer.pt", "scheduler.pt", "trainer_state.json")


def _safetensors_whole(path: Path) -> bool:
    """Whether a .safetensors file holds its whole header and every tensor its header lists."""
    size = path.stat().st_size
    if size < 8:
        return False
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > size - 8:
            return False
        try:
            header = json.loads(f.read(n))
        except ValueError:
            return False
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    return 8 + n + max(ends, default=0) <= size


def _file_whole(path: Path) -> bool:
    """Cheap truncation check: safetensors by their header, torch zip archives by their directory,
    JSON by parsing."""
    if not path.is_file():
        return False
    if path.suffix == ".safetensors":
        return _safetensors_whole(path)
    if path.suffix in (".pt", ".pth", ".bin"):
        return zipfile.is_zipfile(path)  # torch.save's format; the directory is written last
    if path.suffix == ".json":
        try:
            json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError):
            return False
    return True


def missing_parts(folder: str | Path, training_state: bool = True) -> list[str]:
    """The parts of checkpoint `folder` that are absent or truncated ([] for a complete one):
    model weights, and unless `training_state` is False (`save_only_model`) the optimizer,
    scheduler, RNG state and trainer state."""
    folder = Path(folder)
    needed = TRAINING_STATE if training_state else ("trainer_state.json",)
    missing = [name for name in needed if not _file_whole(folder / name)]
    index = next((folder / n for n in SHARD_INDEXES if (folder / n).exists()), None)
    if index is not None:
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError, TypeError):
            shards = {index.name}
        missing += [s for s in sorted(shards) if not _file_whole(folder / s)]
    elif not any(_file_whole(folder / name) for name in WEIGHTS):
        missing.append("model weights (model.safetensors)")
    rng = list(folder.glob("rng_state*.pth"))
    if training_state and (not rng or not all(_file_whole(p) for p in rng)):
        missing.append("rng_state.pth")
    return missing


def _fsync_tree(folder: Path) -> None:
    """Flush every file under `folder`, then the folders themselves, to disk."""
    for path in sorted(folder.rglob("*"), reverse=True):
        _fsync_path(path)  # os.fsync works on a read-only descriptor of a file or a folder
    _fsync_path(folder)


def _publish(src: Path, dst: Path, training_state: bool) -> None:
    """Check the staged checkpoint `src`, flush it and rename it to `dst` (replacing an older
    folder of the same name, e.g. a torn one left by a run that was resumed from before it)."""
    missing = missing_parts(src, training_state)
    if missing:
        raise RuntimeError(
            f"the checkpoint saved in {src} lacks {', '.join(missing)}; it was not published"
        )
    _fsync_tree(src)
    old = dst.with_name(f"{STAGING_PREFIX}replaced-{dst.name}")
    if dst.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
    os.replace(src, dst)
    _fsync_path(dst.parent)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(src.parent, ignore_errors=True)


def _fsync_path(folder: Path) -> None:
    """Flush one file or folder entry to disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint_atomically(
    trainer: Any, save: Callable[[Any, Any], None], model: Any, trial: Any = None
) -> Path:
    """Run a Trainer's own `save(model, trial)` (its `_save_checkpoint`) into a staging folder and
    rename the result to `checkpoint-N` once complete; then apply `save_total_limit`.

    Every process saves its part into the same staging folder (a shared filesystem, as the Trainer
    already assumes); the main process checks and renames it. Returns the checkpoint's path.
    """
    run_dir = Path(trainer._get_output_dir(trial=trial))
    name = f"checkpoint-{trainer.state.global_step}"
    staging = run_dir / f"{STAGING_PREFIX}{name}"
    main = trainer.args.should_save
    if main:
        shutil.rmtree(staging, ignore_errors=True)  # a leftover of a run killed while saving
    trainer.accelerator.wait_for_everyone()
    trainer._get_output_dir = lambda trial=None: str(staging)  # where `save` puts checkpoint-N
    try:
        save(model, trial)
    finally:
        del trainer._get_output_dir
    trainer.accelerator.wait_for_everyone()
    if main:
        _publish(staging / name, run_dir / name, not trainer.args.save_only_model)
        _rotate(trainer, run_dir)
    trainer.accelerator.wait_for_everyone()
    return run_dir / name


def _rotate(trainer: Any, run_dir: Path) -> None:
    """Keep at most `save_total_limit` checkpoints (the newest always), as the Trainer would."""
    from transformers.trainer_utils import rotate_checkpoints

    rotate_checkpoints(
        output_dir=str(run_dir),
        save_total_limit=trainer.args.save_total_limit,
        best_model_checkpoint=trainer.state.best_model_checkpoint,
        use_mtime=False,
    )


def _step(path: Path) -> int:
    match = CHECKPOINT.match(path.name)
    return int(match.group(1)) if match else -1


def last_complete_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete `checkpoint-N` in `run_dir` (None if there is none), warning with its
    name about every unfinished save and every incomplete checkpoint folder it skips."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None
    for partial in sorted(run_dir.glob(f"{STAGING_PREFIX}*")):
        log.warning(
            "skipping %s: a checkpoint save that did not finish (the run stopped while writing "
            "it); it is never loaded and may be deleted",
            partial,
        )
    folders = [p for p in run_dir.iterdir() if p.is_dir() and CHECKPOINT.match(p.name)]
    for folder in sorted(folders, key=_step, reverse=True):
        missing = missing_parts(folder)
        if not missing:
            return folder
        log.warning(
            "skipping the incomplete checkpoint %s (missing or truncated: %s); resuming from an "
            "older one",
            folder,
            ", ".join(missing),
        )
    return None

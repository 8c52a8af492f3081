"""The machine header every benchmark result carries: cores, CPU model, date, load, versions."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def machine_info(**extra: Any) -> dict[str, Any]:
    """nproc, CPU model, date, 1-minute load at start and Python version, plus `extra` fields."""
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        lines = cpuinfo.read_text().splitlines()
        cpu = next(
            (ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), cpu
        )
    return {
        "nproc": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu_model": cpu,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        **extra,
    }


def torch_machine_info(**extra: Any) -> dict[str, Any]:
    """`machine_info` plus torch's version and thread count and transformers' version."""
    import torch
    import transformers

    return machine_info(
        torch_threads=torch.get_num_threads(),
        torch=torch.__version__,
        transformers=transformers.__version__,
        **extra,
    )


def torch_header(m: dict[str, Any], extra: str = "") -> str:
    """The results' first sentence: date, CPUs, torch and transformers, `extra`, load at start."""
    return (
        f"{m['date']}; {m['nproc']} CPUs ({m['cpu_model']}), torch {m['torch']} with "
        f"{m['torch_threads']} threads, transformers {m['transformers']}{extra}; load average "
        f"{m['load_avg_1m_at_start']} at start."
    )


def load_note(m: dict[str, Any], limit: float, consequence: str, label: str = "Note") -> list[str]:
    """Markdown lines warning that other jobs shared the machine (1-minute load above `limit`)."""
    if m["load_avg_1m_at_start"] <= limit:
        return []
    return [
        "",
        f"**{label}:** other jobs shared the machine (load {m['load_avg_1m_at_start']} on "
        f"{m['nproc']} CPUs){consequence}",
    ]

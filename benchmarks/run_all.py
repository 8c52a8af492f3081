"""Run every benchmark script in this folder (each in its own process); fail if any fails.

python benchmarks/run_all.py            # full runs, writing benchmarks/results/*
python benchmarks/run_all.py --quick    # smoke test: each script's --quick mode
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def scripts() -> list[Path]:
    """Every `benchmarks/*.py` except this runner, in name order."""
    return sorted(
        p for p in HERE.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="pass --quick to every script (smoke test)"
    )
    args = parser.parse_args(argv)
    failed = []
    for script in scripts():
        cmd = [sys.executable, str(script), *(["--quick"] if args.quick else [])]
        print(f"==> {' '.join(cmd)}", flush=True)
        started = time.perf_counter()
        rc = subprocess.call(cmd, cwd=HERE.parent)
        print(
            f"<== {script.name}: exit {rc} after {time.perf_counter() - started:.0f}s", flush=True
        )
        if rc != 0:
            failed.append(f"{script.name} (exit {rc})")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"all {len(scripts())} benchmarks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

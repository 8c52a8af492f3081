"""Readable, coloured printing of a trajectory (used by `igsearch ask`).

Reasoning is dim, search queries cyan, retrieved documents in a panel (title and the start of the
text), answers bold green, invalid turns red; a summary line closes the trajectory.
"""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel

from igsearch.protocol import TagSet, get_tagset
from igsearch.rollout.loop import Step, Trajectory
from igsearch.tokens import decode_ids

SNIPPET_CHARS = 100


def _blocks(text: str, tag: str) -> list[str]:
    """The contents of every complete `<tag>…</tag>` block of `text`, stripped."""
    pattern = re.compile(re.escape(f"<{tag}>") + r"(.*?)" + re.escape(f"</{tag}>"), re.DOTALL)
    return [m.strip() for m in pattern.findall(text)]


def _plural(n: int, one: str, many: str | None = None) -> str:
    return one if n == 1 else many or one + "s"


def _docs_panel(step: Step) -> Panel:
    lines = []
    for i, hit in enumerate(step.hits, 1):
        snippet = (
            hit.text if len(hit.text) <= SNIPPET_CHARS else hit.text[:SNIPPET_CHARS].rstrip() + "…"
        )
        lines.append(
            f"[bold]{i}. {escape(hit.title)}[/bold] [dim]({escape(hit.id)}, {hit.score:.2f})[/dim] {escape(snippet)}"
        )
    body = "\n".join(lines) if lines else "[dim](no documents)[/dim]"
    return Panel(body, title="documents", title_align="left", border_style="blue")


def _print_turn(
    console: Console, turn: int, text: str, action: str, steps: dict[int, Step], tags: TagSet
) -> None:
    console.print(f"[bold]turn {turn + 1}[/bold]")
    for thought in _blocks(text, tags.think):
        console.print(f"  [dim]think: {escape(thought)}[/dim]")
    if tags.refine:
        for note in _blocks(text, tags.refine):
            console.print(f"  [magenta]refine: {escape(note)}[/magenta]")
    if action == "search":
        query = steps[turn].query if turn in steps else (_blocks(text, tags.search) or [text])[0]
        suffix = "" if turn in steps else " [dim](not run: no searches left)[/dim]"
        console.print(f"  [bold cyan]search:[/bold cyan] [cyan]{escape(query)}[/cyan]{suffix}")
        if turn in steps:
            console.print(_docs_panel(steps[turn]))
    elif action == "answer":
        answer = (_blocks(text, tags.answer) or [""])[-1]
        console.print(f"  [bold green]answer: {escape(answer)}[/bold green]")
    else:
        console.print(
            f"  [red]invalid turn:[/red] [red]{escape(text.strip()[-300:] or '(empty)')}[/red]"
        )


def print_trajectory(
    console: Console,
    traj: Trajectory,
    tokenizer: Any,
    tags: TagSet | str = "search-r1",
    question: str | None = None,
) -> None:
    """Print one trajectory turn by turn, then a summary line."""
    tags = get_tagset(tags)
    if question is not None:
        console.print(f"[bold]Question:[/bold] {escape(question)}")
    steps = {s.turn: s for s in traj.steps}
    turn = 0
    for seg in traj.segments:
        if seg.kind == "generated":
            text = decode_ids(tokenizer, traj.response_ids[seg.start : seg.end])
            _print_turn(console, turn, text, traj.actions[turn], steps, tags)
            turn += 1
        elif seg.kind == "final":
            console.print("  [yellow]no searches left: the next turn must answer[/yellow]")
    generated = sum(traj.loss_mask)
    console.print(
        f"[bold]{traj.num_turns}[/bold] {_plural(traj.num_turns, 'turn')}, "
        f"[bold]{traj.num_searches}[/bold] {_plural(traj.num_searches, 'search', 'searches')}, "
        f"{traj.num_invalid} invalid, well_formed={traj.well_formed}, stop={traj.stop_reason}"
        f"{' (truncated)' if traj.truncated else ''}; "
        f"{len(traj.response_ids)} response tokens ({generated} generated)"
    )

"""A progress bar over tokens for anything that encodes: rich, on stderr (stdout stays free for
results such as `--json`), or nothing when disabled; it counts the tokens done either way."""

from __future__ import annotations


class TokenProgress:
    def __init__(self, enabled: bool, label: str = "encoding", total: int | None = None):
        self.enabled, self.label, self.total = enabled, label, total
        self.done = 0

    def advance(self, tokens: int, total: int | None = None) -> None:
        """`tokens` more done; `total` (the tokens in all) when it became known only now."""
        self.done += tokens
        if self.enabled:
            self.bar.update(self.task, total=total if total is not None else self.total, advance=tokens)

    def __enter__(self) -> TokenProgress:
        if self.enabled:
            # rich is imported only when a bar is shown: a quiet search does without it
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(), TextColumn("tokens"),
                                TimeRemainingColumn(), console=Console(stderr=True))
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=self.total)
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.bar.stop()

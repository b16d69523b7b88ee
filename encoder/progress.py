"""A progress bar for anything that encodes: rich, on stderr (stdout stays free for results such as
`--json`), or nothing when disabled; it counts the tokens done either way.

Over tokens by default; given a number of `documents`, the bar (and its ETA) runs over documents
and shows the tokens per second beside it, as indexing wants."""

from __future__ import annotations

import time


class TokenProgress:
    def __init__(self, enabled: bool, label: str = "encoding", total: int | None = None,
                 documents: int | None = None):
        self.enabled, self.label, self.total, self.documents = enabled, label, total, documents
        self.done = 0

    def advance(self, tokens: int, total: int | None = None) -> None:
        """`tokens` more done; `total` (the tokens in all) when it became known only now."""
        self.done += tokens
        if self.enabled:
            rate = f"{self.done / max(time.perf_counter() - self.started, 1e-9):,.0f} tokens/s"
            if self.documents is None:
                self.bar.update(self.task, total=total if total is not None else self.total, advance=tokens, rate=rate)
            else:
                self.bar.update(self.task, rate=rate)

    def advance_documents(self, count: int) -> None:
        if self.enabled and self.documents is not None:
            self.bar.update(self.task, advance=count)

    def __enter__(self) -> TokenProgress:
        self.started = time.perf_counter()
        if self.enabled:
            # rich is imported only when a bar is shown: a quiet search does without it
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            unit = "tokens" if self.documents is None else "documents"
            self.bar = Progress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
                                TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=Console(stderr=True))
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=self.total if self.documents is None else self.documents,
                                          rate="")
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.bar.stop()

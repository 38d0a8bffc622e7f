"""Progress: a tqdm bar on a terminal, plain log lines otherwise (CI logs, files)."""

from __future__ import annotations

import sys
from typing import Any


class Progress:
    def __init__(self, total: int, desc: str, enabled: bool = True, lines: int = 2) -> None:
        self.enabled = enabled
        self.total = total
        self.desc = desc
        self.count = 0
        self.every = max(1, total // max(1, lines))
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)

    def update(self, **info: Any) -> None:
        """Advance one step; ``info`` values may be callables, read only when shown (every
        10 steps on a bar, at each log line otherwise), so a device sync is not paid every step."""
        self.count += 1
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            if self.count % 10 == 0 or self.count == self.total:
                self.bar.set_postfix({k: _fmt(v) for k, v in info.items()}, refresh=False)
        elif self.count % self.every == 0 or self.count == self.total:
            text = " ".join(f"{k} {_fmt(v)}" for k, v in info.items())
            print(f"{self.desc} {self.count}/{self.total} {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def log(message: str, enabled: bool = True) -> None:
    if enabled:
        print(message, file=sys.stderr, flush=True)


def _fmt(v: Any) -> str:
    v = v() if callable(v) else v
    return f"{v:.4g}" if isinstance(v, float) else str(v)

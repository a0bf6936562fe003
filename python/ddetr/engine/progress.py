"""Progress on a terminal (one redrawn line: bar, loss, lr, ETA) or, when the output is a
file or pipe, a plain line every `print_freq` steps. Silent on non-main processes."""

from __future__ import annotations

import sys
import time


def format_seconds(s: float) -> str:
    s = int(max(0, s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


class Progress:
    def __init__(
        self, total: int, desc: str = "", enabled: bool = True, stream=None, print_freq: int = 50, width: int = 24
    ):
        self.total, self.desc, self.enabled = total, desc, enabled
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.print_freq, self.width = max(1, print_freq), width
        self.start = time.perf_counter()
        self.last_draw = 0.0
        self.line = ""

    def _text(self, step: int, values: dict) -> str:
        elapsed = time.perf_counter() - self.start
        eta = elapsed / step * (self.total - step) if step else 0.0
        parts = [self.desc]
        if self.tty:
            fill = int(self.width * step / max(self.total, 1))
            parts.append("[" + "#" * fill + "-" * (self.width - fill) + "]")
        parts.append(f"{step}/{self.total}")
        for k, v in values.items():
            parts.append(f"{k} {v:.2e}" if k == "lr" else f"{k} {v:.4f}")
        parts.append(f"eta {format_seconds(eta)}" if step < self.total else f"took {format_seconds(elapsed)}")
        return " ".join(p for p in parts if p)

    def update(self, step: int, values: dict | None = None) -> None:
        if not self.enabled:
            return
        values = values or {}
        if self.tty:
            now = time.perf_counter()
            if now - self.last_draw < 0.2 and step < self.total:
                return  # redraw at most 5 times a second
            self.last_draw = now
            text = self._text(step, values)
            pad = max(0, len(self.line) - len(text))
            self.stream.write("\r" + text + " " * pad)
            self.stream.flush()
            self.line = text
        elif step % self.print_freq == 0 or step == self.total or step == 1:
            self.stream.write(self._text(step, values) + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty and self.line:
            self.stream.write("\n")
            self.stream.flush()
            self.line = ""

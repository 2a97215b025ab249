"""One progress line format for every long job: step, metrics, seconds per step, ETA."""
import sys
import time


def format_seconds(seconds):
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """`progress.update(step, loss=...)` prints at most every `every_seconds` (and at the last step).

    Metrics are printed in the order given; floats get four significant digits. The time per step
    is the mean since the previous printed line, so it tracks the current speed.
    """

    def __init__(self, total=None, label="", every_seconds=1.0, stream=None, unit="step"):
        self.total, self.label, self.unit = total, label, unit
        self.every_seconds = every_seconds
        self.stream = stream or sys.stderr
        self.started = self.last_time = time.perf_counter()
        self.last_step = 0
        self.last_line = ""

    def update(self, step, force=False, **metrics):
        now = time.perf_counter()
        last = self.total is not None and step >= self.total
        if not (force or last or now - self.last_time >= self.every_seconds):
            return
        per_step = (now - self.last_time) / max(step - self.last_step, 1)
        self.last_time, self.last_step = now, step
        parts = [self.label] if self.label else []
        parts.append(f"{self.unit} {step}/{self.total}" if self.total else f"{self.unit} {step}")
        for name, value in metrics.items():
            parts.append(f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}")
        parts.append(f"{per_step:.3g} s/{self.unit}")
        if self.total:
            parts.append(f"ETA {format_seconds(per_step * (self.total - step))}")
        self.last_line = "  ".join(parts)
        print(self.last_line, file=self.stream, flush=True)

    @property
    def elapsed(self):
        return time.perf_counter() - self.started

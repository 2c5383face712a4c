"""What the drivers whose kernels run in a child process share: its stderr kept for error messages,
and a clean goodbye on close."""

from __future__ import annotations

import subprocess


class ChildProcess:
    """A backend whose kernels run in a child process (`_proc`, stderr kept in `_stderr`)."""

    def _worker_log(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace").strip()
        return text[-2000:] or "(no output)"

    def _say_goodbye(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._say_goodbye()
                self._proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
        self._stderr.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

"""Periodic reaper: fails (or requeues once) runs whose heartbeat stopped."""

from __future__ import annotations

import logging
import threading

from app.db.session import Database
from app.services.run_claims import reap_stale_runs

log = logging.getLogger("kanscope.reaper")


class Reaper:
    def __init__(
        self,
        db: Database,
        lease_s: float,
        interval_s: float,
        requeue: bool = False,
        on_requeue: object = None,
    ) -> None:
        self.db, self.lease_s, self.interval_s, self.requeue = db, lease_s, interval_s, requeue
        self.on_requeue = on_requeue
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kanscope-reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def run_once(self) -> list[tuple[int, str]]:
        reaped = reap_stale_runs(self.db, self.lease_s, self.requeue)
        if callable(self.on_requeue):
            for run_id, status in reaped:
                if status != "queued":
                    continue
                try:  # one refused re-send (queue down) must not strand the others
                    self.on_requeue(run_id)
                except Exception as exc:
                    log.warning(
                        "run %s requeued but not re-sent (%s); it stays queued", run_id, exc
                    )
        return reaped

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.run_once()
            except Exception:  # the reaper must survive a database outage
                log.exception("reaper pass failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

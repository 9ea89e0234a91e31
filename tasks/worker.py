"""Per-worker-process state and the worker's heartbeat and start-up sweep.

The pipeline cache lives in the pool process, created on its first job, so CUDA is never initialised in
the parent that forks it. The parent announces the worker in the database (its profile and queues), re-sends jobs that a previous run
of this same worker was running when it was killed (the embedded SQLite broker keeps no visibility
timeout, so their messages would otherwise stay hidden), and hands on the jobs of other workers that died.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

from celery import signals

from engine.profiles import Profile, load_profiles, select_profile
from settings import Settings
from storage import repo
from storage.avatars import AvatarLibrary
from storage.db import Database
from storage.files import FileStore
from storage.loras import LoraLibrary
from storage.materials import MaterialLibrary
from tasks.celery_app import JOB_TASKS, app

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    settings: Settings
    db: Database
    files: FileStore
    profiles: dict[str, Profile]
    profile: Profile
    _cache: object = field(default=None, repr=False)
    _rules: object = field(default=None, repr=False)

    @property
    def cache(self):
        if self._cache is None:
            from engine.loader import PipelineCache, Placement

            self._cache = PipelineCache(Placement.choose(self.settings.device, self.settings.cpu_offload))
        return self._cache

    @property
    def rules(self):
        """The prompt refiner's rule path, with the term dictionary and style presets loaded once."""
        if self._rules is None:
            from engine.refiner import RuleRefiner, TermDictionary
            from engine.styles import load_styles

            self._rules = RuleRefiner(TermDictionary.load(), load_styles())
        return self._rules

    @property
    def materials(self) -> MaterialLibrary:
        return MaterialLibrary(self.db, self.files)

    @property
    def loras(self) -> LoraLibrary:
        return LoraLibrary(self.db, self.files)

    @property
    def avatars(self) -> AvatarLibrary:
        return AvatarLibrary(self.db, self.files)

    @property
    def model_loads(self) -> int:
        return self._cache.loads if self._cache is not None else 0


_context: WorkerContext | None = None


def build_context(settings: Settings) -> WorkerContext:
    # rembg keeps its models, and accepts local ONNX files, only under its home: the studio's models folder
    # unless the operator pointed U2NET_HOME or REMBG_HOME elsewhere.
    if not os.environ.get("U2NET_HOME"):
        os.environ.setdefault("REMBG_HOME", str(settings.models))
    # torch.compile's kernels are kept beside the data, so a restarted worker (or a new container on the same
    # volume) compiles the profile's denoiser from its cache in seconds instead of minutes.
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str((settings.data_dir / "compile-cache").resolve()))
    profiles = load_profiles(settings.profiles_file, settings.models)
    db = Database(settings.database)
    return WorkerContext(settings, db, FileStore(settings.files), profiles, select_profile(profiles, settings.profile))


def worker_context() -> WorkerContext:
    global _context
    if _context is None:
        _context = build_context(Settings())
    return _context


@signals.worker_process_init.connect
def _forget_parent_context(**_):
    # A forked pool process must not reuse the parent's database connections.
    global _context
    _context = None


class Heartbeat(threading.Thread):
    """Says every few seconds that this worker is alive, and hands on the running jobs of workers that
    stopped saying so (killed, their machine gone): their broker messages may never come back."""

    def __init__(self, context: WorkerContext, hostname: str):
        super().__init__(name="studio-heartbeat", daemon=True)
        self.context, self.hostname, self.stopped = context, hostname, threading.Event()
        self.timeout = timedelta(seconds=context.settings.worker_timeout_s)
        # Since when this worker's own beats have all gone through: a database that was down for everyone
        # left every worker's record stale, and none of them is dead for that.
        self.healthy_since: float | None = None

    def beat(self) -> None:
        with self.context.db.session() as session:
            repo.heartbeat(session, self.hostname, self.context.settings.queues, self.context.profile.name, os.getpid())
        now = time.monotonic()
        self.healthy_since = self.healthy_since or now
        if now - self.healthy_since >= self.timeout.total_seconds():
            self.hand_on_orphaned_jobs()

    def hand_on_orphaned_jobs(self) -> None:
        with self.context.db.session() as session:
            for job in repo.orphaned_jobs(session, self.timeout):
                # Only one live worker wins the row, so a job is re-sent once.
                if repo.requeue_orphaned_job(session, job.id, job.worker):
                    log.warning("worker %s stopped answering; job %s goes to the queue again", job.worker, job.id)
                    app.send_task(JOB_TASKS[job.kind], args=[job.id], task_id=job.id, priority=0)

    def run(self) -> None:
        while not self.stopped.wait(self.context.settings.worker_heartbeat_s):
            try:
                self.beat()
            except Exception:  # a briefly unreachable database must not kill the heartbeat
                self.healthy_since = None
                log.exception("worker heartbeat failed")


_heartbeat: Heartbeat | None = None


@signals.worker_ready.connect
def _announce_and_sweep(sender, **_):
    global _heartbeat
    context = worker_context()
    context.db.migrate()
    hostname = sender.hostname
    with context.db.session() as session:
        for job in repo.stale_running_jobs(session, hostname):
            log.warning("re-sending job %s left running by a previous run of %s", job.id, hostname)
            app.send_task(JOB_TASKS[job.kind], args=[job.id], task_id=job.id)
    _heartbeat = Heartbeat(context, hostname)
    _heartbeat.beat()
    _heartbeat.start()
    log.info("worker %s serves profile %s on queues %s", hostname, context.profile.name, context.settings.queues)


@signals.worker_shutdown.connect
def _stop_heartbeat(**_):
    if _heartbeat is not None:
        _heartbeat.stopped.set()

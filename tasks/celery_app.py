"""The Celery app. Workers start it with ``python app.py worker``; the web process only sends to it."""

from __future__ import annotations

from celery import Celery

from settings import Settings
from tasks import sqlite_broker

GENERATE = "studio.generate"
CHAT_TURN = "studio.chat_turn"
CUTOUT = "studio.cutout"
PRODUCT = "studio.product"
GAME_ASSET = "studio.game_asset"
TRAIN_LORA = "studio.train_lora"
CHECK_LORA = "studio.check_lora"
IDENTITY = "studio.identity"
FACE_CHECK = "studio.face_check"
# The task that runs each job kind, and the queue each task goes to (one GPU job at a time per GPU worker;
# training, long, on its own queue so a deployment can give it its own GPUs).
JOB_TASKS = {"generate": GENERATE, "img2img": GENERATE, "chat_turn": CHAT_TURN, "cutout": CUTOUT, "product": PRODUCT,
             "game_asset": GAME_ASSET, "train_lora": TRAIN_LORA, "lora_check": CHECK_LORA,
             # A PhotoMaker portrait, an avatar per style and an avatar in photo templates are one task; an
             # avatar trains like a style LoRA, on its face crops; its photos are checked on the CPU queue.
             "identity": IDENTITY, "avatar_batch": IDENTITY, "photo_template": IDENTITY,
             "train_avatar": TRAIN_LORA, "face_check": FACE_CHECK}
TASK_QUEUES = {GENERATE: "gpu", CHAT_TURN: "gpu", CUTOUT: "gpu", PRODUCT: "gpu", GAME_ASSET: "gpu",
               TRAIN_LORA: "train", CHECK_LORA: "gpu", IDENTITY: "gpu", FACE_CHECK: "cpu"}


# Redis keeps a list per priority and workers take from 0 (first) to 9; the embedded broker has no
# priorities, so there jobs run in the order they came.
LOWEST_PRIORITY = 9


def transport_options(broker_url: str, poll_interval: float) -> dict:
    if broker_url.startswith(("redis://", "rediss://")):
        return {"priority_steps": list(range(LOWEST_PRIORITY + 1)), "sep": ":", "queue_order_strategy": "priority",
                # A whole worker killed leaves its job's message unacknowledged; other workers hand the job
                # on sooner (tasks.worker), so this only bounds how long a lost message waits.
                "visibility_timeout": 3600}
    return {"polling_interval": poll_interval}


def create_celery(settings: Settings) -> Celery:
    sqlite_broker.register()
    app = Celery("studio", broker=settings.broker, include=["tasks.generate", "tasks.chat", "tasks.product", "tasks.game", "tasks.train", "tasks.identity", "tasks.worker"])
    app.conf.update(
        task_routes={name: {"queue": queue} for name, queue in TASK_QUEUES.items()},
        task_default_queue="gpu",
        # A job's message is acknowledged only when it has finished; if the pool process dies
        # (SIGKILL, OOM, a CUDA crash) the message goes back to the queue for another try.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_pool="prefork",
        # Job rows in the studio's database are the source of truth for state and progress.
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport_options(settings.broker, settings.broker_poll_interval),
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


app = create_celery(Settings())

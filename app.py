"""AI Creative Studio: ``python app.py`` (web + embedded worker), ``python app.py worker``, ``python app.py models``,
``python app.py users``, ``python app.py check``.

Settings come from ``STUDIO_*`` environment variables (see settings.py); the flags below override them.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent
log = logging.getLogger("studio")


def _apply_overrides(args: argparse.Namespace) -> None:
    """Flags become STUDIO_* variables, so this process, its worker child and settings.py agree."""
    for flag in ("profile", "host", "port", "data_dir", "worker_queues", "worker_name"):
        value = getattr(args, flag, None)
        if value is not None:
            os.environ[f"STUDIO_{flag.upper()}"] = str(value)


def _profiles_or_exit(settings):
    from engine.profiles import ProfileError, load_profiles, select_profile

    profiles = load_profiles(settings.profiles_file, settings.models)
    try:
        return profiles, select_profile(profiles, settings.profile)
    except ProfileError as exc:
        sys.exit(f"error: {exc}")


def _die_with_parent() -> None:
    """In the worker child: get SIGTERM if the web process dies, even by SIGKILL (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_embedded_worker(profile_name: str) -> subprocess.Popen:
    env = dict(os.environ, STUDIO_PROFILE=profile_name)
    # Its own process group, so a Ctrl-C in the terminal reaches the web process only, which then
    # stops the worker in order (a running job finishes or is handed back to the queue).
    return subprocess.Popen([sys.executable, str(ROOT / "app.py"), "worker"], env=env, cwd=os.getcwd(),
                            start_new_session=True, preexec_fn=_die_with_parent)


def stop_process_group(process: subprocess.Popen, timeout: float = 15) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from engine.styles import load_styles
    from settings import Settings
    from storage import repo
    from storage.db import Database
    from storage.files import FileStore
    from storage.quota import Quota
    from storage.users import UserStore
    from tasks.celery_app import app as celery_app
    from tasks.client import StudioClient
    from ui.auth import Authenticator
    from ui.services import Services
    from ui.web import create_app

    settings = Settings()
    _profiles, profile = _profiles_or_exit(settings)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    db = Database(settings.database)
    db.migrate()
    local_user = None
    if settings.auth_required:
        if not any(u.can_sign_in and not u.disabled for u in UserStore(db).list()):
            sys.exit(f"error: the studio listens on {settings.host}, so users must sign in, but no user can: add one "
                     "with `python app.py users add NAME --role admin` (or listen on 127.0.0.1 for a local single user).")
    else:
        with db.session() as session:
            local_user = repo.ensure_user(session).id
    files, limits = FileStore(settings.files), _limits(settings)
    client = StudioClient(db, celery_app, profile, load_styles(), quota=Quota(db, files, limits))
    services = Services(db=db, files=files, client=client, local_user_id=local_user, limits=limits,
                        max_lora_bytes=settings.max_lora_mb * 1_000_000)
    auth = Authenticator(services.users, settings.session_secret(), settings.auth_required, local_user,
                         settings.session_hours * 3600)
    worker = start_embedded_worker(profile.name) if settings.embedded_worker and not args.no_worker else None
    # uvicorn re-raises SIGTERM after its own shutdown; as SystemExit it lets the worker be stopped below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        print(f"AI Creative Studio on http://{settings.host}:{settings.port} (profile {profile.name}"
              f"{', images are noise' if profile.is_noise else ''})", flush=True)
        # Open browser tabs keep a Gradio stream open; do not wait on them for ever when stopping.
        uvicorn.run(create_app(services, auth), host=settings.host, port=settings.port, log_level="warning",
                    timeout_graceful_shutdown=5)
    finally:
        if worker is not None:
            stop_process_group(worker)


def _limits(settings):
    from storage.quota import MB, Limits

    return Limits(max_queued_jobs=settings.max_queued_jobs, max_images_per_job=settings.max_images_per_job,
                  max_upload_bytes=settings.max_upload_mb * MB, quota_bytes=settings.quota_mb * MB)


def _ensure_tiny(settings, profile) -> None:
    if profile.name == "tiny":
        from engine.tiny import build_tiny_profile, tiny_profile_present

        if not tiny_profile_present(settings.models / "tiny"):
            print("building the offline tiny profile ...", flush=True)
            build_tiny_profile(settings.models / "tiny")


def run_worker(args: argparse.Namespace) -> None:
    from settings import Settings

    settings = Settings()
    _profiles, profile = _profiles_or_exit(settings)
    _ensure_tiny(settings, profile)
    os.environ["STUDIO_PROFILE"] = profile.name  # the pool processes resolve the same profile
    from tasks.celery_app import app as celery_app

    celery_app.worker_main([
        "worker", "-Q", ",".join(settings.queues), "-c", "1", "-P", "prefork", "-n", settings.worker_name,
        "--prefetch-multiplier", "1", "--loglevel", args.loglevel, "--without-gossip", "--without-mingle",
    ])


def models(args: argparse.Namespace) -> None:
    from engine.profiles import load_profiles, model_obtainable
    from settings import Settings

    settings = Settings()
    if args.action == "build-tiny":
        from engine.tiny import build_tiny_profile

        path = build_tiny_profile(settings.models / "tiny")
        print(f"tiny profile written to {path}")
        return
    for name, profile in load_profiles(settings.profiles_file, settings.models).items():
        print(f"{name}: {profile.label}")
        for role, spec in profile.roles.items():
            if spec.pipeline == "rembg" and not spec.model.endswith(".onnx"):
                state = "fetched by rembg into the models folder on first use"
            elif model_obtainable(spec.model):
                state = "available"
            else:
                state = "missing (not local, not cached, hub unreachable)"
            print(f"  {role:10} {spec.model}  [{state}]")
        if profile.fast_mode:
            fast = profile.fast_mode
            state = "available" if model_obtainable(fast.model, (fast.weight_name,)) else "missing (not local, not cached, hub unreachable)"
            print(f"  {'fast':10} {fast.model} {fast.weight_name}  ({fast.label}) [{state}]")


def styles(args: argparse.Namespace) -> None:
    """Render a preview of every style (or those named) with the active profile into the file store: the
    art styles, with --avatars the avatar styles, or with --templates the template square's industry templates."""
    from engine.industry_templates import load_industry_templates
    from engine.loader import PipelineCache, Placement
    from engine.portraits import load_portrait_catalogue
    from engine.style_previews import (
        AVATAR_PREVIEW_SUBJECT,
        PREVIEW_SEED,
        PREVIEW_SUBJECT,
        render_avatar_previews,
        render_style_previews,
        render_template_previews,
    )
    from engine.styles import load_styles
    from settings import Settings
    from storage.pngmeta import png_with_params
    from storage.previews import StylePreviews

    settings = Settings()
    _profiles, profile = _profiles_or_exit(settings)
    _ensure_tiny(settings, profile)
    if args.templates:
        store, catalogue, subject = StylePreviews(settings.files / "previews" / "templates"), load_industry_templates(), "each template's examples"
        known, render = catalogue, partial(render_template_previews, styles=load_styles())
    elif args.avatars:
        store, catalogue, subject = StylePreviews(settings.files / "previews" / "avatars"), load_portrait_catalogue(), AVATAR_PREVIEW_SUBJECT
        known, render = catalogue.avatar_styles, render_avatar_previews
    else:
        store, catalogue, subject = StylePreviews(settings.files / "previews"), load_styles(), PREVIEW_SUBJECT
        known, render = catalogue, render_style_previews
    unknown = [n for n in args.names if n not in known]
    if unknown:
        sys.exit(f"Unknown style(s): {', '.join(unknown)}")
    cache = PipelineCache(Placement.choose(settings.device, settings.cpu_offload))
    skip = (lambda name: store.path(profile.name, name) is not None) if args.missing else (lambda name: False)
    made = failed = 0
    for preview in render(catalogue, profile, cache, args.names or None, skip):
        if preview.image is None:
            failed += 1
            print(f"  {preview.style}: no preview ({preview.error})", flush=True)
            continue
        store.put(profile.name, preview.style, png_with_params(preview.image, preview.params))
        made += 1
        print(f"  {preview.style}", flush=True)
    manifest = store.manifest(profile.name)
    manifest.update(profile=profile.name, noise=profile.is_noise, subject=subject, seed=PREVIEW_SEED)
    store.write_manifest(profile.name, manifest)
    noise = " (the tiny profile's previews are noise)" if profile.is_noise else ""
    print(f"{made} preview(s) written to {store.root / profile.name}{noise}; {failed} failed.")


def _password(args: argparse.Namespace) -> str:
    """From stdin when asked (scripts), else typed twice at a prompt that does not echo."""
    import getpass

    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    password = getpass.getpass(f"Password for {args.name}: ")
    if getpass.getpass("Again: ") != password:
        sys.exit("error: the two passwords differ.")
    return password


def users(args: argparse.Namespace) -> None:
    """Add, list, disable and enable users; set a password; make or revoke API tokens."""
    from settings import Settings
    from storage.db import Database
    from storage.users import UserError, UserStore

    settings = Settings()
    db = Database(settings.database)
    db.migrate()
    store = UserStore(db)
    try:
        if args.action == "add":
            user = store.add(args.name, _password(args), args.role)
            print(f"added {user.name} ({user.role})")
        elif args.action == "list":
            print(f"{'name':24} {'role':8} {'state':9} {'last sign-in':20} created")
            for user in store.list():
                state = "disabled" if user.disabled else "active" if user.can_sign_in else "local"
                last = user.last_login_at.strftime("%Y-%m-%d %H:%M") if user.last_login_at else "never"
                print(f"{user.name:24} {user.role:8} {state:9} {last:20} {user.created_at:%Y-%m-%d}")
        elif args.action in ("disable", "enable"):
            store.set_disabled(args.name, args.action == "disable")
            print(f"{args.name} {args.action}d")
        elif args.action == "password":
            store.set_password(args.name, _password(args))
            print(f"password of {args.name} changed")
        elif args.action == "token":
            secret, token = store.create_token(args.name, args.token_name)
            print(f"API token {token.id} ({token.name}) for {token.user_name}; it is shown only this once:\n{secret}")
        elif args.action == "tokens":
            for token in store.tokens(args.name):
                used = token.last_used_at.strftime("%Y-%m-%d %H:%M") if token.last_used_at else "never used"
                print(f"{token.id}  {token.name:20} created {token.created_at:%Y-%m-%d}  {used}")
        elif args.action == "revoke":
            store.revoke_token(args.name, args.token_id)
            print(f"token {args.token_id} revoked")
    except UserError as exc:
        sys.exit(f"error: {exc}")


def check(args: argparse.Namespace) -> None:
    """Rows whose file is missing, files no row refers to, leftovers of interrupted writes; --fix repairs what is safe."""
    from datetime import timedelta

    from settings import Settings
    from storage.consistency import check_storage
    from storage.db import Database
    from storage.files import FileStore

    settings = Settings()
    db = Database(settings.database)
    db.migrate()
    report = check_storage(db, FileStore(settings.files), fix=args.fix, grace=timedelta(minutes=args.grace_minutes))
    print(report.text(), flush=True)
    sys.exit(1 if report.problems else 0)


def parser() -> argparse.ArgumentParser:
    # Options every command takes, before or after its name; SUPPRESS keeps a subcommand from
    # overwriting a value given before it with its own default.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--profile", help="model profile: auto (default), sdxl, hunyuan, sd15, tiny, or one you added")
    common.add_argument("--data-dir", help="where the database, broker and files live (default ./data)")
    top = argparse.ArgumentParser(
        prog="app.py", parents=[common],
        description="AI Creative Studio. With no command: start the web app and one embedded worker.",
    )
    top.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    top.add_argument("--port", type=int, help="port to listen on (default 7860)")
    top.add_argument("--no-worker", action="store_true", help="do not start the embedded worker")
    commands = top.add_subparsers(dest="command")
    worker = commands.add_parser("worker", parents=[common],
                                 help="run a worker alone (on a GPU machine), taking jobs from the queues")
    worker.add_argument("--queues", dest="worker_queues", help="comma-separated queues (default gpu,train,cpu)")
    worker.add_argument("--name", dest="worker_name", help="worker name, e.g. gpu1@%%h")
    worker.add_argument("--loglevel", default="INFO")
    model_cmd = commands.add_parser("models", parents=[common], help="manage model profiles")
    model_cmd.add_argument("action", choices=["build-tiny", "list"],
                           help="build-tiny: write the offline tiny profile; list: show profiles and which models are available")
    users_cmd = commands.add_parser("users", parents=[common], help="users who sign in, and their API tokens")
    users_cmd.add_argument("action", choices=["add", "list", "disable", "enable", "password", "token", "tokens", "revoke"],
                           help="add NAME; list; disable|enable NAME; password NAME; token NAME (a new API token); "
                                "tokens NAME; revoke NAME TOKEN_ID")
    users_cmd.add_argument("name", nargs="?", help="the user's name")
    users_cmd.add_argument("token_id", nargs="?", help="revoke: the token's id (from `users tokens NAME`)")
    users_cmd.add_argument("--role", choices=["admin", "member"], default="member", help="add: the user's role (default member)")
    users_cmd.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    users_cmd.add_argument("--token-name", default="script", help="token: what the token is for")
    styles_cmd = commands.add_parser("styles", parents=[common], help="the style catalogue")
    styles_cmd.add_argument("action", choices=["previews"], help="previews: render a preview of each style with the active profile")
    styles_cmd.add_argument("names", nargs="*", help="only these styles (default: all)")
    styles_cmd.add_argument("--missing", action="store_true", help="only styles that have no preview yet")
    styles_cmd.add_argument("--avatars", action="store_true", help="the avatar styles (templates/avatar_styles.json) instead of the art styles")
    styles_cmd.add_argument("--templates", action="store_true",
                            help="the template square's industry templates (templates/industry_templates.json) instead of the art styles")
    check_cmd = commands.add_parser("check", parents=[common],
                                    help="check that every row's file is stored and every stored file is used")
    check_cmd.add_argument("--fix", action="store_true", help="delete orphan and temporary files older than the grace "
                           "period, and asset rows whose file is gone (other rows are reported with what to do)")
    check_cmd.add_argument("--grace-minutes", type=float, default=60,
                           help="leave files younger than this alone: a worker may be committing their row (default 60)")
    return top


def main(argv: list[str] | None = None) -> None:
    sys.path.insert(0, str(ROOT))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    args = parser().parse_args(argv)
    _apply_overrides(args)
    if args.command == "users" and args.action not in ("list",) and not args.name:
        parser().error(f"users {args.action} needs a user name")
    if args.command == "users" and args.action == "revoke" and not args.token_id:
        parser().error("users revoke needs the user name and the token id")
    {"worker": run_worker, "models": models, "styles": styles, "users": users, "check": check}.get(args.command, serve)(args)


if __name__ == "__main__":
    main()

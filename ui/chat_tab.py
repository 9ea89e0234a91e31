"""The Creation chat tab: a conversation that refines one picture turn by turn, with ranked candidates.

Each message becomes a ``chat_turn`` job; the worker refines the prompt, draws the candidates and ranks
them by CLIP score. The tab only submits, polls and renders the stored conversation.
"""

from __future__ import annotations

import gradio as gr

from storage import repo
from storage.models import JobState
from storage.quota import LimitExceeded
from tasks.client import ConversationView, InvalidRequest, QueueUnavailable, TurnView
from ui.asset_panel import selected_asset
from ui.create_tab import CreateTab
from ui.img2img_tab import SEND_LABEL
from ui.jobs import wait_for_job, warn_if_no_worker
from ui.services import Services, banner

ACTION_LABELS = {"add": "added", "replace": "replaced", "remove": "removed", "map": "mapped", "unmapped": "not understood"}


def _asset_paths(services: Services, owner: str, asset_ids: list[str]) -> dict[str, str]:
    with services.db.session() as session:
        assets = [repo.get_asset(session, a, owner) for a in asset_ids]
    return {a.id: str(services.asset_path(a)) for a in assets if a is not None}


def _candidate_caption(candidate: dict, rank: int) -> str:
    score = f"CLIP {candidate['score']:.1f}" if candidate.get("score") is not None else "not scored"
    return f"#{rank + 1} · {score} · seed {candidate['seed']}"


def candidate_gallery(services: Services, owner: str, candidates: list[dict]) -> list[tuple[str, str]]:
    """A turn's candidates, best first, as (file, caption) pairs; deleted assets are left out."""
    paths = _asset_paths(services, owner, [c["asset_id"] for c in candidates])
    return [(paths[c["asset_id"]], _candidate_caption(c, rank)) for rank, c in enumerate(candidates) if c["asset_id"] in paths]


def _assistant_text(turn: TurnView) -> str:
    job, refined = turn.job, turn.refined
    if job is not None and job.state == JobState.FAILED:
        return f"⚠️ That turn failed: {job.error}"
    if job is not None and job.state == JobState.CANCELLED:
        return "This turn was cancelled."
    if refined is None:
        return f"… working ({job.stage if job else 'queued'})"
    text = refined["reply"]
    if refined["intent"] in ("draw", "edit") and refined["prompt"]:
        text += f"\n\n**Prompt:** {refined['prompt']}"
    if job is not None and not job.finished:
        text += f"\n\n… {job.stage}"
    return text


def chat_messages(services: Services, owner: str, view: ConversationView | None) -> list[dict]:
    """The conversation along its current path, with each turn's ranked images inline."""
    if view is None:
        return []
    messages = []
    for turn_id in view.path:
        turn = view.turn(turn_id)
        messages.append({"role": "user", "content": turn.text})
        messages.append({"role": "assistant", "content": _assistant_text(turn)})
        images = candidate_gallery(services, owner, turn.candidates)
        if images:
            messages.append({"role": "assistant", "content": gr.Gallery(value=images, columns=4, height="auto", format="png")})
    return messages


def mapping_markdown(turn: TurnView | None) -> str:
    """How the turn's words became prompt terms, what went negative, and which path wrote it."""
    if turn is None or not turn.refined:
        return "Write a message to start. The prompt, its mapping and the candidates' scores show here."
    r = turn.refined
    source = "the rules" if r["source"] == "rules" else "the instruct LLM"
    facts = [f"**Prompt** (written by {source}): {r['prompt'] or '—'}"]
    if r.get("prompt_original") and r["prompt_original"] != r["prompt"]:
        facts.append(f"**In your words:** {r['prompt_original']}")
    facts.append(f"**Negative prompt:** {r['negative_prompt'] or '—'}")
    if r.get("style"):
        facts.append(f"**Style preset:** {r['style']}")
    if r.get("fallback"):
        facts.append(f"⚠️ *The LLM's answer was not used ({r['fallback']}); the rules wrote this prompt.*")
    if r["mapping"]:
        rows = [f"| {m['from']} | {m['to'] or '—'} | {m.get('slot') or ''} | {ACTION_LABELS.get(m['action'], m['action'])} |"
                for m in r["mapping"]]
        facts.append("\n".join(["| your words | became | slot | |", "|---|---|---|---|", *rows]))
    seed = f"Seed {turn.seed}" if turn.seed is not None else "No seed yet"
    kept = " (new variations)" if r.get("new_seed") else " (kept from the previous turn)" if turn.parent_id else ""
    facts.append(f"{seed}{kept} · intent: {r['intent']}")
    return "\n\n".join(facts)


def picture_turn(view: ConversationView | None) -> TurnView | None:
    """The turn whose images are the current picture: the head, or the nearest turn before it with images."""
    if view is None:
        return None
    for turn_id in reversed(view.path):
        if view.turn(turn_id).candidates:
            return view.turn(turn_id)
    return view.turn(view.path[-1]) if view.path else None


def turn_choices(view: ConversationView | None) -> list[tuple[str, str]]:
    if view is None:
        return []
    on_path = set(view.path)
    choices = []
    for number, turn in enumerate(view.turns, start=1):
        mark = "●" if turn.id == view.head_turn_id else "·" if turn.id in on_path else "○"
        text = turn.text if len(turn.text) <= 40 else turn.text[:40] + "…"
        choices.append((f"{mark} {number}. {text}", turn.id))
    return choices


def build_chat_tab(services: Services, create: CreateTab, tabs: gr.Tabs, create_tab_id: str, tab: gr.Tab,
                   senders: list[tuple[gr.Button, gr.State]]) -> None:
    options = services.options
    chats = services.client.conversations
    gr.Markdown(banner(options), visible=options.profile.is_noise, elem_classes=["noise-banner"])
    with gr.Row():
        with gr.Column(scale=1, min_width=220):
            # Choices change per session; the handlers check every id against the user's own conversations.
            conversation_list = gr.Dropdown([], label="Conversations", elem_id="chat-conversations", allow_custom_value=True)
            new_button = gr.Button("New conversation", elem_id="chat-new")
            title = gr.Textbox(label="Title", elem_id="chat-title")
            with gr.Row():
                rename_button = gr.Button("Rename", size="sm", elem_id="chat-rename")
                delete_button = gr.Button("Delete", size="sm", variant="stop")
            turn_list = gr.Dropdown([], label="Turns (● head, · this branch, ○ other branches)", elem_id="chat-turns",
                                    allow_custom_value=True)
            branch_button = gr.Button("Continue from this turn", elem_id="chat-branch")
            undo_button = gr.Button("Undo last turn", elem_id="chat-undo")
        with gr.Column(scale=3):
            chatbot = gr.Chatbot(label="Creation chat", height=560, elem_id="chat-history", buttons=["copy"])
            message = gr.Textbox(label="Message", lines=2, elem_id="chat-message",
                                 placeholder="黄昏时窗台上的一只猫，水彩风格 / a cat on a windowsill at dusk, watercolour")
            with gr.Row():
                send_button = gr.Button("Send", variant="primary", elem_id="chat-send")
                cancel_button = gr.Button("Cancel", variant="stop")
                count = gr.Slider(1, options.max_count, value=options.default_candidates, step=1, label="Candidates")
                aspect = gr.Dropdown(list(options.aspect_ratios), value="1:1", label="Aspect ratio")
            status = gr.Markdown(elem_id="chat-status")
        with gr.Column(scale=2):
            candidates = gr.Gallery(label="Candidates, best CLIP score first", format="png", columns=2, height=340,
                                    elem_id="chat-candidates", object_fit="contain", buttons=["download", "fullscreen"])
            selected_info = gr.Markdown("Select a candidate to tweak it.", elem_id="chat-selected")
            with gr.Row():
                style = gr.Dropdown(options.styles, value="none", label="Style", scale=2)
                style_button = gr.Button("Apply style", scale=1, elem_id="chat-apply-style")
            with gr.Row():
                tweak_aspect = gr.Dropdown(list(options.aspect_ratios), value="16:9", label="Aspect", scale=2)
                aspect_button = gr.Button("Apply aspect", scale=1)
            with gr.Row():
                upscale_button = gr.Button("Higher resolution", elem_id="chat-upscale")
                variations_button = gr.Button("Variations", elem_id="chat-variations")
                continue_button = gr.Button("Continue in Create", elem_id="chat-continue")
                send = gr.Button(SEND_LABEL, elem_id="chat-send-img2img")
            mapping = gr.Markdown(mapping_markdown(None), elem_id="chat-mapping")

    conversation_id = gr.State(None)
    candidate_turn = gr.State(None)  # the turn whose candidates the gallery shows
    candidate_ids = gr.State([])
    selected = gr.State(None)
    senders.append((send, selected))
    job_id = gr.State(None)
    view_outputs = [conversation_id, chatbot, conversation_list, title, turn_list, candidates, candidate_turn,
                    candidate_ids, selected, selected_info, mapping]

    def render(owner: str, view: ConversationView | None, extra: list[dict] | None = None) -> list:
        """Every output that shows a conversation of the owner's, from its stored state."""
        shown = picture_turn(view)
        cands = shown.candidates if shown else []
        gallery = candidate_gallery(services, owner, cands)
        listing = [(c["title"], c["id"]) for c in chats.list(owner)]
        top = cands[0]["asset_id"] if cands else None
        return [
            view.id if view else None, chat_messages(services, owner, view) + (extra or []),
            gr.Dropdown(choices=listing, value=view.id if view else None), view.title if view else "",
            gr.Dropdown(choices=turn_choices(view), value=view.head_turn_id if view else None),
            gallery, shown.id if shown and cands else None, [c["asset_id"] for c in cands], top,
            "Best candidate selected; click another to tweak it." if top else "Select a candidate to tweak it.",
            mapping_markdown(view.turn(view.head_turn_id) if view and view.head_turn_id else None),
        ]

    def current(owner: str, conv_id: str | None) -> ConversationView | None:
        return chats.get(owner, conv_id) if conv_id else None

    def run_turn(owner: str, raw: dict, conv_id: str | None, progress: gr.Progress):
        """Submit a turn, follow its job, then show the stored conversation. A generator for live updates."""
        raw = dict(raw, conversation_id=conv_id)
        try:
            job = services.client.submit(owner, "chat_turn", raw, origin="chat")
        except InvalidRequest as exc:
            said = raw.get("text") or (f"({raw['tweak'].get('kind')})" if raw.get("tweak") else "(empty message)")
            yield [*render(owner, current(owner, conv_id), [{"role": "user", "content": said},
                                                            {"role": "assistant", "content": str(exc)}]),
                   None, gr.update(), str(exc)]
            return
        except (QueueUnavailable, LimitExceeded) as exc:
            raise gr.Error(str(exc)) from exc
        warn_if_no_worker(services, "turn")
        conv_id = job.params["conversation_id"]
        yield [*render(owner, current(owner, conv_id)), job.id, "", "Refining the prompt…"]
        job = wait_for_job(services, owner, job, progress)
        view = current(owner, conv_id)
        note = {JobState.SUCCEEDED: "", JobState.CANCELLED: "Cancelled.", JobState.FAILED: f"**Failed:** {job.error}"}
        yield [*render(owner, view), None, "", note.get(job.state, "")]

    turn_outputs = [*view_outputs, job_id, message, status]

    def send(text: str, count_v: int, aspect_v: str, conv_id: str | None, request: gr.Request, progress=gr.Progress()):
        yield from run_turn(services.owner(request), dict(text=text, count=count_v, aspect=aspect_v), conv_id, progress)

    send_inputs = [message, count, aspect, conversation_id]
    send_button.click(send, send_inputs, turn_outputs, api_name="chat_send", concurrency_limit=None)
    message.submit(send, send_inputs, turn_outputs, api_visibility="private", concurrency_limit=None)

    def tweak(kind: str):
        def run(asset_id: str | None, turn_id: str | None, conv_id: str | None, count_v: int, style_v: str,
                aspect_v: str, request: gr.Request, progress=gr.Progress()):
            if not asset_id or not turn_id:
                raise gr.Error("Select one of the candidates first.")
            spec = {"kind": kind, "asset_id": asset_id, "style": style_v, "aspect": aspect_v}
            yield from run_turn(services.owner(request), dict(tweak=spec, parent_turn_id=turn_id, count=count_v), conv_id,
                                progress)
        return run

    tweak_inputs = [selected, candidate_turn, conversation_id, count]
    style_button.click(tweak("style"), [*tweak_inputs, style, tweak_aspect], turn_outputs, api_name="chat_tweak_style")
    aspect_button.click(tweak("aspect"), [*tweak_inputs, style, tweak_aspect], turn_outputs, api_name="chat_tweak_aspect")
    upscale_button.click(tweak("upscale"), [*tweak_inputs, style, tweak_aspect], turn_outputs, api_name="chat_upscale")
    variations_button.click(tweak("variations"), [*tweak_inputs, style, tweak_aspect], turn_outputs, api_name="chat_variations")

    cancel_button.click(services.cancel, job_id, status, api_visibility="private")

    def open_conversation(conv_id: str | None, request: gr.Request):
        owner = services.owner(request)
        return render(owner, current(owner, conv_id))

    def new_conversation(request: gr.Request):
        return render(services.owner(request), None)

    conversation_list.input(open_conversation, conversation_list, view_outputs, api_name="chat_open")
    new_button.click(new_conversation, None, view_outputs, api_name="chat_new")
    tab.select(open_conversation, conversation_id, view_outputs, api_visibility="private")

    def change(action):
        """A handler that applies ``action(owner, conversation id, *inputs)`` and shows the conversation."""
        def run(conv_id: str | None, request: gr.Request, *args):
            if not conv_id:
                raise gr.Error("Open or start a conversation first.")
            owner = services.owner(request)
            try:
                view = action(owner, conv_id, *args)
            except InvalidRequest as exc:
                raise gr.Error(str(exc)) from exc
            if view is None:
                raise gr.Error("This conversation no longer exists.")
            return render(owner, view)
        return run

    undo_button.click(change(chats.undo), conversation_id, view_outputs, api_name="chat_undo")
    branch_button.click(change(chats.branch), [conversation_id, turn_list], view_outputs, api_name="chat_branch")
    rename_button.click(change(chats.rename), [conversation_id, title], view_outputs, api_name="chat_rename")

    def delete(conv_id: str | None, request: gr.Request):
        owner = services.owner(request)
        if conv_id:
            chats.delete(owner, conv_id)
        return render(owner, None)

    delete_button.click(delete, conversation_id, view_outputs, api_visibility="private")

    def show_turn(conv_id: str | None, turn_id: str | None, request: gr.Request):
        """Preview a turn from the list: its mapping and candidates, before continuing from it."""
        owner = services.owner(request)
        view = current(owner, conv_id)
        turn = view.turn(turn_id) if view and turn_id else None
        if turn is None:
            return gr.update(), gr.update(), gr.update(), gr.update(), gr.update()
        ids = [c["asset_id"] for c in turn.candidates]
        return (mapping_markdown(turn), candidate_gallery(services, owner, turn.candidates), turn.id if ids else None, ids,
                ids[0] if ids else None)

    turn_list.input(show_turn, [conversation_id, turn_list], [mapping, candidates, candidate_turn, candidate_ids, selected],
                    api_visibility="private")

    def on_select(ids: list[str], evt: gr.SelectData, request: gr.Request):
        asset_id = ids[evt.index] if ids and evt.index is not None and evt.index < len(ids) else None
        if asset_id is None:
            return None, "Select a candidate to tweak it."
        asset = selected_asset(services, services.owner(request), asset_id)
        score = f" · CLIP {asset.score:.1f}" if asset.score is not None else ""
        return asset_id, (f"Candidate {evt.index + 1}: {asset.width}×{asset.height} px · seed {asset.params.get('seed')}{score} · "
                          f"[Download PNG](/api/v1/assets/{asset.id}/file)")

    candidates.select(on_select, candidate_ids, [selected, selected_info], api_visibility="private")

    def continue_in_create(asset_id: str | None, request: gr.Request):
        asset = selected_asset(services, services.owner(request), asset_id)
        return [gr.Tabs(selected=create_tab_id), *create.values_from(asset.params)]

    continue_button.click(continue_in_create, selected, [tabs, *create.form], api_visibility="private")

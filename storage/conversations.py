"""Queries on creation-chat conversations and their turn trees. Every read filters by owner."""

from __future__ import annotations

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from storage.models import Conversation, Turn, utcnow

TITLE_CHARS = 60


class ConversationError(ValueError):
    """A conversation or turn that does not exist for this user, or a move the tree does not allow."""


def create_conversation(session: Session, owner_id: str, title: str = "New conversation") -> Conversation:
    conversation = Conversation(owner_id=owner_id, title=title[:200])
    session.add(conversation)
    session.flush()
    return conversation


def list_conversations(session: Session, owner_id: str, limit: int = 200) -> list[Conversation]:
    query = (select(Conversation).where(Conversation.owner_id == owner_id)
             .order_by(Conversation.updated_at.desc()).limit(limit))
    return list(session.scalars(query))


def get_conversation(session: Session, conversation_id: str, owner_id: str) -> Conversation | None:
    return session.scalar(select(Conversation).where(Conversation.id == conversation_id, Conversation.owner_id == owner_id))


def get_turn(session: Session, turn_id: str, owner_id: str | None = None) -> Turn | None:
    query = select(Turn).where(Turn.id == turn_id)
    if owner_id is not None:
        query = query.where(Turn.owner_id == owner_id)
    return session.scalar(query)


def turn_path(session: Session, turn: Turn | None) -> list[Turn]:
    """The turns from the conversation's first message down to ``turn``."""
    path = []
    while turn is not None:
        path.append(turn)
        turn = session.get(Turn, turn.parent_id) if turn.parent_id else None
    return path[::-1]


def start_turn(session: Session, owner_id: str, request: dict, job_id: str | None = None) -> Turn:
    """Add a turn after the conversation's head (or after ``parent_turn_id``: a branch), and make it the head.

    A new conversation is created when the request names none. Not committed: the caller adds the job.
    """
    conversation_id = request.get("conversation_id")
    if conversation_id:
        conversation = get_conversation(session, conversation_id, owner_id)
        if conversation is None:
            raise ConversationError(f"There is no conversation {conversation_id!r}.")
    else:
        conversation = create_conversation(session, owner_id, _title(request))
    parent_id = request.get("parent_turn_id") or conversation.head_turn_id
    if parent_id:
        parent = get_turn(session, parent_id, owner_id)
        if parent is None or parent.conversation_id != conversation.id:
            raise ConversationError(f"Turn {parent_id!r} is not part of this conversation.")
    turn = Turn(conversation_id=conversation.id, owner_id=owner_id, parent_id=parent_id, job_id=job_id, text=request.get("text", ""),
                tweak=request.get("tweak"), settings={k: request[k] for k in ("count", "aspect") if k in request})
    session.add(turn)
    session.flush()
    conversation.head_turn_id, conversation.updated_at = turn.id, utcnow()
    if conversation.title == "New conversation" and turn.text:
        conversation.title = _title(request)
    return turn


def withdraw_turn(session: Session, turn_id: str) -> None:
    """Remove a turn whose job could not be queued; its parent becomes the head again."""
    turn = session.get(Turn, turn_id)
    if turn is None:
        return
    conversation = turn.conversation
    if conversation.head_turn_id == turn.id:
        conversation.head_turn_id = turn.parent_id
    session.execute(delete(Turn).where(Turn.id == turn.id))
    remaining = session.scalar(select(func.count()).select_from(Turn).where(Turn.conversation_id == conversation.id))
    if not remaining:
        session.execute(delete(Conversation).where(Conversation.id == conversation.id))


def move_head(session: Session, conversation: Conversation, turn_id: str | None) -> Conversation:
    """Branch from ``turn_id`` (the next message follows it); None goes back to before the first turn."""
    if turn_id is not None:
        turn = get_turn(session, turn_id, conversation.owner_id)
        if turn is None or turn.conversation_id != conversation.id:
            raise ConversationError(f"Turn {turn_id!r} is not part of this conversation.")
    conversation.head_turn_id, conversation.updated_at = turn_id, utcnow()
    session.commit()
    return conversation


def undo(session: Session, conversation: Conversation) -> Conversation:
    """Step the head back one turn. The undone turn stays in the tree, reachable as a branch."""
    if conversation.head_turn_id is None:
        raise ConversationError("There is nothing to undo: the conversation is at its start.")
    head = session.get(Turn, conversation.head_turn_id)
    return move_head(session, conversation, head.parent_id if head else None)


def rename(session: Session, conversation: Conversation, title: str) -> Conversation:
    title = " ".join(title.split())
    if not title:
        raise ConversationError("A conversation needs a title.")
    conversation.title = title[:200]
    session.commit()
    return conversation


def delete_conversation(session: Session, conversation: Conversation) -> None:
    """Delete the conversation and its turns; its images stay in the asset library."""
    # Unlink the tree first, so no database has to order the deletes of parents and children.
    session.execute(update(Turn).where(Turn.conversation_id == conversation.id).values(parent_id=None))
    session.execute(delete(Turn).where(Turn.conversation_id == conversation.id))
    session.execute(delete(Conversation).where(Conversation.id == conversation.id))
    session.commit()


def _title(request: dict) -> str:
    text = " ".join((request.get("text") or "").split())
    return (text[:TITLE_CHARS] + "…" if len(text) > TITLE_CHARS else text) or "New conversation"

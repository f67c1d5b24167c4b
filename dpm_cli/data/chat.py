"""Conversations as text: `{"messages": [{"role": "user", "content": ...}, ...]}`, the chat format of
transformers' chat templates and TRL's SFTTrainer (and OpenAI's fine-tuning files); and TRL's
prompt-completion records, `{"prompt": ..., "completion": ...}`, as one text (the completion after its
prompt) or, with messages on both sides, one conversation.

A decoder that serves chat is pruned and judged on its conversations as its chat template renders them
(`tokenizer.apply_chat_template(..., tokenize=False)`, which transformers renders in a sandboxed Jinja
environment: a template is no code dpm runs). The rendered text already holds the template's special
tokens (BOS, turn markers), so it is tokenised without adding them again (TRL does the same).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import InputError

CHAT_FIELD = "messages"  # read without data.text_field when a record has no "text" (TRL's convention)


@dataclass(frozen=True)
class Chat:
    """One conversation: (role, content) per message, in order."""
    messages: tuple[tuple[str, str], ...]


def is_chat(value: Any) -> bool:
    """A non-empty list of {"role": ..., "content": ...} objects."""
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) and "role" in m for m in value)


def chat_of(path: Any, number: int | str, value: list[dict]) -> Chat:
    """A record's messages as a Chat; content given as parts keeps its text parts (images are not read)."""
    messages = []
    for i, message in enumerate(value):
        role, content = message.get("role"), message.get("content")
        if isinstance(content, list):  # [{"type": "text", "text": ...}, {"type": "image", ...}]
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if not isinstance(role, str) or not role or not isinstance(content, str):
            raise InputError(f"{path}:{number}: message {i + 1} needs a \"role\" and a text \"content\"; each message "
                             'is {"role": "user", "content": "..."}')
        messages.append((role, content))
    return Chat(tuple(messages))


def rendered(chats: list[Chat], tokenizer: Any) -> list[str]:
    """Each conversation as the tokenizer's chat template writes it."""
    if not getattr(tokenizer, "chat_template", None):
        raise InputError("the data holds chat messages, and the model folder's tokenizer has no chat template "
                         "(chat_template.jinja, or chat_template in tokenizer_config.json) to write them as text; "
                         "give plain text, or a folder whose tokenizer has one")
    texts = []
    for chat in chats:
        try:
            texts.append(tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in chat.messages],
                                                       tokenize=False))
        except Exception as err:  # noqa: BLE001 - the template's own refusal (e.g. roles must alternate)
            first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
            raise InputError(f"the tokenizer's chat template refused a conversation ({first}); check the "
                             "messages' roles and order, or the folder's chat template itself") from None
    return texts


def prompt_and_completion(path: Any, number: int | str, record: dict) -> str | Chat | None:
    """A record's prompt followed by its completion: a text, or a conversation when both hold messages;
    None when the record is not of that form."""
    prompt, completion = record.get("prompt"), record.get("completion")
    if isinstance(prompt, str) and isinstance(completion, str) and (prompt + completion).strip():
        return prompt + completion  # as TRL joins them: the completion carries its own leading space
    if is_chat(prompt) and is_chat(completion):
        return chat_of(path, number, prompt + completion)
    return None

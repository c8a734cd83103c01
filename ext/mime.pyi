from collections.abc import Mapping, Sequence
from datetime import datetime

def normalize_line_endings(message: bytes) -> bytes: ...
def smtp_data(message: bytes) -> bytes: ...
def make_message_id(domain: str) -> str: ...

class MessageTemplate:
    requires: frozenset[str]
    def __init__(
        self,
        from_: str,
        subject: str,
        text: str | None = None,
        html: str | None = None,
        headers: Mapping[str, str] | None = None,
        attachments: Sequence[tuple[str, str, bytes] | Mapping[str, object]] | None = None,
        *,
        message_id_domain: str | None = None,
        max_loop_items: int = ...,
        max_output: int = ...,
    ) -> None: ...
    def render(
        self,
        to: str,
        variables: Mapping[str, object] | None = None,
        message_id: str | None = None,
        *,
        date: datetime | None = None,
    ) -> bytes: ...
    def missing(self, variables: Mapping[str, object] | None = None) -> tuple[str, ...]: ...
    def check(
        self, variables: Mapping[str, object] | None = None
    ) -> tuple[tuple[str, ...], str | None]: ...

"""Message templates from TOML files (``salvo render``, the demo), and a job's compiled
template for the render check at intake (:func:`job_template`).

A template file holds the fields of a job's content::

    from = "Acme <news@acme.example>"
    subject = "Hi {{ name }}"
    text = "Hello {{ name }}"            # or text_file = "body.txt"
    html_file = "body.html"              # or html = "..."
    [headers]
    "Reply-To" = "help@acme.example"
    [[attachments]]
    path = "terms.pdf"                   # relative to the template file
    content_type = "application/pdf"     # optional; guessed from the name
    filename = "terms.pdf"               # optional; the file's name

Paths are relative to the template file. Unknown keys are errors that name the key.
"""

from __future__ import annotations

import functools
import mimetypes
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from salvo.core import host
from salvo.ext.errors import TemplateError
from salvo.ext.mime import MessageTemplate

if TYPE_CHECKING:
    from salvo.core.protocol import Job

_KEYS = {"from", "subject", "text", "text_file", "html", "html_file", "headers", "attachments"}
_ATTACHMENT_KEYS = {"path", "content_type", "filename"}


def load_template(path: str | Path) -> MessageTemplate:
    """Compile the template described by a TOML file."""
    path = Path(path)
    try:
        data = tomllib.loads(host.read_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise TemplateError(f"{path}: not valid TOML: {exc}") from exc
    return template_from_mapping(data, base=path.parent, where=str(path))


def template_from_mapping(data: dict[str, Any], *, base: Path, where: str) -> MessageTemplate:
    """Compile a template from already-parsed fields (see the module docstring)."""
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise TemplateError(
            f"{where}: unknown key {unknown[0]!r}; known: {', '.join(sorted(_KEYS))}"
        )
    for key in ("from", "subject"):
        if not isinstance(data.get(key), str):
            raise TemplateError(f"{where}: {key!r} is required and must be a string")
    text = _body(data, "text", base, where)
    html = _body(data, "html", base, where)
    if text is None and html is None:
        raise TemplateError(f"{where}: give a body: text, text_file, html or html_file")
    headers = data.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise TemplateError(f"{where}: [headers] must map header names to strings")
    attachments = [
        _attachment(a, i, base, where) for i, a in enumerate(data.get("attachments", []))
    ]
    return MessageTemplate(
        data["from"],
        data["subject"],
        text=text,
        html=html,
        headers=headers or None,
        attachments=attachments or None,
    )


def _body(data: dict[str, Any], kind: str, base: Path, where: str) -> str | None:
    inline, file = data.get(kind), data.get(f"{kind}_file")
    if inline is not None and file is not None:
        raise TemplateError(f"{where}: give {kind!r} or {kind + '_file'!r}, not both")
    if file is not None:
        return host.read_text(base / file)
    if inline is not None and not isinstance(inline, str):
        raise TemplateError(f"{where}: {kind!r} must be a string")
    return inline


def _attachment(item: Any, index: int, base: Path, where: str) -> tuple[str, str, bytes]:
    label = f"{where}: attachments[{index}]"
    if not isinstance(item, dict) or "path" not in item:
        raise TemplateError(f"{label}: needs a 'path'")
    unknown = sorted(set(item) - _ATTACHMENT_KEYS)
    if unknown:
        raise TemplateError(f"{label}: unknown key {unknown[0]!r}")
    path = base / item["path"]
    filename = item.get("filename", path.name)
    content_type = item.get("content_type") or (
        mimetypes.guess_type(filename)[0] or "application/octet-stream"
    )
    return (filename, content_type, host.read_bytes(path))


def job_template(job: Job, limits: tuple[int, int] | None = None) -> MessageTemplate | None:
    """The compiled template of a producer's job (None for a raw message), compiled as the
    signers compile it (:class:`salvo.core.compose.Composer`), so that what it accepts
    renders there. Jobs of one campaign share their content: the last 32 templates are
    kept, keyed by content. ``limits`` is ([templates] max_loop_items, max_output).
    Raises :class:`TemplateError` when the content cannot compile.
    """
    if job.raw is not None:
        return None
    headers = tuple(job.headers.items()) if job.headers else ()
    return _compiled(job.from_, job.subject or "", job.text, job.html, headers, limits)


@functools.lru_cache(maxsize=32)
def _compiled(
    from_: str,
    subject: str,
    text: str | None,
    html: str | None,
    headers: tuple[tuple[str, str], ...],
    limits: tuple[int, int] | None,
) -> MessageTemplate:
    return MessageTemplate(
        from_,
        subject,
        text=text,
        html=html,
        headers=dict(headers) or None,
        **template_limits(limits),
    )


def template_limits(limits: tuple[int, int] | None) -> dict[str, int]:
    """MessageTemplate's keyword arguments for ([templates] max_loop_items, max_output)."""
    if limits is None:
        return {}
    return {"max_loop_items": limits[0], "max_output": limits[1]}

"""The error hierarchy of salvo, rooted here so that ext/ needs nothing else of salvo.

Every error salvo raises derives from :class:`SalvoError`. ``temporary`` tells the caller
whether the same operation may succeed later (retry) or never will (fix the input).
"""


class SalvoError(Exception):
    """Root of every error salvo raises."""

    temporary: bool = False


class TemplateError(SalvoError, ValueError):
    """A message template or the values given to it cannot make a valid message."""


class TemplateSyntaxError(TemplateError):
    """The template text itself is malformed (unclosed ``{{``, bad name, unknown filter)."""


class MissingVariableError(TemplateError, KeyError):
    """A placeholder names a variable that the recipient's variables do not define."""

    def __init__(self, name: str, field: str) -> None:
        super().__init__(name, field)
        self.name = name
        self.field = field

    def __str__(self) -> str:
        return f"missing variable {self.name!r} used in {self.field}"


class HeaderInjectionError(TemplateError):
    """A value would have created a header line or a MIME part (CR, LF, NUL, U+2028/9...)."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(field, detail)
        self.field = field
        self.detail = detail

    def __str__(self) -> str:
        return f"refused value for {self.field}: {self.detail}"


class DKIMError(SalvoError, ValueError):
    """A DKIM key, option or message cannot be used to sign."""


class WeakKeyError(DKIMError):
    """An RSA key is shorter than 1024 bits: receivers ignore such signatures (RFC 8301)."""


class InvalidAddressError(TemplateError):
    """An address (``to``, ``from_``, Reply-To...) is not one strict ``Name <local@domain>``."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(field, detail)
        self.field = field
        self.detail = detail

    def __str__(self) -> str:
        return f"invalid address in {self.field}: {self.detail}"


class LineEndingError(DKIMError):
    """The message has a bare CR or LF: normalize line endings to CRLF before signing."""

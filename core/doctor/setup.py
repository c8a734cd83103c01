"""What the doctor checks, gathered from the node's config: domains, keys, addresses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from salvo.core.config import Config

from .model import normal_name


@dataclass(frozen=True)
class DkimSetup:
    domain: str
    selector: str
    algorithm: str
    key_file: str  # as configured, for messages
    private_key: bytes | None  # None: it could not be read (see key_error)
    key_error: str = ""


@dataclass(frozen=True)
class PoolSetup:
    name: str
    sources: tuple[str, ...]
    ehlo: str  # the pool's EHLO name, or the node's hostname


@dataclass(frozen=True)
class Setup:
    from_domains: tuple[str, ...]
    dkim: tuple[DkimSetup, ...]
    pools: tuple[PoolSetup, ...]
    verp_domains: tuple[tuple[str, str], ...]  # (traffic class, VERP domain), verp = true
    bounce_domains: tuple[str, ...]  # [feedback] domains, then VERP domains not among them
    hostname: str  # the node's, for the fixes (MX target, EHLO)
    unsubscribe_host: str = ""  # the host of [unsubscribe] base_url

    @property
    def sources(self) -> tuple[str, ...]:
        """Every source address of every pool, once, in config order."""
        return tuple(dict.fromkeys(s for pool in self.pools for s in pool.sources))

    def dkim_for(self, domain: str) -> tuple[DkimSetup, ...]:
        return tuple(k for k in self.dkim if k.domain == normal_name(domain))


def setup_from_config(
    config: Config,
    *,
    hostname: str,
    domains: list[str] = (),
    read_key: Callable[[str], bytes],
) -> Setup:
    """The setup of ``config``: From domains are those with DKIM keys, then ``domains``.
    ``read_key(path)`` reads a key file (the path already made absolute); an OSError
    becomes the key's ``key_error``."""
    keys = []
    for domain in config.dkim:
        for key in config.dkim_keys(domain):
            path = str(config.path(key.private_key))
            try:
                pem, error = read_key(path), ""
            except OSError as exc:
                pem, error = None, f"cannot read {path}: {exc.strerror or exc}"
            keys.append(DkimSetup(domain, key.selector, key.algorithm, path, pem, error))
    from_domains = tuple(dict.fromkeys([*config.dkim, *(normal_name(d) for d in domains)]))
    pools = tuple(
        PoolSetup(name, tuple(pool.sources), pool.ehlo or hostname)
        for name, pool in config.pools.items()
        if pool.sources or any(t.pool == name for t in config.traffic.values())
    )
    verp = tuple(
        (name, config.feedback_domain(name)) for name, t in config.traffic.items() if t.verp
    )
    bounce = tuple(dict.fromkeys([*config.feedback.domains, *(d for _, d in verp)]))
    base_url = config.unsubscribe.base_url
    return Setup(
        from_domains=from_domains,
        dkim=tuple(keys),
        pools=pools,
        verp_domains=verp,
        bounce_domains=bounce,
        hostname=hostname,
        unsubscribe_host=_url_host(base_url),
    )


def _url_host(url: str) -> str:
    """The host of ``https://host[:port]/path`` (validated by the config), or ""."""
    rest = url.partition("://")[2]
    return rest.split("/", 1)[0].split(":", 1)[0].lower()

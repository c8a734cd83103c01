"""The core process of a node: ingress, scheduler, delivery and events in one Trio loop.

On 2 cores the CPU goes to the signers (RSA signatures); everything else shares this one
process, linked by memory channels, and talks to the signers over one ipc:// ROUTER.

Start-up: open the spool (``reader_check``, in-flight recipients back to queued, the due
index checked), bind the events and producers' sockets, tell the supervisor that the
core started (a failure before that ends the node: see :mod:`salvo.actors.supervisor`),
then accept work. SIGTERM or SIGINT: stop taking jobs (producers get
``retry``), stop claiming, let in-flight deliveries finish for up to ``drain_timeout``,
hand the rest back to the queue, commit, exit 0. SIGHUP: read the config file again for
the CURVE keys of producers and subscribers and the admin tokens, and use them from then
on, without closing a connection (docs/security.md); nothing else is reloaded.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import signal
import time
from collections.abc import AsyncIterator

import trio

from salvo.actors.cluster import start_cluster
from salvo.actors.cluster_throttle import start_throttles
from salvo.actors.control import Control
from salvo.actors.delivery import Delivery, Result
from salvo.actors.dispatch import Dispatcher
from salvo.actors.erasure import ErasureService
from salvo.actors.events import EventLog, LogTask, Reopen, run_events
from salvo.actors.ingress import Ingress
from salvo.actors.master_key import master_key_loader
from salvo.actors.scheduler import Scheduler
from salvo.actors.signer import profiled
from salvo.actors.spool_writer import SpoolWriter
from salvo.actors.supervisor import report_started
from salvo.actors.zmqtrio import context
from salvo.core.bulk import BulkRules
from salvo.core.config import Config, ConfigError, load_config, parse_duration, parse_size
from salvo.core.errors import StartupError
from salvo.core.events import Event
from salvo.core.spool import Spool, SpoolConfig
from salvo.core.webhooks import Subscriptions

log = logging.getLogger("salvo.node")

DRAIN_TIMEOUT = 20.0


def open_spool(config: Config, *, create_key: bool = False) -> Spool:
    """The node's spool, opened and recovered as the config says; ``create_key`` makes
    the spool master key file when the data dir encrypts and it is missing."""
    spool_config = SpoolConfig(
        retention=config.finished_retention(),
        idempotency_window=parse_duration(config.spool.idempotency_window),
        max_age=parse_duration(config.traffic_class("default").expire_after),
        max_age_by_traffic={
            name: parse_duration(traffic.expire_after) for name, traffic in config.traffic.items()
        },
        max_recipients=config.ingress.max_recipients,
        bulk=BulkRules.from_config(config),
        template_limits=(config.templates.max_loop_items, config.templates.max_output),
    )
    webhooks = Subscriptions.from_config(config.webhooks) if config.webhooks else None
    return Spool.open(
        config.data_dir,
        spool_config,
        max_map_size=parse_size(config.spool.max_size),
        webhooks=webhooks,
        master_key=master_key_loader(config, create=create_key),
        encrypt=config.spool.encrypt,
    )


async def run_core(config: Config, work_endpoint: str, config_path: str | None = None) -> None:
    """Run the core actors until SIGTERM/SIGINT, then drain and return."""
    spool = open_spool(config)
    zmq_context = context()
    zap = None
    if config.uses_curve:
        from salvo.actors.zap import Zap, load_keys

        zap = Zap(zmq_context, load_keys(config))
    writer = SpoolWriter(spool)
    events_send, events_recv = trio.open_memory_channel[list[Event] | LogTask](10_000)
    results_send, results_recv = trio.open_memory_channel[Result](1_000_000)
    delivery = Delivery(results_send)
    scheduler = Scheduler(config, writer, delivery, results_recv, results_send, events_send)
    control = Control(scheduler)  # the operator's pauses, loaded from the spool
    metrics = bookkeeping(scheduler, spool, delivery)
    if metrics is not None:
        metrics.operator_pauses = control.active_pauses
    alerts = start_alerts(config, spool, events_send, control, metrics)
    dispatcher = Dispatcher(work_endpoint, scheduler.on_signed, context=zmq_context)
    scheduler.dispatcher = dispatcher
    ingress = Ingress(
        config.ingress.listen,
        writer,
        context=zmq_context,
        max_job_bytes=parse_size(config.ingress.max_job_size),
        max_recipients=config.ingress.max_recipients,
        on_committed=scheduler.job_committed,
        screen=content_screen(config, spool, events_send, metrics),
        curve_secret=config.curve_secret_path if config.ingress.curve else None,
        producers=zap.keys.producers if zap is not None else None,
        quotas=config.quotas(),
        on_quota_refusal=metrics.quota_refused if metrics is not None else None,
    )
    log_file = None
    if config.events.log:
        log_file = EventLog(
            config.data_dir / "events",
            max_size=parse_size(config.events.log_max_size),
            keep=config.events.log_keep,
        )
    erasure = ErasureService(
        spool, writer, events_send, events_max_age=config.events_retention() if log_file else None
    )
    cluster = None
    reopen_events = Reopen()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with trio.open_nursery() as outer:
            outer.start_soon(writer.run)
            if zap is not None:  # bound before any CURVE socket, closed after them all
                await outer.start(zap.run)
            await outer.start(
                functools.partial(
                    run_events,
                    events_recv,
                    publish=config.events.publish,
                    log=log_file,
                    context=zmq_context,
                    curve_secret=config.curve_secret_path if config.events.curve else None,
                    reopen=reopen_events if config.events.curve else None,
                )
            )
            async with trio.open_nursery() as work:
                await work.start(delivery.run)
                work.start_soon(dispatcher.run)
                work.start_soon(scheduler.run_outcomes)
                work.start_soon(scheduler.run_maintenance)
                work.start_soon(control.run)
                await work.start(erasure.run)
                if alerts is not None:
                    await work.start(alerts.run)
                hooks = await start_webhooks(work, config, spool, writer, metrics)
                # Before the ingress: a node that answers producers also listens for
                # the reports and unsubscribes it is configured for.
                shared = await start_feedback(
                    work, config, spool, writer, events_send, metrics, scheduler.warmup
                )
                admin = await start_http(
                    work, config, spool, metrics, shared, control, alerts, scheduler, hooks,
                    erasure,
                )  # fmt: skip
                # Before the ingress: in a cluster, job ids are claimed before each commit.
                cluster = await start_cluster(work, config, spool, writer, metrics)
                await start_throttles(work, config, delivery, cluster, metrics)
                await work.start(ingress.run)
                work.start_soon(scheduler.run_claims)
                log.info(
                    "node ready: producers on %s, events on %s, data in %s",
                    config.ingress.listen,
                    config.events.publish,
                    config.data_dir,
                )
                report_started()
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        reload_access(config_path, zap, ingress, admin, reopen_events)
                        continue
                    log.info("%s: stopping", signal.Signals(signum).name)
                    break
                # A second signal (the supervisor's, after the process group got one) must
                # not end the drain: left pending, Trio would re-raise it at the end of this
                # block and kill the process before the spool is closed.
                absorb = trio.CancelScope()
                outer.start_soon(_absorb_signals, signals, absorb)
                ingress.draining = True
                with trio.move_on_after(DRAIN_TIMEOUT):
                    while ingress.in_progress:
                        await trio.sleep(0.05)
                handed_back = await scheduler.drain(DRAIN_TIMEOUT)
                if handed_back:
                    log.info("%d recipients handed back to the queue", handed_back)
                if cluster is not None:
                    await writer.claims.drain(2.0)
                work.cancel_scope.cancel()
            writer.close()
            await events_send.aclose()
            absorb.cancel()
            if zap is not None:
                zap.close()
    if cluster is not None:
        cluster.close()
    spool.close()
    log.info("node stopped")


def content_screen(
    config: Config,
    spool: Spool,
    events_send: trio.MemorySendChannel[list[Event]],
    metrics=None,
):
    """The ingress's content screen (docs/content.md); None when ``[content]`` is off."""
    if not config.content.spamassassin:
        return None
    from salvo.actors.content import ContentChecker

    checker = ContentChecker(config.content, events_send)
    checker.metrics = metrics
    checker.spool = spool
    log.info("content scoring by spamd at %s:%d", *checker.address)
    return checker.screen


def reload_access(
    config_path: str | None, zap, ingress: Ingress, admin, reopen_events: Reopen
) -> None:
    """SIGHUP: the keys of ``[producers]`` and ``[subscribers]`` and the admin tokens, read
    again from the config file; when anything cannot be read, the old ones stay. When a
    subscriber key was removed, the events socket is bound again (its connections are
    dropped; the revoked subscriber cannot come back)."""
    from salvo.actors.keys import KeyFileError

    try:
        config = load_config(config_path)
        keys = None
        if zap is not None:
            from salvo.actors.zap import load_keys

            keys = load_keys(config)
        tokens = admin.load_tokens(config) if admin is not None else None
    except (ConfigError, KeyFileError, StartupError) as exc:
        log.error("SIGHUP: nothing reloaded, the keys and tokens in use stay: %s", exc)
        return
    parts = []
    if keys is not None:
        if set(zap.keys.subscribers) - set(keys.subscribers):
            reopen_events.wanted = True
        zap.load(keys)
        if ingress.producers is not None:
            ingress.producers = keys.producers
        parts.append(f"{len(keys.producers)} producer and {len(keys.subscribers)} subscriber keys")
    if tokens is not None:
        admin.set_tokens(tokens)
        parts.append(f"{len(tokens)} admin token(s)")
    log.info("SIGHUP: reloaded %s", "; ".join(parts) or "nothing (no CURVE, no admin API)")


def bookkeeping(scheduler: Scheduler, spool: Spool, delivery: Delivery):
    """The node's metrics (docs/metrics.md), wired to the scheduler; None when
    ``SALVO_BOOKKEEPING=off`` (for measuring what the bookkeeping costs: docs/bench.md)."""
    if os.environ.get("SALVO_BOOKKEEPING", "on") == "off":
        scheduler.bookkeeping = False
        log.info("bookkeeping off (SALVO_BOOKKEEPING=off): no metrics, no KPI buckets")
        return None
    from salvo.actors.metrics import Metrics

    metrics = Metrics()
    metrics.queue_source = functools.partial(_queue_gauges, spool)
    metrics.delivery = delivery
    scheduler.metrics = metrics
    return metrics


def _queue_gauges(spool: Spool) -> tuple[int, int, float]:
    return spool.queue_gauges(time.time())


def start_alerts(config: Config, spool: Spool, events_send, control: Control, metrics):
    """The alerts actor (docs/alerts.md), or None when no rule is in effect or the
    bookkeeping is off (the rules read its KPI buckets)."""
    rules = config.alert_rules()
    if not rules or os.environ.get("SALVO_BOOKKEEPING", "on") == "off":
        return None
    from salvo.actors.alerts import Alerts

    alerts = Alerts(
        rules,
        spool,
        events_send,
        control=control,
        every=parse_duration(config.alerting.every),
    )
    if metrics is not None:
        alerts.metrics = metrics
        metrics.alerts_firing = alerts.alerting.firing
    return alerts


async def start_webhooks(
    nursery: trio.Nursery, config: Config, spool: Spool, writer: SpoolWriter, metrics
):
    """The webhooks' poster (docs/webhooks.md), when ``[[webhooks]]`` are configured."""
    if not config.webhooks:
        return None
    from salvo.actors.webhooks import Webhooks

    hooks = Webhooks(config, spool, writer)
    if metrics is not None:
        hooks.metrics = metrics
        metrics.webhook_pending = hooks.pending
    await nursery.start(hooks.run)
    return hooks


async def start_http(
    nursery: trio.Nursery,
    config: Config,
    spool: Spool,
    metrics,
    shared: list,
    control=None,
    alerts=None,
    scheduler=None,
    webhooks=None,
    erasure=None,
):
    """The admin server at ``[http] listen`` (off when unset): ``/metrics``, ``/api/``, the
    dashboard at ``/``, and the unsubscribe routes when ``[unsubscribe] listen`` is the
    same address. Returns the :class:`~salvo.actors.admin.Admin` (None when off)."""
    if not config.http.listen:
        return None
    from salvo.actors.admin import Admin, is_loopback, load_tokens
    from salvo.actors.http import HTTPServer
    from salvo.actors.metrics import Metrics
    from salvo.actors.status import Status
    from salvo.core.config import listen_address

    host, port = listen_address(config.http.listen, key="[http] listen")
    admin = Admin(
        load_tokens(config),
        metrics if metrics is not None else Metrics(),
        spool,
        metrics_open=config.http.metrics_open and is_loopback(host),
        control=control,
        alerts=alerts,
        webhooks=webhooks,
    )
    admin.erasure = erasure
    status = Status(admin, config, scheduler)
    if alerts is not None:
        status.alerts = alerts.listing
    server = HTTPServer(
        host,
        port,
        [*status.routes(), *admin.routes(), *shared],  # before admin's catch-all /api/
        request_timeout=parse_duration(config.http.request_timeout),
        max_connections=config.http.max_connections,
    )
    await nursery.start(server.run)
    return admin


def _same_address(a: str, b: str) -> bool:
    from salvo.core.config import listen_address

    return bool(a and b) and listen_address(a, key="") == listen_address(b, key="")


async def start_feedback(
    nursery: trio.Nursery,
    config: Config,
    spool: Spool,
    writer: SpoolWriter,
    events_send: trio.MemorySendChannel[list[Event]],
    metrics=None,
    warmup=None,
) -> list:
    """The feedback loop's services, each only when configured (docs/feedback.md): the
    inbound SMTP listener (``[feedback] listen`` and ``domains``), the one-click
    unsubscribe endpoint (``[unsubscribe] listen``), and the processing of reports
    (whenever either runs; reports left by a crash are processed first). Returns the
    unsubscribe routes when they go to the ``[http]`` server (the same address)."""
    fb, un = config.feedback, config.unsubscribe
    smtp = bool(fb.listen and fb.domains)
    if not smtp and not un.listen:
        return []
    from salvo.actors.feedback import Feedback
    from salvo.actors.feedback_listener import FeedbackListener, ReportCommitter
    from salvo.actors.http import HTTPServer
    from salvo.actors.unsubscribe import unsubscribe_routes
    from salvo.core.config import listen_address
    from salvo.core.feedback.outbound import load_secret
    from salvo.core.feedback.policy import FeedbackPolicy

    secret = load_secret(config)  # made by `salvo node` before the actors start
    policy = FeedbackPolicy.from_config(config)
    feedback = Feedback(spool, writer, events_send, secret=secret, policy=policy)
    feedback.metrics = metrics
    if warmup:  # salvo.actors.warmup.WarmupLanes: complaints count against their lane
        feedback.also = warmup.complaints_in
    feedback.bookkeeping = os.environ.get("SALVO_BOOKKEEPING", "on") != "off"
    nursery.start_soon(feedback.run)
    if smtp:
        committer = ReportCommitter(
            writer,
            max_pending=fb.max_pending_reports,
            max_bytes=parse_size(fb.max_pending_size),
        )
        await nursery.start(FeedbackListener(config, feedback, committer).run)
    if un.listen and _same_address(un.listen, config.http.listen):
        return unsubscribe_routes(feedback)
    if un.listen:
        host, port = listen_address(un.listen, key="[unsubscribe] listen")
        server = HTTPServer(
            host,
            port,
            unsubscribe_routes(feedback),
            request_timeout=parse_duration(un.request_timeout),
            max_connections=un.max_connections,
        )
        await nursery.start(server.run)
    return []


async def _absorb_signals(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    with scope:
        async for signum in signals:
            log.info("%s: already stopping", signal.Signals(signum).name)


def core_main(config_path: str | None, work_endpoint: str) -> None:
    """Entry point of the core process (started by the supervisor).

    ``SALVO_PROFILE=DIR`` runs it under cProfile (see :func:`salvo.actors.signer.profiled`);
    the core stops on SIGTERM by itself, so its stats are written after the drain.
    """
    config = load_config(config_path)
    # Nearly all of the core's garbage is acyclic and freed by reference counting: the
    # cycle collector's young-generation passes run far less often (docs/bench.md).
    gc.set_threshold(20_000, 20, 20)
    with profiled("core"):
        trio.run(run_core, config, work_endpoint, config_path)

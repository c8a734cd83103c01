"""The feedback loop's pure parts: reports (DSN, ARF, auto-replies) and what they mean."""

from .report import Kind, RecipientReport, Report

__all__ = ["Kind", "RecipientReport", "Report"]

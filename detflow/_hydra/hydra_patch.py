"""The one patch of Hydra's internals: how ``hydra.main`` reports an error.

Hydra reports every error of ``hydra.main`` through ``hydra._internal.utils.run_and_report``
(several lines and a hint). :func:`reporting_errors_in_one_line` wraps it for the duration
of one call so that detflow can print the errors it knows in one line. It was checked
against the Hydra versions in :data:`CHECKED_HYDRA_VERSIONS`; a test pins them, so a new
Hydra release is looked at before it is trusted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["CHECKED_HYDRA_VERSIONS", "reporting_errors_in_one_line"]

#: Hydra releases whose ``run_and_report`` this patch was read against (major.minor).
CHECKED_HYDRA_VERSIONS = ("1.3",)


@contextlib.contextmanager
def reporting_errors_in_one_line(report_error: Callable[[BaseException], None]) -> Iterator[None]:
    """Call ``report_error(exc)`` on an error of ``hydra.main`` before Hydra reports it.

    ``report_error`` may raise (``SystemExit`` after printing one line) to end there, or
    return to let Hydra report the error as before.
    """
    from hydra._internal import utils as hydra_utils

    original = hydra_utils.run_and_report

    def run_and_report(func: Callable[[], Any]) -> Any:
        def reported() -> Any:
            try:
                return func()
            except Exception as exc:
                report_error(exc)
                raise

        return original(reported)

    hydra_utils.run_and_report = run_and_report
    try:
        yield
    finally:
        hydra_utils.run_and_report = original

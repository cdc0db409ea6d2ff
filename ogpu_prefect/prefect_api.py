"""One rule for reaching a Prefect API: our code never lets Prefect start an implicit temporary
server (Prefect's default profile does when no `PREFECT_API_URL` is set: 20 s or more, on a SQLite
file of its own, and from a process that may be the user's).

- In a process that needs an API, `require_api` says in one line which variable to set.
- A process we own switches to a server the supported way (`use_server`: the environment, then
  Prefect's global settings context refreshed); processes we start get their settings explicitly
  (`server_env`), never what the user's environment or profile happens to hold.
- Threads we start carry the caller's context (`in_caller_context`): Prefect's settings context is
  a context variable, which a new thread does not inherit.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from .chain.errors import InvalidInputError

T = TypeVar("T")

API_URL_ENV = "PREFECT_API_URL"
_OURS = "PREFECT_INTEGRATIONS_OGPU_"


class NoPrefectAPIError(InvalidInputError):
    """Something needs a Prefect API and no `PREFECT_API_URL` is set."""

    def __init__(self, what: str) -> None:
        super().__init__(
            API_URL_ENV,
            f"{what} needs a Prefect API and none is set: export PREFECT_API_URL=http://HOST:PORT/api "
            "(`ogpu-prefect server up` starts one), or `prefect profile use` a profile that sets it",
        )


def api_url() -> str | None:
    """The Prefect API URL of the current settings context, if any."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def require_api(what: str) -> str | None:
    """The current API URL; NoPrefectAPIError naming `what` instead of a temporary server. Inside
    a flow or task run, the API the run itself talks to is used (a user's script run without a
    server runs on the temporary server Prefect started for it: nothing more is started)."""
    from prefect.context import FlowRunContext, TaskRunContext

    url = api_url()
    if url is None and FlowRunContext.get() is None and TaskRunContext.get() is None:
        raise NoPrefectAPIError(what)
    return url


def server_env(api_url: str, prefect_home: Path | str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a process of ours that talks to the server at `api_url` and to nothing
    else: `base` (default: this process's) without the user's PREFECT_* settings (an API URL, a
    Cloud key, a profile), plus the server's URL, a Prefect home of its own, no temporary server
    and no analytics. Our own PREFECT_INTEGRATIONS_OGPU_* settings are kept."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if _kept(k)}
    home = Path(prefect_home)
    env.update(
        PREFECT_API_URL=api_url,
        PREFECT_HOME=str(home),
        PREFECT_PROFILES_PATH=str(home / "profiles.toml"),
        PREFECT_SERVER_EPHEMERAL_ENABLED="false",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    return env


def use_server(api_url: str, prefect_home: Path | str) -> None:
    """Points this whole process (every thread) at `api_url` only: for a process of ours, such as
    the demo's, whatever the user's environment or profile says."""
    from prefect.context import refresh_global_settings_context

    Path(prefect_home).mkdir(parents=True, exist_ok=True)
    env = server_env(api_url, prefect_home)
    for key in [k for k in os.environ if k not in env]:
        del os.environ[key]
    os.environ.update(env)
    refresh_global_settings_context()


def in_caller_context(target: Callable[..., T]) -> Callable[..., T]:
    """`target`, to run in a thread we start, with the caller's context variables (Prefect's
    settings context among them: a `temporary_settings` block's API URL reaches the thread)."""
    ctx = contextvars.copy_context()

    def run(*args: Any, **kwargs: Any) -> T:
        return ctx.copy().run(target, *args, **kwargs)  # a copy each: a context runs in one thread at a time

    return run


def _kept(key: str) -> bool:
    return not key.startswith("PREFECT_") or key.startswith(_OURS)

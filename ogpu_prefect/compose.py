"""A source's docker-compose file, as the hardware backends need it.

Besides what Docker Compose reads, a service may carry the `x-ogpu-local` extension that the
`local` backend uses to run it without containers:

    services:
      app:
        build: .
        ports: ["127.0.0.1:${PORT:-5555}:5555"]
        x-ogpu-local:
          command: python -m ogpu_prefect.worker.runner main.py   # must serve on 127.0.0.1:$PORT
          env: {MODEL: small}                                     # optional extra environment
          working_dir: .                                          # optional, relative to the file

The backend passes PORT (a free port it chose) and CALLBACK_URL; `${VAR}` in the command expands
from that environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ComposeError(ValueError):
    """The compose file is not usable for the requested backend."""


@dataclass(frozen=True)
class LocalSpec:
    command: str
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str = "."


@dataclass(frozen=True)
class ComposeSpec:
    path: Path
    document: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> ComposeSpec:
        p = Path(path)
        try:
            doc = yaml.safe_load(p.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise ComposeError(f"cannot read compose file {p}: {e}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict) or not doc["services"]:
            raise ComposeError(f"{p} has no services")
        return cls(p.resolve(), doc)

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def services(self) -> dict[str, dict[str, Any]]:
        return self.document["services"]

    def main_service(self) -> str:
        """The service tasks are sent to: the one with x-ogpu-local, else the first."""
        marked = [n for n, s in self.services.items() if "x-ogpu-local" in (s or {})]
        return marked[0] if marked else next(iter(self.services))

    def local_spec(self) -> LocalSpec:
        name = self.main_service()
        ext = (self.services[name] or {}).get("x-ogpu-local")
        if not isinstance(ext, dict) or not ext.get("command"):
            raise ComposeError(
                f"service {name!r} of {self.path} has no x-ogpu-local command: the local backend "
                "cannot run it (use the docker backend, or add the extension)"
            )
        env = {str(k): str(v) for k, v in (ext.get("env") or {}).items()}
        return LocalSpec(str(ext["command"]), env, str(ext.get("working_dir", ".")))

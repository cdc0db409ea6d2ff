"""Brings up a real Docker engine for the docker-backend tests, the way
../shared/opengpu/TOOLCHAIN.md says one runs here: Debian's docker.io, `dockerd` started by hand
(no systemd), and a base image imported from `debootstrap` (no registry is reachable). Each step
is skipped when already done; `skip_reason` says precisely why an engine cannot start."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

BASE_IMAGE = "local/debian:bookworm"
_started: subprocess.Popen[bytes] | None = None  # the dockerd we started, if any


def stop_engine() -> None:
    """Stops the dockerd `ensure_engine` started (one already running is left alone)."""
    global _started
    if _started is not None and _started.poll() is None:
        _started.terminate()
        try:
            _started.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _started.kill()
            _started.wait()
    _started = None


def _engine_up() -> bool:
    return (
        shutil.which("docker") is not None
        and subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    )


def apt_install(*packages: str) -> str | None:
    """Installs Debian packages (refreshing the index if the first try fails); None, or why not.
    Another apt on this host (a test file beside this one, another session) is waited for."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"no root apt-get to install {' '.join(packages)}"
    wait = ["-o", "DPkg::Lock::Timeout=600"]
    cmd = ["apt-get", *wait, "install", "-y", "--no-install-recommends", *packages]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        subprocess.run(["apt-get", *wait, "update"], capture_output=True)
        r = subprocess.run(cmd, capture_output=True, text=True)
    return None if r.returncode == 0 else f"apt-get install {' '.join(packages)} failed: {r.stderr[-300:]}"


def ensure_engine(workdir: Path) -> str | None:
    """None when an engine answers and the base image exists, else why not."""
    if not _engine_up():
        if shutil.which("dockerd") is None:
            why = apt_install("docker.io", "debootstrap")
            if why:
                return f"no Docker engine: {why}"
        workdir.mkdir(parents=True, exist_ok=True)
        global _started
        with open(workdir / "dockerd.log", "ab") as log:
            _started = subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 60
        while not _engine_up():
            if time.time() > deadline:
                return f"dockerd did not answer within 60 s: {(workdir / 'dockerd.log').read_text()[-300:]}"
            time.sleep(0.5)
    if subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True).returncode != 0:
        if shutil.which("debootstrap") is None:
            return "no debootstrap to build the base image (no registry is reachable to pull one)"
        root = workdir / "debian-root"
        r = subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(root)], capture_output=True, text=True)
        if r.returncode != 0:
            return f"debootstrap failed: {r.stderr[-300:]}"
        trust_host_cas(root)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        r = subprocess.run(["docker", "import", "-", BASE_IMAGE], stdin=tar.stdout, capture_output=True, text=True)
        tar.wait()
        if r.returncode != 0:
            return f"docker import failed: {r.stderr[-300:]}"
    return None


def trust_host_cas(root: Path) -> None:
    """Package registries here may sit behind a TLS proxy whose CA only the host trusts: builds
    FROM the base image (apt, pip) get the host's CA bundle, kept across ca-certificates updates."""
    bundle = Path(os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"))
    if not bundle.exists():
        return
    for target in (
        root / "usr/local/share/ca-certificates/host-bundle.crt",
        root / "etc/ssl/certs/ca-certificates.crt",
    ):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(bundle.read_bytes())
    (root / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")

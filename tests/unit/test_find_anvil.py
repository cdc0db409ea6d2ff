"""Where the devnet finds anvil (ogpu_prefect.chain.devnet.find_anvil): the setting first, and a
typed one-line error naming it, with what to install, where none is found. No chain started; the
installed-package case runs the real wheel in tests/test_wheel.py."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import pytest

from ogpu_prefect.chain import devnet
from ogpu_prefect.chain.errors import InvalidInputError
from ogpu_prefect.settings import get_settings

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "@foundry-rs/anvil-linux-amd64"
REPO_ANVIL = REPO / "contracts" / "node_modules" / PACKAGE / "bin" / "anvil"
SETTING = "PREFECT_INTEGRATIONS_OGPU_ANVIL"


def test_the_version_named_is_the_set_ups_pin() -> None:
    pins = json.loads((REPO / "contracts" / "package.json").read_text())["dependencies"]
    assert pins[PACKAGE] == devnet.ANVIL_VERSION


def test_a_setting_that_is_no_executable_is_refused_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "not-anvil").write_text("")
    for path in (tmp_path / "not-anvil", tmp_path / "missing", tmp_path):
        monkeypatch.setenv(SETTING, str(path))
        with pytest.raises(InvalidInputError) as e:
            devnet.find_anvil(get_settings().anvil)  # not silently the checkout's, which exists here
        assert e.value.field == SETTING and str(path) in str(e.value)


def test_the_setting_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "anvil"
    mine.write_text("#!/bin/sh\n")
    mine.chmod(0o755)
    monkeypatch.setenv(SETTING, str(mine))
    assert devnet.find_anvil(get_settings().anvil) == str(mine)


@pytest.mark.skipif((sys.platform, platform.machine()) != ("linux", "x86_64"), reason="names the linux-amd64 package")
def test_an_installed_package_finds_an_npm_install_here_or_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not REPO_ANVIL.exists():
        pytest.skip("the set-up's anvil is not installed (npm --prefix contracts ci)")
    globals_ = [Path(d) / "node_modules" / PACKAGE for d in ("/usr/local/lib", "/usr/lib")]
    if any(p.exists() for p in globals_):
        pytest.skip(f"this machine has anvil installed globally: {globals_}")
    # As from a wheel: no checkout around the module, nothing on PATH, a fresh home, an empty folder.
    site = tmp_path / "site-packages" / "ogpu_prefect" / "chain"
    monkeypatch.setattr(devnet, "__file__", str(site / "devnet.py"))
    monkeypatch.delenv(SETTING, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    with pytest.raises(InvalidInputError) as e:
        devnet.find_anvil(get_settings().anvil)
    text = str(e.value)
    assert e.value.field == SETTING and "\n" not in text
    assert f"npm install {PACKAGE}@{devnet.ANVIL_VERSION}" in text, text

    # What the line says, done (a link to the set-up's binary stands for npm's download).
    installed = project / "node_modules" / PACKAGE / "bin"
    installed.mkdir(parents=True)
    (installed / "anvil").symlink_to(REPO_ANVIL)
    (project / "sub").mkdir()
    monkeypatch.chdir(project / "sub")  # npm's folder is found from below it too, as node does
    assert devnet.find_anvil(get_settings().anvil) == str(installed / "anvil")
    assert os.access(devnet.find_anvil(get_settings().anvil), os.X_OK)

"""The pluggy plugin system: every hook documented, built-ins loaded through entry points like any
third-party package, a third-party plugin installed from tests/ and selected by name, and a
plugin whose hook does not exist is refused."""

from __future__ import annotations

import inspect
import sys
import textwrap
from pathlib import Path

import pluggy
import pytest

from ogpu_prefect import hookspecs
from ogpu_prefect import plugin_manager as plugins
from ogpu_prefect.chain.connection import Chain
from ogpu_prefect.chain.types import DeliveryMethod, TaskStatus
from ogpu_prefect.delivery import DecisionKind, ResponseView, TaskView


def hook_names() -> list[str]:
    return [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("ogpu_prefect_")]


def test_every_hook_is_prefixed_and_documented() -> None:
    names = hook_names()
    assert names, "no hookspecs found"
    for name in names:
        doc = inspect.getdoc(getattr(hookspecs, name))
        assert doc and len(doc) > 60, f"hook {name} needs a real docstring"
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    assert sorted(pm.hook.__dict__) >= sorted(names)


def test_builtins_come_from_entry_points() -> None:
    from importlib.metadata import entry_points

    eps = {ep.name: ep.value for ep in entry_points(group="ogpu_prefect")}
    assert {"first_response", "manual", "consensus", "auction"} <= set(eps)
    pm = plugins.plugin_manager(reload=True)
    loaded = {name for name, _ in pm.list_name_plugin()}
    assert {"first_response", "manual", "consensus", "auction"} <= loaded
    methods = plugins.installed(plugins.PluginKind.DELIVERY_METHOD)
    assert methods["first_response"].requires is DeliveryMethod.FIRST_RESPONSE
    assert all(methods[m].requires is DeliveryMethod.MANUAL_CONFIRMATION for m in ("manual", "consensus", "auction"))


def install_fake_distribution(site: Path, name: str, module_source: str, entry_points: str) -> None:
    """What `pip install` leaves on disk for a one-module package: the module and a dist-info."""
    (site / f"{name}.py").write_text(textwrap.dedent(module_source))
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    monkeypatch.undo()
    for mod in [m for m in sys.modules if m.startswith("ogpu_test_plugin")]:
        del sys.modules[mod]
    plugins.plugin_manager(reload=True)


def test_a_third_party_plugin_is_installed_and_selected_by_name(site: Path) -> None:
    source = (Path(__file__).parent / "third_party_plugin" / "ogpu_test_plugin.py").read_text()
    install_fake_distribution(site, "ogpu_test_plugin", source, "[ogpu_prefect]\nmajority = ogpu_test_plugin\n")
    plugins.plugin_manager(reload=True)
    strategy = plugins.create(plugins.PluginKind.DELIVERY_METHOD, "majority", quorum=3)
    views = [ResponseView(f"0x{i}", f"0xp{i}", 1, "u", float(i), lambda url, i=i: {"v": min(i, 1)}) for i in range(3)]
    task = TaskView("0xt", TaskStatus.RESPONDED, 1, 0, views, 3)
    decision = strategy.decide(task)
    assert decision.kind is DecisionKind.CONFIRM and decision.response.payload == {"v": 1}


def test_a_plugin_implementing_an_unknown_hook_is_refused(site: Path) -> None:
    install_fake_distribution(
        site,
        "ogpu_test_plugin_bad",
        """
        from ogpu_prefect.hookspecs import hookimpl

        @hookimpl
        def ogpu_prefect_delivery_method_typo():
            return {}
    """,
        "[ogpu_prefect]\nbad = ogpu_test_plugin_bad\n",
    )
    with pytest.raises(pluggy.PluginValidationError):
        plugins.plugin_manager(reload=True)


def test_a_third_party_hardware_backend_runs_a_task(site: Path, devnet, tmp_path: Path) -> None:
    """The hardware-backend hook from an installed package: a provider picks `nice_local` by name
    and executes a real task through it (the service process is niced as the plugin says)."""
    import os

    from ogpu_prefect.chain.types import Environment
    from ogpu_prefect.client import OGPUClient
    from ogpu_prefect.models import SourceSpec, TaskInput
    from ogpu_prefect.storage import LocalStore
    from ogpu_prefect.worker.provider import Provider

    source_code = (Path(__file__).parent / "third_party_plugin" / "ogpu_test_plugin.py").read_text()
    install_fake_distribution(site, "ogpu_test_plugin", source_code, "[ogpu_prefect]\nmajority = ogpu_test_plugin\n")
    plugins.plugin_manager(reload=True)
    assert "nice_local" in plugins.installed(plugins.PluginKind.HARDWARE_BACKEND)
    backend = plugins.create(plugins.PluginKind.HARDWARE_BACKEND, "nice_local", niceness=7)
    echo = Path(__file__).resolve().parents[1] / "flows" / "sources" / "echo" / "docker-compose.cpu.yml"
    with LocalStore(tmp_path) as store:
        chain = Chain(devnet.network)
        client = OGPUClient(chain, devnet.key("client"), store)
        source = client.publish_source(
            SourceSpec(
                name="echo",
                cpu=f"file://{echo}",
                min_payment=10**15,
                min_available_lockup=10**18,
                delivery_method="FIRST_RESPONSE",
            )
        )
        provider = Provider(Chain(devnet.network), devnet.key("provider2"), store, backend, Environment.CPU)
        try:
            provider.ensure_standing([source])
            task = client.publish_tasks(
                source, [TaskInput(function_name="echo", data={"text": "x"})], 10**16, chain.now() + 120
            )[0].address
            assert provider.attempt([task]) == [task]
            done = provider.execute(task)
            assert os.getpriority(os.PRIO_PROCESS, provider.service_for(source).pid) == 7  # type: ignore[attr-defined]
        finally:
            provider.close()
    assert chain.task(task).get_status() is TaskStatus.FINALIZED
    assert chain.response(done.response).get_response_params().provider == provider.address


def test_unknown_delivery_method_is_a_clear_error() -> None:
    with pytest.raises(plugins.PluginError, match="unknown delivery method 'nope'.*first_response"):
        plugins.create(plugins.PluginKind.DELIVERY_METHOD, "nope")
    with pytest.raises(ValueError, match="policy"):
        plugins.create(plugins.PluginKind.DELIVERY_METHOD, "manual", policy="cheapest-ish")

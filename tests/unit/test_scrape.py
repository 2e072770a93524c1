"""The lab's scrape config (``core.scrape``): every component at the address the lab gives it,
one static job per kind, a 1 s interval; checked against the lab's and the components' own
constants so a moved port breaks here, not in a scenario."""

from __future__ import annotations

import pytest
import yaml

from dnsrace import settings as settings_mod
from dnsrace.components import lbnode
from dnsrace.core import scrape

ENACTORS = ("enactor-a", "enactor-b", "enactor-c")


def _jobs(text: str) -> dict[str, dict[str, str]]:
    """job -> {component: address} from a rendered config."""
    config = yaml.safe_load(text)
    out: dict[str, dict[str, str]] = {}
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            (address,) = static["targets"]
            out.setdefault(job["job_name"], {})[static["labels"]["process"]] = address
    return out


def test_lab_targets_match_the_labs_ports() -> None:
    jobs = _jobs(scrape.render(scrape.lab_targets(ENACTORS)))
    assert jobs == {
        "planner": {"planner": "127.0.0.1:18200"},
        "enactor": {"enactor-a": "127.0.0.1:18201", "enactor-b": "127.0.0.1:18202",
                    "enactor-c": "127.0.0.1:18203"},
        "prober": {"prober": "127.0.0.1:18205"},
        "ddb-client": {"ddb-client": "127.0.0.1:18206"},
        "lbnode": {f"lbnode-{i}": f"127.0.10.{i + 1}:8080" for i in range(6)},
        "coredns": {"coredns": "127.0.0.1:19153"},
    }


def test_constants_agree_with_the_components_and_settings() -> None:
    assert lbnode.address_for(0) == scrape.LBNODE_PREFIX + "1"
    assert lbnode.PORT == scrape.LBNODE_PORT
    lp = settings_mod.LocalPlane()
    assert f"{lp.host}:{lp.coredns_metrics_port}" == scrape.COREDNS_METRICS
    assert settings_mod.Lab().lb_nodes == 6
    assert settings_mod.Lab().enactors == ENACTORS


def test_optional_parts() -> None:
    targets = scrape.lab_targets(["enactor-a"], base_port=18300, lb_nodes=2, ddb_client=False,
                                 dwfm_port=18310, coredns=None)
    jobs = _jobs(scrape.render(targets))
    assert jobs == {"planner": {"planner": "127.0.0.1:18300"},
                    "enactor": {"enactor-a": "127.0.0.1:18301"},
                    "prober": {"prober": "127.0.0.1:18305"},
                    "lbnode": {"lbnode-0": "127.0.10.1:8080", "lbnode-1": "127.0.10.2:8080"},
                    "dwfm": {"dwfm": "127.0.0.1:18310"}}
    with pytest.raises(ValueError, match="at most 4 enactors"):
        scrape.lab_targets([f"enactor-{x}" for x in "abcde"])


def test_the_cascade_at_the_labs_ports() -> None:
    """``cascade=True`` adds the five components at their lab ports, between the LB nodes and
    CoreDNS; the race's targets stay as they were."""
    race = scrape.lab_targets(ENACTORS)
    both = scrape.lab_targets(ENACTORS, cascade=True)
    assert [t for t in both if t.job not in scrape.CASCADE_PORTS] == race
    jobs = _jobs(scrape.render(both))
    assert {job: jobs[job] for job in scrape.CASCADE_PORTS} == {
        "dwfm": {"dwfm": "127.0.0.1:18207"},
        "launcher": {"launcher": "127.0.0.1:18208"},
        "network-manager": {"network-manager": "127.0.0.1:18209"},
        "instances": {"instances": "127.0.0.1:18210"},
        "nlb": {"nlb": "127.0.0.1:18211"},
    }
    assert [t.job for t in both][-6:] == [*scrape.CASCADE_PORTS, "coredns"]
    # DWFM's port given wins; it is listed once.
    moved = scrape.lab_targets(ENACTORS, dwfm_port=18310, cascade=True, coredns=None)
    assert [t.address for t in moved if t.job == "dwfm"] == ["127.0.0.1:18310"]
    assert [t.job for t in moved][-5:] == list(scrape.CASCADE_PORTS)
    # Without the flag, dwfm_port alone adds DWFM alone, as before.
    alone = scrape.lab_targets(ENACTORS, dwfm_port=18207)
    assert [t.job for t in alone if t.job in scrape.CASCADE_PORTS] == ["dwfm"]


def test_cascade_ports_agree_with_the_lab_and_the_components() -> None:
    """The lab's outage scenario starts them there, and the launcher's defaults reach DWFM and
    the Network Manager there; every job is a component the metrics reference knows."""
    import typer.main

    from dnsrace.cli import app as cli_app  # the CLI's defaults, as `dnsrace launcher` has them
    from dnsrace.components.scenarios import outage
    from tests import metrics_support

    assert outage.PORTS == scrape.CASCADE_PORTS
    group = typer.main.get_command(cli_app.app)
    launcher = {p.name: p.default for p in getattr(group, "commands", {})["launcher"].params}
    assert launcher["dwfm_url"] == f"http://127.0.0.1:{scrape.CASCADE_PORTS['dwfm']}"
    assert launcher["admit_url"] == \
        f"http://127.0.0.1:{scrape.CASCADE_PORTS['network-manager']}/admit"
    served = set().union(*metrics_support.MODULE_COMPONENTS.values())
    assert set(scrape.CASCADE_PORTS) <= served


def test_render_global_settings() -> None:
    config = yaml.safe_load(scrape.render(scrape.lab_targets(ENACTORS), lab="race-off-1"))
    assert config["global"] == {"scrape_interval": "1s", "scrape_timeout": "1s",
                                "evaluation_interval": "1s",
                                "external_labels": {"lab": "race-off-1"}}
    assert {j["metrics_path"] for j in config["scrape_configs"]} == {"/metrics"}
    fast = yaml.safe_load(scrape.render([], interval=0.25))
    assert fast["global"]["scrape_interval"] == "250ms"
    assert fast["scrape_configs"] == []
    with pytest.raises(ValueError, match="more than 0"):
        scrape.render([], interval=0)


def test_one_job_one_path() -> None:
    with pytest.raises(ValueError, match="one metrics path"):
        scrape.render([scrape.Target("x", "x-0", "127.0.0.1:1"),
                       scrape.Target("x", "x-1", "127.0.0.1:2", path="/other")])

"""Settings come from one place and agree with what the CRD enforces."""

from __future__ import annotations

from pathlib import Path

import yaml

from dnsrace import settings


def test_env_overrides_cache_and_state(tmp_path: Path) -> None:
    cfg = settings.Settings.from_env({
        "DNSRACE_CACHE_DIR": str(tmp_path / "c"), "DNSRACE_STATE_DIR": str(tmp_path / "s"),
        "DNSRACE_DNS_SERVER": "10.0.0.1:53",
    })
    assert cfg.paths.cache_dir == tmp_path / "c"
    assert cfg.paths.kubeconfig == tmp_path / "s" / "local" / "kubeconfig"
    assert (cfg.dns.server_host, cfg.dns.server_port) == ("10.0.0.1", 53)
    assert not cfg.external_cluster


def test_cache_defaults_to_xdg(tmp_path: Path) -> None:
    cfg = settings.Settings.from_env({"XDG_CACHE_HOME": str(tmp_path)})
    assert cfg.paths.cache_dir == tmp_path / "dnsrace"


def test_crd_zone_matches_settings() -> None:
    crd = yaml.safe_load(
        (settings.Paths().manifests_dir / "crds" / "dnsplans.dnsrace.io.yaml").read_text()
    )
    name_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"]["endpoints"]["items"]["properties"]["name"]
    rules = " ".join(r["rule"] for r in name_schema["x-kubernetes-validations"])
    assert f"'.{settings.ZONE}'" in rules


def test_local_mode_is_decided_by_what_the_kubeconfig_points_at(tmp_path: Path) -> None:
    state = tmp_path / "s"
    local = settings.Settings.from_env({
        "DNSRACE_STATE_DIR": str(state),
        # what `eval "$(dnsrace local env)"` exports, spelled another way
        "DNSRACE_KUBECONFIG": str(state / "local" / ".." / "local" / "kubeconfig")})
    assert not local.external_cluster
    kind = settings.Settings.from_env({"DNSRACE_STATE_DIR": str(state),
                                       "DNSRACE_KUBECONFIG": str(tmp_path / "kind.yaml")})
    assert kind.external_cluster

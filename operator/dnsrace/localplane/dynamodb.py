"""DynamoDB Local, the lab's real DynamoDB backend: fetched into the binaries cache, run locally.

Who calls it: ``dnsrace setup`` (``binaries.ensure_all`` includes ``dynamodb_build``), the
scenario lab and the tests (``start`` / ``Backend.stop``), and the bench (``bench_ddb``'s
backend). Why: the LB nodes front a real DynamoDB implementation, AWS's own DynamoDB Local
(Maven Central ``com.amazonaws:DynamoDBLocal``), never a hand-written stand-in.

The fetch is Maven's ``dependency:copy-dependencies`` on a generated one-dependency POM: Maven
resolves the 85 jars the release depends on (including sqlite4java's native libraries) and,
with ``--strict-checksums``, refuses any file whose Central checksum does not match. On top of
that the result is pinned here by one sha256 over every file kept (``LIB_DIGEST``), so a
changed upstream artifact fails the setup instead of running. The build lands in
``<cache>/bin/dynamodb-local-<version>-<fingerprint>/`` beside the Go builds, through the same
``binaries.ensure`` (lock, staging directory, version check, rename), so it is reused by every
clone. A launcher script ``dynamodb-local`` in that directory runs the server with the right
classpath and native-library path; ``-version`` is its version check.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import aiohttp

from dnsrace import settings as settings_mod
from dnsrace.localplane import apt, binaries
from dnsrace.localplane.binaries import GoBuild, Report, SetupError, VersionCheck

VERSION = "2.6.1"
ARTIFACT = f"com.amazonaws:DynamoDBLocal:{VERSION}"
JAR_SHA256 = "a28d8b4919999b7dee6ffa9fd4e9a08744460657a9bd3e3499e3aad00e1f2cc4"
"""sha256 of DynamoDBLocal-2.6.1.jar as fetched from Maven Central."""
LIB_DIGEST = "ec39d4d3fbe3137a8c4ecc971e6514a916e444c340fdb9548299d41813b6bcfd"
"""sha256 over the sorted ``<relative path> <sha256>`` lines of every file kept (jars, natives)."""
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
MAIN_CLASS = "com.amazonaws.services.dynamodbv2.local.main.ServerRunner"
LAUNCHER = "dynamodb-local"
NATIVE_SUFFIXES = (".so", ".dylib", ".dll")

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.dnsrace</groupId>
  <artifactId>dynamodb-local-fetch</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>com.amazonaws</groupId>
      <artifactId>DynamoDBLocal</artifactId>
      <version>{version}</version>
    </dependency>
  </dependencies>
</project>
"""

_LAUNCHER = f"""#!/bin/sh
# Written by dnsrace's setup: runs DynamoDB Local {VERSION} from this directory.
here=$(dirname "$(readlink -f "$0")")
exec java -Djava.library.path="$here/native" -cp "$here/lib/*" {MAIN_CLASS} "$@"
"""


def dynamodb_build() -> GoBuild:
    """DynamoDB Local as a cache entry (not a Go build, described the same way so that
    ``binaries.ensure`` locks, stages, checks and reuses it; the pins are in the fingerprint)."""
    return GoBuild(
        name="dynamodb-local",
        version=VERSION,
        packages=(ARTIFACT, f"jar-sha256:{JAR_SHA256}", f"lib-sha256:{LIB_DIGEST}"),
        binaries=(LAUNCHER,),
        checks={LAUNCHER: VersionCheck(("-version",), VERSION)},
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def lib_digest(directory: Path) -> str:
    """The digest ``LIB_DIGEST`` pins: every file under ``lib/`` and ``native/``, sorted."""
    lines = [f"{p.relative_to(directory)} {_sha256(p)}\n"
             for sub in ("lib", "native") for p in sorted((directory / sub).glob("*"))]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def ensure_java(report: Report) -> str:
    """The ``java`` on PATH (DynamoDB Local 2.x needs 11 or newer), installing a JRE if missing."""
    if shutil.which("java") is None:
        apt.install("default-jre-headless", "DynamoDB Local", report)
    java = shutil.which("java")
    if java is None:
        raise SetupError("java is still not on PATH after installing default-jre-headless")
    return java


def _maven_fetch(cache_dir: Path) -> binaries.Builder:
    def run(build: GoBuild, out_dir: Path, report: Report) -> None:
        ensure_java(report)
        if shutil.which("mvn") is None:
            apt.install("maven", "DynamoDB Local", report)
        mvn = shutil.which("mvn")
        if mvn is None:
            raise SetupError("mvn is still not on PATH after installing maven")
        work = out_dir / ".fetch"
        work.mkdir()
        (work / "pom.xml").write_text(_POM.format(version=VERSION))
        lib = out_dir / "lib"
        argv = [
            mvn, "-B", "-q", "--strict-checksums", f"-Dmaven.repo.local={cache_dir / 'm2'}",
            f"{DEPENDENCY_PLUGIN}:copy-dependencies", f"-DoutputDirectory={lib}",
            "-DincludeScope=runtime",
        ]
        report(f"  dynamodb-local: mvn copy-dependencies {ARTIFACT}")
        proc = subprocess.run(argv, cwd=work, capture_output=True, text=True, timeout=900,
                              check=False)
        if proc.returncode != 0:
            raise SetupError(f"step 'fetch {ARTIFACT}' failed (mvn):\n"
                             + (proc.stdout + proc.stderr).strip()[-3000:])
        shutil.rmtree(work)
        jar = lib / f"DynamoDBLocal-{VERSION}.jar"
        if not jar.is_file() or _sha256(jar) != JAR_SHA256:
            raise SetupError(f"step 'check {ARTIFACT}': {jar.name} is missing or its sha256 "
                             f"is not the pinned {JAR_SHA256}")
        # sqlite4java loads "sqlite4java-linux-amd64" from java.library.path: keep the Linux
        # libraries there without their version suffix, and drop the other platforms'.
        native = out_dir / "native"
        native.mkdir()
        for path in sorted(lib.iterdir()):
            if path.suffix in NATIVE_SUFFIXES:
                if path.suffix == ".so":
                    stem = path.name.removesuffix(".so").rsplit("-", 1)[0]
                    shutil.move(str(path), native / f"{stem}.so")
                else:
                    path.unlink()
        digest = lib_digest(out_dir)
        if digest != LIB_DIGEST:
            raise SetupError(f"step 'check {ARTIFACT}': the fetched files' digest {digest} is "
                             f"not the pinned {LIB_DIGEST}")
        launcher = out_dir / LAUNCHER
        launcher.write_text(_LAUNCHER)
        launcher.chmod(0o755)

    return run


def ensure(cfg: settings_mod.Settings, report: Report) -> Path:
    """Fetch (or reuse) DynamoDB Local; returns the path of its launcher."""
    build = dynamodb_build()
    directory = binaries.ensure(build, cfg.paths.cache_dir, report,
                                run=_maven_fetch(cfg.paths.cache_dir))
    return directory / LAUNCHER


def locate(cfg: settings_mod.Settings) -> Path:
    """The launcher of an already-fetched DynamoDB Local; SetupError naming what to run if not."""
    launcher = dynamodb_build().install_dir(cfg.paths.cache_dir) / LAUNCHER
    if not os.access(launcher, os.X_OK):
        raise SetupError(f"DynamoDB Local {VERSION} is not fetched yet: run `make setup`")
    return launcher


@dataclasses.dataclass
class Backend:
    """A running DynamoDB Local process, started by ``start``."""

    host: str
    port: int
    process: asyncio.subprocess.Process
    log_path: Path
    started_in: float
    """Seconds from launch to the first answered ListTables."""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; safe to call twice."""
        if self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()


async def ping(url: str, timeout: float = 1.0) -> bool:
    """True when a DynamoDB API answers at ``url`` (an unsigned ListTables gets a JSON reply,
    an error one included: what matters is that the server parses DynamoDB requests)."""
    headers = {"X-Amz-Target": "DynamoDB_20120810.ListTables",
               "Content-Type": "application/x-amz-json-1.0"}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s, \
                s.post(url, data="{}", headers=headers) as resp:
            await resp.read()
            return resp.status in (200, 400)
    except (aiohttp.ClientError, TimeoutError):
        return False


async def start(cfg: settings_mod.Settings, log_path: Path, *, host: str | None = None,
                port: int | None = None, timeout: float | None = None) -> Backend:
    """Start DynamoDB Local in memory on ``host:port`` (default ``cfg.ddb``) and wait until it
    answers; raises SetupError (not fetched, exited, or not ready within ``timeout``)."""
    launcher = locate(cfg)
    host = host or cfg.ddb.backend_host
    port = cfg.ddb.backend_port if port is None else port
    timeout = cfg.ddb.backend_start_timeout if timeout is None else timeout
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if await ping(f"http://{host}:{port}", timeout=0.5):
        # Another DynamoDB Local (a run killed before its clean-up) holds the port: this one
        # would fail to bind while the other answered for it, with another run's data.
        raise SetupError(f"{host}:{port} already answers DynamoDB requests: stop what holds "
                         f"it (ddb.backend_port), e.g. a DynamoDB Local left by a killed run")
    started = time.monotonic()
    with log_path.open("ab") as log:
        # -sharedDb: one database whatever access key a client signs with (else each key and
        # region gets its own tables); -disableTelemetry: the lab reaches nothing off loopback.
        process = await asyncio.create_subprocess_exec(
            str(launcher), "-inMemory", "-sharedDb", "-disableTelemetry", "-port", str(port),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    backend = Backend(host, port, process, log_path, 0.0)
    # DynamoDB Local binds the wildcard address; the lab talks to it on ``host`` only.
    while True:
        if process.returncode is not None:
            raise SetupError(f"DynamoDB Local exited with {process.returncode} at start; "
                             f"see {log_path}")
        if await ping(backend.url, timeout=0.5):
            backend.started_in = time.monotonic() - started
            return backend
        if time.monotonic() - started > timeout:
            await backend.stop()
            raise SetupError(f"DynamoDB Local did not answer on {backend.url} within "
                             f"{timeout:.0f}s (ddb.backend_start_timeout); see {log_path}")
        await asyncio.sleep(0.1)

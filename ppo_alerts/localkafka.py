"""A real local Apache Kafka broker (KRaft, no ZooKeeper, no Docker) for tests and local runs.

Pure standard library; importing this module has no side effects.

* :func:`ensure_kafka_jars` downloads Kafka 3.9.1 and its runtime jars once with Maven
  (``deploy/kafka/pom.xml``) into a cache outside the work tree.
* :class:`LocalKafka` runs one combined broker+controller on 127.0.0.1 from those jars.
* :func:`main` is a small CLI: ``python -m ppo_alerts.localkafka {fetch,start,stop,status}``.

Environment variables:

``PPO_ALERTS_CACHE``
    cache root instead of ``~/.cache/ppo-alerts`` (jars go to ``$PPO_ALERTS_CACHE/kafka-3.9.1/libs``).
``PPO_ALERTS_KAFKA_LIBS``
    use an existing directory of Kafka 3.9.1 jars (e.g. a Kafka distribution's ``libs/``); no Maven.
``JAVA_HOME``
    if set, ``$JAVA_HOME/bin/java`` is used, otherwise ``java`` from ``PATH``.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "KAFKA_VERSION",
    "LocalKafka",
    "LocalKafkaCluster",
    "LocalKafkaError",
    "default_cache_dir",
    "ensure_kafka_jars",
    "main",
]

KAFKA_VERSION = "3.9.1"
SCALA_VERSION = "2.13"
HOST = "127.0.0.1"

_KAFKA_JAR = f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}.jar"
_MARKER = ".complete"
_DEFAULT_HEAP = "512m"

# File names inside a broker's data dir.
_PROPS = "server.properties"
_LOG4J = "log4j.properties"
_LOG = "kafka.log"
_PID = "kafka.pid"
_STATE = "localkafka.json"
_LOG_DIRS = "kraft-logs"

# Fallback when deploy/kafka/pom.xml is not next to the package (non-editable install).
# Keep in step with deploy/kafka/pom.xml.
_FALLBACK_POM = f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.ppo-alerts</groupId>
  <artifactId>local-kafka-jars</artifactId>
  <version>{KAFKA_VERSION}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_{SCALA_VERSION}</artifactId>
      <version>{KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId>
      <version>1.7.36</version></dependency>
    <dependency><groupId>ch.qos.reload4j</groupId><artifactId>reload4j</artifactId>
      <version>1.2.25</version></dependency>
  </dependencies>
</project>
"""

_LOG4J_PROPERTIES = """\
# written by ppo_alerts.localkafka; stdout is redirected to kafka.log in this directory
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.kafka.network.RequestChannel$=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
log4j.logger.org.apache.kafka.common.utils.AppInfoParser=WARN
log4j.logger.org.apache.kafka.common.config.AbstractConfig=WARN
log4j.logger.kafka.server.KafkaConfig=WARN
"""


class LocalKafkaError(RuntimeError):
    """The local Kafka broker could not be fetched, started or stopped; the message says what to do."""


# --------------------------------------------------------------------------- jars


def default_cache_dir() -> Path:
    """Where :func:`ensure_kafka_jars` keeps the jars unless told otherwise."""
    root = os.environ.get("PPO_ALERTS_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "ppo-alerts"
    return base / f"kafka-{KAFKA_VERSION}" / "libs"


def _is_complete(libs: Path) -> bool:
    return (libs / _MARKER).is_file() and (libs / _KAFKA_JAR).is_file()


def _find_pom() -> tuple[Path, bool]:
    """Return (pom path, is_temporary)."""
    repo_pom = Path(__file__).resolve().parent.parent / "deploy" / "kafka" / "pom.xml"
    if repo_pom.is_file():
        return repo_pom, False
    tmp = Path(tempfile.mkdtemp(prefix="ppo-alerts-kafka-pom-"))
    (tmp / "pom.xml").write_text(_FALLBACK_POM, encoding="utf-8")
    return tmp / "pom.xml", True


_NETWORK_HINTS = (
    "could not transfer",
    "unknownhost",
    "unknown host",
    "connection refused",
    "connect timed out",
    "read timed out",
    "network is unreachable",
    "no route to host",
    "temporary failure in name resolution",
    "name or service not known",
    "could not resolve",
    "failed to read artifact descriptor",
    "cannot access central",
    "offline mode",
    "plugin org.apache.maven.plugins",
)


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def ensure_kafka_jars(cache_dir: str | os.PathLike[str] | None = None, *, quiet: bool = True) -> Path:
    """Make sure the Kafka jars are on disk and return the directory that holds them.

    ``cache_dir`` is the directory the jars go into (default :func:`default_cache_dir`, i.e.
    ``~/.cache/ppo-alerts/kafka-3.9.1/libs`` or ``$PPO_ALERTS_CACHE/kafka-3.9.1/libs``).
    ``$PPO_ALERTS_KAFKA_LIBS`` (when ``cache_dir`` is not given) names a ready directory and
    skips Maven. Maven runs only when the directory lacks the completion marker, so an
    interrupted download is redone. Concurrent callers are serialised with a lock file.
    """
    if cache_dir is None and os.environ.get("PPO_ALERTS_KAFKA_LIBS"):
        libs = Path(os.environ["PPO_ALERTS_KAFKA_LIBS"]).expanduser()
        if not (libs / _KAFKA_JAR).is_file():
            raise LocalKafkaError(
                f"PPO_ALERTS_KAFKA_LIBS={libs} does not contain {_KAFKA_JAR}; point it at the libs/ "
                f"directory of a Kafka {KAFKA_VERSION} (Scala {SCALA_VERSION}) distribution, or unset it "
                "to download the jars with Maven."
            )
        return libs

    libs = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if _is_complete(libs):
        return libs

    libs.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(libs.parent / f".{libs.name}.lock"):
        if _is_complete(libs):  # another process finished it while we waited
            return libs
        _download_jars(libs, quiet=quiet)
    return libs


@contextlib.contextmanager
def _file_lock(path: Path):
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _download_jars(libs: Path, *, quiet: bool) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalKafkaError(
            f"Maven ('mvn') is not on PATH; it is needed once to download the Kafka {KAFKA_VERSION} jars "
            f"into {libs}. Install it (Debian/Ubuntu: 'apt-get install maven'), or set "
            "PPO_ALERTS_KAFKA_LIBS to the libs/ directory of an unpacked Kafka distribution."
        )
    if libs.exists():
        shutil.rmtree(libs)  # an incomplete earlier download (no marker)
    partial = libs.parent / f"{libs.name}.partial-{os.getpid()}"
    if partial.exists():
        shutil.rmtree(partial)
    pom, pom_is_tmp = _find_pom()
    cmd = [
        mvn,
        "-B",
        "-q",
        "--no-transfer-progress",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={partial}",
        "-DincludeScope=runtime",
    ]
    if not quiet:
        print(
            f"localkafka: downloading Kafka {KAFKA_VERSION} jars with Maven into {libs} ...", file=sys.stderr
        )
    try:
        proc = subprocess.run(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900, check=False
        )
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise LocalKafkaError(
            "Maven did not finish downloading the Kafka jars within 15 minutes; check that this "
            "machine can reach Maven Central (or the mirror in ~/.m2/settings.xml)."
        ) from exc
    finally:
        if pom_is_tmp:
            shutil.rmtree(pom.parent, ignore_errors=True)
    output = proc.stdout or ""
    if proc.returncode != 0 or not (partial / _KAFKA_JAR).is_file():
        shutil.rmtree(partial, ignore_errors=True)
        low = output.lower()
        if any(h in low for h in _NETWORK_HINTS):
            raise LocalKafkaError(
                f"Maven could not download the Kafka {KAFKA_VERSION} jars: Maven Central is not reachable "
                "from this machine (no network, a proxy, or a mirror in ~/.m2/settings.xml that is down). "
                "Fix the network/proxy and retry 'python -m ppo_alerts.localkafka fetch', or set "
                "PPO_ALERTS_KAFKA_LIBS to the libs/ directory of an unpacked Kafka distribution.\n"
                f"mvn exit code {proc.returncode}; last output:\n{_tail(output)}"
            )
        raise LocalKafkaError(
            f"'mvn dependency:copy-dependencies' failed (exit code {proc.returncode}) while fetching the "
            f"Kafka {KAFKA_VERSION} jars with {pom}.\nLast output:\n{_tail(output)}"
        )
    jars = sorted(p.name for p in partial.glob("*.jar"))
    (partial / _MARKER).write_text(
        json.dumps({"kafka": KAFKA_VERSION, "jars": jars, "fetched_at": time.time()}, indent=1) + "\n",
        encoding="utf-8",
    )
    os.replace(partial, libs)


# --------------------------------------------------------------------------- helpers


def _find_java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        cand = Path(java_home) / "bin" / "java"
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    found = shutil.which("java")
    if found is None:
        raise LocalKafkaError(
            "'java' was not found on PATH (and JAVA_HOME is not set to a JDK/JRE); the local Kafka "
            f"{KAFKA_VERSION} broker needs Java 11 or newer (17 recommended). Install it "
            "(Debian/Ubuntu: 'apt-get install openjdk-17-jre-headless') or set JAVA_HOME."
        )
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _port_is_free(port: int) -> bool:
    # SO_REUSEADDR like the JVM, so TIME_WAIT leftovers of a previous broker do not count as busy.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
            s.listen(1)
        except OSError:
            return False
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped) is not alive for our purposes
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _pid_is_our_broker(pid: int, data_dir: Path) -> bool:
    """True if ``pid`` runs kafka.Kafka with this data dir's server.properties (guards pid reuse)."""
    if not _pid_alive(pid):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.parent.exists():  # no /proc: trust the pid file
        return True
    try:
        args = cmdline.read_bytes().split(b"\0")
    except OSError:
        return False
    want = str(data_dir / _PROPS).encode()
    return b"kafka.Kafka" in args and want in args


def _new_cluster_id() -> str:
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        buf += chunk
    return bytes(buf)


def broker_answers(host: str, port: int, timeout: float = 2.0) -> bool:
    """Send a Kafka Metadata (v4) request; True if the broker answers and lists at least one broker."""
    return brokers_listed(host, port, timeout) >= 1


def brokers_listed(host: str, port: int, timeout: float = 2.0) -> int:
    """How many brokers a Metadata (v4) answer from host:port lists (0 when it does not answer): a cluster is
    ready when every node is listed."""
    client_id = b"ppo-alerts-localkafka"
    correlation = 0x5050
    body = struct.pack(">hhih", 3, 4, correlation, len(client_id)) + client_id
    body += struct.pack(">i", 0) + b"\x00"  # topics: empty array; allow_auto_topic_creation: false
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack(">i", len(body)) + body)
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            payload = _recv_exact(sock, size)
    except OSError:
        return 0
    if len(payload) < 12:
        return 0
    corr, _throttle_ms, n_brokers = struct.unpack(">iii", payload[:12])
    return n_brokers if corr == correlation else 0


# --------------------------------------------------------------------------- broker


class LocalKafka:
    """One single-node Kafka 3.9.1 (KRaft broker+controller) on 127.0.0.1.

    >>> with LocalKafka() as kafka:          # temp data dir, free ports
    ...     use(kafka.bootstrap)             # "127.0.0.1:PORT"

    The data dir holds ``server.properties``, ``kafka.log`` (broker output), ``kafka.pid``,
    ``localkafka.json`` (ports, cluster id) and the topic data under ``kraft-logs/``.
    Restarting on the same data dir reuses the same ports and keeps the data.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        *,
        libs_dir: str | os.PathLike[str] | None = None,
        heap: str = _DEFAULT_HEAP,
        start_timeout: float = 60.0,
        extra_config: dict[str, str] | None = None,
        jvm_options: Sequence[str] = (),
        stop_at_exit: bool = True,
        node_id: int = 1,
        cluster_id: str | None = None,
        voters: str | None = None,
        replication: int = 1,
    ) -> None:
        # node_id, cluster_id, voters (controller.quorum.voters) and replication are set by LocalKafkaCluster for
        # each of its nodes; a lone broker is node 1, its own quorum, replication factor 1.
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.voters = voters
        self.replication = replication
        self.data_dir: Path | None = Path(data_dir).resolve() if data_dir is not None else None
        self.port: int | None = port
        self.controller_port: int | None = None
        self.libs_dir = Path(libs_dir) if libs_dir is not None else None
        self.heap = heap
        self.start_timeout = start_timeout
        self.extra_config = dict(extra_config or {})
        self.jvm_options = list(jvm_options)
        self.stop_at_exit = stop_at_exit
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._tmp_dir: Path | None = None
        self._atexit_registered = False

    # -- properties

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise LocalKafkaError("the local Kafka broker has not been started yet")
        return f"{HOST}:{self.port}"

    @property
    def log_path(self) -> Path | None:
        return self.data_dir / _LOG if self.data_dir is not None else None

    @property
    def pid(self) -> int | None:
        return self._pid

    def is_running(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        if self._pid is not None and self.data_dir is not None:
            return _pid_is_our_broker(self._pid, self.data_dir)
        return False

    def log_tail(self, lines: int = 40) -> str:
        path = self.log_path
        if path is None or not path.is_file():
            return "(no log file)"
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
        return _tail(text, lines)

    # -- lifecycle

    def start(self, data_dir: str | os.PathLike[str] | None = None, port: int | None = None, *,
              wait: bool = True) -> str:
        """Start the broker and wait until it answers; return the bootstrap address ``127.0.0.1:PORT``.
        ``wait=False`` returns once the process runs: a node of a cluster cannot answer before a quorum of its
        controllers is up, so the cluster starts every node first and then waits (``wait_ready``)."""
        if data_dir is not None:
            self.data_dir = Path(data_dir).resolve()
        if port is not None:
            self.port = port
        if self.is_running():
            raise LocalKafkaError(
                f"the local Kafka broker is already running (pid {self._pid}) at {self.bootstrap}"
            )
        if self.data_dir is None:
            self._tmp_dir = Path(tempfile.mkdtemp(prefix="ppo-alerts-kafka-"))
            self.data_dir = self._tmp_dir
        data = self.data_dir
        data.mkdir(parents=True, exist_ok=True)

        state = self._read_state()
        other = self._pid_from_file()
        if other is not None and _pid_is_our_broker(other, data):
            raise LocalKafkaError(
                f"a local Kafka broker (pid {other}) is already running with data dir {data}; stop it first "
                f"('python -m ppo_alerts.localkafka stop --data-dir {data}') or use another data dir."
            )

        # port: given (or used by this object before) > previous run in this data dir > a free one
        fixed_port = self.port is not None
        if self.port is None:
            self.port = state.get("port")
        if self.port is not None and not _port_is_free(self.port):
            if fixed_port:
                raise LocalKafkaError(self._busy_message(self.port, "broker"))
            self.port = None  # the port of an earlier run in this dir is taken now: pick another
        if self.port is None:
            self.port = _free_port()
        cport = self.controller_port or state.get("controller_port")
        if cport is None or cport == self.port or not _port_is_free(cport):
            cport = _free_port()
            while cport == self.port:
                cport = _free_port()
        self.controller_port = cport

        java = _find_java()
        libs = self.libs_dir if self.libs_dir is not None else ensure_kafka_jars()
        classpath = str(Path(libs).resolve() / "*")

        cluster_id = self.cluster_id or state.get("cluster_id") or _new_cluster_id()
        props = data / _PROPS
        props.write_text(self._server_properties(), encoding="utf-8")
        (data / _LOG4J).write_text(_LOG4J_PROPERTIES, encoding="utf-8")
        self._write_state(cluster_id)

        jvm = [
            java,
            f"-Xmx{self.heap}",
            "-Xms64m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration={(data / _LOG4J).as_uri()}",
            f"-Dkafka.logs.dir={data}",
            *self.jvm_options,
            "-cp",
            classpath,
        ]
        if not (data / _LOG_DIRS / "meta.properties").is_file():
            self._format_storage(jvm, cluster_id, props)

        log = open(data / _LOG, "ab")  # noqa: SIM115 - handed to the child
        try:
            log.write(f"\n===== localkafka start {time.strftime('%Y-%m-%d %H:%M:%S')} =====\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                [*jvm, "kafka.Kafka", str(props)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=data,
                start_new_session=True,  # Ctrl-C in the terminal does not hit it; stop() does
            )
        except OSError as exc:
            raise LocalKafkaError(f"could not run {java}: {exc}") from exc
        finally:
            log.close()
        self._pid = self._proc.pid
        (data / _PID).write_text(f"{self._pid}\n", encoding="utf-8")
        if self.stop_at_exit and not self._atexit_registered:
            atexit.register(self._stop_at_exit)
            self._atexit_registered = True

        if wait:
            self.wait_ready()
        return self.bootstrap

    def wait_ready(self, brokers: int = 1) -> None:
        """Wait until the broker answers and lists ``brokers`` brokers; on a timeout it is killed."""
        try:
            self._wait_ready(brokers)
        except BaseException:
            self.kill()
            raise

    def stop(self, timeout: float = 30.0) -> None:
        """Stop cleanly: SIGTERM (controlled shutdown), wait up to ``timeout`` s, then SIGKILL."""
        self._signal_and_wait(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL the broker at once (simulates a crash; the data dir is kept)."""
        self._signal_and_wait(signal.SIGKILL, 10.0)

    def restart(self, timeout: float = 30.0) -> str:
        """Stop (if running) and start again on the same data dir and port; return the bootstrap."""
        if self.data_dir is None:
            raise LocalKafkaError("restart() needs a broker that was started before")
        if self.is_running():
            self.stop(timeout)
        return self.start()

    def close(self) -> None:
        """Stop the broker and remove the data dir if this object created it (a temp dir)."""
        self.stop()
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)
            self._tmp_dir = None

    def __enter__(self) -> LocalKafka:
        if not self.is_running():
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<LocalKafka {state} bootstrap={HOST}:{self.port} data_dir={self.data_dir}>"

    @classmethod
    def attach(cls, data_dir: str | os.PathLike[str]) -> LocalKafka:
        """An object for a broker started earlier (e.g. by the CLI) in ``data_dir``, running or not."""
        kafka = cls(data_dir, stop_at_exit=False)
        state = kafka._read_state()
        kafka.port = state.get("port")
        kafka.controller_port = state.get("controller_port")
        pid = kafka._pid_from_file()
        if pid is not None and kafka.data_dir is not None and _pid_is_our_broker(pid, kafka.data_dir):
            kafka._pid = pid
        return kafka

    # -- internals

    def _server_properties(self) -> str:
        assert self.data_dir is not None
        cfg = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.voters or f"{self.node_id}@{HOST}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self.port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir / _LOG_DIRS),
            "num.partitions": "3",
            "default.replication.factor": str(self.replication),
            # with three copies a write is kept by two before it is acknowledged (acks=all), and a replica that
            # fell behind never becomes leader (it would lose acknowledged writes)
            "min.insync.replicas": "2" if self.replication >= 3 else "1",
            "unclean.leader.election.enable": "false",
            "auto.create.topics.enable": "true",
            "delete.topic.enable": "true",
            "group.initial.rebalance.delay.ms": "0",
            # after a kill -9 the restarted broker cannot re-register until its old session expires
            # (default 9 s, i.e. ~13 s restarts); heartbeats stay frequent enough to never fence it
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "3000",
            "offsets.topic.replication.factor": str(self.replication),
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": str(self.replication),
            "transaction.state.log.min.isr": "2" if self.replication >= 3 else "1",
            "transaction.state.log.num.partitions": "5",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
            "background.threads": "4",
            "log.segment.bytes": str(16 * 1024 * 1024),
            "log.retention.hours": "168",
            "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
            "log.cleaner.threads": "1",
            "socket.request.max.bytes": str(100 * 1024 * 1024),
        }
        cfg.update(self.extra_config)
        lines = ["# written by ppo_alerts.localkafka; regenerated on every start"]
        lines += [f"{k}={v}" for k, v in cfg.items()]
        return "\n".join(lines) + "\n"

    def _format_storage(self, jvm: list[str], cluster_id: str, props: Path) -> None:
        cmd = [
            *jvm,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(props),
            "--ignore-formatted",
        ]
        try:
            proc = subprocess.run(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise LocalKafkaError(f"formatting the Kafka storage in {self.data_dir} failed: {exc}") from exc
        if proc.returncode != 0:
            raise LocalKafkaError(
                f"formatting the Kafka storage in {self.data_dir} failed (kafka.tools.StorageTool exit code "
                f"{proc.returncode}). If the jars are damaged, delete {self.libs_dir or default_cache_dir()} "
                f"and retry.\nOutput:\n{_tail(proc.stdout or '')}"
            )

    def _wait_ready(self, brokers: int = 1) -> None:
        assert self._proc is not None and self.port is not None
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise self._exited_error(code)
            if brokers_listed(HOST, self.port, timeout=2.0) >= brokers:
                return
            if time.monotonic() > deadline:
                raise LocalKafkaError(
                    f"the local Kafka broker (pid {self._proc.pid}) did not answer on {self.bootstrap} "
                    f"within {self.start_timeout:.0f} s; it was killed. Log {self.log_path}, last lines:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.2)

    def _exited_error(self, code: int) -> LocalKafkaError:
        tail = self.log_tail()
        hint = ""
        if "Address already in use" in tail or "BindException" in tail:
            hint = f" {self._busy_message(self.port or 0, 'broker or controller')}"
        elif "UnsupportedClassVersionError" in tail:
            hint = " The Java on PATH is too old: Kafka 3.9 needs Java 11 or newer (17 recommended)."
        elif "ClassNotFoundException" in tail or "NoClassDefFoundError" in tail:
            hint = f" The jars look incomplete: delete {self.libs_dir or default_cache_dir()} and retry."
        return LocalKafkaError(
            f"the local Kafka broker exited early with code {code}.{hint}\n"
            f"Log {self.log_path}, last lines:\n{tail}"
        )

    @staticmethod
    def _busy_message(port: int, what: str) -> str:
        return (
            f"port {port} on {HOST} (for the Kafka {what}) is already in use by another process; "
            f"free it (see 'ss -ltnp | grep :{port}') or choose another port (--port N, or no port "
            "to pick a free one)."
        )

    def _signal_and_wait(self, sig: signal.Signals, timeout: float) -> None:
        pid = self._proc.pid if self._proc is not None else self._pid
        if pid is not None and self.is_running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if not self._wait_exit(pid, timeout) and sig != signal.SIGKILL:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self._wait_exit(pid, 10.0)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=1)  # reap
        self._proc = None
        self._pid = None
        if self.data_dir is not None:
            pid_file = self.data_dir / _PID
            if pid is not None and self._pid_from_file() == pid:
                pid_file.unlink(missing_ok=True)

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.pid == pid:
                try:
                    self._proc.wait(timeout=0.1)
                    return True
                except subprocess.TimeoutExpired:
                    continue
            if not _pid_alive(pid):
                return True
            time.sleep(0.1)
        return False

    def _stop_at_exit(self) -> None:
        with contextlib.suppress(Exception):
            if self.stop_at_exit and self.is_running():
                self.stop(timeout=15.0)

    def _pid_from_file(self) -> int | None:
        if self.data_dir is None:
            return None
        try:
            return int((self.data_dir / _PID).read_text().strip())
        except (OSError, ValueError):
            return None

    def _read_state(self) -> dict:
        if self.data_dir is None:
            return {}
        try:
            state = json.loads((self.data_dir / _STATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _write_state(self, cluster_id: str) -> None:
        assert self.data_dir is not None
        state = {
            "kafka": KAFKA_VERSION,
            "bootstrap": self.bootstrap,
            "port": self.port,
            "controller_port": self.controller_port,
            "cluster_id": cluster_id,
        }
        (self.data_dir / _STATE).write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")



_CLUSTER = "cluster.json"


class LocalKafkaCluster:
    """Several KRaft nodes on 127.0.0.1, each broker and controller, the shape of a real cluster: replication
    factor ``nodes`` (at most 3), ``min.insync.replicas`` 2, unclean leader election off.

    ``data_dir/node-<i>/`` is each node's :class:`LocalKafka` data dir; ``data_dir/cluster.json`` keeps the ports
    and the cluster id, so a restart reuses them. :meth:`kill` and :meth:`restart` act on one node (a broker lost
    and brought back), :meth:`stop` on all.
    """

    def __init__(self, data_dir: str | os.PathLike[str], nodes: int = 3, *,
                 libs_dir: str | os.PathLike[str] | None = None, heap: str = "384m", start_timeout: float = 90.0,
                 stop_at_exit: bool = True) -> None:
        if nodes < 1:
            raise LocalKafkaError("a cluster needs at least one node")
        self.data_dir = Path(data_dir).resolve()
        self.size = nodes
        self.libs_dir = libs_dir
        self.heap = heap
        self.start_timeout = start_timeout
        self.stop_at_exit = stop_at_exit
        self.nodes: list[LocalKafka] = []

    @property
    def bootstrap(self) -> str:
        if not self.nodes:
            raise LocalKafkaError("the local Kafka cluster has not been started yet")
        return ",".join(f"{HOST}:{n.port}" for n in self.nodes)

    def _layout(self) -> dict:
        """Ports and cluster id: from an earlier run in this data dir, or new ones."""
        try:
            state = json.loads((self.data_dir / _CLUSTER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            state = {}
        if not isinstance(state, dict) or len(state.get("nodes", [])) != self.size:
            taken: set[int] = set()

            def fresh() -> int:
                port = _free_port()
                while port in taken:
                    port = _free_port()
                taken.add(port)
                return port

            state = {"cluster_id": _new_cluster_id(),
                     "nodes": [{"port": fresh(), "controller_port": fresh()} for _ in range(self.size)]}
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / _CLUSTER).write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
        return state

    def _build_nodes(self, state: dict) -> None:
        voters = ",".join(f"{i + 1}@{HOST}:{n['controller_port']}" for i, n in enumerate(state["nodes"]))
        self.nodes = []
        for i, n in enumerate(state["nodes"]):
            node = LocalKafka(self.data_dir / f"node-{i + 1}", n["port"], libs_dir=self.libs_dir, heap=self.heap,
                              start_timeout=self.start_timeout, stop_at_exit=self.stop_at_exit, node_id=i + 1,
                              cluster_id=state["cluster_id"], voters=voters, replication=min(self.size, 3))
            node.controller_port = n["controller_port"]
            pid = node._pid_from_file()  # noqa: SLF001 - a node started earlier, by another process
            if pid is not None and _pid_is_our_broker(pid, node.data_dir):  # type: ignore[arg-type]
                node._pid = pid  # noqa: SLF001
            self.nodes.append(node)

    def start(self) -> str:
        """Start every node, then wait until each lists all of them; return the bootstrap list."""
        self._build_nodes(self._layout())
        try:
            for node in self.nodes:
                if not node.is_running():
                    node.start(wait=False)
            for node in self.nodes:
                node.wait_ready(brokers=self.size)
        except BaseException:
            self.stop()
            raise
        return self.bootstrap

    def node(self, number: int) -> LocalKafka:
        """Node 1, 2 or 3."""
        return self.nodes[number - 1]

    def kill(self, number: int) -> None:
        """SIGKILL one node (a broker lost); the others carry on."""
        self.node(number).kill()

    def restart(self, number: int) -> None:
        """Start one node again on its data dir and ports and wait until the cluster lists it."""
        node = self.node(number)
        if node.is_running():
            node.stop()
        node.start(wait=False)
        node.wait_ready(brokers=self.size)

    def is_running(self) -> bool:
        return bool(self.nodes) and all(n.is_running() for n in self.nodes)

    def stop(self, timeout: float = 15.0) -> None:
        """All nodes at once: one after another, the last ones wait for a controller quorum that has gone."""
        import threading

        threads = [threading.Thread(target=node.stop, args=(timeout,)) for node in self.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    @classmethod
    def attach(cls, data_dir: str | os.PathLike[str]) -> LocalKafkaCluster | None:
        """The cluster started earlier in ``data_dir`` (running or not), or None when none was."""
        path = Path(data_dir).resolve() / _CLUSTER
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(state, dict) or not state.get("nodes"):
            return None
        cluster = cls(data_dir, len(state["nodes"]), stop_at_exit=False)
        cluster._build_nodes(state)
        return cluster

    def __enter__(self) -> LocalKafkaCluster:
        if not self.is_running():
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """CLI: ``fetch``, ``start --data-dir D [--port N] [--foreground]``, ``stop --data-dir D``, ``status``."""
    parser = argparse.ArgumentParser(
        prog=prog or "python -m ppo_alerts.localkafka",
        description=f"Local Apache Kafka {KAFKA_VERSION} (KRaft, single node on {HOST}) for tests and runs.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_fetch = sub.add_parser("fetch", help="only download the Kafka jars (with Maven) into the cache")
    p_fetch.add_argument("--cache-dir", help=f"jar directory (default {default_cache_dir()})")
    p_start = sub.add_parser("start", help="start a broker and print its bootstrap address")
    p_start.add_argument("--data-dir", required=True, help="broker data dir (created; reused on restart)")
    p_start.add_argument("--port", type=int, help="broker port (default: previous one for this dir, or free)")
    p_start.add_argument("--foreground", action="store_true", help="stay attached; Ctrl-C stops the broker")
    p_start.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for it to answer")
    p_start.add_argument("--nodes", type=int, default=1,
                         help="3: a three-node cluster (replication factor 3, min.insync.replicas 2)")
    p_stop = sub.add_parser("stop", help="stop the broker started with this data dir")
    p_stop.add_argument("--data-dir", required=True)
    p_stop.add_argument("--timeout", type=float, default=30.0, help="seconds before SIGKILL")
    p_status = sub.add_parser("status", help="print the bootstrap address if running (exit 1 if not)")
    p_status.add_argument("--data-dir", required=True)
    args = parser.parse_args(list(argv) if argv is not None else None)

    try:
        if args.command == "fetch":
            t0 = time.monotonic()
            libs = ensure_kafka_jars(args.cache_dir, quiet=False)
            print(libs)
            print(f"localkafka: jars ready in {time.monotonic() - t0:.1f} s", file=sys.stderr)
            return 0
        cluster = LocalKafkaCluster.attach(args.data_dir)
        if cluster is not None and args.command != "start":
            return _cluster_command(cluster, args.command, args.timeout if args.command == "stop" else 0.0)
        if args.command == "start" and (args.nodes > 1 or cluster is not None):
            return _start_cluster(args)
        if args.command == "status":
            kafka = LocalKafka.attach(args.data_dir)
            if kafka.is_running():
                print(kafka.bootstrap)
                return 0
            print(f"localkafka: not running (data dir {args.data_dir})", file=sys.stderr)
            return 1
        if args.command == "stop":
            kafka = LocalKafka.attach(args.data_dir)
            if not kafka.is_running():
                print(f"localkafka: not running (data dir {args.data_dir})", file=sys.stderr)
                return 0
            pid = kafka.pid
            kafka.stop(timeout=args.timeout)
            print(f"localkafka: stopped pid {pid}", file=sys.stderr)
            return 0
        # start
        running = LocalKafka.attach(args.data_dir)
        if running.is_running():
            if args.port is not None and args.port != running.port:
                raise LocalKafkaError(
                    f"a broker is already running with data dir {args.data_dir} on port {running.port}; "
                    "stop it first to change the port."
                )
            print(running.bootstrap)
            print(f"localkafka: already running (pid {running.pid})", file=sys.stderr)
            return 0
        kafka = LocalKafka(args.data_dir, args.port, start_timeout=args.timeout, stop_at_exit=args.foreground)
        t0 = time.monotonic()
        bootstrap = kafka.start()
        print(bootstrap, flush=True)
        print(
            f"localkafka: started pid {kafka.pid} in {time.monotonic() - t0:.1f} s; log {kafka.log_path}",
            file=sys.stderr,
        )
        if not args.foreground:
            return 0
        return _run_foreground(kafka)
    except LocalKafkaError as exc:
        print(f"localkafka: error: {exc}", file=sys.stderr)
        return 2


def _cluster_command(cluster: LocalKafkaCluster, command: str, timeout: float) -> int:
    if command == "status":
        running = [n for n in cluster.nodes if n.is_running()]
        if running:
            print(",".join(f"{HOST}:{n.port}" for n in running))
        if len(running) < cluster.size:
            print(f"localkafka: {len(running)} of {cluster.size} nodes running", file=sys.stderr)
        return 0 if len(running) == cluster.size else 1
    cluster.stop(timeout)
    print(f"localkafka: stopped the {cluster.size}-node cluster", file=sys.stderr)
    return 0


def _start_cluster(args: argparse.Namespace) -> int:
    if args.port is not None or args.foreground:
        raise LocalKafkaError("--port and --foreground are for one node; a cluster picks its ports and detaches")
    earlier = LocalKafkaCluster.attach(args.data_dir)
    nodes = earlier.size if earlier is not None and args.nodes == 1 else args.nodes
    cluster = LocalKafkaCluster(args.data_dir, nodes, start_timeout=args.timeout, stop_at_exit=False)
    t0 = time.monotonic()
    bootstrap = cluster.start()
    print(bootstrap, flush=True)
    print(f"localkafka: {nodes} nodes ready in {time.monotonic() - t0:.1f} s (replication factor {min(nodes, 3)}, "
          f"min.insync.replicas {2 if nodes >= 3 else 1}); logs {cluster.data_dir}/node-*/kafka.log",
          file=sys.stderr)
    return 0


def _run_foreground(kafka: LocalKafka) -> int:
    stop_requested = False

    def _on_signal(signum: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop_requested and kafka.is_running():
            time.sleep(0.5)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if not kafka.is_running() and not stop_requested:
        print(f"localkafka: the broker exited; log {kafka.log_path}:\n{kafka.log_tail()}", file=sys.stderr)
        return 1
    kafka.stop()
    print("localkafka: stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())

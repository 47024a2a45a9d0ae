#!/usr/bin/env python3
"""Replay a spillway scenario on real Apache Spark (PySpark) and report what Spark measured.

    python3 scripts/spark/replay.py SCENARIO [--master MASTER] [--json] [--conf K=V]...

SCENARIO is a built-in name (``cache-pressure``, ...; read from ``src/scenarios/NAME.toml``) or a
path to a scenario TOML file (docs/report.md "Scenario file"). The scenario's ``[conf]`` is applied to
a SparkSession, each ``[[stages]]`` entry is replayed as a Spark job, and the numbers are then read
back through Spark's own REST API (``<sc.uiWebUrl>/api/v1/applications/<id>/...``), so they are
exactly what the Spark UI shows: the executor's ``maxMemory`` (storage memory total) and memory
metrics, each stage's ``memoryBytesSpilled``, ``diskBytesSpilled``, ``peakExecutionMemory``,
``executorRunTime`` and ``numFailedTasks``, each cached RDD's ``numCachedPartitions``,
``memoryUsed`` and ``diskUsed``, failed tasks with their errors, and wall times.

Local mode and the heap
-----------------------
With the default master, ``local[N]`` with N = ``spark.executor.cores``, there is no separate
executor: the executor's BlockManager and UnifiedMemoryManager live inside the driver JVM. Its
heap is therefore ``spark.driver.memory`` (the ``-Xmx`` spark-submit gives the driver), and
``spark.executor.memory`` only feeds Spark's >= 450 MiB check (docs/spark-model.md §1.5). The replay sets
``spark.driver.memory`` to the scenario's ``spark.executor.memory`` (default 1g) so the memory
manager gets the same heap. The driver JVM is launched by PySpark *when the session starts*, so
this only works from a fresh Python process (which this script is).

Even then Spark does not size its regions from ``-Xmx`` but from ``Runtime.getRuntime.maxMemory``
(docs/spark-model.md §1.2, §15): equal to ``-Xmx`` under G1 (the JDK 17 default on a machine with >= 2 CPUs and
>= 1792 MiB), smaller under the Serial or Parallel collector (one survivor space less). The replay
reads that value from the JVM and reports it as ``jvm.runtimeMaxMemory``; give it to spillway as
``--system-memory`` to compare layouts to the byte (``compare.py`` does).

With ``--master`` (``spark://...``, ``yarn``, ``k8s://...``) the scenario runs on real executors:
``spark.executor.memory`` is their heap, the driver keeps its own, and the REST API lists every
executor (the driver's entry is reported apart).

How stages are replayed
-----------------------
- ``cache``: an RDD of ``partitions`` partitions generated in the Python workers, persisted at the
  scenario's StorageLevel (built from Spark's flags, so ``MEMORY_ONLY`` is the deserialized level
  of Scala, not PySpark's serialized alias), then ``count()``. A PySpark RDD reaches the JVM as
  pickled batches (``byte[]``): the record payloads are shrunk by the pickling and object-header
  overhead so that the JVM's size estimate per partition comes as close as possible to
  ``partition_bytes`` (records >= 64 KiB stay one per batch, so ``record_bytes = "1m"`` gives the
  same unroll checkpoints as spillway; smaller records are batched to >= 64 KiB by PySpark).
- ``scan``: ``count()`` again (cached blocks are read from memory or disk, or recomputed).
- ``unpersist``: ``unpersist(blocking=True)``.
- ``sort``: a DataFrame of ``tasks`` partitions x ``records_per_task`` rows (a random long key and
  a binary payload, so an UnsafeRow is ``record_bytes``), ``sortWithinPartitions`` (Spark's
  UnsafeExternalSorter, no shuffle: each task sorts its own records like spillway's), written to
  the ``noop`` sink.
- ``aggregate``: a DataFrame of the same shape with keys in ``[0, distinct_keys)``,
  ``groupBy(key).agg(sum)`` (HashAggregate with sort-based fallback and spills), to ``noop``.
- ``udf``: a Python UDF over ``tasks`` rows that holds ``bytes_per_task`` in ``object_bytes``
  objects. It runs in the Python worker, outside the JVM heap (spillway models user memory).
- ``broadcast``: a DataFrame broadcast join of a relation of ``bytes`` (rows of
  ``record_bytes``): the driver stores the relation in its BlockManager, like spillway's block.

Shuffle stages
--------------
A ``shuffle_map`` stage and the ``shuffle_reduce`` stage that reads it are replayed with Spark's
RDD API in the JVM, not PySpark's: PySpark's ``partitionBy`` or ``reduceByKey`` run their
per-record work in the Python workers and hand the JVM pickled batches keyed by partition, so
Spark would shuffle a few hundred batches instead of the records (``shuffle_probe.py`` measured
it). ``ShuffleReplay.scala`` is compiled once with the Scala compiler PySpark ships
(``scala-compiler`` in ``pyspark/jars``, about 20 s; the jar is kept in ``scripts/spark/.build``
by a digest of the source and the PySpark version), put on the driver's class path
(``spark.driver.extraClassPath``; ``spark.jars`` too on a cluster) and called through Py4J:

- The records are spillway's, bit for bit: ``stream_seed``, ``splitmix64``,
  ``ShuffleSpec::map_seed``, ``key_value`` and ``write_record`` (src/data.rs, src/shuffle/mod.rs)
  are ported, so map task ``m`` of shuffle ``s`` generates, under the scenario's ``seed``, the
  same keys, values, hot key and payloads. ``values = "bytes"``: ``RDD[(Long, Array[Byte])]``, the
  array being the record after its key (the value little-endian, then the payload,
  ``record_bytes - 8`` bytes); with these class tags ``SerializerManager`` picks Kryo whatever
  ``spark.serializer`` says, as spillway assumes. ``values = "object"``: the value is a case class
  (``ObjectValue(value, payload)``), shuffled with ``spark.serializer``.
- The operation, into ``reduce_partitions`` partitions: ``partitionBy(HashPartitioner)``;
  ``reduceByKey(_ + _)`` over ``(key, value: Long)`` pairs (map-side combine on; the payload is not
  generated; ``ObjectSum(value)`` for ``values = "object"``); ``sortByKey`` (Spark's
  ``RangePartitioner``, whose bounds come from a sampling job over the input, where spillway
  splits ``0..distinct_keys`` into equal ranges: the per-partition counts differ, the totals do
  not); ``groupByKey(HashPartitioner)`` with every group's ``CompactBuffer`` built and its size
  taken.
- ``shuffle_map`` runs the map stage alone, as a job of its own (``SparkContext.submitMapStage``,
  the job Spark's adaptive execution uses for a map stage), so its metrics stay with that scenario
  stage; ``shuffle_reduce`` then runs the reduce side on the same ``ShuffledRDD``: its job finds the
  map outputs registered and SKIPs the map stage. For each partition it returns the records read
  (``reduceByKey``: keys; ``groupByKey``: groups), which the report gives as ``reduceOutput``.
- The writer is the class of the ``ShuffleDependency``'s handle, which
  ``SortShuffleManager.getWriter`` maps one to one onto the writer (bypass-merge, serialized
  sort, sort), with the serializer, ``mapSideCombine`` and partitioner (``shuffle`` in the stage
  entries and in ``shuffles``).
- Each side's metrics are the REST API's for the Spark stage that ran it (``shuffleSide``, and
  per shuffle in the report's ``shuffles``: ``map`` and ``reduce``): ``shuffleWriteRecords``,
  ``shuffleWriteBytes``, ``shuffleWriteTime`` (ns); ``shuffleReadRecords``, ``shuffleReadBytes``,
  local and remote bytes read, ``shuffleFetchWaitTime``; ``memoryBytesSpilled``,
  ``diskBytesSpilled``, ``peakExecutionMemory`` and ``spilled`` (either spill total non-zero);
  from the task list, the records each map task wrote and each reduce partition read.
  ``mapOutputBytesByPartition`` are the sizes the map outputs report to the driver
  (``MapStatus``: each compressed to a power of 1.1, not exact bytes).

``compare.py`` puts these beside spillway's and checks what must match; the recorded comparisons
are ``scripts/spark/results/shuffle-compare-2026-12-02*.json`` (shuffle-8: every check holds; the
same with ``spark.memory.fraction`` 0.02 and a 1 MiB ``initialMemoryThreshold``: both map sides
spill, but the reduceByKey's reduce side spills on spillway and not on Spark; shuffle-ops-small:
sortByKey, groupByKey with a hot key, 400 partitions and reduceByKey with a user class, every
check holds).

Every stage is run under a job group ``spillway-stage-<i>`` so the Spark jobs and stages it ran
can be summed per scenario stage. A failed job (task error, OOM) is recorded and the replay goes
on with the next stage, as spillway does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import check_env  # noqa: E402

check_env.require_python()
import tomllib  # noqa: E402
import urllib.request  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BUILTIN_DIR = REPO / "src" / "scenarios"
SHUFFLE_SOURCE = Path(__file__).resolve().parent / "ShuffleReplay.scala"
# Compiled ShuffleReplay jars, one per source and PySpark version (not in git).
BUILD_DIR = Path(__file__).resolve().parent / ".build"

# Spark's StorageLevel flags: (useDisk, useMemory, useOffHeap, deserialized, replication), docs/spark-model.md §7.
STORAGE_LEVELS = {
    "NONE": (False, False, False, False, 1),
    "DISK_ONLY": (True, False, False, False, 1),
    "DISK_ONLY_2": (True, False, False, False, 2),
    "DISK_ONLY_3": (True, False, False, False, 3),
    "MEMORY_ONLY": (False, True, False, True, 1),
    "MEMORY_ONLY_2": (False, True, False, True, 2),
    "MEMORY_ONLY_SER": (False, True, False, False, 1),
    "MEMORY_ONLY_SER_2": (False, True, False, False, 2),
    "MEMORY_AND_DISK": (True, True, False, True, 1),
    "MEMORY_AND_DISK_2": (True, True, False, True, 2),
    "MEMORY_AND_DISK_SER": (True, True, False, False, 1),
    "MEMORY_AND_DISK_SER_2": (True, True, False, False, 2),
    "OFF_HEAP": (True, True, True, False, 1),
}

# The keys and defaults of the kinds the replay supports: those of spillway's stage registry
# (src/stage/<kind>.rs); tests/docs_tables.rs checks that they are equal. `expect` (every kind)
# only tells spillway's exit status whether a failure was meant, so the replay accepts it.
STAGE_DEFAULTS = {
    "cache": {"rdd": 1, "partitions": 8, "partition_bytes": "16m", "record_bytes": 100,
              "storage_level": "MEMORY_ONLY", "name": None, "record_type": "raw"},
    "scan": {"rdd": 1},
    "unpersist": {"rdd": 1},
    "sort": {"tasks": 4, "records_per_task": 1_000_000, "record_bytes": 56},
    "aggregate": {"tasks": 4, "records_per_task": 1_000_000, "record_bytes": 24,
                  "distinct_keys": 100_000},
    "udf": {"tasks": 4, "bytes_per_task": "64m", "object_bytes": "64k"},
    "broadcast": {"id": 0, "bytes": "32m", "record_bytes": 1024,
                  "storage_level": "MEMORY_AND_DISK"},
    "shuffle_map": {"shuffle": 0, "tasks": 4, "reduce_partitions": 8,
                    "records_per_task": 1_000_000, "record_bytes": 40,
                    "distinct_keys": 1_000_000, "hot_key_percent": 0, "compressible_percent": 0,
                    "operation": "partitionBy", "values": "bytes", "executors": 1},
    "shuffle_reduce": {"shuffle": 0},
}
SIZE_KEYS = {"partition_bytes", "record_bytes", "bytes_per_task", "object_bytes", "bytes"}
# The choices of spillway's shuffle_map keys (src/shuffle/mod.rs Operation, ValueClass).
SHUFFLE_OPERATIONS = ("partitionBy", "reduceByKey", "sortByKey", "groupByKey")
SHUFFLE_VALUES = ("bytes", "object")
# Integer keys of the shuffle kinds: (smallest, largest) as spillway's registry bounds them
# (src/stage/mod.rs: MAX_TASKS = 2^31-1, MAX_COUNT = 2^63-1; record_bytes 16 B to 64 MiB).
_MAX_TASKS, _MAX_COUNT = 2 ** 31 - 1, 2 ** 63 - 1
SHUFFLE_INT_KEYS = {"shuffle": (0, _MAX_TASKS), "tasks": (1, _MAX_TASKS),
                    "reduce_partitions": (1, _MAX_TASKS), "records_per_task": (0, _MAX_COUNT),
                    "record_bytes": (16, 64 << 20), "distinct_keys": (1, _MAX_COUNT),
                    "hot_key_percent": (0, 100), "compressible_percent": (0, 100),
                    "executors": (1, _MAX_TASKS)}

# PySpark's AutoBatchedSerializer stops growing a batch once it pickles to >= 64 KiB.
AUTO_BATCH_BYTES = 1 << 16
UNSAFE_ROW_FIXED = 24  # null bitset (8) + two 8-byte field slots (long key, binary offset/size)

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "g": 1 << 30, "gb": 1 << 30, "t": 1 << 40, "tb": 1 << 40, "p": 1 << 50, "pb": 1 << 50}


def byte_string(value, default_unit: int = 1) -> int:
    """Spark's JavaUtils.byteStringAs (docs/spark-model.md §14): binary suffixes, no fractions."""
    if isinstance(value, int):
        return value * default_unit
    m = re.fullmatch(r"([0-9]+)([a-z]*)", str(value).strip().lower())
    if not m or m.group(2) not in _UNITS:
        raise SystemExit(f"error: invalid size '{value}'")
    unit = _UNITS[m.group(2)] if m.group(2) else default_unit
    return int(m.group(1)) * unit


def bad_input(message: str):
    """Bad input in a scenario: the message (naming the key and the value) and exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def check_shuffle_stage(i: int, st: dict, written: set) -> None:
    """The keys of a shuffle_map or shuffle_reduce stage, as spillway checks them."""
    kind = st["kind"]
    for key, (lo, hi) in SHUFFLE_INT_KEYS.items():
        if key in st:
            v = st[key]
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                bad_input(f"{kind} stage {i}: {key} = {v!r} (an integer in {lo}..={hi})")
    if kind == "shuffle_map":
        for key, choices in (("operation", SHUFFLE_OPERATIONS), ("values", SHUFFLE_VALUES)):
            if st[key] not in choices:
                bad_input(f"{kind} stage {i}: {key} = {st[key]!r} (accepted: "
                          f"{', '.join(choices)})")
        if st["shuffle"] in written:
            bad_input(f"{kind} stage {i}: shuffle = {st['shuffle']} is written by an earlier "
                      f"shuffle_map stage")
        written.add(st["shuffle"])
    elif st["shuffle"] not in written:
        bad_input(f"{kind} stage {i}: shuffle = {st['shuffle']} has no earlier shuffle_map stage")


def load_scenario(name_or_path: str) -> dict:
    """A built-in name or a TOML path, with every stage's defaults filled in."""
    path = Path(name_or_path)
    if not path.exists():
        builtin = BUILTIN_DIR / f"{name_or_path}.toml"
        if not builtin.exists():
            names = ", ".join(sorted(p.stem for p in BUILTIN_DIR.glob("*.toml")))
            raise SystemExit(f"error: no built-in scenario named '{name_or_path}' and no such file "
                             f"(built-ins: {names})")
        path = builtin
    with open(path, "rb") as f:
        doc = tomllib.load(f)
    conf = {k: (str(v).lower() if isinstance(v, bool) else str(v))
            for k, v in doc.get("conf", {}).items()}
    stages = []
    written: set = set()
    for i, raw in enumerate(doc.get("stages", [])):
        kind = raw.get("kind")
        if kind not in STAGE_DEFAULTS:
            raise SystemExit(f"error: unknown stage kind '{kind}' in stage {i} "
                             f"(accepted: {', '.join(STAGE_DEFAULTS)})")
        unknown = set(raw) - set(STAGE_DEFAULTS[kind]) - {"kind", "expect"}
        if unknown:
            raise SystemExit(f"error: unknown key(s) {sorted(unknown)} in {kind} stage {i}")
        st = dict(STAGE_DEFAULTS[kind])
        st.update(raw)
        st.pop("expect", None)
        for k in SIZE_KEYS & set(st):
            st[k] = byte_string(st[k])
        if kind == "cache" and st["name"] is None:
            st["name"] = f"rdd_{st['rdd']}"
        if "storage_level" in st and st["storage_level"] not in STORAGE_LEVELS:
            raise SystemExit(f"error: Invalid StorageLevel: {st['storage_level']}")
        if kind == "cache" and st["record_type"] != "raw":
            # Typed records (docs/spark-model.md §21.7) are JVM objects a PySpark RDD does not
            # make; objsize_probe.py measures them through Py4J instead.
            raise SystemExit(f"error: record_type = {st['record_type']!r} in cache stage {i} "
                             "is not replayed (only \"raw\"; see scripts/spark/objsize_probe.py)")
        if kind in ("shuffle_map", "shuffle_reduce"):
            check_shuffle_stage(i, st, written)
        stages.append(st)
    return {"name": doc.get("name", path.stem), "seed": int(doc.get("seed", 42)),
            "conf": conf, "stages": stages, "path": str(path)}


# ---------------------------------------------------------------------------------------------
# Session


def session_conf(conf: dict, master: str | None) -> tuple[str, dict]:
    """The master and the SparkConf a replay runs with (local mode: heap = executor memory)."""
    conf = dict(conf)
    cores = int(conf.get("spark.executor.cores", "1"))
    local = master is None or master.startswith("local")
    if master is None:
        master = f"local[{cores}]"
    if local:
        # The executor lives in the driver JVM: its heap is the driver's -Xmx.
        conf["spark.driver.memory"] = conf.get("spark.executor.memory", "1g")
    conf.setdefault("spark.app.name", "spillway-replay")
    conf.setdefault("spark.ui.showConsoleProgress", "false")
    conf.setdefault("spark.ui.enabled", "true")
    # A local task failure fails the job at once (no retry), as spillway reports it.
    conf.setdefault("spark.sql.adaptive.enabled", "false")
    return master, conf


def shuffle_jar() -> Path:
    """ShuffleReplay.scala compiled against PySpark's jars with the Scala compiler they include
    (scala-compiler), cached in scripts/spark/.build by a digest of the source and the PySpark
    version: about 20 s the first time."""
    import pyspark

    jars = Path(pyspark.__file__).resolve().parent / "jars"
    source = SHUFFLE_SOURCE.read_bytes()
    digest = hashlib.sha256(source + pyspark.__version__.encode()).hexdigest()[:16]
    jar = BUILD_DIR / f"shuffle-replay-{digest}.jar"
    if jar.exists():
        return jar
    BUILD_DIR.mkdir(exist_ok=True)
    tmp = BUILD_DIR / f".shuffle-replay-{digest}.{os.getpid()}.jar"
    cmd = [check_env.java_command(), "-cp", str(jars / "*"), "scala.tools.nsc.Main",
           "-usejavacp", "-d", str(tmp), str(SHUFFLE_SOURCE)]
    print(f"[replay] compiling {SHUFFLE_SOURCE.name} (scala-compiler of PySpark "
          f"{pyspark.__version__})", file=sys.stderr, flush=True)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"error: compiling {SHUFFLE_SOURCE} failed (exit {r.returncode}):"
                             f"\n{r.stdout}{r.stderr}")
        os.replace(tmp, jar)  # atomic: a concurrent replay sees the whole jar or none
    finally:
        tmp.unlink(missing_ok=True)  # a failed or interrupted compilation leaves nothing
    for old in BUILD_DIR.glob("shuffle-replay-*.jar"):
        if old != jar:
            old.unlink(missing_ok=True)
    return jar


def add_shuffle_jar(conf: dict, master: str) -> dict:
    """The conf with the ShuffleReplay jar on the driver's class path (and shipped to the
    executors when they are not in the driver JVM)."""
    conf = dict(conf)
    jar = str(shuffle_jar())
    cp = conf.get("spark.driver.extraClassPath")
    conf["spark.driver.extraClassPath"] = f"{cp}{os.pathsep}{jar}" if cp else jar
    if not master.startswith("local"):
        jars = conf.get("spark.jars")
        conf["spark.jars"] = f"{jars},{jar}" if jars else jar
    return conf


def install_interrupts() -> None:
    """SIGTERM and SIGHUP stop the script as Ctrl-C does (KeyboardInterrupt), so the driver JVM
    is stopped and a spillway child is stopped cleanly on every one of them."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)


def start_context(master: str, conf: dict):
    """A SparkContext + SparkSession. Launches the driver JVM with the conf if none runs yet."""
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    sconf = SparkConf().setMaster(master)
    for k, v in conf.items():
        sconf.set(k, v)
    sc = SparkContext(conf=sconf)
    sc.setLogLevel("ERROR")
    return sc, SparkSession(sc)


def stop_jvm(sc) -> None:
    """Stops the context and the driver JVM, so the next context can start with another heap."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    sc.stop()
    if gateway is not None:
        proc = getattr(gateway, "proc", None)
        gateway.shutdown()
        if proc is not None:
            try:
                proc.stdin.close()
            except Exception:
                pass
            proc.wait(timeout=60)
    SparkContext._gateway = None
    SparkContext._jvm = None


def jvm_info(sc) -> dict:
    jvm = sc._jvm
    rt = jvm.java.lang.Runtime.getRuntime()
    gcs = [b.getName() for b in jvm.java.lang.management.ManagementFactory.getGarbageCollectorMXBeans()]
    args = list(jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    return {
        "runtimeMaxMemory": int(rt.maxMemory()),
        "xmx": next((a for a in args if a.startswith("-Xmx")), None),
        "garbageCollectors": gcs,
        "javaVersion": str(jvm.java.lang.System.getProperty("java.version")),
        "sparkVersion": sc.version,
        "availableProcessors": int(rt.availableProcessors()),
    }


class Rest:
    """Spark's monitoring REST API of one running application."""

    def __init__(self, sc):
        self.base = f"{sc.uiWebUrl.rstrip('/')}/api/v1/applications/{sc.applicationId}"

    def get(self, path: str):
        with urllib.request.urlopen(f"{self.base}/{path}", timeout=30) as r:
            return json.load(r)

    def executors(self):
        return self.get("allexecutors")

    def settle(self, group: str | None = None, timeout: float = 20.0) -> None:
        """Waits until the status store has seen every job (of the group) and stage end."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            jobs = self.get("jobs")
            if group is not None:
                jobs = [j for j in jobs if j.get("jobGroup") == group]
            stages = self.get("stages")
            if all(j["status"] != "RUNNING" for j in jobs) and \
                    all(s["status"] != "ACTIVE" for s in stages):
                return
            time.sleep(0.2)


def executor_memory(rest: Rest) -> dict:
    """The executor that ran the tasks (local mode: the driver) and, on a cluster, all of them."""
    execs = [e for e in rest.executors() if e.get("isActive", True)]
    keep = ("id", "maxMemory", "memoryUsed", "diskUsed", "totalCores", "maxTasks",
            "memoryMetrics", "peakMemoryMetrics", "totalGCTime", "failedTasks")
    out = [{k: e.get(k) for k in keep if k in e} for e in execs]
    workers = [e for e in out if e["id"] != "driver"] or out
    return {"executors": workers, "driver": next((e for e in out if e["id"] == "driver"), None)}


# ---------------------------------------------------------------------------------------------
# Stage replays


def storage_level(name: str):
    from pyspark import StorageLevel

    return StorageLevel(*STORAGE_LEVELS[name])


def _align8(n: int) -> int:
    return (n + 7) // 8 * 8


def jvm_element_bytes(pickled_len: int, deserialized: bool) -> int:
    """What one pickled batch costs in the JVM block: a byte[] as SizeEstimator sees it
    (16-byte header with compressed oops, 8-byte alignment) or as JavaSerializer writes it."""
    return _align8(16 + pickled_len) if deserialized else pickled_len + 10


def plan_partition(ser, partition_bytes: int, record_bytes: int, deserialized: bool):
    """Record payload sizes whose pickled batches cost ~partition_bytes in the JVM.

    Simulates PySpark's auto-batching with the context's own serializer on zero-filled records
    of the candidate sizes and shrinks the payloads by the overhead it finds."""
    from pyspark.serializers import AutoBatchedSerializer

    n = max(1, math.ceil(partition_bytes / record_bytes))
    batch_ser = ser.serializer if isinstance(ser, AutoBatchedSerializer) else ser

    def estimate(sizes):
        total, batch, i, batches = 0, 1, 0, 0
        while i < len(sizes):
            vs = [bytes(s) for s in sizes[i:i + batch]]
            i += len(vs)
            size = len(batch_ser.dumps(vs))
            total += jvm_element_bytes(size, deserialized)
            batches += 1
            if size < AUTO_BATCH_BYTES:
                batch *= 2
            elif size > AUTO_BATCH_BYTES * 10 and batch > 1:
                batch //= 2
        # The array of references the unrolled values end up in.
        if deserialized:
            total += _align8(16 + 4 * batches)
        return total

    sizes = [record_bytes] * (n - 1) + [max(1, partition_bytes - record_bytes * (n - 1))]
    best = (abs(estimate(sizes) - partition_bytes), list(sizes))
    for it in range(12):
        diff = estimate(sizes) - partition_bytes
        if abs(diff) < best[0]:
            best = (abs(diff), list(sizes))
        if abs(diff) < 8:  # the JVM's sizes are 8-byte aligned: this is as close as it gets
            break
        if (it == 0 or sizes[-1] - diff < 1) and abs(diff) >= n:
            per = diff // n  # the per-record overhead, taken from every record
            sizes = [max(1, s - per) for s in sizes]
        elif sizes[-1] - diff >= 1:
            sizes[-1] -= diff  # the last record absorbs the rest
        else:  # spread the rest one byte a record
            step = 1 if diff > 0 else -1
            for k in range(min(abs(diff), n)):
                sizes[k] = max(1, sizes[k] - step)
    sizes = best[1]
    return sizes, estimate(sizes)


def make_cached_rdd(sc, st: dict, seed: int):
    level = STORAGE_LEVELS[st["storage_level"]]
    deserialized = level[3]
    sizes, est = plan_partition(sc.serializer, st["partition_bytes"], st["record_bytes"],
                                deserialized)
    rdd_seed = seed * 1_000_003 + st["rdd"]

    def gen(index, _it):
        rng = random.Random(rdd_seed * 65_537 + index)
        for s in sizes:
            yield rng.randbytes(s)

    rdd = sc.parallelize(range(st["partitions"]), st["partitions"]).mapPartitionsWithIndex(gen)
    rdd.setName(st["name"])
    rdd.persist(storage_level(st["storage_level"]))
    return rdd, {"recordsPerPartition": len(sizes), "payloadBytes": sizes[0],
                 "estimatedPartitionBytes": est}


def random_binary_expr(length: int, seed: int) -> str:
    """A SQL expression for `length` pseudo-random bytes per row (SHA-512 chunks of the id), so
    spill files are as incompressible as spillway's records (Spark compresses spills with lz4)."""
    if length <= 0:
        return "cast('' as binary)"
    chunks = min(16, -(-length // 64))
    parts = ", ".join(f"unhex(sha2(concat(cast(id as string), ':{seed}:{j}'), 512))"
                      for j in range(chunks))
    expr = f"concat({parts})"
    if length > 64 * chunks:  # beyond 1 KiB the chunks repeat
        expr = f"concat({', '.join([expr] * (-(-length // (64 * chunks))))})"
    return f"substring({expr}, 1, {length})"


def rows_df(spark, tasks: int, rows_per_task: int, record_bytes: int, key_expr: str, seed: int):
    """tasks partitions x rows_per_task UnsafeRows of record_bytes: (key long, payload binary)."""
    from pyspark.sql import functions as F

    payload = max(0, _align8(record_bytes) - UNSAFE_ROW_FIXED)
    df = spark.range(0, tasks * rows_per_task, 1, tasks)
    df = df.select(F.expr(key_expr.format(seed=seed)).alias("key"),
                   F.expr(random_binary_expr(payload, seed)).alias("payload"))
    return df, payload


def prepare_shuffle(sc, st: dict, seed: int):
    """The JVM's PreparedShuffle of a shuffle_map stage (ShuffleReplay.scala): the input RDD of
    spillway's records and the operation's ShuffledRDD (sortByKey samples its bounds here)."""
    signed_seed = seed - (1 << 64) if seed >= 1 << 63 else seed  # a u64 seed as a Java long
    return sc._jvm.spillway.replay.ShuffleReplay.prepare(
        sc._jsc.sc(), signed_seed, st["shuffle"], st["tasks"], st["reduce_partitions"],
        st["records_per_task"], st["record_bytes"], st["distinct_keys"], st["hot_key_percent"],
        st["compressible_percent"], st["operation"], st["values"])


REDUCE_OUTPUT = {"partitionBy": "records", "sortByKey": "records", "reduceByKey": "keys",
                 "groupByKey": "groups"}


def run_stage(sc, spark, st: dict, scenario: dict, rdds: dict, shuffles: dict) -> dict:
    from pyspark.sql import functions as F

    kind, seed, info = st["kind"], scenario["seed"], {}
    if kind == "cache":
        rdd, info = make_cached_rdd(sc, st, seed)
        rdds[st["rdd"]] = rdd
        info["count"] = rdd.count()
    elif kind == "scan":
        info["count"] = rdds[st["rdd"]].count()
    elif kind == "unpersist":
        rdds[st["rdd"]].unpersist(blocking=True)
    elif kind == "sort":
        df, payload = rows_df(spark, st["tasks"], st["records_per_task"], st["record_bytes"],
                              "xxhash64(id, {seed})", seed)
        info["payloadBytes"] = payload
        df.sortWithinPartitions("key").write.format("noop").mode("overwrite").save()
    elif kind == "aggregate":
        spark.conf.set("spark.sql.shuffle.partitions", str(st["tasks"]))
        df, payload = rows_df(spark, st["tasks"], st["records_per_task"], st["record_bytes"],
                              f"pmod(xxhash64(id, {{seed}}), {st['distinct_keys']})", seed)
        info["payloadBytes"] = payload
        df.groupBy("key").agg(F.sum(F.length("payload")).alias("n")) \
            .write.format("noop").mode("overwrite").save()
    elif kind == "udf":
        total, obj = st["bytes_per_task"], st["object_bytes"]

        def hold(_i):
            held = [bytearray(obj) for _ in range(total // obj)]
            for b in held:  # touch every page
                b[::4096] = b"\x01" * len(b[::4096])
            return sum(len(b) for b in held)

        from pyspark.sql.types import LongType
        f = F.udf(hold, LongType())
        rows = spark.range(0, st["tasks"], 1, st["tasks"]).select(f("id").alias("held")).collect()
        info["heldBytes"] = sum(r.held for r in rows)
    elif kind == "broadcast":
        n = max(1, st["bytes"] // st["record_bytes"])
        small, _ = rows_df(spark, 1, n, st["record_bytes"], "id", seed)
        big = spark.range(0, 1000, 1, int(sc.defaultParallelism)).withColumnRenamed("id", "key")
        info["rows"] = n
        info["joined"] = big.join(F.broadcast(small), "key").count()
    elif kind == "shuffle_map":
        prepared = prepare_shuffle(sc, st, seed)
        info["shuffle"] = {"shuffle": st["shuffle"], "operation": st["operation"],
                           "values": st["values"], **json.loads(prepared.describe())}
        shuffles[st["shuffle"]] = {"prepared": prepared, "spec": st, "info": info["shuffle"]}
        info["mapOutputBytesByPartition"] = json.loads(prepared.runMap())
    elif kind == "shuffle_reduce":
        entry = shuffles[st["shuffle"]]
        op = entry["spec"]["operation"]
        parts = json.loads(entry["prepared"].runReduce())
        name = REDUCE_OUTPUT[op]
        info["shuffle"] = dict(entry["info"])
        out = {name: sum(p[0] for p in parts), f"{name}ByPartition": [p[0] for p in parts]}
        # reduceByKey: the sum of every key's sum; groupByKey: of every group's size.
        if op == "reduceByKey":
            out["valueSum"] = sum(p[1] for p in parts)
        elif op == "groupByKey":
            out["values"] = sum(p[1] for p in parts)
        elif op == "sortByKey":
            out["keysOrderedInEveryPartition"] = all(p[2] for p in parts)
        info["reduceOutput"] = out
    return info


def error_class(message: str) -> str:
    m = re.search(r"\[([A-Z][A-Z0-9_.]+)\]", message or "")
    if m:
        return m.group(1)
    for pat, cls in (("OutOfMemoryError", "java.lang.OutOfMemoryError"),
                     ("MemoryError", "MemoryError"),
                     ("PythonException", "PythonException")):
        if pat in (message or ""):
            return cls
    return "Exception"


def collect_stage(rest: Rest, group: str) -> dict:
    """Sums the Spark stages of one scenario stage's jobs, with Spark's REST names."""
    jobs = [j for j in rest.get("jobs") if j.get("jobGroup") == group]
    stage_ids = sorted({s for j in jobs for s in j.get("stageIds", [])})
    all_stages = {(s["stageId"], s["attemptId"]): s for s in rest.get("stages?details=false")}
    fields = ("numTasks", "numCompleteTasks", "numFailedTasks", "memoryBytesSpilled",
              "diskBytesSpilled", "peakExecutionMemory", "executorRunTime", "inputBytes",
              "shuffleWriteBytes", "shuffleReadBytes", "shuffleWriteRecords",
              "shuffleReadRecords")
    out = {f: 0 for f in fields}
    spark_stages, failed = [], []
    for (sid, att), s in sorted(all_stages.items()):
        if sid not in stage_ids or s["status"] == "SKIPPED":
            continue
        for f in fields:
            out[f] += int(s.get(f, 0) or 0)
        spark_stages.append({"stageId": sid, "attemptId": att, "name": s.get("name"),
                             "status": s["status"], "numTasks": s["numTasks"],
                             "memoryBytesSpilled": s.get("memoryBytesSpilled", 0),
                             "diskBytesSpilled": s.get("diskBytesSpilled", 0),
                             "peakExecutionMemory": s.get("peakExecutionMemory", 0),
                             "executorRunTime": s.get("executorRunTime", 0)})
        if s.get("numFailedTasks", 0):
            for t in rest.get(f"stages/{sid}/{att}/taskList?status=FAILED&length=100"):
                msg = t.get("errorMessage", "")
                failed.append({"stageId": sid, "taskId": t["taskId"], "error": error_class(msg),
                               "message": msg.split("\n")[0][:500]})
    out["sparkStages"] = spark_stages
    out["jobs"] = [{"jobId": j["jobId"], "status": j["status"]} for j in jobs]
    out["failedTasks"] = failed
    return out


MAP_SIDE_FIELDS = ("numTasks", "shuffleWriteRecords", "shuffleWriteBytes", "shuffleWriteTime",
                   "memoryBytesSpilled", "diskBytesSpilled", "peakExecutionMemory",
                   "executorRunTime")
REDUCE_SIDE_FIELDS = ("numTasks", "shuffleReadRecords", "shuffleReadBytes",
                      "shuffleLocalBytesRead", "shuffleRemoteBytesRead", "shuffleFetchWaitTime",
                      "memoryBytesSpilled", "diskBytesSpilled", "peakExecutionMemory",
                      "executorRunTime")


def shuffle_side(rest: Rest, group: str, side: str) -> dict | None:
    """Spark's metrics of one side of a shuffle: the stage(s) of the group's last job that ran
    (the map side: the job of SparkContext.submitMapStage, after sortByKey's sampling job; the
    reduce side: the result stage, its map stage SKIPPED), with the records of each task by
    partition (a map task's records written, a reduce partition's records read)."""
    jobs = sorted((j for j in rest.get("jobs") if j.get("jobGroup") == group),
                  key=lambda j: j["jobId"])
    if not jobs:
        return None
    ids = set(jobs[-1].get("stageIds", []))
    stages = [s for s in rest.get("stages?details=false")
              if s["stageId"] in ids and s["status"] != "SKIPPED"]
    fields = MAP_SIDE_FIELDS if side == "map" else REDUCE_SIDE_FIELDS
    out = {f: sum(int(s.get(f, 0) or 0) for s in stages) for f in fields}
    out["sparkStageIds"] = sorted({s["stageId"] for s in stages})
    out["spilled"] = bool(out["memoryBytesSpilled"] or out["diskBytesSpilled"])
    by_partition: dict[int, int] = {}
    for s in stages:
        tasks = rest.get(f"stages/{s['stageId']}/{s['attemptId']}/taskList"
                         f"?length={max(100, int(s.get('numTasks', 0)) * 2)}")
        for t in tasks:
            if t.get("status") != "SUCCESS":
                continue
            m = t.get("taskMetrics") or {}
            n = (m.get("shuffleWriteMetrics", {}).get("recordsWritten", 0) if side == "map"
                 else m.get("shuffleReadMetrics", {}).get("recordsRead", 0))
            by_partition[int(t.get("partitionId", t["index"]))] = int(n)
    key = "recordsWrittenByMapTask" if side == "map" else "recordsReadByPartition"
    out[key] = [by_partition.get(p) for p in range(max(by_partition, default=-1) + 1)]
    return out


def storage_snapshot(rest: Rest) -> list[dict]:
    keep = ("id", "name", "storageLevel", "numPartitions", "numCachedPartitions", "memoryUsed",
            "diskUsed")
    return [{k: r.get(k) for k in keep} for r in rest.get("storage/rdd")]


def replay(scenario: dict, master: str | None = None, extra_conf: dict | None = None) -> dict:
    conf = dict(scenario["conf"])
    conf.update(extra_conf or {})
    master, conf = session_conf(conf, master)
    if any(st["kind"] == "shuffle_map" for st in scenario["stages"]):
        conf = add_shuffle_jar(conf, master)
    t0 = time.perf_counter()
    sc, spark = start_context(master, conf)
    startup_ms = (time.perf_counter() - t0) * 1000
    try:
        return _replay_in(sc, spark, scenario, master, conf, startup_ms)
    finally:
        # Also on Ctrl-C / SIGTERM / SIGHUP (see install_interrupts): no driver JVM is left.
        stop_jvm(sc)


def _replay_in(sc, spark, scenario: dict, master: str, conf: dict, startup_ms: float) -> dict:
    rest = Rest(sc)
    report = {"scenario": {"name": scenario["name"], "source": scenario["path"]},
              "master": master, "conf": conf, "jvm": jvm_info(sc),
              "startupMs": round(startup_ms, 1), "uiWebUrl": sc.uiWebUrl,
              "applicationId": sc.applicationId}
    report["executorsAtStart"] = executor_memory(rest)
    rdds, shuffles, stages, failures = {}, {}, [], []
    run_t0 = time.perf_counter()
    for i, st in enumerate(scenario["stages"]):
        group = f"spillway-stage-{i}"
        sc.setJobGroup(group, f"{st['kind']} (scenario stage {i})")
        t = time.perf_counter()
        error = None
        try:
            info = run_stage(sc, spark, st, scenario, rdds, shuffles)
        except Exception as e:  # a failed job is a result
            info, error = {}, str(e)
        wall = (time.perf_counter() - t) * 1000
        alive = sc._jsc is not None and not sc._jsc.sc().isStopped()
        if not alive:
            stages.append({"stageId": i, "kind": st["kind"], "wallTimeMs": round(wall, 1),
                           "error": error, "contextStopped": True})
            failures.append({"stageId": i, "taskId": None, "error": error_class(error),
                             "message": (error or "SparkContext stopped").split("\n")[0][:500]})
            break
        rest.settle(group)
        entry = {"stageId": i, "kind": st["kind"], "wallTimeMs": round(wall, 1), **info}
        entry.update(collect_stage(rest, group))
        if st["kind"] in ("shuffle_map", "shuffle_reduce") and error is None:
            side = "map" if st["kind"] == "shuffle_map" else "reduce"
            entry["shuffleSide"] = shuffle_side(rest, group, side)
            if st["shuffle"] in shuffles:
                shuffles[st["shuffle"]][side] = {"stageId": i, **entry["shuffleSide"]}
        entry["storageAfter"] = storage_snapshot(rest)
        if error is not None:
            entry["error"] = error.split("\n")[0][:500]
            if not entry["failedTasks"]:
                failures.append({"stageId": i, "taskId": None, "error": error_class(error),
                                 "message": entry["error"]})
        for f in entry["failedTasks"]:
            failures.append({**f, "stageId": i, "sparkStageId": f["stageId"]})
        stages.append(entry)
    report["wallTimeMs"] = round((time.perf_counter() - run_t0) * 1000, 1)
    report["stages"] = stages
    # Per shuffle: how Spark registered it (writer, serializer, partitioner) and each side's
    # metrics.
    report["shuffles"] = [{**e["info"], "map": e.get("map"), "reduce": e.get("reduce")}
                          for _, e in sorted(shuffles.items())]
    report["failures"] = failures
    if sc._jsc is not None and not sc._jsc.sc().isStopped():
        time.sleep(0.5)
        report["storage"] = {"rdds": storage_snapshot(rest)}
        report["executors"] = executor_memory(rest)
    return report


# ---------------------------------------------------------------------------------------------
# Output


def machine() -> dict:
    """The machine a recorded run ran on (scripts/spark/results/*.json)."""
    import platform

    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), platform.processor())
    mem = next((int(line.split()[1]) * 1024 for line in open("/proc/meminfo")
                if line.startswith("MemTotal")), None)
    return {"cpu": model, "cores": os.cpu_count(), "memTotalBytes": mem,
            "kernel": platform.release(), "python": platform.python_version()}


def fmt_bytes(n) -> str:
    if n is None:
        return "-"
    return f"{n / (1 << 20):.1f} MiB" if abs(n) >= 1 << 20 else f"{n} B"


def print_table(r: dict) -> None:
    j = r["jvm"]
    ex = (r.get("executors") or r["executorsAtStart"])["executors"][0]
    print(f"Spark {j['sparkVersion']} on Java {j['javaVersion']} ({', '.join(j['garbageCollectors'])}), "
          f"master {r['master']}")
    print(f"Runtime.maxMemory {j['runtimeMaxMemory']} B ({j['xmx']}); executor {ex['id']} "
          f"maxMemory (storage memory) {r['executorsAtStart']['executors'][0]['maxMemory']} B")
    print(f"{'stage':>5} {'kind':<10} {'tasks':>5} {'failed':>6} {'mem spilled':>12} "
          f"{'disk spilled':>12} {'peak exec':>12} {'run time':>9} {'wall':>9}")
    for s in r["stages"]:
        print(f"{s['stageId']:>5} {s['kind']:<10} {s.get('numTasks', 0):>5} "
              f"{s.get('numFailedTasks', 0):>6} {fmt_bytes(s.get('memoryBytesSpilled')):>12} "
              f"{fmt_bytes(s.get('diskBytesSpilled')):>12} "
              f"{fmt_bytes(s.get('peakExecutionMemory')):>12} "
              f"{s.get('executorRunTime', 0):>7}ms {s['wallTimeMs']:>7.0f}ms")
    for rdd in r.get("storage", {}).get("rdds", []):
        print(f"RDD {rdd['name']} ({rdd['storageLevel']}): {rdd['numCachedPartitions']}/"
              f"{rdd['numPartitions']} cached, memory {fmt_bytes(rdd['memoryUsed'])}, "
              f"disk {fmt_bytes(rdd['diskUsed'])}")
    for sh in r.get("shuffles", []):
        m, red = sh.get("map") or {}, sh.get("reduce") or {}
        yn = {True: "spilled", False: "no spill", None: "-"}
        print(f"shuffle {sh['shuffle']} ({sh['operation']}, {sh['numPartitions']} partitions, "
              f"{sh['writer']}, {sh['serializer'].rsplit('.', 1)[-1]}): written "
              f"{m.get('shuffleWriteRecords', '-')} records, "
              f"{fmt_bytes(m.get('shuffleWriteBytes'))} ({yn[m.get('spilled')]}); read "
              f"{red.get('shuffleReadRecords', '-')} records, "
              f"{fmt_bytes(red.get('shuffleReadBytes'))} ({yn[red.get('spilled')]})")
    for f in r["failures"]:
        print(f"failure in stage {f['stageId']}: {f['error']}: {f['message']}")
    print(f"wall time {r['wallTimeMs']:.0f} ms (+ {r['startupMs']:.0f} ms session start-up)")


def parse_conf_args(items) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"error: --conf expects KEY=VALUE, got '{item}'")
        k, v = item.split("=", 1)
        out[k] = v
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("scenario", help="built-in scenario name or TOML path")
    p.add_argument("--master", help="Spark master (default local[spark.executor.cores])")
    p.add_argument("--conf", action="append", metavar="KEY=VALUE",
                   help="extra Spark property (overrides the scenario's [conf])")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    install_interrupts()
    if not check_env.report_problems():
        return 3
    scenario = load_scenario(args.scenario)
    report = replay(scenario, args.master, parse_conf_args(args.conf))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

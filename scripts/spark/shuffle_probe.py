#!/usr/bin/env python3
"""Ask real Spark what a shuffle does: writer choice, serializer, records, bytes and spills.

    scripts/spark/.venv/bin/python scripts/spark/shuffle_probe.py [--out FILE] [--records N]
        [--only default|spill|reduce-spill]...

The recorded runs (``scripts/spark/results/shuffle-probe-2026-12-02*.json``, each with its exact
command, date and machine) took about 4 minutes for the first two sessions and 2-3 for the third
on a loaded 2-core VM. At ``spark.memory.fraction`` 0.005 the reduce side still did not spill
(Spillable's first 5 MiB, ``spark.shuffle.spill.initialMemoryThreshold``, is not acquired from the
pool); the ``-threshold`` run adds ``--reduce-spill-conf
spark.shuffle.spill.initialMemoryThreshold=1048576`` and both sides spill.

Groundwork for the shuffle stages: runs shuffle cases on PySpark (local mode, ``local[2]``,
driver heap = ``spark.executor.memory`` = 1g as ``replay.py`` sets it) and prints one JSON object
with what Spark itself reported:

- ``partitionBy`` + ``count``: 4 map tasks x ``--records`` (default 5,000,000) records of 56 bytes
  (a random long key and a 32-byte binary payload: ``replay.rows_df``, the rows replay.py's sort
  stage uses), into 8 and into 400 reduce partitions with a ``HashPartitioner``.
- ``reduceByKey`` over 1,000,000 distinct keys (same records, keys ``pmod(xxhash64(id), 1e6)``),
  in three sessions ("default", "spill", "reduce-spill"): the default memory, then
  ``spark.memory.fraction`` shrunk (``--spill-fraction``, 0.02) so that the map side spills, and
  shrunk further (``--reduce-spill-fraction``, 0.005) so that the reduce side may spill too.
  The JVM's ``JavaPairRDD.countByKey`` is used: it is ``mapValues(_ => 1L).reduceByKey(_ + _)``
  (map-side combine on, ``spark.default.parallelism`` = 8 reduce partitions), the only
  reduceByKey that runs entirely in the JVM without a compiled closure.
- The same operations through PySpark's own RDD API on a smaller input, because there the JVM
  shuffles pickled batches, not records (see ``pyspark_cases``).

The JVM-side cases build their pair RDD without Python in the data path: the rows become a
``Dataset[(Long, Array[Byte])]`` and a ``JavaPairRDD`` with the class tags of ``Long`` and
``Array[Byte]``, exactly what a Scala ``rdd.partitionBy`` over such records sees (so
``SerializerManager`` may pick Kryo for it).

How each number is observed
---------------------------
- Stage metrics (``shuffleWriteRecords``, ``shuffleReadRecords``, ``shuffleWriteBytes``,
  ``shuffleReadBytes``, ``memoryBytesSpilled``, ``diskBytesSpilled``, ``peakExecutionMemory``)
  come from Spark's monitoring REST API (``/api/v1/applications/<id>/stages``), per Spark stage,
  for the job group of each case.
- The map-side writer and the serializer: while each job runs, a thread reads, through the
  Py4J gateway, the ``ShuffleDependency`` of every shuffle the DAGScheduler registered
  (``sc._jsc.sc().dagScheduler().shuffleIdToMapStage()``, emptied when the job ends): its ``shuffleHandle`` class, which
  ``SortShuffleManager.getWriter`` maps one to one onto the writer (BypassMergeSortShuffleHandle ->
  BypassMergeSortShuffleWriter, SerializedShuffleHandle -> UnsafeShuffleWriter, BaseShuffleHandle
  -> SortShuffleWriter), its ``serializer`` class, ``mapSideCombine`` and partition count.
- As a second witness the driver JVM is started with a log4j2 configuration (a temp file, via
  ``-Dlog4j2.configurationFile`` in ``spark.driver.extraJavaOptions``) that logs
  ``org.apache.spark.shuffle.sort`` at DEBUG and ``org.apache.spark.util.collection`` at INFO to a
  temp file; the lines it wrote during each case are kept (``SortShuffleManager``'s "Can('t) use
  serialized shuffle" reasons, spill messages of ``ShuffleExternalSorter`` / ``Spillable``).

Each Spark session is a fresh driver JVM, stopped in a ``finally`` (``replay.stop_jvm``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import check_env  # noqa: E402

check_env.require_python()
import replay  # noqa: E402

SEED = 42
RECORD_BYTES = 56
MAP_TASKS = 4
DISTINCT_KEYS = 1_000_000
WRITERS = {
    "org.apache.spark.shuffle.sort.BypassMergeSortShuffleHandle": "BypassMergeSortShuffleWriter",
    "org.apache.spark.shuffle.sort.SerializedShuffleHandle": "UnsafeShuffleWriter",
    "org.apache.spark.shuffle.BaseShuffleHandle": "SortShuffleWriter",
}
STAGE_FIELDS = ("numTasks", "shuffleWriteRecords", "shuffleReadRecords", "shuffleWriteBytes",
                "shuffleReadBytes", "shuffleLocalBytesRead", "shuffleRemoteBytesRead",
                "memoryBytesSpilled", "diskBytesSpilled", "peakExecutionMemory",
                "executorRunTime")

LOG4J2 = """\
status = warn
rootLogger.level = warn
rootLogger.appenderRef.file.ref = probe
appender.probe.type = File
appender.probe.name = probe
appender.probe.fileName = {path}
appender.probe.layout.type = PatternLayout
appender.probe.layout.pattern = %d{{HH:mm:ss.SSS}} [%t] %p %c: %m%n
logger.sort.name = org.apache.spark.shuffle.sort
logger.sort.level = debug
logger.coll.name = org.apache.spark.util.collection
logger.coll.level = info
"""


class Session:
    """One driver JVM with the probe's log4j2 configuration; stopped on exit."""

    def __init__(self, conf: dict, logdir: str, name: str):
        self.log = os.path.join(logdir, f"{name}.log")
        props = os.path.join(logdir, f"{name}.properties")
        with open(props, "w") as f:
            f.write(LOG4J2.format(path=self.log))
        conf = dict(conf)
        conf["spark.driver.extraJavaOptions"] = f"-Dlog4j2.configurationFile=file:{props}"
        conf["spark.app.name"] = f"spillway-shuffle-probe-{name}"
        self.master, self.conf = replay.session_conf(conf, None)
        self.sc = None

    def __enter__(self):
        self.sc, self.spark = replay.start_context(self.master, self.conf)
        self.rest = replay.Rest(self.sc)
        return self

    def __exit__(self, *exc):
        if self.sc is not None:
            replay.stop_jvm(self.sc)
        return False

    def log_offset(self) -> int:
        return os.path.getsize(self.log) if os.path.exists(self.log) else 0

    def log_since(self, offset: int, limit: int = 60) -> list[str]:
        if not os.path.exists(self.log):
            return []
        with open(self.log, errors="replace") as f:
            f.seek(offset)
            lines = [line.rstrip("\n") for line in f]
        return lines[:limit] + ([f"... {len(lines) - limit} more lines"] if len(lines) > limit else [])


def shuffle_deps(sc) -> dict:
    """shuffleId -> what the ShuffleDependency and its handle say (read through Py4J)."""
    jvm = sc._jvm
    stages = sc._jsc.sc().dagScheduler().shuffleIdToMapStage()
    out = {}
    for sid, stage in jvm.scala.jdk.javaapi.CollectionConverters.asJava(stages).items():
        dep = stage.shuffleDep()
        handle = dep.shuffleHandle().getClass().getName()
        out[int(sid)] = {
            "shuffleId": int(sid), "mapStageId": int(stage.id()),
            "numPartitions": int(dep.partitioner().numPartitions()),
            "partitioner": dep.partitioner().getClass().getName(),
            "mapSideCombine": bool(dep.mapSideCombine()),
            "aggregatorDefined": bool(dep.aggregator().isDefined()),
            "keyOrderingDefined": bool(dep.keyOrdering().isDefined()),
            "serializer": dep.serializer().getClass().getName(),
            "serializerSupportsRelocation":
                bool(dep.serializer().supportsRelocationOfSerializedObjects()),
            "handle": handle, "writer": WRITERS.get(handle, "unknown"),
        }
    return out


def stage_metrics(rest, group: str) -> list[dict]:
    jobs = [j for j in rest.get("jobs") if j.get("jobGroup") == group]
    ids = {s for j in jobs for s in j.get("stageIds", [])}
    out = []
    for s in rest.get("stages?details=false"):
        if s["stageId"] in ids and s["status"] != "SKIPPED":
            row = {"stageId": s["stageId"], "attemptId": s["attemptId"], "name": s.get("name"),
                   "status": s["status"]}
            row.update({f: s.get(f) for f in STAGE_FIELDS})
            out.append(row)
    return sorted(out, key=lambda r: (r["stageId"], r["attemptId"]))


def run_case(s: Session, name: str, description: str, action, seen: set) -> dict:
    group = f"probe-{name}"
    s.sc.setJobGroup(group, description)
    offset = s.log_offset()
    deps: dict = {}
    done = threading.Event()

    def watch():
        # The DAGScheduler forgets a job's shuffle map stages when the job ends: read them
        # while it runs.
        while not done.is_set():
            try:
                deps.update(shuffle_deps(s.sc))
            except Exception:  # the map changed under the iteration: read it again
                pass
            done.wait(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    t = time.perf_counter()
    error, result = None, None
    try:
        result = action()
    except Exception as e:  # a failed job is a result too
        error = str(e).split("\n")[0][:500]
    finally:
        done.set()
        watcher.join()
    wall = (time.perf_counter() - t) * 1000
    s.rest.settle(group)
    new = [d for k, d in sorted(deps.items()) if k not in seen]
    seen.update(deps)
    stages = stage_metrics(s.rest, group)
    case = {"case": name, "description": description, "result": result, "error": error,
            "wallTimeMs": round(wall, 1), "shuffles": new, "stages": stages,
            "log": s.log_since(offset)}
    case["spilled"] = {("map" if st["shuffleWriteRecords"] else "reduce"):
                       {"memoryBytesSpilled": st["memoryBytesSpilled"],
                        "diskBytesSpilled": st["diskBytesSpilled"],
                        "spilled": bool(st["memoryBytesSpilled"] or st["diskBytesSpilled"])}
                       for st in stages}
    print(f"[probe] {name}: {wall / 1000:.1f} s, writer(s) {[d['writer'] for d in new]}, "
          f"result {result}, error {error}", file=sys.stderr, flush=True)
    return case


def jvm_pairs(s: Session, records: int, key_expr: str):
    """A JavaPairRDD[Long, Array[Byte]] of MAP_TASKS partitions, built in the JVM from the rows
    replay.py's sort stage uses, with the class tags a Scala RDD of such pairs has."""
    jvm = s.sc._jvm
    df, payload = replay.rows_df(s.spark, MAP_TASKS, records, RECORD_BYTES, key_expr, SEED)
    enc = jvm.org.apache.spark.sql.Encoders
    ds = getattr(df._jdf, "as")(enc.tuple(enc.LONG(), enc.BINARY()))
    ktag = jvm.scala.reflect.ClassTag.apply(jvm.java.lang.Long.TYPE)
    vtag = jvm.scala.reflect.ClassTag.apply(jvm.java.lang.Class.forName("[B"))
    return jvm.org.apache.spark.api.java.JavaPairRDD(ds.rdd(), ktag, vtag), payload


def jvm_cases(s: Session, records: int, seen: set, reduce_only: bool = False) -> list[dict]:
    jvm = s.sc._jvm
    cases = []
    if not reduce_only:
        for parts in (8, 400):
            pairs, payload = jvm_pairs(s, records, "xxhash64(id, {seed})")
            cases.append(run_case(
                s, f"jvm-partitionBy-{parts}",
                f"{MAP_TASKS} x {records} records of {RECORD_BYTES} B (long key + {payload} B "
                f"payload), partitionBy(HashPartitioner({parts})).count()",
                lambda p=pairs, n=parts: int(p.partitionBy(jvm.org.apache.spark.HashPartitioner(n))
                                             .count()), seen))
    pairs, payload = jvm_pairs(s, records, f"pmod(xxhash64(id, {{seed}}), {DISTINCT_KEYS})")

    def count_by_key():
        counts = pairs.countByKey()
        return {"distinctKeys": int(counts.size())}

    cases.append(run_case(
        s, "jvm-reduceByKey", f"{MAP_TASKS} x {records} records of {RECORD_BYTES} B, keys in "
        f"[0, {DISTINCT_KEYS}), countByKey() = mapValues(_ => 1L).reduceByKey(_ + _) into "
        f"spark.default.parallelism={s.conf.get('spark.default.parallelism')} partitions",
        count_by_key, seen))
    return cases


def pyspark_cases(s: Session, records: int, seen: set) -> list[dict]:
    """PySpark's RDD API: Python generates (key, 48-byte payload) tuples; partitionBy and
    reduceByKey run their per-record work in the Python workers and hand the JVM pickled
    batches keyed by partition id (rdd.py add_shuffle_key), so the JVM's shuffle records are
    batches."""
    cases = []

    def gen(keys):
        def f(index, _it):
            rng = random.Random(SEED * 65_537 + index)
            for _ in range(records):
                k = rng.getrandbits(63) if keys is None else rng.randrange(keys)
                yield k, rng.randbytes(RECORD_BYTES - 8)
        return f

    base = s.sc.parallelize(range(MAP_TASKS), MAP_TASKS)
    for parts in (8, 400):
        rdd = base.mapPartitionsWithIndex(gen(None))
        cases.append(run_case(
            s, f"pyspark-partitionBy-{parts}",
            f"PySpark RDD API: {MAP_TASKS} x {records} (int key, {RECORD_BYTES - 8}-byte bytes) "
            f"tuples, partitionBy({parts}).count()",
            lambda r=rdd, n=parts: r.partitionBy(n).count(), seen))
    keys = DISTINCT_KEYS // 10
    rdd = base.mapPartitionsWithIndex(gen(keys)).map(lambda kv: (kv[0], 1))
    cases.append(run_case(
        s, "pyspark-reduceByKey",
        f"PySpark RDD API: {MAP_TASKS} x {records} tuples, keys in [0, {keys}), "
        f"map to (k, 1).reduceByKey(add, 8).count()",
        lambda: rdd.reduceByKey(lambda a, b: a + b, 8).count(), seen))
    return cases


def session_record(s: Session, name: str, cases: list[dict]) -> dict:
    execs = replay.executor_memory(s.rest)["executors"]
    return {"session": name, "master": s.master, "conf": s.conf, "jvm": replay.jvm_info(s.sc),
            "executorMaxMemory": execs[0].get("maxMemory") if execs else None,
            "sparkConfSerializer": s.sc.getConf().get("spark.serializer", "(unset: Java)"),
            "cases": cases}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--records", type=int, default=5_000_000, help="records per map task")
    p.add_argument("--pyspark-records", type=int, default=250_000,
                   help="records per map task of the PySpark RDD API cases (0: skip them)")
    p.add_argument("--spill-fraction", default="0.02",
                   help="spark.memory.fraction of the reduceByKey run that must spill")
    p.add_argument("--reduce-spill-fraction", default="0.005",
                   help="spark.memory.fraction of a reduceByKey run whose reduce side spills too")
    p.add_argument("--reduce-spill-conf", action="append", metavar="KEY=VALUE",
                   help="extra Spark property of the reduce-spill session")
    p.add_argument("--only", choices=("default", "spill", "reduce-spill"), action="append",
                   help="run only these sessions (default: all three)")
    p.add_argument("--out", help="write the JSON here too")
    args = p.parse_args(argv)
    for key, value in (("--records", args.records), ("--pyspark-records", args.pyspark_records)):
        if value < 0 or (key == "--records" and value == 0):
            print(f"error: {key} must be a positive record count, got {value}", file=sys.stderr)
            return 2
    for item in args.reduce_spill_conf or []:
        if "=" not in item or not item.split("=", 1)[0]:
            print(f"error: --reduce-spill-conf expects KEY=VALUE, got '{item}'", file=sys.stderr)
            return 2
    replay.install_interrupts()
    if not check_env.report_problems():
        return 3
    base = {"spark.executor.memory": "1g", "spark.executor.cores": "2",
            "spark.default.parallelism": "8"}
    report = {"command": " ".join([sys.executable] + sys.argv),
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": replay.machine(), "sessions": []}
    only = set(args.only or ("default", "spill", "reduce-spill"))
    with tempfile.TemporaryDirectory(prefix="spillway-shuffle-probe-") as logdir:
        if "default" in only:
            with Session(base, logdir, "default") as s:
                seen: set = set()
                cases = jvm_cases(s, args.records, seen)
                if args.pyspark_records:
                    cases += pyspark_cases(s, args.pyspark_records, seen)
                report["sessions"].append(session_record(s, "default", cases))
        for name, fraction in (("spill", args.spill_fraction),
                               ("reduce-spill", args.reduce_spill_fraction)):
            if name in only:
                conf = dict(base, **{"spark.memory.fraction": fraction})
                if name == "reduce-spill":
                    conf.update(replay.parse_conf_args(args.reduce_spill_conf))
                with Session(conf, logdir, name) as s:
                    cases = jvm_cases(s, args.records, set(), reduce_only=True)
                    report["sessions"].append(session_record(s, name, cases))
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

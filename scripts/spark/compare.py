#!/usr/bin/env python3
"""Run a scenario on spillway and on real Spark, and print what each measured side by side.

    python3 scripts/spark/compare.py SCENARIO [--master MASTER] [--spillway PATH] [--json]
                                     [--no-system-memory] [--conf K=V]...

1. ``replay.py`` replays SCENARIO on PySpark (local[cores] by default, see its docstring) and
   reads Spark's REST API;
2. ``spillway run SCENARIO --json --system-memory S`` runs it on spillway, S being the driver
   JVM's ``Runtime.maxMemory`` that Spark sized its pools from (``--no-system-memory``: let
   spillway take ``spark.executor.memory``, as it does by default);
3. a table puts the numbers side by side: the layout (Spark's ``maxMemory`` against spillway's
   ``unified + off_heap``), per scenario stage the tasks, failures, spill bytes, peak execution
   memory, executor run time and wall time, per RDD the cached partitions and memory/disk used,
   the failures and the total wall time. Where the two differ and the reason is known, the last
   column says why.

Spark runs first, then spillway, one after the other, so neither disturbs the other's timing.
Exit code 0 when both ran (differences are results, not errors), 3 when Python, PySpark or Java
is missing or too old (``check_env.py`` says which).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import replay  # noqa: E402

MIB = 1 << 20


def run_spillway(binary: str, scenario: str, system_memory: int | None, conf: dict,
                 out_dir: str) -> dict:
    cmd = [binary, "run", scenario, "--json", "--out", out_dir]
    if system_memory is not None:
        cmd += ["--system-memory", str(system_memory)]
    for k, v in conf.items():
        cmd += ["--conf", f"{k}={v}"]
    # Its own session: a Ctrl-C at the terminal reaches this script only, which forwards it
    # once; spillway then stops, cleans up and exits 130 (a second signal would make it exit at
    # once). subprocess.run would SIGKILL it 0.25 s after a Ctrl-C and leave its files.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        raise
    if proc.returncode != 0 and not stdout.strip():
        raise SystemExit(f"spillway failed (exit {proc.returncode}): {stderr.strip()}")
    return json.loads(stdout)


def _b(n) -> str:
    if n is None:
        return "-"
    if isinstance(n, str):
        return n
    if isinstance(n, float):
        return f"{n:.0f}"
    if abs(n) >= MIB:
        return f"{n} ({n / MIB:.1f} MiB)"
    return str(n)


def build_rows(spark: dict, sw: dict, scenario: dict) -> list[tuple]:
    """(section, quantity, spark value, spillway value, why they differ)."""
    rows = []
    lay = sw["layout"]
    ex0 = spark["executorsAtStart"]["executors"][0]
    mm = ex0.get("memoryMetrics", {})
    gcs = ", ".join(spark["jvm"]["garbageCollectors"])
    s_why = ""
    if spark["jvm"]["runtimeMaxMemory"] != lay["system_memory"]:
        s_why = (f"Spark sizes from Runtime.maxMemory ({gcs}), spillway from "
                 f"spark.executor.memory; pass --system-memory (default of compare.py)")
    rows.append(("layout", "system memory S (Runtime.maxMemory)", spark["jvm"]["runtimeMaxMemory"],
                 lay["system_memory"], s_why))
    rows.append(("layout", "storage memory (REST maxMemory | unified + off_heap)",
                 ex0["maxMemory"], lay["unified"] + lay["off_heap"],
                 s_why and "follows S"))
    rows.append(("layout", "on-heap (totalOnHeapStorageMemory | unified)",
                 mm.get("totalOnHeapStorageMemory"), lay["unified"], s_why and "follows S"))
    rows.append(("layout", "off-heap (totalOffHeapStorageMemory | off_heap)",
                 mm.get("totalOffHeapStorageMemory"), lay["off_heap"], ""))

    sw_stages = {s["stageId"]: s for s in sw["stages"]}
    for st in spark["stages"]:
        i, kind = st["stageId"], st["kind"]
        ws = sw_stages.get(i, {})
        sec = f"stage {i} {kind}"
        spec = scenario["stages"][i]
        n_spark = len(st.get("sparkStages", []))
        why_tasks = ""
        if st.get("numTasks") != ws.get("numTasks"):
            why_tasks = {
                "aggregate": "Spark adds the shuffle-read stage of the final aggregation",
                "broadcast": "Spark runs the join's tasks; spillway stores one block",
                "sort": "Spark's sortWithinPartitions: one task per partition",
            }.get(kind, f"{n_spark} Spark stage(s) for this scenario stage")
        rows.append((sec, "numTasks", st.get("numTasks"), ws.get("numTasks"), why_tasks))
        unsupported = [f for f in sw["failures"]
                       if f["stageId"] == i and f["error"] == "UNSUPPORTED"]
        fail_why = (f"spillway: {unsupported[0]['message']}" if unsupported else "")
        rows.append((sec, "numFailedTasks", st.get("numFailedTasks"), ws.get("numFailedTasks"),
                     fail_why))
        spill_why = ""
        if kind in ("sort", "aggregate") and (st.get("memoryBytesSpilled") != ws.get("memoryBytesSpilled")):
            spill_why = ("Spark's rows are UnsafeRows (+4 B length in the page, 16 B pointer and "
                         "prefix per record); spills are counted in freed pages and written "
                         "lz4-compressed (spark.shuffle.spill.compress); HashAggregate falls back "
                         "to sort-based aggregation" if kind == "aggregate" else
                         "Spark's rows are UnsafeRows (+4 B length in the page, 16 B pointer and "
                         "prefix per record); memoryBytesSpilled counts freed pages, "
                         "diskBytesSpilled lz4-compressed bytes")
        rows.append((sec, "memoryBytesSpilled", st.get("memoryBytesSpilled"),
                     ws.get("memoryBytesSpilled"), spill_why))
        rows.append((sec, "diskBytesSpilled", st.get("diskBytesSpilled"),
                     ws.get("diskBytesSpilled"), spill_why and "see above"))
        peak_why = ""
        if st.get("peakExecutionMemory") != ws.get("peakExecutionMemory"):
            peak_why = {"udf": "the Python UDF's memory is in the Python worker, not the JVM",
                        "cache": "", "scan": ""}.get(kind, "Spark's peak is summed over "
                                                          "its stages' tasks and operators")
        rows.append((sec, "peakExecutionMemory", st.get("peakExecutionMemory"),
                     ws.get("peakExecutionMemory"), peak_why))
        rows.append((sec, "executorRunTime (ms)", st.get("executorRunTime"),
                     ws.get("executorRunTime"),
                     "JVM warm-up (JIT), Python workers and pickling, serialization; the "
                     "machine's load" if kind in ("cache", "scan", "sort", "aggregate") else ""))
        rows.append((sec, "wall time (ms)", st.get("wallTimeMs"), ws.get("wallTimeMs"),
                     "Spark: job scheduling, Python workers (pickling), JIT warm-up"))
        if kind == "cache":
            rows.append((sec, "JVM size estimate per partition (planned)",
                         st.get("estimatedPartitionBytes"), spec["partition_bytes"],
                         "pickled batches: byte[] headers and 8-byte alignment; "
                         "payloads shrunk to match" if st.get("estimatedPartitionBytes")
                         != spec["partition_bytes"] else ""))

    spark_rdds = {r["name"]: r for r in spark.get("storage", {}).get("rdds", [])}
    for r in sw["storage"]["rdds"]:
        s = spark_rdds.get(r["name"], {})
        sec = f"rdd {r['name']}"
        size_spec = next((c for c in scenario["stages"] if c["kind"] == "cache"
                          and c["name"] == r["name"]), None)
        cached_why = ""
        if s.get("numCachedPartitions") != r["numCachedPartitions"]:
            cached_why = ("unpersisted" if not s else
                          "unroll reservations of concurrent tasks interleave differently "
                          "(records < 1 MiB make the outcome timing-dependent)")
        rows.append((sec, "numCachedPartitions", s.get("numCachedPartitions"),
                     r["numCachedPartitions"], cached_why))
        mem_why = ""
        if s and s.get("memoryUsed") != r["memoryUsed"]:
            per = ((s["memoryUsed"] - r["memoryUsed"]) // max(1, s["numCachedPartitions"])
                   if s.get("numCachedPartitions") == r["numCachedPartitions"] else None)
            batches = None
            if size_spec:
                st0 = next((x for x in spark["stages"] if x["kind"] == "cache"
                            and scenario["stages"][x["stageId"]]["name"] == r["name"]), {})
                rec = st0.get("recordsPerPartition")
                if rec and size_spec["record_bytes"] < replay.AUTO_BATCH_BYTES:
                    batches = max(1, size_spec["partition_bytes"] // replay.AUTO_BATCH_BYTES)
                elif rec:
                    batches = rec
            mem_why = ("SizeEstimator of pickled batches (byte[] headers, 8-byte alignment, "
                       "the array of references)" +
                       (f": {per:+d} B per partition" if per is not None else ""))
            if batches and batches > 400:
                mem_why = (f"SizeEstimator samples arrays of > 400 elements (~{batches} pickled "
                           "batches a partition): the cached size is an estimate" +
                           (f", {per:+d} B per partition" if per is not None else ""))

            if size_spec and replay.STORAGE_LEVELS[size_spec["storage_level"]][3] is False:
                mem_why = "serialized level: JavaSerializer stream of the pickled batches"
        if s and r.get("partitionsInMemory") is not None and s.get("numCachedPartitions"):
            if s.get("diskUsed") != r["diskUsed"] and size_spec and \
                    abs(s["memoryUsed"] - r["memoryUsed"]) > size_spec["partition_bytes"] // 2:
                mem_why = ("a different memory/disk split. Likely cause: a block read from disk "
                           "and re-cached in memory (BlockManager.maybeCacheDiskValuesInMemory) "
                           "is not reported to Spark's status store, while its later eviction "
                           "is, so the REST API under-counts memory; see storageAfter per stage "
                           "in replay.py --json")
        rows.append((sec, "memoryUsed", s.get("memoryUsed"), r["memoryUsed"], mem_why))
        disk_why = ""
        if s and s.get("diskUsed") != r["diskUsed"]:
            disk_why = "Spark writes blocks serialized (JavaSerializer of pickled batches)"
        rows.append((sec, "diskUsed", s.get("diskUsed"), r["diskUsed"], disk_why))

    ex_end = (spark.get("executors") or spark["executorsAtStart"])["executors"][0]
    other = ex_end.get("memoryUsed", 0) - sum(r.get("memoryUsed") or 0 for r in spark_rdds.values())
    rows.append(("storage", "other blocks in memory at the end (broadcasts)", other,
                 sw["storage"].get("other_blocks_memory_used"),
                 "Spark's task binaries (serialized closures) are broadcast blocks too, and a "
                 "broadcast keeps its value and serialized pieces until the context cleaner "
                 "drops them after a GC"))
    sf = sorted({f["error"] for f in spark["failures"]})
    wf = sorted({f["error"] for f in sw["failures"]})
    rows.append(("run", "failures", f"{len(spark['failures'])} {' '.join(sf)}".strip(),
                 f"{len(sw['failures'])} {' '.join(wf)}".strip(),
                 "UNSUPPORTED: a stage kind this spillway build does not run"
                 if "UNSUPPORTED" in wf else ""))
    rows.append(("run", "wall time (ms)", spark["wallTimeMs"], round(sw["wall_time_ms"], 1),
                 f"Spark's session start-up ({spark['startupMs']:.0f} ms) is not included"))
    peak = (spark.get("executors") or spark["executorsAtStart"])["executors"][0].get(
        "peakMemoryMetrics") or {}
    rows.append(("run", "peak on-heap execution memory", peak.get("OnHeapExecutionMemory"),
                 sw["memory"]["peak_on_heap_execution_bytes"],
                 "Spark samples executor metrics at heartbeats (10 s): short peaks are missed"))
    rows.append(("run", "peak on-heap storage memory", peak.get("OnHeapStorageMemory"),
                 sw["memory"]["peak_on_heap_storage_bytes"],
                 "Spark samples at heartbeats; spillway's peak includes unroll reservations"))
    return rows


def print_rows(rows, spark: dict) -> None:
    j = spark["jvm"]
    print(f"Spark {j['sparkVersion']} ({spark['master']}, Java {j['javaVersion']}, "
          f"{', '.join(j['garbageCollectors'])}) vs spillway")
    w = [max(len(str(r[k])) if k < 2 else len(_b(r[k])) for r in rows) for k in range(4)]
    head = ("section", "quantity", "Spark", "spillway")
    print(f"{head[0]:<{w[0]}}  {head[1]:<{w[1]}}  {head[2]:>{w[2]}}  {head[3]:>{w[3]}}  same  why")
    for sec, q, a, b, why in rows:
        same = "yes" if a == b else "no"
        if not why or a == b:
            why = ""
        print(f"{sec:<{w[0]}}  {q:<{w[1]}}  {_b(a):>{w[2]}}  {_b(b):>{w[3]}}  {same:<4}  {why}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("scenario")
    p.add_argument("--master")
    p.add_argument("--spillway", default=str(replay.REPO / "target" / "release" / "spillway"))
    p.add_argument("--no-system-memory", action="store_true",
                   help="do not pass Spark's Runtime.maxMemory to spillway as --system-memory")
    p.add_argument("--conf", action="append", metavar="KEY=VALUE")
    p.add_argument("--json", action="store_true",
                   help="print {spark, spillway, rows} as one JSON object")
    args = p.parse_args(argv)
    replay.install_interrupts()
    if not replay.check_env.report_problems():
        return 3
    if not Path(args.spillway).exists():
        print(f"error: no spillway binary at {args.spillway} (cargo build --release)",
              file=sys.stderr)
        return 2
    scenario = replay.load_scenario(args.scenario)
    conf = replay.parse_conf_args(args.conf)
    spark = replay.replay(scenario, args.master, conf)
    system_memory = None if args.no_system_memory else spark["jvm"]["runtimeMaxMemory"]
    with tempfile.TemporaryDirectory(prefix="spillway-compare-") as out:
        sw = run_spillway(args.spillway, scenario["path"], system_memory, conf, out)
    rows = build_rows(spark, sw, scenario)
    if args.json:
        print(json.dumps({"spark": spark, "spillway": sw,
                          "rows": [dict(zip(("section", "quantity", "spark", "spillway", "why"), r))
                                   for r in rows]}, indent=2))
    else:
        print_rows(rows, spark)
    return 0


if __name__ == "__main__":
    sys.exit(main())

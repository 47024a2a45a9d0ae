#!/usr/bin/env python3
"""Run a scenario on spillway and on real Spark, and print what each measured side by side.

    python3 scripts/spark/compare.py SCENARIO [--master MASTER] [--spillway PATH] [--json]
                                     [--no-system-memory] [--conf K=V]... [--out FILE]

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

Per shuffle (a ``shuffle_map`` stage and its ``shuffle_reduce``, replayed on Spark's RDD API with
spillway's records, see replay.py) the table puts the writer, the serializer, the records and
bytes written and read, each side's spills and peak execution memory side by side, and marks the
**checks**: records written (in total and per map task) and read (in total and per reduce
partition, except for sortByKey, whose RangePartitioner samples its bounds) must be equal, the
writer and serializer the same, and whether each side spilled must agree (``same`` says
``yes (must)``, or ``no (MUST)`` when a check fails; ``--json`` lists them as ``checks``). Bytes
differ for known reasons, which the ``why`` column states: Kryo's class ids, varint key and
length (or Java serialization's stream) against spillway's 4-byte length before each record; the
compression stream's block framing against spillway's block headers and segment trailers; a
combined record of (key, sum) against spillway's (key, count, sum).

Spark runs first, then spillway, one after the other, so neither disturbs the other's timing.
Exit code 0 when both ran (differences are results, not errors, failed checks included), 2 on
bad input (a scenario key, ``--out``), 3 when Python, PySpark or Java is missing or too old
(``check_env.py`` says which). ``--out FILE`` also writes the JSON of ``--json`` there, with the
exact command, the date and the machine (``scripts/spark/results/`` keeps recorded runs).
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
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


def _b(n, quantity: str = "") -> str:
    if "record" in quantity.lower() and isinstance(n, int):  # a count, not bytes
        return str(n)
    if n is None:
        return "-"
    if isinstance(n, list):  # per task: the first few, the count and the sum
        head = ",".join(str(x) for x in n[:4])
        return f"[{head}{',..' if len(n) > 4 else ''}] ({len(n)}, sum {sum(x or 0 for x in n)})"
    if isinstance(n, str):
        return n
    if isinstance(n, float):
        return f"{n:.0f}"
    if abs(n) >= MIB:
        return f"{n} ({n / MIB:.1f} MiB)"
    return str(n)


def _short(cls) -> str | None:
    return cls.rsplit(".", 1)[-1] if isinstance(cls, str) else cls


def _spilled(stage: dict) -> bool | None:
    if not stage:
        return None
    return bool(stage.get("memoryBytesSpilled") or stage.get("diskBytesSpilled"))


def _yn(v) -> str | None:
    return None if v is None else ("yes" if v else "no")


def _by_index(tasks: list[dict], stage_id: int, field: str) -> list:
    """A spillway stage's per-task field, by task index (the reduce partition or map id)."""
    out: dict[int, int] = {}
    for t in tasks:
        if t.get("stageId") == stage_id and t.get("status") == "SUCCESS" and field in t:
            out[int(t["index"])] = t[field]
    return [out.get(i) for i in range(max(out, default=-1) + 1)]


def _matching(a: list | None, b: list | None) -> str:
    if a is None or b is None:
        return ""
    n = max(len(a), len(b))
    same = sum(1 for i in range(n) if i < len(a) and i < len(b) and a[i] == b[i])
    return f"{same} of {n} equal"


def bytes_why(sh: dict, spec: dict, sw_map: dict) -> str:
    """Why the shuffle's bytes differ: each side's encoding of a record and its framing."""
    op, values = spec["operation"], spec["values"]
    ser = _short(sh.get("serializer"))
    if op == "reduceByKey":
        rec = ("combined records: Spark (Long key, Long sum)" +
               (", each a Kryo class id + zigzag varint" if ser == "KryoSerializer" else
                " as a JavaSerializer object stream") +
               "; spillway (key, count, sum), 24 B after a 4-byte length")
    elif ser == "KryoSerializer":
        rec = ("Spark's Kryo writes per record a class id and the Long key as a zigzag varint, "
               "then a class id and a varint length before the array (value + payload, "
               f"{spec['record_bytes'] - 8} B); spillway a 4-byte length before each "
               f"{spec['record_bytes']}-byte record")
    else:
        rec = ("Spark's JavaSerializer object stream (class descriptors once, then the key "
               "and the case class per record, reset every 100 objects); spillway a 4-byte "
               f"length before each {spec['record_bytes']}-byte record")
    codec = (sw_map or {}).get("shuffleCompressionCodec", "lz4")
    if codec is None:
        frame = "no compression on either side; spillway adds 16 B per block, 28 B per segment"
    else:
        frame = (f"{codec}: Spark's compression stream frames each block of a partition segment "
                 "(lz4: 21-byte block headers, 32 KiB blocks); spillway's blocks carry a "
                 "16-byte header (lengths, count, CRC) and each segment a 28-byte trailer")
    out = f"{rec}; {frame}"
    if op == "sortByKey":
        out += ("; RangePartitioner's sampled bounds put the records in other partitions than "
                "spillway's equal key ranges")
    return out


def shuffle_rows(spark: dict, sw: dict, scenario: dict) -> list[tuple]:
    """Per shuffle, Spark's and spillway's numbers side by side. A 6th element marks the
    checks: "equal" (records written and read, per map task and reduce partition where both
    partition alike, the writer and serializer) or "agree" (whether a side spilled)."""
    rows = []
    sw_stages = {s["stageId"]: s for s in sw["stages"]}
    tasks = sw.get("tasks", [])
    for sh in spark.get("shuffles", []):
        m, r = sh.get("map") or {}, sh.get("reduce") or {}
        mi, ri = m.get("stageId"), r.get("stageId")
        if mi is None:
            continue
        spec = scenario["stages"][mi]
        wm = sw_stages.get(mi, {})
        wr = sw_stages.get(ri, {}) if ri is not None else {}
        sec = f"shuffle {sh['shuffle']} {spec['operation']}"
        rows.append((sec, "writer", sh.get("writer"), wm.get("shuffleWriter"),
                     "Spark's handle from SortShuffleManager.registerShuffle", "equal"))
        rows.append((sec, "serializer", _short(sh.get("serializer")),
                     wm.get("shuffleSerializer"), "", "equal"))
        if spec["operation"] == "sortByKey":
            rows.append((sec, "partitioner", "RangePartitioner (sampled bounds)",
                         "equal key ranges of 0..distinct_keys",
                         f"Spark's bounds: {sh.get('rangeBounds')}"))
        rows.append((sec, "map: shuffleWriteRecords", m.get("shuffleWriteRecords"),
                     wm.get("shuffleWriteRecords"), "", "equal"))
        sw_written = _by_index(tasks, mi, "shuffleWriteRecords") if wm else None
        rows.append((sec, "map: records written per map task", m.get("recordsWrittenByMapTask"),
                     sw_written, _matching(m.get("recordsWrittenByMapTask"), sw_written),
                     "equal" if sw_written else None))
        why = bytes_why(sh, spec, wm)
        rows.append((sec, "map: shuffleWriteBytes", m.get("shuffleWriteBytes"),
                     wm.get("shuffleWriteBytes"), why))
        rows.append((sec, "map: spilled", _yn(_spilled(m)), _yn(_spilled(wm)), "", "agree"))
        if sh.get("writer") == "UnsafeShuffleWriter":
            map_mem = "Spark's sorter holds serialized records in pages (a length before each)"
            map_spill = (f"{map_mem}; memoryBytesSpilled counts the freed pages, "
                         "diskBytesSpilled the compressed spill files")
        else:
            map_mem = ("Spark's map or buffer of JVM objects is sized by SizeEstimator (boxed "
                       "keys, tuples, arrays), spillway's by its records' bytes")
            map_spill = (f"{map_mem}; memoryBytesSpilled counts that estimate, "
                         "diskBytesSpilled the serialized, compressed spill files")
        rows.append((sec, "map: memoryBytesSpilled", m.get("memoryBytesSpilled"),
                     wm.get("memoryBytesSpilled"), map_spill))
        rows.append((sec, "map: diskBytesSpilled", m.get("diskBytesSpilled"),
                     wm.get("diskBytesSpilled"), map_spill))
        rows.append((sec, "map: peakExecutionMemory", m.get("peakExecutionMemory"),
                     wm.get("peakExecutionMemory"), f"summed over tasks; {map_mem}"))
        if ri is None:
            continue
        rows.append((sec, "reduce: shuffleReadRecords", r.get("shuffleReadRecords"),
                     wr.get("shuffleReadRecords"), "", "equal"))
        sw_read = _by_index(tasks, ri, "shuffleReadRecords") if wr else None
        ranged = spec["operation"] == "sortByKey"
        rows.append((sec, "reduce: records read per reduce partition",
                     r.get("recordsReadByPartition"), sw_read,
                     _matching(r.get("recordsReadByPartition"), sw_read) +
                     ("; Spark's RangePartitioner samples its bounds, spillway's are equal key "
                      "ranges" if ranged else ""), None if ranged or not sw_read else "equal"))
        rows.append((sec, "reduce: shuffleReadBytes", r.get("shuffleReadBytes"),
                     wr.get("shuffleReadBytes"), "what the map side wrote: see above"))
        rows.append((sec, "reduce: shuffleRemoteBytesRead", r.get("shuffleRemoteBytesRead"),
                     wr.get("shuffleRemoteBytesRead"),
                     "Spark in local mode has one executor (every block local); spillway places "
                     f"map output m on executor m mod executors ({spec['executors']})"))
        rows.append((sec, "reduce: spilled", _yn(_spilled(r)), _yn(_spilled(wr)), "", "agree"))
        red_mem = {"reduceByKey": "Spark's ExternalAppendOnlyMap of (Long, Long) objects, "
                                  "sized by SizeEstimator; spillway's (count, sum) combiners",
                   "groupByKey": "Spark's ExternalAppendOnlyMap of CompactBuffers, sized by "
                                 "SizeEstimator; spillway sorts by key, then holds one group "
                                 "in user memory",
                   "sortByKey": "Spark's ExternalSorter buffer of JVM objects, sized by "
                                "SizeEstimator; spillway's external sorter of the records' "
                                "bytes"}.get(spec["operation"], "records stream through")
        red_spill = (f"{red_mem}; memoryBytesSpilled counts the in-memory size, "
                     "diskBytesSpilled the serialized, compressed spill files")
        rows.append((sec, "reduce: memoryBytesSpilled", r.get("memoryBytesSpilled"),
                     wr.get("memoryBytesSpilled"), red_spill))
        rows.append((sec, "reduce: diskBytesSpilled", r.get("diskBytesSpilled"),
                     wr.get("diskBytesSpilled"), red_spill))
        rows.append((sec, "reduce: peakExecutionMemory", r.get("peakExecutionMemory"),
                     wr.get("peakExecutionMemory"), f"summed over tasks; {red_mem}"))
    return rows


def build_rows(spark: dict, sw: dict, scenario: dict) -> list[tuple]:
    """(section, quantity, spark value, spillway value, why they differ[, check])."""
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
                "broadcast": "Spark runs the join's tasks; spillway reads the broadcast in one task",
                "sort": "Spark's sortWithinPartitions: one task per partition",
                "shuffle_map": "Spark: sortByKey's RangePartitioner samples the input in a "
                               "job of its own",
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
        shuffle_kind = kind in ("shuffle_map", "shuffle_reduce")
        rows.append((sec, "executorRunTime (ms)", st.get("executorRunTime"),
                     ws.get("executorRunTime"),
                     "JVM warm-up (JIT), Python workers and pickling, serialization; the "
                     "machine's load" if kind in ("cache", "scan", "sort", "aggregate") else
                     "JVM warm-up (JIT), a boxed key, tuple and array per record, Kryo or Java "
                     "serialization; the machine's load" if shuffle_kind else ""))
        rows.append((sec, "wall time (ms)", st.get("wallTimeMs"), ws.get("wallTimeMs"),
                     "Spark: job scheduling, JIT warm-up, objects per record" if shuffle_kind
                     else "Spark: job scheduling, Python workers (pickling), JIT warm-up"))
        if kind == "cache":
            rows.append((sec, "JVM size estimate per partition (planned)",
                         st.get("estimatedPartitionBytes"), spec["partition_bytes"],
                         "pickled batches: byte[] headers and 8-byte alignment; "
                         "payloads shrunk to match" if st.get("estimatedPartitionBytes")
                         != spec["partition_bytes"] else ""))

    rows += shuffle_rows(spark, sw, scenario)

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


def checks(rows) -> list[dict]:
    """The rows that must match: records equal, spilled-or-not agreeing, same writer."""
    return [{"section": r[0], "quantity": r[1], "spark": r[2], "spillway": r[3], "check": r[5],
             "ok": r[2] == r[3] and r[2] is not None}
            for r in rows if len(r) > 5 and r[5]]


def print_rows(rows, spark: dict) -> None:
    j = spark["jvm"]
    print(f"Spark {j['sparkVersion']} ({spark['master']}, Java {j['javaVersion']}, "
          f"{', '.join(j['garbageCollectors'])}) vs spillway")
    w = [max(len(str(r[k])) if k < 2 else len(_b(r[k], r[1])) for r in rows) for k in range(4)]
    head = ("section", "quantity", "Spark", "spillway")
    print(f"{head[0]:<{w[0]}}  {head[1]:<{w[1]}}  {head[2]:>{w[2]}}  {head[3]:>{w[3]}}  "
          f"same     why")
    for row in rows:
        sec, q, a, b, why = row[:5]
        check = row[5] if len(row) > 5 else None
        same = "yes" if a == b else "no"
        if check:  # must be equal / must agree: say so, and loudly when it is not
            same = f"{same} ({'must' if a == b else 'MUST'})"
        if not why or a == b:
            why = ""
        print(f"{sec:<{w[0]}}  {q:<{w[1]}}  {_b(a, q):>{w[2]}}  {_b(b, q):>{w[3]}}  {same:<7}  "
              f"{why}")
    failed = [c for c in checks(rows) if not c["ok"]]
    if any(len(r) > 5 and r[5] for r in rows):
        print(f"shuffle checks: {len(checks(rows)) - len(failed)} of {len(checks(rows))} hold"
              + "".join(f"; NOT {c['section']}: {c['quantity']}" for c in failed))


def recorded_json(doc: dict) -> str:
    """A recorded run's JSON: indented, lists of numbers on one line (a 400-partition shuffle
    lists 400 counts several times), paths in the checkout relative to it."""
    text = json.dumps(doc, indent=2).replace(str(replay.REPO) + "/", "")
    return re.sub(r"\[(\s*-?[0-9.]+(?:,\s*-?[0-9.]+)*\s*)\]",
                  lambda m: "[" + re.sub(r"\s+", " ", m.group(1)).strip() + "]", text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("scenario")
    p.add_argument("--master")
    p.add_argument("--spillway", default=str(replay.REPO / "target" / "release" / "spillway"))
    p.add_argument("--no-system-memory", action="store_true",
                   help="do not pass Spark's Runtime.maxMemory to spillway as --system-memory")
    p.add_argument("--conf", action="append", metavar="KEY=VALUE")
    p.add_argument("--json", action="store_true",
                   help="print {spark, spillway, rows, checks} as one JSON object")
    p.add_argument("--out", help="also write that JSON object here, with the command, date "
                                 "and machine")
    args = p.parse_args(argv)
    if args.out is not None and (not args.out or not Path(args.out).parent.is_dir()):
        print(f"error: --out must be a file in an existing directory, got '{args.out}'",
              file=sys.stderr)
        return 2
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
    doc = {"spark": spark, "spillway": sw,
           "rows": [dict(zip(("section", "quantity", "spark", "spillway", "why", "check"), r))
                    for r in rows],
           "checks": checks(rows)}
    if args.out:
        recorded = {"command": " ".join([sys.executable] + sys.argv),
                    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "machine": replay.machine(), **doc}
        Path(args.out).write_text(recorded_json(recorded) + "\n")
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print_rows(rows, spark)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Check spillway's layout against the storage memory real Spark reports, to the byte.

    python3 scripts/spark/layouts.py [--spillway PATH] [--json] [--settings FILE.json]

For each setting (a dict of Spark properties; six built-in ones below, or a JSON list in
``--settings``) a local-mode SparkContext is started, and three numbers are read from it:

- ``Runtime.getRuntime.maxMemory`` of the driver JVM (where the executor lives in local mode; its
  heap is ``spark.driver.memory``, set here from ``spark.executor.memory``), the ``S`` Spark sizes
  everything from (docs/spark-model.md §1.2, §15);
- the executor's ``maxMemory`` from the REST API (``/api/v1/applications/<id>/allexecutors``), the
  UI's "Storage Memory" total, which Spark registers as on-heap unified + off-heap size (§1.10);
- ``memoryMetrics.totalOnHeapStorageMemory`` and ``totalOffHeapStorageMemory``.

Then ``spillway layout --json --system-memory S --conf ...`` is run with the same properties and
``unified + off_heap`` is compared with ``maxMemory`` (and each half with its metric). Settings
with the same heap and JVM options share one driver JVM (contexts are started one after the
other; the properties a previous context set as JVM system properties are cleared), so the six
built-in settings need two JVM launches.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import replay  # noqa: E402

SETTINGS = [
    {"spark.executor.memory": "1g"},
    {"spark.executor.memory": "1g", "spark.memory.fraction": "0.75",
     "spark.memory.storageFraction": "0.3"},
    {"spark.executor.memory": "1g", "spark.memory.offHeap.enabled": "true",
     "spark.memory.offHeap.size": "256m"},
    # Off-heap disabled but sized: Spark still registers the off-heap storage pool (docs/spark-model.md §1.8).
    {"spark.executor.memory": "1g", "spark.memory.offHeap.size": "128m"},
    {"spark.executor.memory": "1g", "spark.memory.fraction": "0.5",
     "spark.memory.offHeap.enabled": "true", "spark.memory.offHeap.size": "300000000"},
    # The Serial collector: Runtime.maxMemory < -Xmx (one survivor space less), docs/spark-model.md §15.1.
    {"spark.executor.memory": "1536m", "spark.driver.extraJavaOptions": "-XX:+UseSerialGC"},
]

# Properties spillway's layout takes (the driver's JVM options are the replay's business).
SPILLWAY_PREFIXES = ("spark.executor.", "spark.memory.", "spark.testing")


def spillway_layout(binary: str, setting: dict, system_memory: int) -> dict:
    cmd = [binary, "layout", "--json", "--system-memory", str(system_memory)]
    for k, v in setting.items():
        if k.startswith(SPILLWAY_PREFIXES):
            cmd += ["--conf", f"{k}={v}"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def measure(settings: list[dict]) -> list[dict]:
    """Starts a context per setting (one JVM per heap/JVM-options group) and reads Spark's numbers."""
    from pyspark import SparkContext

    def group_key(s):
        return (s.get("spark.executor.memory", "1g"), s.get("spark.driver.extraJavaOptions", ""))

    order = sorted(range(len(settings)), key=lambda i: list(map(group_key, settings)).index(
        group_key(settings[i])))
    results = [None] * len(settings)
    current_key, sc, previous = None, None, {}
    try:
        for i in order:
            setting = settings[i]
            master, conf = replay.session_conf(
                dict(setting, **{"spark.executor.cores": "1"}), None)
            conf["spark.app.name"] = f"spillway-layout-{i}"
            if sc is not None and group_key(setting) != current_key:
                replay.stop_jvm(sc)
                sc, previous = None, {}
            if sc is not None:
                sc.stop()
                system = SparkContext._jvm.java.lang.System
                for k in previous:
                    if k not in conf:
                        system.clearProperty(k)
            t = time.perf_counter()
            sc, _spark = replay.start_context(master, conf)
            # A property of the previous context that this one still sees would falsify the row.
            leaked = {k: sc.getConf().get(k) for k in previous
                      if k not in conf and sc.getConf().contains(k)}
            current_key, previous = group_key(setting), conf
            rest = replay.Rest(sc)
            ex = replay.executor_memory(rest)["executors"][0]
            jvm = replay.jvm_info(sc)
            results[i] = {
                "setting": setting,
                "runtimeMaxMemory": jvm["runtimeMaxMemory"],
                "xmx": jvm["xmx"],
                "garbageCollectors": jvm["garbageCollectors"],
                "sparkConfSeen": {k: sc.getConf().get(k) for k in setting},
                "maxMemory": ex["maxMemory"],
                "totalOnHeapStorageMemory": ex["memoryMetrics"]["totalOnHeapStorageMemory"],
                "totalOffHeapStorageMemory": ex["memoryMetrics"]["totalOffHeapStorageMemory"],
                "leakedProperties": leaked,
                "contextStartMs": round((time.perf_counter() - t) * 1000, 1),
            }
    finally:
        # Also on Ctrl-C / SIGTERM / SIGHUP (replay.install_interrupts): no JVM is left.
        if sc is not None:
            replay.stop_jvm(sc)
    return results


def compare(binary: str, settings: list[dict]) -> list[dict]:
    rows = measure(settings)
    for r in rows:
        lay = spillway_layout(binary, r["setting"], r["runtimeMaxMemory"])
        r["spillway"] = {k: lay[k] for k in ("system_memory", "unified", "off_heap",
                                             "off_heap_enabled", "storage_region")}
        r["spillwayStorageMemory"] = lay["unified"] + lay["off_heap"]
        r["match"] = (not r["leakedProperties"]
                      and r["spillwayStorageMemory"] == r["maxMemory"]
                      and lay["unified"] == r["totalOnHeapStorageMemory"]
                      and lay["off_heap"] == r["totalOffHeapStorageMemory"])
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--spillway", default=str(replay.REPO / "target" / "release" / "spillway"))
    p.add_argument("--settings", help="JSON file: a list of {property: value} objects")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    replay.install_interrupts()
    if not replay.check_env.report_problems():
        return 3
    settings = json.loads(Path(args.settings).read_text()) if args.settings else SETTINGS
    rows = compare(args.spillway, settings)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'setting':<70} {'Runtime.maxMemory':>17} {'Spark maxMemory':>15} "
              f"{'spillway M+O':>13}  match")
        for r in rows:
            desc = " ".join(f"{k.replace('spark.', '')}={v}" for k, v in r["setting"].items())
            print(f"{desc:<70} {r['runtimeMaxMemory']:>17} {r['maxMemory']:>15} "
                  f"{r['spillwayStorageMemory']:>13}  {'yes' if r['match'] else 'NO'}")
    return 0 if all(r["match"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

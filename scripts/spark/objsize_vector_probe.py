#!/usr/bin/env python3
"""Ask real Spark what the unroll of a deserialized block sees: SizeTrackingVector.estimateSize.

    scripts/spark/.venv/bin/python scripts/spark/objsize_vector_probe.py [--out FILE] [--n N]

MemoryStore.putIteratorAsValues keeps values in a ``SizeTrackingVector`` and checks its
``estimateSize()`` every 16 elements against the unroll threshold (docs/spark-model.md §6.5b,
§21.5). This probe (``local[1]``, 1g, through Py4J) appends N (default 1,200) records of each
record type to a fresh vector — ``scala.Tuple2$mcJJ$sp`` pairs, 100-byte ``byte[]``s and Latin-1
``String``s of 100 characters — and records ``estimateSize()`` after every append, plus the
estimate of the empty vector. spillway's emulation (``src/storage/values.rs``) is tested against
the recorded series (``tests/data/size_tracking_vector.json``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--n", type=int, default=1200)
    args = ap.parse_args()
    from pyspark import SparkConf, SparkContext
    sc = SparkContext(conf=SparkConf().setMaster("local[1]").setAppName("objsize-vector-probe")
                      .set("spark.driver.memory", "1g").set("spark.ui.enabled", "false"))
    try:
        jvm = sc._jvm
        out = {"date": datetime.date.today().isoformat(), "command": " ".join(sys.argv),
               "host": platform.node(), "n": args.n, "series": {}}
        for kind, cls in (("long_pair", "scala.Tuple2$mcJJ$sp"), ("bytes", "[B"),
                          ("string", "java.lang.String")):
            tag = jvm.scala.reflect.ClassTag.apply(jvm.java.lang.Class.forName(cls))
            vec = jvm.org.apache.spark.util.collection.SizeTrackingVector(tag)
            series = [vec.estimateSize()]
            add = getattr(vec, "$plus$eq")
            for i in range(args.n):
                if kind == "long_pair":
                    rec = getattr(jvm.scala, "Tuple2$mcJJ$sp")(i * 3 + (1 << 33), i + (1 << 40))
                elif kind == "bytes":
                    rec = bytearray((i + j) % 251 for j in range(100))
                else:
                    rec = ("t%099d" % i)[:100]
                add(rec)
                series.append(vec.estimateSize())
            out["series"][kind] = series
    finally:
        sc.stop()
    text = json.dumps(out)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

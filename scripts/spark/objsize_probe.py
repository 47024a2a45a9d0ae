#!/usr/bin/env python3
"""Ask real Spark how big cached records are: SizeEstimator, the serializers, spark.rdd.compress.

    scripts/spark/.venv/bin/python scripts/spark/objsize_probe.py [--out FILE]

Groundwork for the cache stage's `record_type` (docs/spark-model.md §21.7). One driver JVM
(`local[1]`, 1g), everything through the Py4J gateway, no compiled closure:

- ``SizeEstimator.estimate`` of arrays of N records (N = 1, 10, 400, 401, 1000, 1050) of each
  type: ``scala.Tuple2$mcJJ$sp`` (the ``(Long, Long)`` a Scala call site with known types
  builds), a generic ``scala.Tuple2`` of two boxed ``java.lang.Long``s, ``byte[]`` of 100 bytes,
  Latin-1 ``String``s of 20 and 100 characters. Arrays are ``Object[]``/typed arrays as
  ``SizeTrackingVector.toArray`` builds them.
- The bytes of ``SerializerManager.dataSerializeStream(rdd_0_0, out, values)`` for the same
  records with ``JavaSerializer`` and ``KryoSerializer``, ``spark.rdd.compress`` true and false
  (the serializer Spark picks for the class tag: Kryo for ``byte[]`` and ``String`` whatever
  ``spark.serializer`` says).
- The ``serialVersionUID`` and Kryo registration ids the encodings carry.
- A real cache: 20,000 ``Tuple2$mcJJ$sp`` records parallelized in one partition, persisted at
  MEMORY_ONLY and at MEMORY_ONLY_SER, their ``memSize`` from ``getRDDStorageInfo``.

Prints one JSON object (and writes it to ``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--session", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--estimate", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    from pyspark import SparkConf, SparkContext

    result = {"date": datetime.date.today().isoformat(), "command": " ".join(sys.argv),
              "host": platform.node()}
    sessions = {}
    if args.session:
        serializer, compress = args.session
        sc = SparkContext(conf=(SparkConf().setMaster("local[1]").setAppName("objsize-probe")
                                .set("spark.driver.memory", "1g")
                                .set("spark.ui.enabled", "false")
                                .set("spark.serializer", serializer)
                                .set("spark.rdd.compress", compress)))
        try:
            print(json.dumps(probe(sc, estimate=args.estimate)))
        finally:
            sc.stop()
        return 0
    # One driver JVM per session: the serializer and spark.rdd.compress are read at start.
    first = True
    for serializer in ("org.apache.spark.serializer.JavaSerializer",
                       "org.apache.spark.serializer.KryoSerializer"):
        for compress in ("true", "false"):
            cmd = [sys.executable, __file__, "--session", serializer, compress]
            if first:
                cmd.append("--estimate")
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            key = f"{serializer.rsplit('.', 1)[1]} spark.rdd.compress={compress}"
            sessions[key] = json.loads(out.strip().splitlines()[-1])
            first = False
    result["sessions"] = sessions
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


def records(jvm, gw, kind, n):
    """A list of n records of one kind (JVM objects)."""
    out = []
    for i in range(n):
        if kind == "long_pair":
            out.append(getattr(jvm.scala, "Tuple2$mcJJ$sp")(i * 3 + (1 << 33), i + (1 << 40)))
        elif kind == "boxed_pair":
            out.append(jvm.scala.Tuple2(jvm.java.lang.Long.valueOf(i * 3 + (1 << 33)),
                                        jvm.java.lang.Long.valueOf(i + (1 << 40))))
        elif kind == "bytes100":
            out.append(bytearray((i + j) % 251 for j in range(100)))
        elif kind == "string20":
            out.append(("s%019d" % i)[:20])
        elif kind == "string100":
            out.append(("t%099d" % i)[:100])
    return out


def element_class(jvm, kind):
    cls = jvm.java.lang.Class
    return {
        "long_pair": cls.forName("scala.Tuple2$mcJJ$sp"),
        "boxed_pair": cls.forName("scala.Tuple2"),
        "bytes100": cls.forName("[B"),
        "string20": cls.forName("java.lang.String"),
        "string100": cls.forName("java.lang.String"),
    }[kind]


def probe(sc, estimate):
    jvm, gw = sc._jvm, sc._gateway
    out = {}
    kinds = ["long_pair", "boxed_pair", "bytes100", "string20", "string100"]
    # SparkEnv's own SerializerManager is built the same way from the same conf (Py4J cannot
    # reflect on SparkEnv: one of its methods names a class absent from the pyspark jars).
    conf = sc._jsc.sc().conf()
    if conf.get("spark.serializer").endswith("KryoSerializer"):
        default_ser = jvm.org.apache.spark.serializer.KryoSerializer(conf)
    else:
        default_ser = jvm.org.apache.spark.serializer.JavaSerializer(conf)
    sm = jvm.org.apache.spark.serializer.SerializerManager(default_ser, conf)
    block = jvm.org.apache.spark.storage.RDDBlockId(0, 0)
    for kind in kinds:
        k = {}
        ecls = element_class(jvm, kind)
        tag = jvm.scala.reflect.ClassTag.apply(ecls)
        for n in (1, 10, 400, 401, 1000, 1050):
            recs = records(jvm, gw, kind, n)
            # SizeTrackingVector.toArray: a reference array either way (its element class
            # does not change the array's size).
            arr = gw.new_array(jvm.java.lang.Object, n)
            for i, r in enumerate(recs):
                arr[i] = r
            row = {}
            if estimate:
                row["sizeEstimate"] = jvm.org.apache.spark.util.SizeEstimator.estimate(arr)
            lst = jvm.java.util.ArrayList()
            for r in recs:
                lst.add(r)
            it = jvm.scala.jdk.javaapi.CollectionConverters.asScala(lst.iterator())
            bos = jvm.java.io.ByteArrayOutputStream()
            sm.dataSerializeStream(block, bos, it, tag)
            row["serializedBytes"] = bos.size()
            k[str(n)] = row
        out[kind] = k
    if estimate:
        one = getattr(jvm.scala, "Tuple2$mcJJ$sp")(1 << 33, 1 << 34)
        out["sizes"] = {
            "Tuple2$mcJJ$sp": jvm.org.apache.spark.util.SizeEstimator.estimate(one),
            "serialVersionUID Tuple2$mcJJ$sp": jvm.java.io.ObjectStreamClass.lookup(
                jvm.java.lang.Class.forName("scala.Tuple2$mcJJ$sp")).getSerialVersionUID(),
            "serialVersionUID Tuple2": jvm.java.io.ObjectStreamClass.lookup(
                jvm.java.lang.Class.forName("scala.Tuple2")).getSerialVersionUID(),
        }
    kryo = jvm.org.apache.spark.serializer.KryoSerializer(sc._jsc.sc().conf()).newKryo()
    ids = {}
    for name in ("scala.Tuple2$mcJJ$sp", "scala.Tuple2", "[B", "java.lang.String", "java.lang.Long"):
        reg = kryo.getRegistration(jvm.java.lang.Class.forName(name))
        ids[name] = [reg.getId(), reg.getSerializer().getClass().getName()]
    out["kryoRegistrations"] = ids
    # A real cache of 20,000 (Long, Long) pairs in one partition.
    n = 20000
    lst = jvm.java.util.ArrayList()
    for r in records(jvm, gw, "long_pair", n):
        lst.add(r)
    levels = jvm.org.apache.spark.storage.StorageLevel
    cached = {}
    for name in ("MEMORY_ONLY", "MEMORY_ONLY_SER"):
        rdd = sc._jsc.parallelize(lst, 1)
        rdd.persist(getattr(levels, name)())
        rdd.count()
        infos = sc._jsc.sc().getRDDStorageInfo()
        for info in infos:
            if info.id() == rdd.id():
                cached[name] = {"memSize": info.memSize(), "numCachedPartitions":
                                info.numCachedPartitions()}
        rdd.unpersist(True)
    out["cache20000LongPairs"] = cached
    return out


if __name__ == "__main__":
    sys.exit(main())

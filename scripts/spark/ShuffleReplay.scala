// The shuffle stages of a spillway scenario on Spark's RDD API, in the driver JVM.
//
// replay.py compiles this file with the Scala compiler PySpark ships (scala-compiler in
// pyspark/jars), puts the jar on the driver's class path and calls it through Py4J: PySpark's own
// RDD API would shuffle pickled batches, not records, and a reduceByKey needs a compiled
// closure. The records are spillway's (src/shuffle/mod.rs: ShuffleSpec::map_seed, key_value,
// write_record; src/data.rs: splitmix64, stream_seed), ported bit for bit: keys, values, hot key
// and payloads are the same bytes. See replay.py's module doc, "Shuffle stages".
package spillway.replay

import java.lang.{Long => JLong}

import scala.reflect.ClassTag

import org.apache.spark.{HashPartitioner, ShuffleDependency, SparkContext}
import org.apache.spark.rdd.RDD

/** spillway's record generator. */
object Records {
  val ValueRange = 1000L

  /** Words of the compressible part of a payload (src/shuffle/mod.rs VOCABULARY). */
  val Vocabulary: Array[Array[Byte]] = Array("spark ", "executor ", "memory ", "shuffle ",
    "spill ", "storage ", "the ", "of ", "block ", "task ", "partition ", "record ", "a ",
    "key ", "value ", "and ").map(_.getBytes("US-ASCII"))

  /** splitmix64 over a one-element state. */
  @inline def splitmix64(state: Array[Long]): Long = {
    state(0) += 0x9e3779b97f4a7c15L
    var z = state(0)
    z = (z ^ (z >>> 30)) * 0xbf58476d1ce4e5b9L
    z = (z ^ (z >>> 27)) * 0x94d049bb133111ebL
    z ^ (z >>> 31)
  }

  def streamSeed(seed: Long, a: Long, b: Long): Long = {
    val s = Array(seed ^ (a * 0x9e3779b97f4a7c15L) ^ JLong.rotateLeft(b, 32))
    splitmix64(s)
  }

  def mapSeed(seed: Long, shuffleId: Int, map: Int): Long =
    streamSeed(seed, (0x5348L << 32) | (shuffleId.toLong & 0xffffffffL), map.toLong)
}

/** One shuffle_map stage's keys (the scenario's, defaults filled in by replay.py). */
case class Spec(seed: Long, shuffleId: Int, mapTasks: Int, reducePartitions: Int,
                recordsPerTask: Long, recordBytes: Int, distinctKeys: Long,
                hotKeyPercent: Int, compressiblePercent: Int, operation: String,
                values: String) {

  /** ShuffleSpec::key_value. */
  @inline def keyValue(mapSeed: Long, index: Long, out: Array[Long]): Unit = {
    val state = Array(mapSeed ^ (index * 0xd6e8feb86659fd93L))
    val pick = Records.splitmix64(state)
    val key =
      if (JLong.remainderUnsigned(pick, 100L) < hotKeyPercent) 0L
      else JLong.remainderUnsigned(Records.splitmix64(state), distinctKeys)
    out(0) = key
    out(1) = JLong.remainderUnsigned(pick >>> 32, Records.ValueRange)
  }

  /** ShuffleSpec::write_record without its 8-byte key: value (little-endian) and payload. */
  def valueBytes(mapSeed: Long, index: Long, value: Long): Array[Byte] = {
    val out = new Array[Byte](recordBytes - 8)
    putLong(out, 0, value)
    val payload = out.length - 8
    val text = payload * compressiblePercent / 100
    val state = Array(mapSeed ^ (index * 0x9e3779b97f4a7c15L) ^ 0xa5a5L)
    var at = 0
    var bits = 0L
    var left = 0
    while (at < text) {
      if (left == 0) {
        bits = Records.splitmix64(state)
        left = 16
      }
      val w = Records.Vocabulary((bits & 15).toInt)
      bits >>>= 4
      left -= 1
      val n = math.min(w.length, text - at)
      System.arraycopy(w, 0, out, 8 + at, n)
      at += n
    }
    var p = 8 + text
    while (p < out.length) {
      val v = Records.splitmix64(state)
      var b = 0
      while (b < 8 && p < out.length) {
        out(p) = (v >>> (8 * b)).toByte
        b += 1
        p += 1
      }
    }
    out
  }

  private def putLong(a: Array[Byte], at: Int, v: Long): Unit = {
    var i = 0
    while (i < 8) {
      a(at + i) = (v >>> (8 * i)).toByte
      i += 1
    }
  }

  /** Map task `map`'s records, generated lazily (spillway's map task generates its own). */
  def records[T](map: Int, make: (Long, Long, Long, Long) => T): Iterator[T] = {
    val seed = Records.mapSeed(this.seed, shuffleId, map)
    val kv = new Array[Long](2)
    new Iterator[T] {
      private var i = 0L
      def hasNext: Boolean = i < recordsPerTask
      def next(): T = {
        keyValue(seed, i, kv)
        val r = make(seed, i, kv(0), kv(1))
        i += 1
        r
      }
    }
  }
}

/** values = "object": a user class, shuffled with spark.serializer (Java unless Kryo). */
case class ObjectValue(value: Long, payload: Array[Byte])

/** values = "object" under reduceByKey: the value a user class too. */
case class ObjectSum(value: Long)

/** A shuffle whose map stage can run (`runMap`), then its reduce side (`runReduce`). */
class PreparedShuffle(val spec: Spec, val shuffled: RDD[_ <: Product2[Long, _]],
                      reduceAction: () => Array[Long]) {

  val dependency: ShuffleDependency[_, _, _] =
    shuffled.dependencies.head.asInstanceOf[ShuffleDependency[_, _, _]]

  /** A public-in-bytecode method Scala calls private[spark]. */
  private def call(obj: AnyRef, name: String): AnyRef = obj.getClass.getMethod(name).invoke(obj)

  /** The ShuffleDependency as SortShuffleManager registered it (its handle is the writer). */
  def describe(): String = {
    val d = dependency
    val handle = d.shuffleHandle.getClass.getName
    val writer = handle match {
      case "org.apache.spark.shuffle.sort.BypassMergeSortShuffleHandle" =>
        "BypassMergeSortShuffleWriter"
      case "org.apache.spark.shuffle.sort.SerializedShuffleHandle" => "UnsafeShuffleWriter"
      case "org.apache.spark.shuffle.BaseShuffleHandle" => "SortShuffleWriter"
      case _ => "unknown"
    }
    val bounds = d.partitioner match {
      case r: org.apache.spark.RangePartitioner[_, _] =>
        // The bounds RangePartitioner sampled (Long keys here): spillway's are equal ranges.
        val f = r.getClass.getDeclaredField("rangeBounds")
        f.setAccessible(true)
        f.get(r).asInstanceOf[Array[_]].map(_.toString).mkString("[", ",", "]")
      case _ => "null"
    }
    s"""{"sparkShuffleId":${d.shuffleId},"handle":"$handle","writer":"$writer",""" +
      s""""serializer":"${d.serializer.getClass.getName}",""" +
      s""""serializerSupportsRelocation":${call(d.serializer, "supportsRelocationOfSerializedObjects")},""" +
      s""""mapSideCombine":${d.mapSideCombine},"aggregatorDefined":${d.aggregator.isDefined},""" +
      s""""keyOrderingDefined":${d.keyOrdering.isDefined},""" +
      s""""partitioner":"${d.partitioner.getClass.getName}",""" +
      s""""numPartitions":${d.partitioner.numPartitions},"rangeBounds":$bounds}"""
  }

  /** Runs the map stage alone (SparkContext.submitMapStage, a job of one shuffle map stage);
   *  returns the bytes per reduce partition the map outputs hold. */
  def runMap(): String = {
    val sc = shuffled.sparkContext
    // private[spark] in Scala, public in the bytecode: called by reflection.
    val m = classOf[SparkContext].getMethod("submitMapStage", classOf[ShuffleDependency[_, _, _]])
    val future = m.invoke(sc, dependency).asInstanceOf[org.apache.spark.SimpleFutureAction[_]]
    val stats = future.get().asInstanceOf[AnyRef] // MapOutputStatistics, private[spark] too
    call(stats, "bytesByPartitionId").asInstanceOf[Array[Long]].mkString("[", ",", "]")
  }

  /** Runs the reduce side (the map stage is skipped: its outputs are registered); per reduce
   *  partition [records or groups or keys, values, keys in order (1) or not (0)]. */
  def runReduce(): String =
    reduceAction().grouped(3).map(_.mkString("[", ",", "]")).mkString("[", ",", "]")
}

object ShuffleReplay {

  /** Per partition: records (or groups/keys), values, whether the keys came in order. */
  private def summarize[V](it: Iterator[(Long, V)], values: V => Long): Iterator[Array[Long]] = {
    var n, vs = 0L
    var last = Long.MinValue
    var ordered = true
    it.foreach { case (k, v) =>
      n += 1
      vs += values(v)
      if (k < last) ordered = false
      last = k
    }
    Iterator(Array(n, vs, if (ordered) 1L else 0L))
  }

  private def shuffle[V: ClassTag](sc: SparkContext, s: Spec,
                                   make: (Long, Long, Long, Long) => V): PreparedShuffle = {
    val p = s.reducePartitions
    val input: RDD[(Long, V)] = sc.parallelize(0 until s.mapTasks, s.mapTasks)
      .mapPartitionsWithIndex((map, _) =>
        s.records(map, (seed, i, k, v) => (k, make(seed, i, k, v))))
    s.operation match {
      case "partitionBy" =>
        val r = input.partitionBy(new HashPartitioner(p))
        new PreparedShuffle(s, r, () =>
          r.mapPartitions(summarize(_, (_: V) => 1L)).collect().flatten)
      case "sortByKey" =>
        // RangePartitioner: its bounds come from a sampling job over the input (run here).
        val r = input.sortByKey(ascending = true, numPartitions = p)
        new PreparedShuffle(s, r, () =>
          r.mapPartitions(summarize(_, (_: V) => 1L)).collect().flatten)
      case "groupByKey" =>
        val r = input.groupByKey(new HashPartitioner(p))
        // Every group is built (CompactBuffer) and its size taken.
        new PreparedShuffle(s, r, () =>
          r.mapValues(_.size.toLong).mapPartitions(summarize(_, (n: Long) => n))
            .collect().flatten)
      case other => throw new IllegalArgumentException(s"operation $other")
    }
  }

  /** Builds the RDDs of one shuffle (and runs sortByKey's sampling job). */
  def prepare(sc: SparkContext, seed: Long, shuffleId: Int, mapTasks: Int,
              reducePartitions: Int, recordsPerTask: Long, recordBytes: Int,
              distinctKeys: Long, hotKeyPercent: Int, compressiblePercent: Int,
              operation: String, values: String): PreparedShuffle = {
    val s = Spec(seed, shuffleId, mapTasks, reducePartitions, recordsPerTask, recordBytes,
      distinctKeys, hotKeyPercent, compressiblePercent, operation, values)
    require(recordBytes >= 16, s"record_bytes $recordBytes < 16")
    (operation, values) match {
      case ("reduceByKey", v) =>
        // The value as a Long, summed (map-side combine on); the payload is not generated.
        val part = new HashPartitioner(reducePartitions)
        val input = sc.parallelize(0 until mapTasks, mapTasks)
          .mapPartitionsWithIndex((map, _) => s.records(map, (_, _, k, v) => (k, v)))
        if (v == "bytes") {
          val r = input.reduceByKey(part, _ + _)
          new PreparedShuffle(s, r, () =>
            r.mapPartitions(summarize(_, (x: Long) => x)).collect().flatten)
        } else {
          val r = input.map { case (k, x) => (k, ObjectSum(x)) }
            .reduceByKey(part, (a, b) => ObjectSum(a.value + b.value))
          new PreparedShuffle(s, r, () =>
            r.mapPartitions(summarize(_, (x: ObjectSum) => x.value)).collect().flatten)
        }
      case (_, "bytes") =>
        shuffle[Array[Byte]](sc, s, (seed, i, _, v) => s.valueBytes(seed, i, v))
      case (_, "object") =>
        shuffle[ObjectValue](sc, s, (seed, i, _, v) => {
          val b = s.valueBytes(seed, i, v)
          ObjectValue(v, java.util.Arrays.copyOfRange(b, 8, b.length))
        })
      case (_, other) => throw new IllegalArgumentException(s"values $other")
    }
  }

  /** The first records of a map task as hex (`key ‖ value ‖ payload`), to check the port. */
  def sample(seed: Long, shuffleId: Int, recordBytes: Int, distinctKeys: Long,
             hotKeyPercent: Int, compressiblePercent: Int, map: Int, n: Int): String = {
    val s = Spec(seed, shuffleId, 1, 1, n.toLong, recordBytes, distinctKeys, hotKeyPercent,
      compressiblePercent, "partitionBy", "bytes")
    s.records(map, (sd, i, k, v) => (k, s.valueBytes(sd, i, v))).map { case (k, b) =>
      val key = (0 until 8).map(j => f"${(k >>> (8 * j)) & 0xff}%02x").mkString
      key + b.map(x => f"${x & 0xff}%02x").mkString
    }.mkString("\n")
  }
}

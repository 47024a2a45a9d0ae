"""spillway's Python worker: PySpark's worker.py and shuffle.ExternalMerger in miniature.

Started by spillway's executor (src/external/pool.rs), one per core and reused across tasks.
It speaks the protocol of src/external/protocol.rs on stdin/stdout (4-byte little-endian
length, then JSON) and logs on stderr. Every function mirrors src/external/agg.rs.
"""

import gc
import json
import os
import struct
import sys
import traceback

M64 = (1 << 64) - 1
SPILL_PARTITIONS = 59  # ExternalMerger(partitions=59)
INITIAL_BATCH = 1000  # ExternalMerger(batch=1000)
UDF_BLOCK_BYTES = 64 << 10
UDF_CHECK_STRIDE = 4096
MAX_FRAME_BYTES = 1 << 20

try:
    import resource

    has_resource_module = True
except ImportError:
    has_resource_module = False


def set_memory_limit():
    """worker.py: lower RLIMIT_AS to PYSPARK_EXECUTOR_MEMORY_MB; failing only warns."""
    memory_limit_mb = int(os.environ.get("PYSPARK_EXECUTOR_MEMORY_MB", "-1"))
    rlimit_set, warning = False, None
    if memory_limit_mb > 0 and has_resource_module:
        total_memory = resource.RLIMIT_AS
        try:
            (soft_limit, hard_limit) = resource.getrlimit(total_memory)
            print("Current mem limits: {0} of max {1}".format(soft_limit, hard_limit), file=sys.stderr)
            new_limit = memory_limit_mb * 1024 * 1024
            if soft_limit == resource.RLIM_INFINITY or new_limit < soft_limit:
                print("Setting mem limits to {0} of max {1}".format(new_limit, new_limit), file=sys.stderr)
                resource.setrlimit(total_memory, (new_limit, new_limit))
                rlimit_set = True
        except (resource.error, OSError, ValueError) as e:
            warning = "Failed to set memory limit: {0}".format(e)
            print("ResourceWarning: " + warning, file=sys.stderr)
    return memory_limit_mb, rlimit_set, warning


def current_rlimit():
    if not has_resource_module:
        return None, None
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    inf = resource.RLIM_INFINITY
    return (None if soft == inf else soft), (None if hard == inf else hard)


def read_frame(infile):
    head = infile.read(4)
    if not head:
        return None
    if len(head) < 4:
        raise EOFError("short frame header")
    (n,) = struct.unpack("<I", head)
    if n == 0 or n > MAX_FRAME_BYTES:
        raise ValueError("frame length %d out of range" % n)
    body = infile.read(n)
    if len(body) != n:
        raise EOFError("short frame")
    return json.loads(body)


def write_frame(outfile, obj):
    body = json.dumps(obj).encode()
    outfile.write(struct.pack("<I", len(body)))
    outfile.write(body)
    outfile.flush()


def splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return state, z ^ (z >> 31)


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def key_digest(key, count, total):
    return (count * mix64(key ^ 0x5851F42D4C957F2D) + total * mix64(key ^ 0x14057B7EF767814F)) & M64


def get_used_memory():
    """shuffle.get_used_memory without psutil: VmRSS in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) >> 10
    return 0


def udf(nbytes, seed):
    """A UDF whose working set is nbytes: allocate, write a pattern, read it back."""
    state, words = seed, []
    for _ in range(UDF_BLOCK_BYTES // 8):
        state, r = splitmix64(state)
        words.append(r)
    block = struct.pack("<%dQ" % len(words), *words)
    buf = bytearray(nbytes)
    for off in range(0, nbytes, UDF_BLOCK_BYTES):
        n = min(UDF_BLOCK_BYTES, nbytes - off)
        buf[off:off + n] = block[:n]
    whole = nbytes - nbytes % 8
    checksum = sum(memoryview(buf)[:whole].cast("Q")[:: UDF_CHECK_STRIDE // 8]) & M64 if whole else 0
    return buf, checksum


class ExternalMerger(object):
    """shuffle.ExternalMerger over (count, sum) combiners, without recursive re-partitioning."""

    def __init__(self, memory_limit, sub):
        self.memory_limit = memory_limit
        path = os.environ.get("SPARK_LOCAL_DIRS", "/tmp")
        self.localdirs = [os.path.join(d, "python", str(os.getpid()), sub) for d in path.split(",") if d]
        self.partitions = SPILL_PARTITIONS
        self.batch = INITIAL_BATCH
        self.data = {}
        self.pdata = []
        self.spills = 0
        self._seed = (0x9E3779B9 ^ os.getpid()) & M64
        self.memory_bytes_spilled = 0
        self.disk_bytes_spilled = 0
        self.rss_checks = 0

    def used(self):
        self.rss_checks += 1
        return get_used_memory()

    def _get_spill_dir(self, n):
        return os.path.join(self.localdirs[n % len(self.localdirs)], str(n))

    def _next_limit(self):
        return max(self.memory_limit, self.used() * 1.05)

    def _partition(self, key):
        return mix64(key ^ self._seed) % self.partitions

    def mergeValues(self, records, distinct_keys, state):
        c, data, pdata, hfun, batch = 0, self.data, self.pdata, self._partition, self.batch
        limit = self.memory_limit
        for _ in range(records):
            state, r = splitmix64(state)
            k, v = r % distinct_keys, (r >> 32) & 0xFFFF
            d = pdata[hfun(k)] if pdata else data
            if k in d:
                cnt, tot = d[k]
                d[k] = (cnt + 1, tot + v)
            else:
                d[k] = (1, v)
            c += 1
            if c >= batch:
                if self.used() >= limit:
                    self._spill()
                    limit = self._next_limit()
                    batch /= 2
                    c = 0
                else:
                    batch *= 1.5
        if self.used() >= limit:
            self._spill()

    def _write(self, path, items):
        with open(path, "wb") as f:
            chunk = []
            for k, (cnt, tot) in items:
                chunk.append(struct.pack("<QQQ", k, cnt, tot & M64))
                if len(chunk) >= 4096:
                    f.write(b"".join(chunk))
                    chunk = []
            f.write(b"".join(chunk))
        return os.path.getsize(path)

    def _spill(self):
        path = self._get_spill_dir(self.spills)
        if not os.path.exists(path):
            os.makedirs(path)
        used_memory = self.used()
        if not self.pdata:
            parts = [[] for _ in range(self.partitions)]
            for k, v in self.data.items():
                parts[self._partition(k)].append((k, v))
            for i in range(self.partitions):
                self.disk_bytes_spilled += self._write(os.path.join(path, str(i)), parts[i])
            del parts
            self.data.clear()
            self.pdata.extend([{} for _ in range(self.partitions)])
        else:
            for i in range(self.partitions):
                self.disk_bytes_spilled += self._write(os.path.join(path, str(i)), self.pdata[i].items())
                self.pdata[i].clear()
        self.spills += 1
        gc.collect()
        self.memory_bytes_spilled += max(used_memory - self.used(), 0) << 20

    def finish(self):
        """items(), folded into the digest the executor checks."""
        out = {"records": 0, "keys": 0, "value_sum": 0, "digest": 0}

        def fold(items):
            for k, (cnt, tot) in items:
                out["keys"] += 1
                out["records"] += cnt
                out["value_sum"] = (out["value_sum"] + tot) & M64
                out["digest"] = (out["digest"] + key_digest(k, cnt, tot)) & M64

        if not self.pdata and not self.spills:
            fold(self.data.items())
            return out
        if any(self.pdata):
            self._spill()
        self.pdata = []
        for i in range(self.partitions):
            merged = {}
            for j in range(self.spills):
                p = os.path.join(self._get_spill_dir(j), str(i))
                with open(p, "rb") as f:
                    raw = f.read()
                for k, cnt, tot in struct.iter_unpack("<QQQ", raw):
                    if k in merged:
                        c0, t0 = merged[k]
                        merged[k] = (c0 + cnt, t0 + tot)
                    else:
                        merged[k] = (cnt, tot)
                del raw
            fold(merged.items())
            merged = None
            for j in range(self.spills):
                os.remove(os.path.join(self._get_spill_dir(j), str(i)))
        return out

    def cleanup(self):
        import shutil

        for d in self.localdirs:
            shutil.rmtree(d, True)
            try:
                os.rmdir(os.path.dirname(d))
            except OSError:
                pass


def main():
    memory_limit_mb, rlimit_set, warning = set_memory_limit()
    infile, outfile = sys.stdin.buffer, sys.stdout.buffer
    soft, hard = current_rlimit()
    write_frame(outfile, {
        "op": "hello", "pid": os.getpid(), "kind": "python3",
        "version": sys.version.split()[0], "memory_limit_mb": memory_limit_mb,
        "rlimit_as_soft": soft, "rlimit_as_hard": hard,
        "rlimit_set": rlimit_set, "warning": warning,
    })
    held = None
    while True:
        req = read_frame(infile)
        if req is None:
            return 0
        op, task = req.get("op"), req.get("task", 0)
        if op == "end_of_stream":
            held = None
            write_frame(outfile, {"op": "end_of_stream"})
            continue
        merger = None
        try:
            if op == "udf":
                buf, checksum = udf(int(req["bytes"]), int(req["seed"]))
                held = buf
                reply = {"op": "udf_done", "task": task, "bytes": len(buf), "checksum": checksum}
            elif op == "aggregate":
                merger = ExternalMerger(int(req["memory_limit_mib"]), "merger-%d" % task)
                merger.mergeValues(int(req["records"]), int(req["distinct_keys"]), int(req["seed"]))
                r = merger.finish()
                reply = dict(op="aggregate_done", task=task, spills=merger.spills,
                             memory_bytes_spilled=merger.memory_bytes_spilled,
                             disk_bytes_spilled=merger.disk_bytes_spilled,
                             rss_checks=merger.rss_checks, **r)
            else:
                raise ValueError("unknown request %r" % op)
        except BaseException as e:
            # worker.py handle_worker_exception: report, then exit(-1): no reuse after a failure.
            held = None
            buf = None
            if merger is not None:
                merger.cleanup()
            merger = None
            gc.collect()
            write_frame(outfile, {
                "op": "error", "task": task, "class": type(e).__name__,
                "message": str(e), "traceback": traceback.format_exc(),
            })
            return -1
        if merger is not None:
            merger.cleanup()
        write_frame(outfile, reply)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Check that this machine can run the Spark comparison, and say what is missing if not.

    scripts/spark/.venv/bin/python scripts/spark/check_env.py

Needs Python >= 3.11 (the scripts read scenarios with ``tomllib``), PySpark 4.x (it ships the
Spark jars; ``scripts/spark/requirements.txt`` pins the version) and Java >= 17 (Spark 4's
minimum), found as PySpark finds it: ``$JAVA_HOME/bin/java``, else ``java`` on the PATH.
Exit code 0 and ``ok ...`` when all are there, 3 and one ``error: ...`` line per problem when
not (``tests/spark_compare.rs`` prints these as its skip reason).

Written for Python 3.7 and later, so that an old Python gets this message rather than a syntax
error.
"""

import os
import re
import subprocess
import sys

MIN_PYTHON = (3, 11)
MIN_JAVA = 17
SETUP = ("python3 -m venv scripts/spark/.venv && "
         "scripts/spark/.venv/bin/pip install -r scripts/spark/requirements.txt")


def python_problem():
    if sys.version_info[:2] >= MIN_PYTHON:
        return None
    return ("Python {}.{} or newer is needed (the scripts use tomllib); {} is {}".format(
        MIN_PYTHON[0], MIN_PYTHON[1], sys.executable, sys.version.split()[0]))


def pyspark_problem():
    try:
        import pyspark
    except ImportError:
        return "pyspark is not installed for {} ({})".format(sys.executable, SETUP)
    version = getattr(pyspark, "__version__", "")
    major = version.split(".")[0]
    if not major.isdigit() or int(major) < 4:
        return "pyspark {} is installed; the comparison needs pyspark 4.x ({})".format(
            version or "(unknown version)", SETUP)
    return None


def java_command():
    home = os.environ.get("JAVA_HOME")
    return os.path.join(home, "bin", "java") if home else "java"


def java_version(text):
    """The feature version in ``java -version`` output: 17 for "17.0.15", 8 for "1.8.0_292"."""
    m = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if not m:
        return None
    major = int(m.group(1))
    if major == 1 and m.group(2):
        return int(m.group(2))
    return major


def java_problem():
    java = java_command()
    where = "$JAVA_HOME/bin/java" if os.environ.get("JAVA_HOME") else "java on the PATH"
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "no Java {} or newer: {} ({}) does not run: {}; install a JDK or JRE >= {} " \
               "(Debian: apt-get install openjdk-{}-jre-headless)".format(
                   MIN_JAVA, java, where, e, MIN_JAVA, MIN_JAVA)
    text = out.stderr + out.stdout
    version = java_version(text)
    if out.returncode != 0 or version is None:
        first = text.strip().splitlines()[0] if text.strip() else "no output"
        return "`{} -version` failed (exit {}): {}".format(java, out.returncode, first)
    if version < MIN_JAVA:
        return "Java {} or newer is needed (Spark 4); {} ({}) is Java {}".format(
            MIN_JAVA, java, where, version)
    return None


def problems():
    """Every reason the comparison cannot run here (empty when it can)."""
    found = [python_problem()]
    if found[0] is None:
        found.append(pyspark_problem())
    found.append(java_problem())
    return [p for p in found if p]


def require_python():
    """Exit with a clear message on a Python too old for the scripts."""
    problem = python_problem()
    if problem:
        sys.exit("error: " + problem)


def report_problems():
    """Print each problem to stderr; True when there is none."""
    found = problems()
    for p in found:
        print("error: " + p, file=sys.stderr)
    return not found


def main():
    found = problems()
    if found:
        for p in found:
            print("error: " + p)
        return 3
    import pyspark
    out = subprocess.run([java_command(), "-version"], capture_output=True, text=True, timeout=60)
    print("ok: Python {}, pyspark {}, Java {} ({})".format(
        sys.version.split()[0], pyspark.__version__, java_version(out.stderr + out.stdout),
        java_command()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

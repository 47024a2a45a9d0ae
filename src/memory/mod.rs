//! Spark's unified memory manager: execution and storage pools, fair share, task memory.

//! Real memory: every mmap, madvise and raw pointer of spillway lives in this module.

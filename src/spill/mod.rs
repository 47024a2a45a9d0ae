//! Spill and block files: framed, checksummed records.

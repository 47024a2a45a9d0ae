//! The `spillway` binary: parse, call the library, print, exit.
fn main() {}

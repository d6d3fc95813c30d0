//! Rust programs that embed telejob; see the examples in this directory.

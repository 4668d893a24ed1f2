//! libFuzzer entry point of the `avro` target; the body and its invariants are
//! `driftscope_fuzz::avro` (fuzz/src/lib.rs), shared with the corpus replay test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| driftscope_fuzz::avro(data));

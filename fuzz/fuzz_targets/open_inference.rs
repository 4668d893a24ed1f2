//! libFuzzer entry point of the `open_inference` target; the body and its invariants
//! are `driftscope_fuzz::open_inference` (fuzz/src/lib.rs), shared with the corpus
//! replay test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| driftscope_fuzz::open_inference(data));

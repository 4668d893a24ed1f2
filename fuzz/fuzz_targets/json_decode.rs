//! libFuzzer entry point of the `json_decode` target; the body and its invariants are
//! `driftscope_fuzz::json_decode` (fuzz/src/lib.rs), shared with the corpus replay test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| driftscope_fuzz::json_decode(data));

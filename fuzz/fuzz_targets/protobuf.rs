//! libFuzzer entry point of the `protobuf` target; the body and its invariants are
//! `driftscope_fuzz::protobuf` (fuzz/src/lib.rs), shared with the corpus replay test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| driftscope_fuzz::protobuf(data));

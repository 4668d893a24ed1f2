//! libFuzzer entry point of the `arrow_ipc` target; the body and its invariants are
//! `driftscope_fuzz::arrow_ipc` (fuzz/src/lib.rs), shared with the corpus replay test.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: {
        // libfuzzer-sys's panic hook aborts on every panic, even one that is caught. The
        // arrow readers panic on some corrupt buffers and `decode_ipc_message` catches
        // that by design (the message counts as undecodable), so panics raised inside
        // the arrow crates are left to unwind silently. A panic that escapes the target
        // still aborts (libfuzzer-sys wraps the target in its own catch_unwind) and is
        // reported as a crash; replaying the input with `cargo test --test fuzz_corpus`
        // shows its message.
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_arrow = info.location().is_some_and(|l| l.file().contains("/arrow-"));
            if !in_arrow {
                default_hook(info);
            }
        }));
    },
    |data: &[u8]| driftscope_fuzz::arrow_ipc(data)
);

#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_core::fuzzing::rel_path(data));

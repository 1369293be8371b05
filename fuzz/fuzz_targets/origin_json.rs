#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dicomweb_fuzz::origin_json(data));

//! One rpm header blob (as stored in every rpm database format).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = imagewarden_scanner::analyzer::rpm::parse_header(data);
});

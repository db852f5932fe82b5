//! An OCI or Docker image manifest or index.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = imagewarden_scanner::source::oci::parse_manifest(data, "fuzz");
});

//! A CycloneDX or SPDX SBOM (JSON or XML) read as a scan target.
#![no_main]

use imagewarden_scanner::source::{sbom, ImageRef};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let file = tempfile::NamedTempFile::new().expect("a temporary file");
    std::fs::write(file.path(), data).expect("writing the input");
    let _ = sbom::read(&ImageRef::Sbom(file.path().to_path_buf()), file.path());
});

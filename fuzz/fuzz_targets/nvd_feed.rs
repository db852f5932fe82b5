//! An NVD CVE JSON 2.0 feed (or one CVE): every CVE read is rated and compiled.
#![no_main]

use imagewarden_scanner::vulndb::nvd::{read_cves, NvdEntry};
use imagewarden_scanner::vulndb::DbBuilder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut b = DbBuilder::new();
    let _ = read_cves(std::io::Cursor::new(data), &mut |cve| {
        if let Some(entry) = NvdEntry::from_cve(&cve) {
            let _ = entry.rating();
        }
        b.add_nvd_cve(&cve);
    });
    let mut out = Vec::new();
    let _ = b.write(&mut out);
});

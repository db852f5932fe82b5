//! The analyzers that want `var/lib/dpkg/status`, on arbitrary content.
#![no_main]

use imagewarden_scanner::analyzer::{default_analyzers, FileMeta, Output};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let meta = FileMeta {
        path: "var/lib/dpkg/status",
        mode: 0o644,
        size: data.len() as u64,
    };
    for a in default_analyzers() {
        if a.wants(&meta) {
            a.analyze_file(&meta, data, &mut Output::default());
        }
    }
});

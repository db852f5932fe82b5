//! Language and OS metadata: the first byte picks the file the rest is stored as (Python
//! METADATA, package.json, a jar, Cargo.lock, Composer, gemspec, .NET deps, os-release,
//! an executable with Go build info or Rust audit data), and every analyzer that wants
//! that path reads it.
#![no_main]

use imagewarden_scanner::analyzer::{default_analyzers, FileMeta, Output};
use libfuzzer_sys::fuzz_target;

const PATHS: &[(&str, u32)] = &[
    (
        "usr/lib/python3/site-packages/PyYAML-5.3.dist-info/METADATA",
        0o644,
    ),
    ("app/node_modules/lodash/package.json", 0o644),
    ("app/demo-1.2.3.jar", 0o644),
    ("app/Cargo.lock", 0o644),
    ("app/vendor/composer/installed.json", 0o644),
    (
        "usr/lib/ruby/gems/3.0.0/specifications/rake-13.0.6.gemspec",
        0o644,
    ),
    ("app/app.deps.json", 0o644),
    ("etc/os-release", 0o644),
    ("usr/local/bin/app", 0o755),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (path, mode) = PATHS[pick as usize % PATHS.len()];
    let meta = FileMeta {
        path,
        mode,
        size: rest.len() as u64,
    };
    for a in default_analyzers() {
        if a.wants(&meta) {
            a.analyze_file(&meta, rest, &mut Output::default());
        }
    }
});

//! Every version scheme on pairs of lines: comparisons must end, and be antisymmetric.
#![no_main]

use imagewarden_scanner::vulndb::version::VersionScheme;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.lines().take(64).collect();
    for scheme in [
        VersionScheme::Dpkg,
        VersionScheme::Apk,
        VersionScheme::Rpm,
        VersionScheme::SemVer,
        VersionScheme::Pep440,
        VersionScheme::Maven,
        VersionScheme::RubyGems,
        VersionScheme::NuGet,
        VersionScheme::Composer,
    ] {
        for w in lines.windows(2) {
            let ab = scheme.compare(w[0], w[1]);
            let ba = scheme.compare(w[1], w[0]);
            assert_eq!(ab, ba.reverse(), "{scheme:?}: {:?} vs {:?}", w[0], w[1]);
        }
    }
});

//! Every range of every record, read back from the index, must contain its own
//! `introduced` version and exclude its own `fixed` version under the ecosystem's
//! ordering: a broad check of the version comparators on real version strings.
//! Runs on testdata/osv, or on the directory in IMAGEWARDEN_OSV_DIR.

use std::path::PathBuf;

use imagewarden_scanner::matcher::affects;
use imagewarden_scanner::vulndb::ecosystem::parse_osv_ecosystem;
use imagewarden_scanner::vulndb::version::VersionScheme;
use imagewarden_scanner::vulndb::{AffectedPackage, Db, RangeEvent};

#[test]
fn every_range_contains_introduced_and_excludes_fixed() {
    let dir = std::env::var_os("IMAGEWARDEN_OSV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/osv"));
    let db = Db::load(&[dir.to_str().unwrap().to_string()]).unwrap();
    let (mut checked, mut violations) = (0usize, Vec::new());
    for (eco_key, name) in db.packages().collect::<Vec<_>>() {
        let (ecosystem, _) = parse_osv_ecosystem(&eco_key).unwrap();
        let scheme = VersionScheme::for_ecosystem(ecosystem);
        for entry in db.affected(&eco_key, &name).unwrap() {
            for range in &entry.ranges {
                let single = AffectedPackage {
                    ranges: vec![range.clone()],
                    versions: vec![],
                    ..entry.clone()
                };
                let at = |v: &str| {
                    range.events.iter().filter(|e| matches!(e, RangeEvent::Introduced(x) | RangeEvent::Fixed(x) | RangeEvent::LastAffected(x) if x == v)).count()
                };
                for e in &range.events {
                    let (v, want) = match e {
                        RangeEvent::Introduced(v) if v != "0" => (v, true),
                        RangeEvent::Fixed(v) => (v, false),
                        RangeEvent::LastAffected(v) => (v, true),
                        _ => continue,
                    };
                    // An event sharing its version with another says nothing on its own.
                    if at(v) > 1 {
                        continue;
                    }
                    checked += 1;
                    if affects(scheme, v, &single).is_some() != want {
                        let id = db.advisory(entry.advisory).unwrap().id;
                        violations.push(format!("{id} {eco_key}/{name} {e:?}"));
                    }
                }
            }
        }
    }
    println!(
        "{checked} range bounds checked, {} violations",
        violations.len()
    );
    assert!(checked > 0);
    assert!(
        violations.is_empty(),
        "{} violations, e.g. {:#?}",
        violations.len(),
        &violations[..violations.len().min(20)]
    );
}

//! The committed `crds/*.yaml` must be what `crdgen` generates from the Rust types.

#[test]
fn committed_crds_match_the_generated_ones() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let crds = imagewarden_operator::crd::all();
    let mut stale = Vec::new();
    for crd in &crds {
        let name = crd.metadata.name.clone().unwrap();
        let path = dir.join(format!("{name}.yaml"));
        let generated = imagewarden_operator::crd::to_yaml(crd).unwrap();
        match std::fs::read_to_string(&path) {
            Ok(committed) if committed == generated => {}
            _ => stale.push(path.display().to_string()),
        }
    }
    let count = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "yaml")
        })
        .count();
    assert!(
        stale.is_empty() && count == crds.len(),
        "crds/ is stale ({stale:?}, {count} files for {} CRDs): run `cargo run -p imagewarden-operator --bin crdgen -- crds`",
        crds.len()
    );
}

//! `imagewarden fix` end to end, timed: the Debian image of the fix tests (its root made by
//! the real dpkg from Debian's older expat packages, see `imagewarden_tests::debian_archive`)
//! fixed from Debian's signed security archive slice served on 127.0.0.1, pushed to the
//! TLS + basic-auth registry and rescanned; and the alpine:3.10 image fixed from the
//! signed apk repository of the fix tests. Each run fixes a fresh push of the image into
//! its own repository; the figures are the medians of the runs, per step (as the
//! engine's progress reports them) and in all.
//!
//! `IMAGEWARDEN_FIXTURES=... cargo bench -p imagewarden-scanner --bench fix` (runs from
//! IW_BENCH_RUNS, default 5). Needs Debian's `docker-registry` and `openssl`, as the tests.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imagewarden_scanner::fix::apt::AptSource;
use imagewarden_scanner::fix::plan::Selection;
use imagewarden_scanner::fix::{self, FixOptions, FixOutcome, FixTarget, PackageSource};
use imagewarden_scanner::vulndb::Db;
use imagewarden_tests::image::{push_image, TestImage};
use imagewarden_tests::{alpine_repo, debian_archive, pull_options, Registry, RegistryMode};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Steps as the engine names them, without their details (`downloading 2 packages ...`).
fn step_name(step: &str) -> String {
    let words: Vec<&str> = step.split_whitespace().collect();
    match words.first() {
        Some(&"downloading") => "downloading".into(),
        Some(&"pushing") => "pushing".into(),
        _ => step.to_string(),
    }
}

/// Fixes `image` (pushed afresh to `bench/<name>-<run>` each run) `runs` times; prints the
/// medians.
async fn measure(
    name: &str,
    registry: &Registry,
    image: &TestImage,
    db: &Db,
    sources: Vec<PackageSource>,
    runs: usize,
) {
    let mut totals = Vec::new();
    let mut steps: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for run in 0..runs {
        let repository = format!("bench/{name}-{run}");
        push_image(registry, &repository, "1.0", image)
            .await
            .expect("pushing the image");
        let marks: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
        let seen = marks.clone();
        let opts = FixOptions {
            selection: Selection::default(),
            target: FixTarget::default(),
            sources: sources.clone(),
            keyrings: Vec::new(),
            check_valid_until: false,
            plan_only: false,
            pull: pull_options(registry),
            progress: Some(Arc::new(move |step: &str| {
                seen.lock().unwrap().push((step_name(step), Instant::now()));
            })),
        };
        let started = Instant::now();
        let report = fix::fix(&format!("{}/{repository}:1.0", registry.host), db, &opts)
            .await
            .expect("the fix");
        let ended = Instant::now();
        assert_eq!(report.outcome, FixOutcome::Completed, "{report:?}");
        totals.push(ended - started);
        let marks = marks.lock().unwrap().clone();
        for (i, (step, at)) in marks.iter().enumerate() {
            let next = marks.get(i + 1).map_or(ended, |(_, t)| *t);
            if !order.contains(step) {
                order.push(step.clone());
            }
            steps.entry(step.clone()).or_default().push(next - *at);
        }
    }
    println!("{name}: {runs} runs, medians");
    for step in order {
        let d = median(steps.remove(&step).unwrap_or_default());
        println!("  {step:<28} {:>8.1} ms", d.as_secs_f64() * 1000.0);
    }
    println!(
        "  {:<28} {:>8.1} ms   (min {:.1} ms, max {:.1} ms)",
        "total",
        median(totals.clone()).as_secs_f64() * 1000.0,
        totals.iter().min().unwrap().as_secs_f64() * 1000.0,
        totals.iter().max().unwrap().as_secs_f64() * 1000.0,
    );
}

fn main() {
    let runs: usize = std::env::var("IW_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let work = tempfile::tempdir().expect("a temporary directory");
        let registry = Registry::start(RegistryMode::TlsAuth)
            .await
            .expect("the registry");

        let osv = work.path().join("osv");
        debian_archive::write_advisory(&osv).expect("the Debian advisory");
        let db = Db::load(&[osv.display().to_string()]).expect("the database");
        let archive = debian_archive::serve_archive(debian_archive::untouched())
            .await
            .expect("the archive");
        let source = AptSource::parse(&format!("{archive} {} main", debian_archive::SUITE))
            .expect("a source");
        let image = debian_archive::image().expect("the Debian image");
        let layer_mib: f64 =
            image.layers.iter().map(|l| l.gzip.len()).sum::<usize>() as f64 / (1 << 20) as f64;
        println!("debian image: {layer_mib:.1} MiB of gzipped layers");
        measure(
            "debian",
            &registry,
            &image,
            &db,
            vec![PackageSource::Apt(source)],
            runs,
        )
        .await;

        let key = alpine_repo::SigningKey::generate("imagewarden-bench").expect("a key");
        let repo = work.path().join("apk");
        alpine_repo::write_repository(&repo, &key).expect("the apk repository");
        let url = debian_archive::serve_dir(repo, debian_archive::untouched())
            .await
            .expect("serving the repository");
        let apk_osv = work.path().join("apk-osv");
        alpine_repo::write_advisories(Path::new(&apk_osv)).expect("the Alpine advisories");
        let db = Db::load(&[apk_osv.display().to_string()]).expect("the database");
        let image = alpine_repo::image(&key, &format!("{url}{}\n", alpine_repo::REPOSITORY))
            .expect("the Alpine image");
        measure("alpine", &registry, &image, &db, Vec::new(), runs).await;
    });
}

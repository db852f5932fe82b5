//! Debian's bookworm-security archive slice (its signed InRelease, the Packages index it
//! names and the security builds of expat, as `tests/scripts/fetch-fixtures.sh` fetched
//! them) served over HTTP on 127.0.0.1, and an image whose root the real dpkg made from
//! bookworm's older expat packages with Debian's own keyring in it. The advisory is an
//! OSV record naming the security build as fixed (bookworm has none in the test data).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::image::{sha256, Layer, TestImage};

/// The suite of the archive slice.
pub const SUITE: &str = "bookworm-security";
/// The id of the advisory [`write_advisory`] writes.
pub const ADVISORY: &str = "IMAGEWARDEN-TEST-EXPAT-1";

/// The fetched archive slice and image root.
pub fn fixture() -> PathBuf {
    let dir = std::env::var_os("IMAGEWARDEN_FIXTURES")
        .map(PathBuf::from)
        .expect(
            "IMAGEWARDEN_FIXTURES is not set: run tests/scripts/fetch-fixtures.sh, then set \
         IMAGEWARDEN_FIXTURES=${IMAGEWARDEN_CACHE:-$HOME/.cache/imagewarden}/fixtures",
        );
    dir.join("debian-security")
}

/// The version the archive's Packages index offers of a package.
pub fn archive_version(package: &str) -> Result<String> {
    let index = std::fs::read_to_string(
        fixture().join(format!("archive/dists/{SUITE}/main/binary-amd64/Packages")),
    )?;
    index
        .split("\n\n")
        .find(|s| s.lines().any(|l| l == format!("Package: {package}")))
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Version: ")))
        .map(str::to_string)
        .context("the package is not in the archive slice")
}

/// The image: the dpkg-made root of the old expat packages and Debian's keyring, with
/// Debian 12's os-release.
pub fn image() -> Result<TestImage> {
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    tar.append_dir_all(".", fixture().join("root"))?;
    let os_release = b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\nID=debian\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(os_release.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, "etc/os-release", &os_release[..])?;
    let tar = tar.into_inner()?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar)?;
    Ok(TestImage {
        layers: vec![Layer {
            gzip: gz.finish()?,
            diff_id: sha256(&tar),
        }],
        user: String::new(),
        env: vec!["PATH=/usr/bin:/bin".into()],
    })
}

/// Writes the OSV record of one advisory into `osv_dir/Debian`: expat in Debian 12 fixed
/// in the archive's build.
pub fn write_advisory(osv_dir: &Path) -> Result<()> {
    let fixed = archive_version("libexpat1")?;
    let dir = osv_dir.join("Debian");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join(format!("{ADVISORY}.json")),
        serde_json::to_vec(&serde_json::json!({
            "id": ADVISORY,
            "modified": "2026-01-01T00:00:00Z",
            "published": "2026-01-01T00:00:00Z",
            "summary": "expat security update",
            "affected": [{
                "package": {"ecosystem": "Debian:12", "name": "expat"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}],
            }],
        }))?,
    )?;
    Ok(())
}

/// Changes a served file: (path in the archive, content) → what is served.
pub type Tamper = Arc<dyn Fn(&str, Vec<u8>) -> Vec<u8> + Send + Sync>;

/// Serves every file as it is.
pub fn untouched() -> Tamper {
    Arc::new(|_, body| body)
}

/// Serves the archive slice on 127.0.0.1, each file passed through `tamper`; returns its
/// URL (`http://127.0.0.1:PORT/`).
pub async fn serve_archive(tamper: Tamper) -> Result<String> {
    serve_dir(fixture().join("archive"), tamper).await
}

/// Serves the archive slice on `address` (an address of this host, e.g. the node's, for
/// Pods to reach), each file passed through `tamper`; returns its URL.
pub async fn serve_archive_on(address: &str, tamper: Tamper) -> Result<String> {
    serve_dir_on(address, fixture().join("archive"), tamper).await
}

/// Serves the files under `root` on 127.0.0.1, each passed through `tamper`; returns the
/// URL (`http://127.0.0.1:PORT/`).
pub async fn serve_dir(root: PathBuf, tamper: Tamper) -> Result<String> {
    serve_dir_on("127.0.0.1", root, tamper).await
}

/// Serves the files under `root` on `address`, each passed through `tamper`; returns the
/// URL (`http://ADDRESS:PORT/`).
pub async fn serve_dir_on(address: &str, root: PathBuf, tamper: Tamper) -> Result<String> {
    let listener = tokio::net::TcpListener::bind((address, 0)).await?;
    let url = format!("http://{}/", listener.local_addr()?);
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let root = root.clone();
        let tamper = tamper.clone();
        async move {
            let path = uri.path().trim_start_matches('/').to_string();
            if path.split('/').any(|p| p == ".." || p.is_empty()) {
                return Err(axum::http::StatusCode::NOT_FOUND);
            }
            match std::fs::read(root.join(&path)) {
                Ok(body) => Ok(tamper(&path, body)),
                Err(_) => Err(axum::http::StatusCode::NOT_FOUND),
            }
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(url)
}

//! An HTTP mirror of OSV data laid out like osv.dev's bucket (`<base>/<Ecosystem>/all.zip`),
//! built from the records in `scanner/testdata/osv`, whose content a test can change (a
//! database refresh). It runs on its own thread and runtime, so it outlives the test that
//! started it (an installed operator keeps loading from it).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};

type Archives = Arc<RwLock<BTreeMap<String, Vec<u8>>>>;

/// A running mirror.
#[derive(Clone)]
pub struct OsvMirror {
    /// Base URL (`http://address:port`), as `--db` takes it.
    pub url: String,
    archives: Archives,
}

impl OsvMirror {
    /// Starts a mirror on `address` (an IP of this host) serving the records of `dir`.
    pub fn start(address: &str, dir: &Path) -> Result<OsvMirror> {
        let archives: Archives = Arc::default();
        let listener = std::net::TcpListener::bind((address, 0))
            .with_context(|| format!("binding the OSV mirror on {address}"))?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let serving = archives.clone();
        std::thread::Builder::new()
            .name("osv-mirror".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("mirror runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("mirror listener");
                    let app = axum::Router::new().route(
                        "/{ecosystem}/all.zip",
                        axum::routing::get(
                            move |axum::extract::Path(ecosystem): axum::extract::Path<String>| {
                                let archives = serving.clone();
                                async move {
                                    match archives.read().unwrap().get(&ecosystem) {
                                        Some(zip) => Ok(zip.clone()),
                                        None => Err(axum::http::StatusCode::NOT_FOUND),
                                    }
                                }
                            },
                        ),
                    );
                    let _ = axum::serve(listener, app).await;
                });
            })?;
        let mirror = OsvMirror { url, archives };
        mirror.serve(dir, &[])?;
        Ok(mirror)
    }

    /// Serves the records of `dir` (one folder per ecosystem), leaving out the files named
    /// in `without` (`Alpine/ALPINE-CVE-2019-14697.json`).
    pub fn serve(&self, dir: &Path, without: &[&str]) -> Result<()> {
        let mut archives = BTreeMap::new();
        let mut ecosystems: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .collect::<std::io::Result<Vec<_>>>()?
            .into_iter()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        ecosystems.sort();
        for eco in ecosystems {
            let name = eco.file_name().unwrap().to_string_lossy().into_owned();
            let mut files: Vec<_> = std::fs::read_dir(&eco)?
                .collect::<std::io::Result<Vec<_>>>()?
                .into_iter()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect();
            files.sort();
            let mut buf = Vec::new();
            {
                let mut zip = zip::ZipWriter::new(std::io::Cursor::new(&mut buf));
                for f in files {
                    let file = f.file_name().unwrap().to_string_lossy().into_owned();
                    if without.contains(&format!("{name}/{file}").as_str()) {
                        continue;
                    }
                    zip.start_file(file, zip::write::SimpleFileOptions::default())?;
                    zip.write_all(&std::fs::read(&f)?)?;
                }
                zip.finish()?;
            }
            // The folder is named as the ecosystem (the request path arrives decoded).
            archives.insert(name, buf);
        }
        *self.archives.write().unwrap() = archives;
        Ok(())
    }
}

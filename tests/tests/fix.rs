//! `imagewarden fix` against real parts: Debian's bookworm-security archive slice served
//! on 127.0.0.1, an image whose root the real dpkg made from bookworm's older expat
//! packages (see `imagewarden_tests::debian_archive`), and the TLS + basic-auth registry.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use imagewarden_scanner::fix::apt::AptSource;
use imagewarden_scanner::fix::plan::Selection;
use imagewarden_scanner::fix::{self, FixError, FixOptions, FixOutcome, FixTarget, PackageSource};
use imagewarden_scanner::pipeline;
use imagewarden_scanner::source::ImageRef;
use imagewarden_scanner::vulndb::Db;
use imagewarden_tests::alpine_repo;
use imagewarden_tests::debian_archive::{
    archive_version, fixture, image, serve_archive, serve_dir, untouched, write_advisory, ADVISORY,
    SUITE,
};
use imagewarden_tests::image::{auth_for, client_for, push_image};
use imagewarden_tests::{pull_options, Registry, RegistryMode};
use oci_client::Reference;

/// A database of one advisory: expat in Debian 12 fixed in the archive's build.
fn database(dir: &Path) -> Result<Db> {
    write_advisory(&dir.join("osv"))?;
    Db::load(&[dir.join("osv").display().to_string()])
}

fn options(registry: &Registry, archive: &str, target: FixTarget) -> FixOptions {
    FixOptions {
        selection: Selection::default(),
        target,
        sources: vec![PackageSource::Apt(
            AptSource::parse(&format!("{archive} {SUITE} main")).unwrap(),
        )],
        keyrings: Vec::new(),
        // The archive slice is cached for longer than the week its InRelease is valid.
        check_valid_until: false,
        plan_only: false,
        pull: pull_options(registry),
        progress: None,
    }
}

async fn digest_of(registry: &Registry, reference: &str) -> Result<Option<String>> {
    let reference: Reference = reference.parse()?;
    match client_for(registry)
        .pull_image_manifest(&reference, &auth_for(registry))
        .await
    {
        Ok((_, digest)) => Ok(Some(digest)),
        Err(_) => Ok(None),
    }
}

/// `name → version` of the system packages in an image.
async fn dpkg_versions(registry: &Registry, reference: &str) -> Result<HashMap<String, String>> {
    let scanned = pipeline::read_image(
        &ImageRef::Registry(reference.to_string()),
        &pull_options(registry),
        &Default::default(),
    )
    .await?;
    Ok(scanned
        .inventory
        .packages
        .iter()
        .map(|p| (p.name.clone(), p.version.clone()))
        .collect())
}

/// Unpacks an image's layers into a directory, whiteouts applied, for the real dpkg.
async fn unpack(registry: &Registry, reference: &str, dir: &Path) -> Result<()> {
    let reference: Reference = reference.parse()?;
    let client = client_for(registry);
    let auth = auth_for(registry);
    let (manifest, _) = client.pull_image_manifest(&reference, &auth).await?;
    for layer in &manifest.layers {
        let mut blob = Vec::new();
        client.pull_blob(&reference, layer, &mut blob).await?;
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(blob.as_slice()).read_to_end(&mut tar)?;
        let mut archive = tar::Archive::new(tar.as_slice());
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = entry.path()?.into_owned();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Some(target) = name.strip_prefix(".wh.") {
                let victim = dir
                    .join(path.parent().unwrap_or(Path::new("")))
                    .join(target);
                let _ = std::fs::remove_file(&victim).or_else(|_| std::fs::remove_dir_all(&victim));
                continue;
            }
            entry.set_preserve_permissions(false);
            entry.unpack_in(dir)?;
        }
    }
    Ok(())
}

fn dpkg(root: &Path, args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(args)
        .output()
        .context("running dpkg")?;
    anyhow::ensure!(
        out.status.success(),
        "dpkg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test]
async fn a_debian_image_is_fixed_from_the_signed_security_archive() -> Result<()> {
    let work = tempfile::tempdir()?;
    let db = database(work.path())?;
    let registry = Registry::start(RegistryMode::TlsAuth).await?;
    let original = push_image(&registry, "team-a/xml", "1.0", &image()?).await?;
    let archive = serve_archive(untouched()).await?;
    let image = format!("{}/team-a/xml:1.0", registry.host);
    let before = dpkg_versions(&registry, &image).await?;
    let new_version = archive_version("libexpat1")?;
    assert_ne!(
        before["libexpat1"], new_version,
        "the image starts with the old build"
    );

    let report = fix::fix(
        &image,
        &db,
        &options(&registry, &archive, FixTarget::default()),
    )
    .await?;

    assert_eq!(report.outcome, FixOutcome::Completed, "{report:?}");
    let upgraded: Vec<(&str, &str)> = report
        .plan
        .upgrades
        .iter()
        .map(|u| (u.package.as_str(), u.to.as_str()))
        .collect();
    // Every installed binary of the expat source, not only the one the finding names.
    assert_eq!(
        upgraded,
        [
            ("expat", archive_version("expat")?.as_str()),
            ("libexpat1", new_version.as_str())
        ]
    );
    let verification = report.verification.clone().expect("verified");
    assert_eq!(verification.fixed, [ADVISORY]);
    assert!(verification.remaining.is_empty());
    let fixed_ref = format!("{}/team-a/xml:1.0_fixd", registry.host);
    let pushed = digest_of(&registry, &fixed_ref)
        .await?
        .expect("the _fixd tag");
    assert!(report.pushed.as_deref().unwrap().ends_with(&pushed));
    assert_eq!(
        digest_of(&registry, &image).await?.as_deref(),
        Some(original.as_str())
    );
    let after = dpkg_versions(&registry, &fixed_ref).await?;
    assert_eq!(after["libexpat1"], new_version);
    assert_eq!(after["libc6"], before["libc6"]);

    // The real dpkg reads the fixed root as sound, with the new versions.
    let root = work.path().join("root");
    std::fs::create_dir_all(&root)?;
    unpack(&registry, &fixed_ref, &root).await?;
    let status = dpkg(&root, &["-s", "libexpat1:amd64"])?;
    assert!(
        status.contains(&format!("Version: {new_version}")),
        "{status}"
    );
    assert!(status.contains("Status: install ok installed"), "{status}");
    assert_eq!(dpkg(&root, &["--audit"])?, "");
    let verify = std::process::Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["--verify", "libexpat1", "expat"])
        .output()?;
    assert!(
        verify.status.success() && verify.stdout.is_empty(),
        "dpkg --verify: {}",
        String::from_utf8_lossy(&verify.stdout)
    );
    Ok(())
}

#[tokio::test]
async fn overwrite_moves_the_tag_and_keeps_the_original() -> Result<()> {
    let work = tempfile::tempdir()?;
    let db = database(work.path())?;
    let registry = Registry::start(RegistryMode::TlsAuth).await?;
    let original = push_image(&registry, "team-a/xml", "1.0", &image()?).await?;
    let archive = serve_archive(untouched()).await?;
    let image = format!("{}/team-a/xml:1.0", registry.host);

    let report = fix::fix(
        &image,
        &db,
        &options(&registry, &archive, FixTarget::Overwrite),
    )
    .await?;

    let moved = digest_of(&registry, &image).await?.expect("the tag");
    assert_ne!(moved, original);
    assert!(report.pushed.as_deref().unwrap().ends_with(&moved));
    let kept = format!("{}/team-a/xml:1.0_orig", registry.host);
    assert_eq!(
        digest_of(&registry, &kept).await?.as_deref(),
        Some(original.as_str())
    );
    Ok(())
}

#[tokio::test]
async fn a_tampered_packages_index_is_refused_and_nothing_is_pushed() -> Result<()> {
    let work = tempfile::tempdir()?;
    let db = database(work.path())?;
    let registry = Registry::start(RegistryMode::TlsAuth).await?;
    push_image(&registry, "team-a/xml", "1.0", &image()?).await?;
    // A package offered at another version, the index's size unchanged, as a mirror that
    // lies would.
    let archive = serve_archive(Arc::new(|path: &str, body: Vec<u8>| {
        if path.ends_with("binary-amd64/Packages") {
            String::from_utf8(body)
                .unwrap()
                .replacen("Version: 2.5.0-1+deb12u5", "Version: 2.5.0-1+deb12u9", 1)
                .into_bytes()
        } else {
            body
        }
    }))
    .await?;
    let image = format!("{}/team-a/xml:1.0", registry.host);

    let err = fix::fix(
        &image,
        &db,
        &options(&registry, &archive, FixTarget::default()),
    )
    .await
    .unwrap_err();

    assert!(matches!(err, FixError::Index(_)), "{err}");
    assert!(
        err.to_string().contains("where the signed index says"),
        "{err}"
    );
    let fixed_ref = format!("{}/team-a/xml:1.0_fixd", registry.host);
    assert_eq!(digest_of(&registry, &fixed_ref).await?, None);
    Ok(())
}

#[tokio::test]
async fn an_unsigned_or_foreign_signed_release_is_refused() -> Result<()> {
    let work = tempfile::tempdir()?;
    let db = database(work.path())?;
    let registry = Registry::start(RegistryMode::TlsAuth).await?;
    push_image(&registry, "team-a/xml", "1.0", &image()?).await?;
    let image = format!("{}/team-a/xml:1.0", registry.host);

    // Debian's own trixie key: a real key, but not the one that signs bookworm-security.
    let archive = serve_archive(untouched()).await?;
    let mut opts = options(&registry, &archive, FixTarget::default());
    let foreign = "usr/share/keyrings/debian-archive-trixie-stable.gpg";
    opts.keyrings = vec![(
        foreign.into(),
        std::fs::read(fixture().join("root").join(foreign))?,
    )];
    let err = fix::fix(&image, &db, &opts).await.unwrap_err();
    assert!(matches!(err, FixError::Signature(_)), "{err}");
    assert!(
        err.to_string()
            .contains("is not signed by a key of the keyring"),
        "{err}"
    );

    // The signed text alone, its signature dropped.
    let stripped = serve_archive(Arc::new(|path: &str, body: Vec<u8>| {
        if path.ends_with("InRelease") {
            let text = String::from_utf8(body).unwrap();
            let start = text.find("\n\n").unwrap() + 2;
            let end = text.find("-----BEGIN PGP SIGNATURE-----").unwrap();
            text.as_bytes()[start..end].to_vec()
        } else {
            body
        }
    }))
    .await?;
    let err = fix::fix(
        &image,
        &db,
        &options(&registry, &stripped, FixTarget::default()),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, FixError::Signature(_)), "{err}");
    assert!(err.to_string().contains("not a signed message"), "{err}");
    let fixed_ref = format!("{}/team-a/xml:1.0_fixd", registry.host);
    assert_eq!(digest_of(&registry, &fixed_ref).await?, None);
    Ok(())
}

/// A signed apk repository served on 127.0.0.1 (each file through `tamper`), the
/// alpine:3.10 image with its key and that repository pushed as `team-a/alpine:3.10`, and
/// the database of the three Alpine advisories.
struct AlpineCase {
    _work: tempfile::TempDir,
    registry: Registry,
    key: alpine_repo::SigningKey,
    zlib: alpine_repo::BuiltApk,
    db: Db,
    image: String,
    original: String,
    repository: String,
}

async fn alpine_case(tamper: imagewarden_tests::debian_archive::Tamper) -> Result<AlpineCase> {
    let work = tempfile::tempdir()?;
    let key = alpine_repo::SigningKey::generate("imagewarden-test-5f1a0c2e")?;
    let zlib = alpine_repo::write_repository(&work.path().join("repo"), &key)?;
    let url = serve_dir(work.path().join("repo"), tamper).await?;
    let repository = format!("{url}{}", alpine_repo::REPOSITORY);
    let registry = Registry::start(RegistryMode::TlsAuth).await?;
    let original = push_image(
        &registry,
        "team-a/alpine",
        "3.10",
        &alpine_repo::image(&key, &format!("{repository}\n"))?,
    )
    .await?;
    let osv = work.path().join("osv");
    alpine_repo::write_advisories(&osv)?;
    let db = Db::load(&[osv.display().to_string()])?;
    let image = format!("{}/team-a/alpine:3.10", registry.host);
    Ok(AlpineCase {
        _work: work,
        registry,
        key,
        zlib,
        db,
        image,
        original,
        repository,
    })
}

fn alpine_options(case: &AlpineCase) -> FixOptions {
    FixOptions {
        selection: Selection::default(),
        target: FixTarget::default(),
        sources: Vec::new(),
        keyrings: Vec::new(),
        check_valid_until: true,
        plan_only: false,
        pull: pull_options(&case.registry),
        progress: None,
    }
}

/// The stanza of `package` in an apk installed database.
fn apk_stanza<'a>(installed: &'a str, package: &str) -> &'a str {
    installed
        .split("\n\n")
        .find(|s| s.lines().any(|l| l == format!("P:{package}")))
        .unwrap_or_else(|| panic!("no {package} in the installed database"))
}

#[tokio::test]
async fn an_alpine_image_is_fixed_from_a_signed_apk_repository() -> Result<()> {
    let case = alpine_case(untouched()).await?;

    let report = fix::fix(&case.image, &case.db, &alpine_options(&case)).await?;

    assert_eq!(report.outcome, FixOutcome::Completed, "{report:?}");
    let upgraded: Vec<(&str, &str, &str)> = report
        .plan
        .upgrades
        .iter()
        .map(|u| (u.package.as_str(), u.from.as_str(), u.to.as_str()))
        .collect();
    assert_eq!(upgraded, [("zlib", "1.2.11-r1", alpine_repo::ZLIB_FIXED)]);
    // musl's fix needs a package the image lacks; scanelf's carries a script: neither is
    // half-applied, each is reported with its reason.
    let reasons: HashMap<&str, &str> = report
        .plan
        .unfixable
        .iter()
        .map(|u| (u.id.as_str(), u.reason.as_str()))
        .collect();
    assert!(
        reasons[alpine_repo::MUSL_ADVISORY]
            .contains("needs musl-newthing, which the image does not have"),
        "{reasons:?}"
    );
    assert!(
        reasons[alpine_repo::PAX_UTILS_ADVISORY]
            .contains("scanelf 1.2.3-r1 has install scripts (.post-upgrade)"),
        "{reasons:?}"
    );
    let verification = report.verification.clone().expect("verified");
    assert_eq!(verification.fixed, [alpine_repo::ZLIB_ADVISORY]);
    assert!(verification.remaining.is_empty());
    let fixed_ref = format!("{}/team-a/alpine:3.10_fixd", case.registry.host);
    let pushed = digest_of(&case.registry, &fixed_ref)
        .await?
        .expect("the _fixd tag");
    assert!(report.pushed.as_deref().unwrap().ends_with(&pushed));
    assert_eq!(
        digest_of(&case.registry, &case.image).await?.as_deref(),
        Some(case.original.as_str())
    );
    let after = dpkg_versions(&case.registry, &fixed_ref).await?;
    assert_eq!(after["zlib"], alpine_repo::ZLIB_FIXED);
    assert_eq!(after["musl"], "1.1.22-r3");
    assert_eq!(after["scanelf"], "1.2.3-r0");

    // The unpacked root: the database names the new version and its files as they are.
    let root = case._work.path().join("root");
    std::fs::create_dir_all(&root)?;
    unpack(&case.registry, &fixed_ref, &root).await?;
    let installed = std::fs::read_to_string(root.join("lib/apk/db/installed"))?;
    let zlib = apk_stanza(&installed, "zlib");
    let library = std::fs::read(root.join("lib/libz.so.1.2.12"))?;
    let lines: Vec<&str> = zlib.lines().collect();
    assert!(
        lines.contains(&format!("C:{}", case.zlib.checksum).as_str()),
        "{zlib}"
    );
    assert!(lines.contains(&"V:1.2.12-r0"), "{zlib}");
    assert!(
        lines.contains(&format!("S:{}", case.zlib.bytes.len()).as_str()),
        "{zlib}"
    );
    let file_lines: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| ["F:", "R:", "a:", "Z:"].iter().any(|p| l.starts_with(p)))
        .collect();
    let library_sum = alpine_repo::q1(&library);
    let link_sum = alpine_repo::q1(b"libz.so.1.2.12");
    assert_eq!(
        file_lines,
        [
            "F:lib",
            "R:libz.so.1.2.12",
            "a:0:0:755",
            &format!("Z:{library_sum}"),
            "R:libz.so.1",
            "a:0:0:777",
            &format!("Z:{link_sum}"),
        ]
    );
    assert_eq!(
        std::fs::read_link(root.join("lib/libz.so.1"))?,
        Path::new("libz.so.1.2.12")
    );
    assert!(
        !root.join("lib/libz.so.1.2.11").exists(),
        "the old library is whited out"
    );
    // The other packages' entries are as they were.
    let before = alpine_repo::alpine310_file("lib/apk/db/installed")?;
    let before = String::from_utf8(before)?;
    for package in ["musl", "scanelf", "busybox", "apk-tools"] {
        assert_eq!(
            apk_stanza(&installed, package),
            apk_stanza(&before, package)
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_forged_apkindex_is_refused_and_nothing_is_pushed() -> Result<()> {
    // The genuine signature segment in front of another index, as a mirror that lies would
    // serve it.
    let forged: imagewarden_tests::debian_archive::Tamper = Arc::new(|path: &str, body| {
        if !path.ends_with("APKINDEX.tar.gz") {
            return body;
        }
        let mut decoder = flate2::bufread::GzDecoder::new(body.as_slice());
        std::io::copy(&mut decoder, &mut std::io::sink()).unwrap();
        let signature_length = body.len() - decoder.into_inner().len();
        let mut out = body[..signature_length].to_vec();
        out.extend(
            alpine_repo::index_body(&[alpine_repo::index_stanza(
                "zlib",
                "1.2.12-r0",
                "zlib",
                &alpine_repo::q1(b"another package"),
                100,
                "",
                "",
            )])
            .unwrap(),
        );
        out
    });
    let case = alpine_case(forged).await?;

    let err = fix::fix(&case.image, &case.db, &alpine_options(&case))
        .await
        .unwrap_err();

    assert!(matches!(err, FixError::Signature(_)), "{err}");
    assert!(
        err.to_string().contains(&format!(
            "its signature by {} does not verify",
            case.key.name
        )),
        "{err}"
    );
    let fixed_ref = format!("{}/team-a/alpine:3.10_fixd", case.registry.host);
    assert_eq!(digest_of(&case.registry, &fixed_ref).await?, None);

    // Keys given replace the image's: an index by a key not among them is refused.
    let other = alpine_repo::SigningKey::generate("someone-else")?;
    let mut opts = alpine_options(&case);
    opts.keyrings = vec![(other.name.clone(), other.public_pem.clone())];
    let err = fix::fix(&case.image, &case.db, &opts).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("which is not a key of the keyring (someone-else.rsa.pub)"),
        "{err}"
    );
    assert_eq!(digest_of(&case.registry, &fixed_ref).await?, None);
    Ok(())
}

#[tokio::test]
async fn an_apk_whose_data_differs_from_its_signed_hash_is_refused() -> Result<()> {
    // One byte of zlib's data segment changed: the size and the signed control segment
    // are the genuine ones.
    let data_at = Arc::new(std::sync::OnceLock::<usize>::new());
    let at = data_at.clone();
    let case = alpine_case(Arc::new(move |path: &str, mut body: Vec<u8>| {
        if path.ends_with("zlib-1.2.12-r0.apk") {
            let i = *at.get().unwrap() + (body.len() - at.get().unwrap()) / 2;
            body[i] ^= 0x55;
        }
        body
    }))
    .await?;
    data_at.set(case.zlib.data_at).unwrap();
    let mut opts = alpine_options(&case);
    // The repository given rather than the image's: the same one.
    opts.sources = vec![PackageSource::parse(&case.repository)?];

    let err = fix::fix(&case.image, &case.db, &opts).await.unwrap_err();

    assert!(matches!(err, FixError::Package(_)), "{err}");
    assert!(
        err.to_string().contains("where the signed .PKGINFO says"),
        "{err}"
    );
    let fixed_ref = format!("{}/team-a/alpine:3.10_fixd", case.registry.host);
    assert_eq!(digest_of(&case.registry, &fixed_ref).await?, None);
    Ok(())
}

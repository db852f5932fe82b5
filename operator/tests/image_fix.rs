//! ImageFixes run by the operator (inline executor, and in fix Jobs with the job executor)
//! as a real process against a real kube-apiserver, the TLS + basic-auth registry and
//! Debian's bookworm-security archive slice served on 127.0.0.1 (see
//! `imagewarden_tests::debian_archive`).

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use base64::Engine as _;
use imagewarden_operator::crd::{ImageFix, ImageFixPhase, ImageScanResult, ScanRule};
use imagewarden_tests::debian_archive::{
    archive_version, image, serve_archive, untouched, write_advisory, ADVISORY, SUITE,
};
use imagewarden_tests::image::{auth_for, client_for, push_image, LayerBuilder, TestImage};
use imagewarden_tests::operator::OperatorProcess;
use imagewarden_tests::process::poll as wait_for;
use imagewarden_tests::samples::testdata;
use imagewarden_tests::{ControlPlane, Registry, RegistryMode};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use oci_client::Reference;

const BIN: &str = env!("CARGO_BIN_EXE_imagewarden-operator");

/// An AlmaLinux 8 image with rpm's SQLite database (openssl-libs 1:1.1.1k-5.el8).
fn rpm_image() -> Result<TestImage> {
    let layer = LayerBuilder::new()
        .file(
            "etc/os-release",
            0o644,
            &std::fs::read(testdata("os-release/almalinux-8.10"))?,
        )?
        .file(
            "var/lib/rpm/rpmdb.sqlite",
            0o644,
            &std::fs::read(testdata("rpmdb.sqlite"))?,
        )?
        .finish()?;
    Ok(TestImage {
        layers: vec![layer],
        ..Default::default()
    })
}

async fn digest_of(registry: &Registry, reference: &str) -> Option<String> {
    let reference: Reference = reference.parse().ok()?;
    client_for(registry)
        .pull_image_manifest(&reference, &auth_for(registry))
        .await
        .ok()
        .map(|(_, digest)| digest)
}

async fn create_fix(client: &Client, yaml: &str) -> Result<ImageFix> {
    let fix: ImageFix = serde_norway::from_str(yaml)?;
    Ok(Api::<ImageFix>::default_namespaced(client.clone())
        .create(&PostParams::default(), &fix)
        .await?)
}

async fn finished_fix(client: &Client, name: &str, operator: &OperatorProcess) -> Result<ImageFix> {
    let api: Api<ImageFix> = Api::default_namespaced(client.clone());
    let fix = wait_for(
        &format!("ImageFix {name} to finish"),
        Duration::from_secs(180),
        || {
            let api = api.clone();
            async move {
                Ok(api
                    .get_opt(name)
                    .await?
                    .filter(|f| f.status.as_ref().is_some_and(|s| s.phase.is_final())))
            }
        },
    )
    .await;
    match fix {
        Ok(f) => Ok(f),
        Err(e) => anyhow::bail!("{e}\noperator log:\n{}", operator.log()),
    }
}

/// The result of the rule's scan for `digest`.
async fn result_for(client: &Client, digest: &str) -> Result<ImageScanResult> {
    let api: Api<ImageScanResult> = Api::default_namespaced(client.clone());
    wait_for("the image's scan result", Duration::from_secs(120), || {
        let api = api.clone();
        async move {
            Ok(api
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .find(|r| r.spec.digest == digest && r.status.is_some()))
        }
    })
    .await
}

/// A control plane, the registry with the Debian image as `team-a/xml:v1.0`, the archive
/// slice served, and the operator (inline executor, the expat advisory as its database).
struct Setup {
    cp: ControlPlane,
    client: Client,
    registry: Registry,
    original: String,
    archive: String,
    operator: OperatorProcess,
    _work: tempfile::TempDir,
}

async fn setup(mode: RegistryMode) -> Result<Setup> {
    let cp = ControlPlane::start().await?;
    cp.install_crds(&imagewarden_operator::crd::all()).await?;
    let client = cp.client().await?;
    let work = tempfile::tempdir()?;
    let osv = work.path().join("osv");
    write_advisory(&osv)?;
    let registry = Registry::start(mode).await?;
    let original = push_image(&registry, "team-a/xml", "v1.0", &image()?).await?;
    let archive = serve_archive(untouched()).await?;
    let args = vec![
        format!("--db={}", osv.display()),
        "--egress-allow=127.0.0.0/8".to_string(),
        "--executor=inline".to_string(),
        "--leader-elect=false".to_string(),
    ];
    let operator = OperatorProcess::start(Path::new(BIN), &cp, &args).await?;
    Ok(Setup {
        cp,
        client,
        registry,
        original,
        archive,
        operator,
        _work: work,
    })
}

/// The registry's credentials and CA as Secret `creds` and ScanRule `team-a` (scope
/// `team-a/xml`, tags `^v`), scanned once now.
async fn create_rule(client: &Client, registry: &Registry) -> Result<()> {
    let (user, password) = registry.credentials().unwrap();
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "creds"},
        "stringData": {"username": user, "password": password, "ca.crt": registry.ca_pem().unwrap()},
    }))?;
    Api::<Secret>::default_namespaced(client.clone())
        .create(&PostParams::default(), &secret)
        .await?;
    let h = &registry.host;
    let rule: ScanRule = serde_norway::from_str(&format!(
        "apiVersion: imagewarden.io/v1alpha1
kind: ScanRule
metadata:
  name: team-a
  annotations: {{imagewarden.io/scan-now: first}}
spec:
  registry:
    url: {h}
    credentialsSecretRef: {{name: creds}}
    caSecretRef: {{name: creds, key: ca.crt}}
  scope: {{type: Repository, name: team-a/xml}}
  tagFilter: '^v'
"
    ))?;
    Api::<ScanRule>::default_namespaced(client.clone())
        .patch(
            "team-a",
            &PatchParams::apply("test").force(),
            &Patch::Apply(&rule),
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn image_fixes_push_verify_overwrite_and_refuse_what_they_cannot_do() -> Result<()> {
    let Setup {
        cp: _cp,
        client,
        registry,
        original,
        archive,
        operator,
        _work,
    } = setup(RegistryMode::TlsAuth).await?;
    let rpm = push_image(&registry, "team-a/alma", "v8", &rpm_image()?).await?;

    create_rule(&client, &registry).await?;
    let h = &registry.host;
    let result = result_for(&client, &original).await?;
    let source = format!("{archive} {SUITE} main");

    // A fix of the scanned result: `v1.0_fixd` pushed, `v1.0` untouched.
    create_fix(
        &client,
        &format!(
            "apiVersion: imagewarden.io/v1alpha1
kind: ImageFix
metadata: {{name: xml}}
spec:
  resultRef: {{name: {}}}
  sources: ['{source}']
  checkValidUntil: false
",
            result.metadata.name.as_deref().unwrap()
        ),
    )
    .await?;
    let fix = finished_fix(&client, "xml", &operator).await?;
    let status = fix.status.unwrap();
    assert_eq!(status.phase, ImageFixPhase::Completed, "{status:?}");
    let plan: Vec<(&str, &str)> = status
        .plan
        .iter()
        .map(|u| (u.package.as_str(), u.to.as_str()))
        .collect();
    let (expat, libexpat) = (archive_version("expat")?, archive_version("libexpat1")?);
    assert_eq!(
        plan,
        [("expat", expat.as_str()), ("libexpat1", libexpat.as_str())]
    );
    assert_eq!(status.plan[1].fixes, [ADVISORY]);
    let verification = status.verification.clone().unwrap();
    assert_eq!(verification.fixed, [ADVISORY]);
    assert!(verification.remaining.is_empty());
    let fixed = digest_of(&registry, &format!("{h}/team-a/xml:v1.0_fixd"))
        .await
        .expect("the v1.0_fixd tag");
    assert_eq!(
        status.pushed.as_deref(),
        Some(format!("{h}/team-a/xml:v1.0_fixd@{fixed}").as_str())
    );
    assert_eq!(
        status.image.as_deref(),
        Some(format!("{h}/team-a/xml:v1.0@{original}").as_str())
    );
    // The pushed image is scanned by a task with trigger Fix: its own result, without the
    // advisory.
    let fixed_result = result_for(&client, &fixed).await?;
    assert!(
        !fixed_result
            .status
            .unwrap()
            .findings
            .iter()
            .any(|f| f.id == ADVISORY),
        "the fixed image's result no longer lists {ADVISORY}"
    );
    let fix_tasks: Vec<_> =
        Api::<imagewarden_operator::crd::ScanTask>::default_namespaced(client.clone())
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|t| t.spec.trigger == imagewarden_operator::crd::TaskTrigger::Fix)
            .collect();
    assert_eq!(fix_tasks.len(), 1);
    assert_eq!(fix_tasks[0].spec.images, [status.pushed.clone().unwrap()]);
    assert_eq!(
        digest_of(&registry, &format!("{h}/team-a/xml:v1.0")).await,
        Some(original.clone())
    );
    let ready = &status.conditions[0];
    assert_eq!(
        (ready.type_.as_str(), ready.status.as_str()),
        ("Ready", "True")
    );

    // By image and rule, overwriting: the tag moves, the original stays as `_orig`.
    create_fix(
        &client,
        &format!(
            "apiVersion: imagewarden.io/v1alpha1
kind: ImageFix
metadata: {{name: xml-overwrite}}
spec:
  image: {h}/team-a/xml:v1.0@{original}
  ruleRef: {{name: team-a}}
  target: {{overwrite: true}}
  sources: ['{source}']
  checkValidUntil: false
"
        ),
    )
    .await?;
    let status = finished_fix(&client, "xml-overwrite", &operator)
        .await?
        .status
        .unwrap();
    assert_eq!(status.phase, ImageFixPhase::Completed, "{status:?}");
    let moved = digest_of(&registry, &format!("{h}/team-a/xml:v1.0"))
        .await
        .unwrap();
    assert_ne!(moved, original);
    assert!(status.pushed.unwrap().ends_with(&moved));
    assert_eq!(
        digest_of(&registry, &format!("{h}/team-a/xml:v1.0_orig")).await,
        Some(original.clone())
    );
    assert_eq!(
        status.original.as_deref(),
        Some(format!("{h}/team-a/xml:v1.0_orig@{original}").as_str())
    );

    // An id the image does not have: nothing to fix, and why.
    create_fix(
        &client,
        &format!(
            "apiVersion: imagewarden.io/v1alpha1
kind: ImageFix
metadata: {{name: xml-unknown-id}}
spec:
  image: {h}/team-a/xml:v1.0_orig@{original}
  ruleRef: {{name: team-a}}
  vulnerabilities: [CVE-1999-0001]
  sources: ['{source}']
  checkValidUntil: false
"
        ),
    )
    .await?;
    let status = finished_fix(&client, "xml-unknown-id", &operator)
        .await?
        .status
        .unwrap();
    assert_eq!(status.phase, ImageFixPhase::NothingToFix, "{status:?}");
    assert_eq!(status.unfixable.len(), 1);
    assert_eq!(status.unfixable[0].id, "CVE-1999-0001");
    assert!(
        status.unfixable[0].reason.contains("not affected"),
        "{:?}",
        status.unfixable[0]
    );
    assert_eq!(
        digest_of(&registry, &format!("{h}/team-a/xml:v1.0_orig_fixd")).await,
        None
    );

    // An rpm image: Failed, with the reason.
    create_fix(
        &client,
        &format!(
            "apiVersion: imagewarden.io/v1alpha1
kind: ImageFix
metadata: {{name: alma}}
spec:
  image: {h}/team-a/alma:v8@{rpm}
  ruleRef: {{name: team-a}}
"
        ),
    )
    .await?;
    let status = finished_fix(&client, "alma", &operator)
        .await?
        .status
        .unwrap();
    assert_eq!(status.phase, ImageFixPhase::Failed, "{status:?}");
    assert_eq!(
        status.message.as_deref(),
        Some("rpm fixing is not supported yet")
    );
    assert_eq!(status.conditions[0].reason, "UnsupportedImage");
    assert_eq!(
        digest_of(&registry, &format!("{h}/team-a/alma:v8_fixd")).await,
        None
    );

    // Hostile specs: refused on the object, with what is wrong.
    for (name, spec, expected) in [
        (
            "metadata-host",
            format!(
                "resultRef: {{name: {}}}\n  sources: ['deb http://169.254.169.254/debian bookworm main']",
                result.metadata.name.as_deref().unwrap()
            ),
            "169.254.169.254",
        ),
        (
            "apk-tagged",
            format!(
                "resultRef: {{name: {}}}\n  sources: ['@edge https://dl-cdn.alpinelinux.org/alpine/edge/main']",
                result.metadata.name.as_deref().unwrap()
            ),
            "tagged repositories (@tag URL) are not supported",
        ),
        (
            "other-registry",
            format!("image: registry.example/team-a/xml:v1.0@{original}\n  ruleRef: {{name: team-a}}"),
            "not on the registry of ScanRule team-a",
        ),
    ] {
        create_fix(
            &client,
            &format!("apiVersion: imagewarden.io/v1alpha1\nkind: ImageFix\nmetadata: {{name: {name}}}\nspec:\n  {spec}\n"),
        )
        .await?;
        let status = finished_fix(&client, name, &operator).await?.status.unwrap();
        assert_eq!(status.phase, ImageFixPhase::Failed, "{name}: {status:?}");
        let message = status.message.unwrap_or_default();
        assert!(message.contains(expected), "{name}: {message}");
        assert_eq!(status.conditions[0].status, "False");
    }
    // The API server refuses a spec naming neither the result nor the image.
    let err = create_fix(
        &client,
        "apiVersion: imagewarden.io/v1alpha1\nkind: ImageFix\nmetadata: {name: nothing}\nspec: {}\n",
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("set exactly one of resultRef and image"),
        "{err}"
    );
    Ok(())
}

/// An HTTP notification receiver on 127.0.0.1: its URL, and the bodies it gets.
async fn receiver() -> Result<(
    String,
    tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
                    let _ = tx.send(v);
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, rx))
}

async fn fixes_of(client: &Client) -> Result<Vec<ImageFix>> {
    Ok(Api::<ImageFix>::default_namespaced(client.clone())
        .list(&ListParams::default())
        .await?
        .items)
}

async fn finished_task_of(client: &Client, rule: &str, previous: Option<&str>) -> Result<String> {
    let rules: Api<ScanRule> = Api::default_namespaced(client.clone());
    let tasks: Api<imagewarden_operator::crd::ScanTask> = Api::default_namespaced(client.clone());
    wait_for(
        "the rule's scan to finish",
        Duration::from_secs(120),
        || {
            let (rules, tasks) = (rules.clone(), tasks.clone());
            async move {
                let Some(task) = rules.get(rule).await?.status.and_then(|s| s.last_task) else {
                    return Ok(None);
                };
                if Some(task.as_str()) == previous {
                    return Ok(None);
                }
                let done = tasks.get(&task).await?.status.is_some_and(|s| {
                    matches!(
                        s.phase,
                        imagewarden_operator::crd::ScanPhase::Completed
                            | imagewarden_operator::crd::ScanPhase::Failed
                    )
                });
                Ok(done.then_some(task))
            }
        },
    )
    .await
}

#[tokio::test]
async fn the_fix_now_annotation_and_a_rule_s_spec_fix_create_each_fix_once() -> Result<()> {
    let Setup {
        cp: _cp,
        client,
        registry,
        original,
        archive,
        operator,
        _work,
    } = setup(RegistryMode::Plain).await?;
    let (hook, mut notified) = receiver().await?;
    let h = &registry.host;
    let rule = |fix: &str, scan_now: &str| -> Result<ScanRule> {
        Ok(serde_norway::from_str(&format!(
            "apiVersion: imagewarden.io/v1alpha1
kind: ScanRule
metadata:
  name: team-a
  annotations: {{imagewarden.io/scan-now: {scan_now}}}
spec:
  registry: {{url: {h}, insecure: true}}
  scope: {{type: Repository, name: team-a/xml}}
  tagFilter: '^v'
  fix: {{{fix}, sources: ['{archive} {SUITE} main'], checkValidUntil: false}}
  notifications:
    - {{name: hook, type: HTTP, url: '{hook}', events: [FixCompleted, FixFailed]}}
"
        ))?)
    };
    let rules: Api<ScanRule> = Api::default_namespaced(client.clone());
    let apply = |rule: ScanRule| {
        let rules = rules.clone();
        async move {
            rules
                .patch(
                    "team-a",
                    &PatchParams::apply("test").force(),
                    &Patch::Apply(&rule),
                )
                .await
        }
    };

    // Not enabled: a scan makes no fix.
    apply(rule("enabled: false", "first")?).await?;
    let first = finished_task_of(&client, "team-a", None).await?;
    let result = result_for(&client, &original).await?;
    let result_name = result.metadata.name.clone().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(fixes_of(&client).await?.is_empty());

    // fix-now, twice: one ImageFix, with the rule's settings; the annotation is removed.
    let results: Api<ImageScanResult> = Api::default_namespaced(client.clone());
    for value in ["one", "two"] {
        let patch =
            serde_json::json!({"metadata": {"annotations": {"imagewarden.io/fix-now": value}}});
        results
            .patch(&result_name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        wait_for(
            "the fix-now annotation to be taken",
            Duration::from_secs(30),
            || {
                let results = results.clone();
                let name = result_name.clone();
                async move {
                    let r = results.get(&name).await?;
                    Ok((!r.annotations().contains_key("imagewarden.io/fix-now")).then_some(()))
                }
            },
        )
        .await?;
    }
    let fixes = fixes_of(&client).await?;
    assert_eq!(fixes.len(), 1, "{fixes:?}");
    let name = fixes[0].metadata.name.clone().unwrap();
    assert_eq!(fixes[0].spec.result_ref.as_ref().unwrap().name, result_name);
    assert_eq!(fixes[0].labels()["imagewarden.io/fix-trigger"], "FixNow");
    let status = finished_fix(&client, &name, &operator)
        .await?
        .status
        .unwrap();
    assert_eq!(status.phase, ImageFixPhase::Completed, "{status:?}");
    let fixed = digest_of(&registry, &format!("{h}/team-a/xml:v1.0_fixd"))
        .await
        .unwrap();
    // FixCompleted to the rule's target, naming the fix and the pushed image.
    let sent = tokio::time::timeout(Duration::from_secs(30), notified.recv())
        .await?
        .unwrap();
    assert_eq!(sent["event"], "FixCompleted", "{sent}");
    assert_eq!(sent["rule"]["name"], "team-a");
    assert_eq!(sent["items"][0]["object"]["kind"], "ImageFix");
    assert_eq!(sent["items"][0]["object"]["name"], name.as_str());
    assert_eq!(
        sent["items"][0]["image"],
        format!("{h}/team-a/xml:v1.0_fixd@{fixed}").as_str()
    );

    // Enabled, overwriting: the next scan fixes the image (a new fix: other settings) and
    // leaves the `_fixd` image it also scanned alone.
    apply(rule("enabled: true, overwrite: true", "second")?).await?;
    let second = finished_task_of(&client, "team-a", Some(&first)).await?;
    let task = Api::<imagewarden_operator::crd::ScanTask>::default_namespaced(client.clone())
        .get(&second)
        .await?;
    assert_eq!(
        task.status.unwrap().images.len(),
        2,
        "v1.0 and v1.0_fixd scanned"
    );
    let by_rule = wait_for("the rule's fix", Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            Ok(fixes_of(&client).await?.into_iter().find(|f| {
                f.labels()
                    .get("imagewarden.io/fix-trigger")
                    .map(String::as_str)
                    == Some("Rule")
            }))
        }
    })
    .await?;
    let status = finished_fix(&client, &by_rule.name_any(), &operator)
        .await?
        .status
        .unwrap();
    assert_eq!(status.phase, ImageFixPhase::Completed, "{status:?}");
    let moved = digest_of(&registry, &format!("{h}/team-a/xml:v1.0"))
        .await
        .unwrap();
    assert_ne!(moved, original);
    assert_eq!(
        digest_of(&registry, &format!("{h}/team-a/xml:v1.0_orig")).await,
        Some(original)
    );
    let fixes = fixes_of(&client).await?;
    assert_eq!(fixes.len(), 2, "{fixes:?}");
    Ok(())
}

/// Creates the ImageFix of `yaml` and returns its status once it ends.
async fn run_fix(
    client: &Client,
    operator: &OperatorProcess,
    yaml: &str,
) -> Result<imagewarden_operator::crd::ImageFixStatus> {
    let fix = create_fix(client, yaml).await?;
    Ok(finished_fix(client, &fix.name_any(), operator)
        .await?
        .status
        .unwrap_or_default())
}

#[tokio::test]
async fn a_keyring_secret_stands_in_for_the_keyring_an_image_lacks() -> Result<()> {
    let Setup {
        cp: _cp,
        client,
        registry,
        original: _,
        archive,
        operator,
        _work,
    } = setup(RegistryMode::TlsAuth).await?;
    create_rule(&client, &registry).await?;
    // The Debian image with its apt keyrings whited out.
    let mut keyless = image()?;
    keyless.layers.push(
        LayerBuilder::new()
            .file("etc/apt/.wh.trusted.gpg.d", 0o644, b"")?
            .file("usr/share/.wh.keyrings", 0o644, b"")?
            .finish()?,
    );
    let digest = push_image(&registry, "team-a/xml", "v2.0", &keyless).await?;
    let h = &registry.host;
    let source = format!("{archive} {SUITE} main");
    let fix_yaml = |name: &str, extra: &str| {
        format!(
            "apiVersion: imagewarden.io/v1alpha1
kind: ImageFix
metadata: {{name: {name}}}
spec:
  image: {h}/team-a/xml:v2.0@{digest}
  ruleRef: {{name: team-a}}
  sources: ['{source}']
  checkValidUntil: false
{extra}"
        )
    };

    const KEYRING_REF: &str = "  keyringSecretRef: {name: debian-keyring}\n";
    let status = run_fix(&client, &operator, &fix_yaml("no-keyring", "")).await?;
    assert_eq!(status.phase, ImageFixPhase::Failed, "{status:?}");
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or("")
            .contains("has no apt keyring"),
        "{status:?}"
    );

    // A Secret naming none that exists: Failed, and which.
    let status = run_fix(&client, &operator, &fix_yaml("missing-secret", KEYRING_REF)).await?;
    assert_eq!(status.phase, ImageFixPhase::Failed, "{status:?}");
    assert_eq!(status.conditions[0].reason, "KeyringSecret");
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or("")
            .contains("Secret debian-keyring does not exist"),
        "{status:?}"
    );

    // Debian's archive keyring, the one the image had, given through the Secret.
    let keyring = std::fs::read(
        imagewarden_tests::debian_archive::fixture()
            .join("root/usr/share/keyrings/debian-archive-keyring.gpg"),
    )?;
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "debian-keyring"},
        "data": {"debian-archive-keyring.gpg": base64::engine::general_purpose::STANDARD.encode(&keyring)},
    }))?;
    Api::<Secret>::default_namespaced(client.clone())
        .create(&PostParams::default(), &secret)
        .await?;
    let status = run_fix(&client, &operator, &fix_yaml("secret-keyring", KEYRING_REF)).await?;
    assert_eq!(status.phase, ImageFixPhase::Completed, "{status:?}");
    assert_eq!(status.verification.unwrap().fixed, [ADVISORY]);
    assert!(digest_of(&registry, &format!("{h}/team-a/xml:v2.0_fixd"))
        .await
        .is_some());
    Ok(())
}

/// The fix Jobs in the default namespace.
async fn fix_jobs(client: &Client) -> Result<Vec<k8s_openapi::api::batch::v1::Job>> {
    Ok(
        Api::<k8s_openapi::api::batch::v1::Job>::default_namespaced(client.clone())
            .list(
                &ListParams::default()
                    .labels(imagewarden_operator::controller::image_fix::FIX_JOB_SELECTOR),
            )
            .await?
            .items,
    )
}

/// The fix Job of ImageFix `name`, once the operator created it.
async fn fix_job_of(client: &Client, name: &str) -> Result<k8s_openapi::api::batch::v1::Job> {
    let fix = Api::<ImageFix>::default_namespaced(client.clone())
        .get(name)
        .await?;
    let job = imagewarden_operator::controller::image_fix::fix_job_name(
        &fix.uid().unwrap(),
        fix.metadata.generation.unwrap(),
    );
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::default_namespaced(client.clone());
    wait_for(&format!("fix Job {job}"), Duration::from_secs(60), || {
        let (jobs, job) = (jobs.clone(), job.clone());
        async move { Ok(jobs.get_opt(&job).await?) }
    })
    .await
}

/// Plays the kubelet for the Pod of fix Job `job` (this control plane has no node): runs
/// the container's command here as the Job's own ServiceAccount, with the registry
/// Secret's files where the Pod mounts them, and reports how it ended in the Pod's
/// status. Returns the exit code and the output.
async fn run_fix_pod(
    cp: &ControlPlane,
    client: &Client,
    job: &k8s_openapi::api::batch::v1::Job,
    secret: &Path,
    keyring: Option<&Path>,
) -> Result<(i32, String)> {
    let name = job.name_any();
    let pod = imagewarden_tests::operator::pod_of_job(client, "default", &name).await?;
    let container = &pod.spec.as_ref().unwrap().containers[0];
    let args: Vec<String> = container
        .args
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|a| {
            a.replace(
                "/var/run/imagewarden/registry-credentials",
                &secret.display().to_string(),
            )
            .replace(
                "/var/run/imagewarden/registry-ca",
                &secret.display().to_string(),
            )
            .replace(
                imagewarden_operator::controller::image_fix::FIX_JOB_KEYRING_DIR,
                &keyring.unwrap_or(secret).display().to_string(),
            )
        })
        .collect();
    let kubeconfig = cp.service_account_kubeconfig("default", &name).await?;
    imagewarden_tests::operator::run_pod_here(client, &pod, Path::new(BIN), &args, &kubeconfig)
        .await
}

#[tokio::test]
async fn with_the_job_executor_a_fix_runs_in_its_own_job_once_and_a_failed_pod_fails_it(
) -> Result<()> {
    use imagewarden_tests::control_plane::ControlPlaneOptions;
    let cp = ControlPlane::start_with(ControlPlaneOptions {
        controller_manager: true,
    })
    .await?;
    cp.install_crds(&imagewarden_operator::crd::all()).await?;
    let client = cp.client().await?;
    let work = tempfile::tempdir()?;
    let osv = work.path().join("osv");
    write_advisory(&osv)?;
    let registry = Registry::start(RegistryMode::TlsAuth).await?;
    let original = push_image(&registry, "team-a/xml", "v1.0", &image()?).await?;
    let archive = serve_archive(untouched()).await?;
    let serve_port = imagewarden_tests::process::free_port()?;
    let args = vec![
        format!("--db={}", osv.display()),
        "--egress-allow=127.0.0.0/8".to_string(),
        "--executor=job".to_string(),
        "--scanner-image=registry.local/imagewarden:test".to_string(),
        format!("--db-serve-addr=127.0.0.1:{serve_port}"),
        format!("--db-serve-url=http://127.0.0.1:{serve_port}"),
        "--job-memory-limit=768Mi".to_string(),
        "--leader-elect=false".to_string(),
    ];
    let mut operator = OperatorProcess::start(Path::new(BIN), &cp, &args).await?;

    // The registry Secret, and its files where a fix Pod would mount them.
    create_rule(&client, &registry).await?;
    let (user, password) = registry.credentials().unwrap();
    let mounted = work.path().join("secret");
    std::fs::create_dir(&mounted)?;
    std::fs::write(mounted.join("username"), user)?;
    std::fs::write(mounted.join("password"), password)?;
    std::fs::write(mounted.join("ca.crt"), registry.ca_pem().unwrap())?;
    let h = &registry.host;
    let source = format!("{archive} {SUITE} main");
    let fix_yaml = |name: &str, suffix: &str| {
        format!(
            "apiVersion: imagewarden.io/v1alpha1
kind: ImageFix
metadata: {{name: {name}}}
spec:
  image: {h}/team-a/xml:v1.0@{original}
  ruleRef: {{name: team-a}}
  target: {{tagSuffix: {suffix}}}
  sources: ['{source}']
  checkValidUntil: false
"
        )
    };
    create_fix(&client, &fix_yaml("xml", "_fixd")).await?;

    // One fix Job, owned by the ImageFix, with the scanner Jobs' hardening and an
    // identity that may read this ImageFix and write its status only.
    let job = fix_job_of(&client, "xml").await?;
    let name = job.name_any();
    let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("ImageFix", "xml")
    );
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some(name.as_str()));
    let sc = pod.containers[0].security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(
        pod.containers[0].args.as_ref().unwrap()[0],
        "fix-image".to_string()
    );
    let role = Api::<k8s_openapi::api::rbac::v1::Role>::default_namespaced(client.clone())
        .get(&name)
        .await?;
    for rule in role.rules.unwrap() {
        assert_eq!(rule.resource_names, Some(vec!["xml".to_string()]));
    }
    // Written just after the Job is created.
    let fixes: Api<ImageFix> = Api::default_namespaced(client.clone());
    let status = wait_for("the ImageFix's status", Duration::from_secs(30), || {
        let fixes = fixes.clone();
        async move { Ok(fixes.get("xml").await?.status) }
    })
    .await?;
    assert_eq!(status.phase, ImageFixPhase::Planning);
    assert_eq!(
        status.message,
        Some(format!("fix Job {name} created; waiting for it to start"))
    );

    // The operator restarts mid-fix: it finds the Job, and starts no second fix.
    operator.kill();
    let operator = OperatorProcess::start(Path::new(BIN), &cp, &args).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let jobs = fix_jobs(&client).await?;
    assert_eq!(jobs.len(), 1, "{}", operator.log());
    assert_eq!(jobs[0].uid(), job.uid());

    // The Pod runs: `fix-image` as the Job's ServiceAccount fixes, pushes and verifies,
    // and records it all in the status.
    let (code, output) = run_fix_pod(&cp, &client, &job, &mounted, None).await?;
    assert_eq!(code, 0, "{output}");
    let fix = finished_fix(&client, "xml", &operator).await?;
    let status = fix.status.unwrap();
    assert_eq!(status.phase, ImageFixPhase::Completed, "{status:?}");
    let (expat, libexpat) = (archive_version("expat")?, archive_version("libexpat1")?);
    let plan: Vec<(&str, &str)> = status
        .plan
        .iter()
        .map(|u| (u.package.as_str(), u.to.as_str()))
        .collect();
    assert_eq!(
        plan,
        [("expat", expat.as_str()), ("libexpat1", libexpat.as_str())]
    );
    assert_eq!(status.verification.clone().unwrap().fixed, [ADVISORY]);
    let fixed = digest_of(&registry, &format!("{h}/team-a/xml:v1.0_fixd"))
        .await
        .expect("the v1.0_fixd tag");
    assert_eq!(
        status.pushed.as_deref(),
        Some(format!("{h}/team-a/xml:v1.0_fixd@{fixed}").as_str())
    );
    assert_eq!(status.conditions[0].reason, "Completed");
    // The Job's identity cannot write another ImageFix's status.
    let as_job = cp.service_account_client("default", &name).await?;
    let forged = Api::<ImageFix>::default_namespaced(as_job)
        .patch_status(
            "other",
            &PatchParams::apply("forger").force(),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "imagewarden.io/v1alpha1",
                "kind": "ImageFix",
                "status": {"phase": "Completed"},
            })),
        )
        .await;
    assert!(
        matches!(forged, Err(kube::Error::Api(ref e)) if e.code == 403),
        "{forged:?}"
    );
    // Once the Job has ended, the operator tells of the outcome and deletes the Job.
    wait_for("the fix Job deleted", Duration::from_secs(60), || {
        let client = client.clone();
        async move {
            Ok(fix_jobs(&client)
                .await?
                .iter()
                .all(|j| j.metadata.deletion_timestamp.is_some())
                .then_some(()))
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", operator.log()))?;
    let events = Api::<k8s_openapi::api::events::v1::Event>::default_namespaced(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let told: Vec<_> = events
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("xml"))
        .filter_map(|e| e.reason.as_deref())
        .collect();
    assert_eq!(told, ["FixCompleted"], "{}", operator.log());

    // A Pod killed for its memory: the fix is Failed with the reason, nothing pushed.
    create_fix(&client, &fix_yaml("xml-killed", "_killed")).await?;
    let job = fix_job_of(&client, "xml-killed").await?;
    let pod = imagewarden_tests::operator::pod_of_job(&client, "default", &job.name_any()).await?;
    imagewarden_tests::operator::end_pod(&client, &pod, 137, "OOMKilled").await?;
    let status = finished_fix(&client, "xml-killed", &operator)
        .await?
        .status
        .unwrap();
    assert_eq!(status.phase, ImageFixPhase::Failed, "{status:?}");
    assert_eq!(status.conditions[0].reason, "JobKilled");
    assert_eq!(
        status.message,
        Some(format!(
            "fix Job {} was killed (exit code 137), most likely for going over its memory \
             limit of 768Mi (--job-memory-limit)",
            job.name_any()
        ))
    );
    assert_eq!(
        digest_of(&registry, &format!("{h}/team-a/xml:v1.0_killed")).await,
        None
    );

    // A keyring Secret: checked by the operator before any Job (a missing one fails the
    // fix at once), then mounted into the fix Pod, whose files replace the image's keys.
    let with_keyring = |name: &str, suffix: &str, secret: &str| {
        format!(
            "{}  keyringSecretRef: {{name: {secret}}}\n",
            fix_yaml(name, suffix)
        )
    };
    create_fix(&client, &with_keyring("xml-nokeys", "_nokeys", "absent")).await?;
    let status = finished_fix(&client, "xml-nokeys", &operator)
        .await?
        .status
        .unwrap();
    assert_eq!(
        (status.phase, status.conditions[0].reason.as_str()),
        (ImageFixPhase::Failed, "KeyringSecret"),
        "{status:?}"
    );
    assert!(fix_jobs(&client)
        .await?
        .iter()
        .all(|j| j.metadata.owner_references.as_ref().unwrap()[0].name != "xml-nokeys"));
    let keyring = std::fs::read(
        imagewarden_tests::debian_archive::fixture()
            .join("root/usr/share/keyrings/debian-archive-keyring.gpg"),
    )?;
    for (secret, file, contents) in [
        (
            "not-a-keyring",
            "keys.gpg",
            b"not an OpenPGP keyring".to_vec(),
        ),
        ("debian-keyring", "debian-archive-keyring.gpg", keyring),
    ] {
        let object: k8s_openapi::api::core::v1::Secret =
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": secret},
                "data": {file: base64::engine::general_purpose::STANDARD.encode(&contents)},
            }))?;
        Api::<k8s_openapi::api::core::v1::Secret>::default_namespaced(client.clone())
            .create(&PostParams::default(), &object)
            .await?;
        let dir = work.path().join(secret);
        std::fs::create_dir(&dir)?;
        std::fs::write(dir.join(file), &contents)?;
        let name = format!("xml-{secret}");
        create_fix(&client, &with_keyring(&name, &format!("_{secret}"), secret)).await?;
        let job = fix_job_of(&client, &name).await?;
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let volume = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "keyring")
            .expect("the keyring volume");
        assert_eq!(
            volume.secret.as_ref().unwrap().secret_name.as_deref(),
            Some(secret)
        );
        let (code, output) = run_fix_pod(&cp, &client, &job, &mounted, Some(&dir)).await?;
        let status = finished_fix(&client, &name, &operator)
            .await?
            .status
            .unwrap();
        if secret == "not-a-keyring" {
            // The image's own keyring would have verified the archive: the mounted
            // file was used instead of it.
            assert_eq!(status.phase, ImageFixPhase::Failed, "{status:?}\n{output}");
            assert_eq!(
                digest_of(&registry, &format!("{h}/team-a/xml:v1.0_{secret}")).await,
                None
            );
        } else {
            assert_eq!(code, 0, "{output}");
            assert_eq!(status.phase, ImageFixPhase::Completed, "{status:?}");
            assert_eq!(status.verification.unwrap().fixed, [ADVISORY]);
        }
    }
    Ok(())
}

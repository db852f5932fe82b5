//! The Helm chart (`deploy/helm/imagewarden`) and the kustomize bases (`deploy/kustomize`):
//! their copies of the CRDs and the example cannot drift, `helm lint` passes, the
//! rendered manifests are locked down (non-root, read-only root filesystem, probes, least
//! privilege RBAC), kustomize and Helm install the same objects, a real kube-apiserver
//! accepts everything (server-side dry run, PodSecurity `restricted` included), and after
//! a real install the operator's ServiceAccount can do what the operator needs and no more.
//!
//! helm is built from `tests/k8s-bin/helm` by `tests/scripts/build-k8s.sh` into the same
//! directory as kubectl (`IMAGEWARDEN_K8S_BIN`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use imagewarden_tests::control_plane::k8s_bin_dir;
use imagewarden_tests::{repo_root, ControlPlane};
use serde_json::{json, Value};

const NAMESPACE: &str = "imagewarden-system";
const OPERATOR_SA: &str = "system:serviceaccount:imagewarden-system:imagewarden-operator";

fn chart_dir() -> PathBuf {
    repo_root().join("deploy/helm/imagewarden")
}

fn everything_values() -> PathBuf {
    chart_dir().join("ci/everything-values.yaml")
}

fn kustomize_dir(name: &str) -> PathBuf {
    repo_root().join("deploy/kustomize").join(name)
}

fn tool(name: &str) -> Result<PathBuf> {
    let path = k8s_bin_dir()?.join(name);
    if !path.exists() {
        bail!(
            "{} is missing: run `bash tests/scripts/build-k8s.sh` (it builds helm next to kubectl)",
            path.display()
        );
    }
    Ok(path)
}

/// Runs `cmd` (with `stdin` when given) and returns (success, stdout, stderr).
fn run(mut cmd: Command, stdin: Option<&str>) -> Result<(bool, String, String)> {
    let program = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("starting {program}"))?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    Ok((
        out.status.success(),
        String::from_utf8(out.stdout)?,
        String::from_utf8(out.stderr)?,
    ))
}

/// Runs `cmd` and returns its stdout; fails with stderr when it fails.
fn run_ok(cmd: Command, stdin: Option<&str>) -> Result<String> {
    let program = format!("{cmd:?}");
    let (ok, stdout, stderr) = run(cmd, stdin)?;
    if !ok {
        bail!("{program} failed:\n{stderr}\n{stdout}");
    }
    Ok(stdout)
}

fn helm(args: &[&str]) -> Result<Command> {
    let mut cmd = Command::new(tool("helm")?);
    // No user configuration, repositories or caches from the machine running the tests.
    let home = std::env::temp_dir().join("imagewarden-tests-helm");
    cmd.args(args)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG");
    Ok(cmd)
}

/// `helm template imagewarden deploy/helm/imagewarden -n imagewarden-system ARGS`.
fn helm_template(args: &[&str]) -> Result<String> {
    let chart = chart_dir().display().to_string();
    let mut all = vec!["template", "imagewarden", &chart, "--namespace", NAMESPACE];
    all.extend_from_slice(args);
    run_ok(helm(&all)?, None)
}

/// `kubectl kustomize DIR` (no cluster needed).
fn kustomize(dir: &Path) -> Result<String> {
    let mut cmd = Command::new(tool("kubectl")?);
    cmd.arg("kustomize").arg(dir).env_remove("KUBECONFIG");
    run_ok(cmd, None)
}

/// The objects of a multi-document YAML stream.
fn objects(yaml: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    let mut current = String::new();
    for line in yaml.lines().chain(std::iter::once("---")) {
        if line.trim_end() == "---" {
            let doc: Value = serde_norway::from_str(&current)
                .with_context(|| format!("parsing YAML document:\n{current}"))?;
            if !doc.is_null() {
                docs.push(doc);
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    Ok(docs)
}

/// The object of `kind` and `name` in namespace `namespace`.
fn find_in<'a>(objs: &'a [Value], kind: &str, name: &str, namespace: &str) -> Result<&'a Value> {
    objs.iter()
        .find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"] == name
                && o["metadata"]["namespace"] == namespace
        })
        .with_context(|| format!("no {kind} {name} in {namespace}"))
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> Result<&'a Value> {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .with_context(|| format!("no {kind} {name} among the rendered objects"))
}

fn has(objs: &[Value], kind: &str, name: &str) -> bool {
    find(objs, kind, name).is_ok()
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn numbers_as_f64(v: Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(a) => Value::Array(a.into_iter().map(numbers_as_f64).collect()),
        Value::Object(o) => {
            Value::Object(o.into_iter().map(|(k, v)| (k, numbers_as_f64(v))).collect())
        }
        other => other,
    }
}

fn yaml_files(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            files.insert(name, std::fs::read(&path)?);
        }
    }
    Ok(files)
}

#[test]
fn copies_of_the_crds_and_the_example_are_identical_to_the_originals() -> Result<()> {
    let root = repo_root();
    let generated = yaml_files(&root.join("crds"))?;
    assert_eq!(
        generated.len(),
        imagewarden_operator::crd::all().len(),
        "crds/ should hold one file per CRD the operator defines"
    );
    let chart = yaml_files(&chart_dir().join("files/crds"))?;
    let fix = "run `rm deploy/helm/imagewarden/files/crds/*.yaml && cp crds/*.yaml deploy/helm/imagewarden/files/crds/`";
    assert_eq!(
        chart.keys().collect::<Vec<_>>(),
        generated.keys().collect::<Vec<_>>(),
        "the chart's CRD files differ from crds/: {fix}"
    );
    for (name, bytes) in &generated {
        assert!(
            &chart[name] == bytes,
            "deploy/helm/imagewarden/files/crds/{name} differs from crds/{name}: {fix}"
        );
    }

    // Kustomize uses crds/ in place, through crds/Kustomization: it must list every CRD.
    let listed: Value =
        serde_norway::from_str(&std::fs::read_to_string(root.join("crds/Kustomization"))?)?;
    let mut listed = strings(&listed["resources"]);
    listed.sort();
    assert_eq!(
        listed,
        generated.keys().map(String::as_str).collect::<Vec<_>>(),
        "crds/Kustomization must list exactly the CRD files in crds/"
    );
    let kustomized = objects(&kustomize(&kustomize_dir("base"))?)?;
    let crds: Vec<Value> = kustomized
        .into_iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .collect();
    assert_eq!(crds.len(), generated.len());
    for crd in &crds {
        let name = crd["metadata"]["name"].as_str().unwrap();
        let original: Value = serde_norway::from_slice(&generated[&format!("{name}.yaml")])?;
        // kustomize writes `minimum: 0.0` as `0`: compare numbers as numbers.
        assert!(
            numbers_as_f64(crd.clone()) == numbers_as_f64(original),
            "kustomize changed CRD {name}"
        );
    }

    let example = std::fs::read(root.join("deploy/examples/scanrule.yaml"))?;
    assert!(
        std::fs::read(chart_dir().join("examples/scanrule.yaml"))? == example,
        "deploy/helm/imagewarden/examples/scanrule.yaml differs from deploy/examples/scanrule.yaml: copy it"
    );
    Ok(())
}

#[test]
fn helm_lint_passes_and_rejects_bad_values() -> Result<()> {
    let chart = chart_dir().display().to_string();
    let values = everything_values().display().to_string();
    for args in [
        vec!["lint", chart.as_str()],
        vec!["lint", "--strict", chart.as_str()],
        vec!["lint", "--strict", chart.as_str(), "-f", values.as_str()],
    ] {
        let out = run_ok(helm(&args)?, None)?;
        assert!(
            out.contains("1 chart(s) linted, 0 chart(s) failed"),
            "helm {args:?}: {out}"
        );
    }
    // Values the schema (values.schema.json) refuses: lint and template fail with the reason.
    for (set, reason) in [
        ("executor=kubernetes", "at '/executor'"),
        ("db.osvUrl=ftp://mirror", "at '/db/osvUrl"),
        ("replica=3", "additional properties 'replica' not allowed"),
        ("job.memoryLimit=lots", "at '/job/memoryLimit'"),
        // Scanner Jobs get the operator's database: no path or volume of their own.
        (
            "job.dbPath=/usr/share/imagewarden/db.idx",
            "additional properties 'dbPath' not allowed",
        ),
        (
            "job.dbVolumeClaim=db",
            "additional properties 'dbVolumeClaim' not allowed",
        ),
        ("db.service.port=0", "at '/db/service/port'"),
        // Durations: humantime forms or plain seconds, nothing else.
        ("webhook.readTimeout=soon", "at '/webhook/readTimeout'"),
        (
            "job.ttlSecondsAfterFinished=10parsecs",
            "at '/job/ttlSecondsAfterFinished'",
        ),
        ("watchNamespaces={Team_A}", "at '/watchNamespaces/0'"),
        ("scan.maxFileBytes=1.5Gi", "at '/scan/maxFileBytes'"),
        ("links.resultURL=grafana/{name}", "at '/links/resultURL'"),
        ("crds.install=maybe", "at '/crds/install'"),
    ] {
        let (ok, stdout, stderr) = run(helm(&["lint", "--strict", &chart, "--set", set])?, None)?;
        assert!(!ok, "helm lint --set {set} passed:\n{stdout}");
        assert!(
            stdout.contains(reason) || stderr.contains(reason),
            "helm lint --set {set}: {stdout}{stderr}"
        );
        let (ok, _, stderr) = run(helm(&["template", "x", &chart, "--set", set])?, None)?;
        assert!(
            !ok && stderr.contains(reason),
            "helm template --set {set}: {stderr}"
        );
    }
    Ok(())
}

/// Checks the properties that keep the operator locked down, on one rendering.
fn check_locked_down(objs: &[Value], what: &str) -> Result<()> {
    let deploy = find(objs, "Deployment", "imagewarden-operator")?;
    assert_eq!(deploy["metadata"]["namespace"], NAMESPACE, "{what}");
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "imagewarden-operator", "{what}");
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true, "{what}: pod runAsNonRoot");
    assert_eq!(psc["runAsUser"], 65532, "{what}: pod runAsUser");
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault", "{what}");
    let containers = pod["containers"].as_array().context("containers")?;
    assert_eq!(containers.len(), 1, "{what}");
    let c = &containers[0];
    assert_eq!(
        strings(&c["command"]),
        ["imagewarden-operator", "run"],
        "{what}: command"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true, "{what}: runAsNonRoot");
    assert_eq!(sc["runAsUser"], 65532, "{what}: runAsUser");
    assert_eq!(
        sc["readOnlyRootFilesystem"], true,
        "{what}: read-only rootfs"
    );
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"], "{what}");
    assert!(
        sc["capabilities"]["add"].is_null(),
        "{what}: no added capabilities"
    );
    assert!(sc["privileged"] != true, "{what}");
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{what}");

    let port = |name: &str| {
        c["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == name)
            .map(|p| p["containerPort"].clone())
    };
    assert_eq!(port("metrics"), Some(json!(8080)), "{what}: metrics port");
    assert_eq!(port("webhook"), Some(json!(8443)), "{what}: webhook port");
    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{what}: {probe}");
        assert!(
            get["port"] == "metrics" || get["port"] == 8080,
            "{what}: {probe} port {}",
            get["port"]
        );
    }
    for resource in ["cpu", "memory"] {
        assert!(
            c["resources"]["requests"][resource].is_string(),
            "{what}: {resource} request"
        );
    }
    assert!(
        c["resources"]["limits"]["memory"].is_string(),
        "{what}: memory limit"
    );

    // Writable /tmp on the read-only root filesystem.
    let tmp = c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["mountPath"] == "/tmp")
        .with_context(|| format!("{what}: nothing mounted at /tmp"))?;
    let volume = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == tmp["name"])
        .with_context(|| format!("{what}: no volume for /tmp"))?;
    assert!(
        volume["emptyDir"].is_object(),
        "{what}: /tmp is an emptyDir"
    );

    let env = |name: &str| {
        c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        env("POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name",
        "{what}"
    );
    assert_eq!(
        env("POD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace",
        "{what}"
    );
    assert_eq!(env("IMAGEWARDEN_LEADER_ELECT")["value"], "true", "{what}");
    assert_eq!(
        env("IMAGEWARDEN_SCANNER_IMAGE")["value"],
        c["image"],
        "{what}: scanner Jobs run the operator's image"
    );
    for (name, value) in [
        ("IMAGEWARDEN_MAX_IMAGE_BYTES", "16Gi"),
        ("IMAGEWARDEN_MAX_FILE_BYTES", "128Mi"),
        ("IMAGEWARDEN_MAX_RETAINED_BYTES", "64Mi"),
        ("IMAGEWARDEN_MAX_SBOM_BYTES", "64Mi"),
        ("IMAGEWARDEN_MAX_SBOM_COMPONENTS", "100000"),
        ("IMAGEWARDEN_MAX_ZIP_ENTRIES", "200000"),
        ("IMAGEWARDEN_MAX_WARNINGS", "200"),
    ] {
        if !what.contains("everything") {
            assert_eq!(env(name)["value"], value, "{what}: {name}");
        }
    }
    assert_eq!(
        env("IMAGEWARDEN_WATCH_NAMESPACES")["value"],
        Value::Null,
        "{what}: every namespace by default"
    );
    let args = strings(&c["args"]);
    // Only values that name sources pass --db: by default the official sources.
    assert_eq!(
        args.iter().any(|a| a.starts_with("--db=")),
        what.contains("everything"),
        "{what}: {args:?}"
    );
    assert_eq!(
        env("IMAGEWARDEN_OSV_URL")["value"],
        "https://osv-vulnerabilities.storage.googleapis.com",
        "{what}"
    );
    assert_eq!(
        env("IMAGEWARDEN_NVD_URL")["value"],
        "https://nvd.nist.gov/feeds/json/cve/2.0",
        "{what}"
    );
    assert!(
        !args.iter().any(|a| a.starts_with("--job-db")),
        "{what}: scanner Jobs get the operator's database, not one of their own: {args:?}"
    );
    // The job executor serves its database to scanner Jobs through Service
    // imagewarden-database; the inline executor has neither the port nor the Service.
    let jobs = env("IMAGEWARDEN_EXECUTOR")["value"] == "job";
    assert_eq!(
        port("database"),
        jobs.then(|| json!(8081)),
        "{what}: database port"
    );
    assert_eq!(
        env("IMAGEWARDEN_DB_SERVE_SERVICE")["value"],
        if jobs {
            json!("imagewarden-database")
        } else {
            Value::Null
        },
        "{what}"
    );
    assert_eq!(has(objs, "Service", "imagewarden-database"), jobs, "{what}");

    // The Services select the operator's pods and name its ports.
    let pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .context("pod labels")?;
    for (service, port, target) in [
        ("imagewarden-metrics", 8080, "metrics"),
        ("imagewarden-webhook", 8443, "webhook"),
        ("imagewarden-database", 8081, "database"),
    ] {
        let Ok(svc) = find(objs, "Service", service) else {
            assert!(
                service == "imagewarden-webhook" || service == "imagewarden-database",
                "{what}: no Service {service}"
            );
            continue;
        };
        for (k, v) in svc["spec"]["selector"]
            .as_object()
            .context("service selector")?
        {
            assert_eq!(pod_labels.get(k), Some(v), "{what}: {service} selector {k}");
        }
        let p = &svc["spec"]["ports"][0];
        assert_eq!(p["port"], port, "{what}: {service} port");
        assert_eq!(p["targetPort"], target, "{what}: {service} targetPort");
    }

    check_operator_rbac(objs, what)?;
    Ok(())
}

fn check_operator_rbac(objs: &[Value], what: &str) -> Result<()> {
    let role = find(objs, "ClusterRole", "imagewarden-operator")?;
    check_operator_rules(role, what)?;
    let binding = find(objs, "ClusterRoleBinding", "imagewarden-operator")?;
    assert_eq!(binding["roleRef"]["name"], "imagewarden-operator", "{what}");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "imagewarden-operator", "namespace": NAMESPACE}]),
        "{what}"
    );
    check_operator_namespace_rbac(objs, what)
}

/// The rules of the operator's ClusterRole, or of its Role in one watched namespace.
fn check_operator_rules(role: &Value, what: &str) -> Result<()> {
    let rules = role["rules"].as_array().context("rules")?;
    let mut granted: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for rule in rules {
        let groups = strings(&rule["apiGroups"]);
        let resources = strings(&rule["resources"]);
        let verbs = strings(&rule["verbs"]);
        for field in [&groups, &resources, &verbs] {
            assert!(!field.contains(&"*"), "{what}: wildcard in {rule}");
        }
        assert!(
            rule["nonResourceURLs"].is_null(),
            "{what}: nonResourceURLs in {rule}"
        );
        for verb in ["escalate", "impersonate", "delete", "deletecollection"] {
            // Results marked Deleted are removed once their retention has passed; a fix
            // Job once the operator has told of its outcome.
            if verb == "delete" && (resources == ["imagescanresults"] || resources == ["jobs"]) {
                continue;
            }
            assert!(!verbs.contains(&verb), "{what}: {verb} in {rule}");
        }
        // Roles it creates hold only permissions it has itself: no bind, no escalate.
        assert!(!verbs.contains(&"bind"), "{what}: bind in {rule}");
        for g in &groups {
            for r in &resources {
                granted
                    .entry((g.to_string(), r.to_string()))
                    .or_default()
                    .extend(verbs.iter().map(|v| v.to_string()));
            }
        }
    }
    let verbs = |group: &str, resource: &str| {
        granted
            .get(&(group.to_string(), resource.to_string()))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        verbs("", "secrets"),
        ["get"],
        "{what}: Secrets are read by name only"
    );
    // Running Pods are read to judge them again when policies change (with admission);
    // never written, exec'd into or attached to.
    let pods = verbs("", "pods");
    assert!(
        pods.is_empty() || pods == ["get", "list", "watch"],
        "{what}: pods granted {pods:?}"
    );
    for resource in [
        "pods/exec",
        "pods/attach",
        "pods/portforward",
        "nodes",
        "configmaps",
    ] {
        assert!(verbs("", resource).is_empty(), "{what}: {resource} granted");
    }
    for resource in ["clusterrolebindings", "clusterroles"] {
        assert!(
            verbs("rbac.authorization.k8s.io", resource).is_empty(),
            "{what}: {resource} granted"
        );
    }
    assert!(
        verbs("coordination.k8s.io", "leases").is_empty(),
        "{what}: leases are granted in the operator's namespace only"
    );
    assert!(
        verbs("batch", "jobs").contains(&"create".to_string()),
        "{what}: scanner Jobs"
    );
    assert!(
        verbs("events.k8s.io", "events").contains(&"create".to_string()),
        "{what}: events"
    );
    Ok(())
}

/// The operator's namespaced RBAC: its Lease, the database Service, and no scanner
/// ClusterRole (each scanner Job gets a Role of its own from the operator).
fn check_operator_namespace_rbac(objs: &[Value], what: &str) -> Result<()> {
    let lease_role = find(objs, "Role", "imagewarden-operator-leader-election")?;
    assert_eq!(lease_role["metadata"]["namespace"], NAMESPACE, "{what}");
    for rule in lease_role["rules"].as_array().context("rules")? {
        assert_eq!(strings(&rule["resources"]), ["leases"], "{what}");
    }
    // The database Service, read by name in the operator's namespace (job executor).
    if let Ok(role) = find(objs, "Role", "imagewarden-operator-database") {
        assert_eq!(role["metadata"]["namespace"], NAMESPACE, "{what}");
        assert_eq!(
            role["rules"],
            json!([{"apiGroups": [""], "resources": ["services"], "verbs": ["get"],
                    "resourceNames": ["imagewarden-database"]}]),
            "{what}"
        );
        let binding = find(objs, "RoleBinding", "imagewarden-operator-database")?;
        assert_eq!(binding["roleRef"]["name"], "imagewarden-operator-database");
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "imagewarden-operator", "namespace": NAMESPACE}]),
            "{what}"
        );
    } else {
        assert!(
            !has(objs, "Service", "imagewarden-database"),
            "{what}: the database Service without the Role to read it"
        );
    }

    assert!(
        !has(objs, "ClusterRole", "imagewarden-scanner"),
        "{what}: scanner Jobs get a Role each, not a shared ClusterRole"
    );
    Ok(())
}

#[test]
fn rendered_manifests_are_locked_down() -> Result<()> {
    let default = objects(&helm_template(&[])?)?;
    check_locked_down(&default, "helm defaults")?;
    let c = &find(&default, "Deployment", "imagewarden-operator")?["spec"]["template"]["spec"]
        ["containers"][0];
    assert_eq!(c["image"], "imagewarden/imagewarden:0.1.0");
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    let args = strings(&c["args"]);
    assert!(
        args.contains(&"--webhook-token-file=/var/run/imagewarden/webhook/token"),
        "{args:?}"
    );
    // The generated token is in a Secret, mounted as the token file.
    let secret = find(&default, "Secret", "imagewarden-webhook-token")?;
    assert!(secret["data"]["token"]
        .as_str()
        .is_some_and(|t| t.len() >= 40));
    assert!(!has(&default, "ServiceMonitor", "imagewarden-operator"));
    assert!(!default.iter().any(|o| o["kind"] == "ScanRule"));
    // The CRDs are templates (crds.install, see below), kept on uninstall.
    for o in default
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
    {
        assert_eq!(
            o["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep"
        );
    }
    assert!(!args.iter().any(|a| a.starts_with("--result-url-template")));
    let linked = objects(&helm_template(&[
        "--set",
        "links.resultURL=https://grafana.example.com/d/iw?ns={namespace}&name={name}",
    ])?)?;
    let linked_args = strings(
        &find(&linked, "Deployment", "imagewarden-operator")?["spec"]["template"]["spec"]
            ["containers"][0]["args"],
    );
    assert!(
        linked_args.contains(
            &"--result-url-template=https://grafana.example.com/d/iw?ns={namespace}&name={name}"
        ),
        "{linked_args:?}"
    );

    let everything = objects(&helm_template(&[
        "-f",
        &everything_values().display().to_string(),
    ])?)?;
    check_locked_down(&everything, "helm everything-values")?;
    let deploy = find(&everything, "Deployment", "imagewarden-operator")?;
    // Every scan budget of the values reaches the operator (and through it, scanner Jobs).
    {
        let c = &deploy["spec"]["template"]["spec"]["containers"][0];
        let env = |name: &str| -> Value {
            c["env"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["name"] == name)
                .map(|e| e["value"].clone())
                .unwrap_or(Value::Null)
        };
        for (name, value) in [
            ("IMAGEWARDEN_MAX_SBOM_BYTES", "32Mi"),
            ("IMAGEWARDEN_MAX_SBOM_COMPONENTS", "50000"),
            ("IMAGEWARDEN_MAX_MANIFEST_BYTES", "2Mi"),
            ("IMAGEWARDEN_MAX_ZIP_ENTRIES", "100000"),
            ("IMAGEWARDEN_MAX_WARNINGS", "100"),
        ] {
            assert_eq!(env(name), value, "everything-values: {name}");
        }
    }
    assert_eq!(deploy["spec"]["replicas"], 2);
    let c = &deploy["spec"]["template"]["spec"]["containers"][0];
    let env: BTreeMap<&str, &Value> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), &e["value"]))
        .collect();
    assert_eq!(env["IMAGEWARDEN_EXECUTOR"], "inline");
    assert_eq!(env["IMAGEWARDEN_MAX_CONCURRENT_SCANS"], "4");
    assert_eq!(env["IMAGEWARDEN_DB_REFRESH"], "1h");
    assert_eq!(env["IMAGEWARDEN_LOG_FORMAT"], "json");
    let args = strings(&c["args"]);
    assert!(args.contains(&"--db=oci://registry.example.com/imagewarden/vulndb:latest"));
    let secret = find(&everything, "Secret", "imagewarden-webhook-token")?;
    assert_eq!(secret["data"]["token"], "bm90LWEtcmVhbC10b2tlbg==");
    let monitor = find(&everything, "ServiceMonitor", "imagewarden-operator")?;
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    // It scrapes the metrics Service: its selector matches the Service's labels and its
    // endpoint names the Service's port.
    let metrics = find(&everything, "Service", "imagewarden-metrics")?;
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .context("selector")?
    {
        assert_eq!(
            &metrics["metadata"]["labels"][k], v,
            "ServiceMonitor selector {k}"
        );
    }
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        metrics["spec"]["ports"][0]["name"]
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    let rule = find(&everything, "ScanRule", "team-a-releases")?;
    assert_eq!(rule["metadata"]["namespace"], NAMESPACE);
    assert_eq!(
        rule["spec"]["registry"]["credentialsSecretRef"]["name"],
        "team-a-registry-credentials"
    );

    // An existing Secret for the token: the chart creates none and mounts that one.
    let existing = objects(&helm_template(&[
        "--set",
        "webhook.existingSecret=my-token,webhook.existingSecretKey=value",
    ])?)?;
    assert!(!has(&existing, "Secret", "imagewarden-webhook-token"));
    let volumes = &find(&existing, "Deployment", "imagewarden-operator")?["spec"]["template"]
        ["spec"]["volumes"];
    let token = volumes
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "webhook-token")
        .context("webhook-token volume")?;
    assert_eq!(token["secret"]["secretName"], "my-token");
    assert_eq!(
        token["secret"]["items"],
        json!([{"key": "value", "path": "token"}])
    );

    // Without the webhook: no Service, no token, no flag.
    let off = objects(&helm_template(&["--set", "webhook.enabled=false"])?)?;
    assert!(!has(&off, "Service", "imagewarden-webhook"));
    assert!(!has(&off, "Secret", "imagewarden-webhook-token"));

    // Admission: a generated CA in the webhook's caBundle and in the serving Secret, the
    // operator's namespace and kube-system left out, the failure policy as asked.
    let rendered = objects(&helm_template(&[
        "--set",
        "admission.failurePolicy=Ignore,admission.excludeNamespaces={sandbox}",
    ])?)?;
    let webhook = &find(
        &rendered,
        "ValidatingWebhookConfiguration",
        "imagewarden-images",
    )?["webhooks"][0];
    let tls = find(&rendered, "Secret", "imagewarden-admission-tls")?;
    assert_eq!(tls["type"], "kubernetes.io/tls");
    assert_eq!(webhook["clientConfig"]["caBundle"], tls["data"]["ca.crt"]);
    assert_eq!(webhook["failurePolicy"], "Ignore");
    assert_eq!(
        webhook["namespaceSelector"]["matchExpressions"][0]["values"],
        json!(["kube-system", NAMESPACE, "sandbox"])
    );
    assert_eq!(
        webhook["clientConfig"]["service"]["name"],
        "imagewarden-admission"
    );
    let args = strings(
        &find(&rendered, "Deployment", "imagewarden-operator")?["spec"]["template"]["spec"]
            ["containers"][0]["args"],
    )
    .join(" ");
    assert!(args.contains("--admission-addr=0.0.0.0:9443"), "{args}");
    let off = objects(&helm_template(&["--set", "admission.enabled=false"])?)?;
    for (kind, name) in [
        ("ValidatingWebhookConfiguration", "imagewarden-images"),
        ("Service", "imagewarden-admission"),
        ("Secret", "imagewarden-admission-tls"),
    ] {
        assert!(!has(&off, kind, name), "{kind} {name} without admission");
    }
    let cert_manager = objects(&helm_template(&[
        "--set",
        "admission.certManager.enabled=true",
    ])?)?;
    assert!(!has(&cert_manager, "Secret", "imagewarden-admission-tls"));
    let webhook = find(
        &cert_manager,
        "ValidatingWebhookConfiguration",
        "imagewarden-images",
    )?;
    assert_eq!(
        webhook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        format!("{NAMESPACE}/imagewarden-admission-tls")
    );
    assert!(webhook["webhooks"][0]["clientConfig"]["caBundle"].is_null());

    // Listed namespaces: the operator's rules become a Role and RoleBinding in each, and
    // nothing cluster-wide is granted to it.
    let scoped = objects(&helm_template(&[
        "--set",
        "watchNamespaces={team-a,team-b}",
        "--set",
        "admission.enabled=false",
    ])?)?;
    assert!(!has(&scoped, "ClusterRole", "imagewarden-operator"));
    assert!(!has(&scoped, "ClusterRoleBinding", "imagewarden-operator"));
    let cluster_rules = &find(&default, "ClusterRole", "imagewarden-operator")?["rules"];
    for ns in ["team-a", "team-b"] {
        let role = find_in(&scoped, "Role", "imagewarden-operator", ns)?;
        check_operator_rules(role, "helm watchNamespaces")?;
        // The same rules as the ClusterRole, less the cluster-wide policy ones (policies
        // and admission are off in a namespace-scoped operator).
        let policy_rule = |rule: &Value| {
            strings(&rule["resources"]).iter().any(|r| {
                [
                    "imagepolicies",
                    "imagepolicies/status",
                    "vulnerabilityexceptions",
                    "vulnerabilityexceptions/status",
                    "namespaces",
                    "pods",
                ]
                .contains(r)
            })
        };
        let expected: Vec<&Value> = cluster_rules
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| !policy_rule(r))
            .collect();
        let got: Vec<&Value> = role["rules"].as_array().unwrap().iter().collect();
        assert_eq!(
            got, expected,
            "{ns}: the ClusterRole's rules but the policy ones"
        );
        let binding = find_in(&scoped, "RoleBinding", "imagewarden-operator", ns)?;
        assert_eq!(
            binding["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "imagewarden-operator"})
        );
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "imagewarden-operator", "namespace": NAMESPACE}])
        );
    }
    check_operator_namespace_rbac(&scoped, "helm watchNamespaces")?;
    let c = &find(&scoped, "Deployment", "imagewarden-operator")?["spec"]["template"]["spec"]
        ["containers"][0];
    let watch = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "IMAGEWARDEN_WATCH_NAMESPACES")
        .context("IMAGEWARDEN_WATCH_NAMESPACES")?;
    assert_eq!(watch["value"], "team-a,team-b");

    // The kustomize bases.
    let base = objects(&kustomize(&kustomize_dir("base"))?)?;
    check_locked_down(&base, "kustomize base")?;
    let ns = find(&base, "Namespace", NAMESPACE)?;
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    let webhook = objects(&kustomize(&kustomize_dir("webhook"))?)?;
    check_locked_down(&webhook, "kustomize webhook")?;
    let admission = objects(&kustomize(&kustomize_dir("admission"))?)?;
    check_locked_down(&admission, "kustomize admission")?;
    let operator_certs = objects(&kustomize(&kustomize_dir("admission-operator-certs"))?)?;
    check_locked_down(&operator_certs, "kustomize admission-operator-certs")?;
    let examples = objects(&kustomize(&kustomize_dir("examples"))?)?;
    assert_eq!(
        examples.len(),
        1,
        "the examples overlay holds the example ScanRule"
    );
    assert_eq!(examples[0]["kind"], "ScanRule");
    Ok(())
}

/// Objects keyed by kind, namespace and name, without the labels only Helm sets.
fn comparable(objs: Vec<Value>) -> BTreeMap<String, Value> {
    objs.into_iter()
        .filter(|o| o["kind"] != "Namespace" && o["kind"] != "CustomResourceDefinition")
        // `helm test` has no kustomize counterpart.
        .filter(|o| o["metadata"]["annotations"]["helm.sh/hook"] != "test")
        .map(|mut o| {
            if let Some(labels) = o["metadata"]["labels"].as_object_mut() {
                labels.remove("helm.sh/chart");
                labels.remove("app.kubernetes.io/managed-by");
            }
            let key = format!(
                "{} {}/{}",
                o["kind"].as_str().unwrap_or_default(),
                o["metadata"]["namespace"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap_or_default()
            );
            (key, o)
        })
        .collect()
}

fn assert_same_objects(helm: Vec<Value>, kustomize: Vec<Value>, what: &str) {
    let helm = comparable(helm);
    let kustomize = comparable(kustomize);
    assert_eq!(
        helm.keys().collect::<Vec<_>>(),
        kustomize.keys().collect::<Vec<_>>(),
        "{what}: Helm and kustomize install different objects"
    );
    for (key, h) in &helm {
        assert_eq!(
            h, &kustomize[key],
            "{what}: {key} differs between Helm (left) and kustomize (right)"
        );
    }
}

#[test]
fn kustomize_installs_what_the_chart_installs() -> Result<()> {
    assert_same_objects(
        objects(&helm_template(&[
            "--set",
            "webhook.enabled=false",
            "--set",
            "admission.enabled=false",
        ])?)?,
        objects(&kustomize(&kustomize_dir("base"))?)?,
        "kustomize base vs helm --set webhook.enabled=false,admission.enabled=false",
    );
    assert_same_objects(
        objects(&helm_template(&[
            "--set",
            "webhook.existingSecret=imagewarden-webhook-token",
            "--set",
            "admission.enabled=false",
        ])?)?,
        objects(&kustomize(&kustomize_dir("webhook"))?)?,
        "kustomize webhook vs helm --set webhook.existingSecret=imagewarden-webhook-token",
    );
    assert_same_objects(
        objects(&helm_template(&[
            "--set",
            "webhook.enabled=false",
            "--set",
            "admission.certManager.enabled=true",
        ])?)?,
        objects(&kustomize(&kustomize_dir("admission"))?)?,
        "kustomize admission vs helm --set webhook.enabled=false,admission.certManager.enabled=true",
    );
    assert_same_objects(
        objects(&helm_template(&[
            "--set",
            "webhook.enabled=false",
            "--set",
            "admission.operatorCertificates.enabled=true",
        ])?)?,
        objects(&kustomize(&kustomize_dir("admission-operator-certs"))?)?,
        "kustomize admission-operator-certs vs helm --set webhook.enabled=false,admission.operatorCertificates.enabled=true",
    );
    assert_same_objects(
        objects(&helm_template(&[
            "--set",
            "webhook.enabled=false",
            "--set",
            "admission.enabled=false",
            "--set",
            "api.enabled=true",
        ])?)?,
        objects(&kustomize(&kustomize_dir("status-api"))?)?,
        "kustomize status-api vs helm --set webhook.enabled=false,admission.enabled=false,api.enabled=true",
    );
    // The component also composes with the admission overlays (kustomize takes relative
    // paths only).
    let both = tempfile::tempdir()?;
    let up = "../".repeat(both.path().components().count() - 1);
    let relative = |name: &str| {
        let dir = kustomize_dir(name);
        format!("{up}{}", dir.strip_prefix("/").unwrap_or(&dir).display())
    };
    std::fs::write(
        both.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {}\ncomponents:\n  - {}\n",
            relative("admission-operator-certs"),
            relative("components/status-api"),
        ),
    )?;
    assert_same_objects(
        objects(&helm_template(&[
            "--set",
            "webhook.enabled=false",
            "--set",
            "admission.operatorCertificates.enabled=true",
            "--set",
            "api.enabled=true",
        ])?)?,
        objects(&kustomize(both.path())?)?,
        "kustomize admission-operator-certs + components/status-api vs helm --set webhook.enabled=false,admission.operatorCertificates.enabled=true,api.enabled=true",
    );
    Ok(())
}

/// Just enough of a Prometheus Operator CRD (`ServiceMonitor`, `PrometheusRule`) for the
/// API server to know the kind (the objects' contents are checked by the chart tests, not
/// by the server).
fn monitoring_crd(kind: &str) -> String {
    let singular = kind.to_lowercase();
    format!(
        r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {singular}s.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {{kind: {kind}, listKind: {kind}List, plural: {singular}s, singular: {singular}}}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
"#
    )
}

/// Applies `yaml` to `cp` with `kubectl apply ARGS -f -`; returns stdout and stderr.
fn kubectl_apply(cp: &ControlPlane, args: &[&str], yaml: &str) -> Result<(String, String)> {
    let mut cmd = cp.kubectl()?;
    cmd.arg("apply").args(args).args(["-f", "-"]);
    let program = format!("kubectl apply {}", args.join(" "));
    let (ok, stdout, stderr) = run(cmd, Some(yaml))?;
    if !ok {
        bail!(
            "{program} failed:\n{stderr}\n{stdout}\napiserver log:\n{}",
            cp.apiserver_log_tail(20)
        );
    }
    Ok((stdout, stderr))
}

/// `kubectl apply --dry-run=server`: every object accepted and nothing stored. Returns
/// kubectl's warnings.
fn server_dry_run(cp: &ControlPlane, yaml: &str, what: &str) -> Result<String> {
    let (stdout, stderr) = kubectl_apply(cp, &["--dry-run=server"], yaml)
        .with_context(|| format!("server dry run of {what}"))?;
    let count = objects(yaml)?.len();
    let accepted = stdout
        .lines()
        .filter(|l| l.ends_with("(server dry run)"))
        .count();
    assert_eq!(
        accepted, count,
        "{what}: not every object was accepted:\n{stdout}"
    );
    Ok(stderr)
}

/// [`server_dry_run`], and no object violates the Pod Security Standard `restricted`
/// that the namespace enforces.
fn server_dry_run_restricted(cp: &ControlPlane, yaml: &str, what: &str) -> Result<()> {
    let warnings = server_dry_run(cp, yaml, what)?;
    assert!(
        !warnings.contains("PodSecurity"),
        "{what} violates the restricted Pod Security Standard:\n{warnings}"
    );
    Ok(())
}

#[tokio::test]
async fn a_real_apiserver_accepts_the_chart_and_the_kustomize_bases() -> Result<()> {
    let cp = ControlPlane::start().await?;
    // CRDs for real, as `helm install` does before the templates; then the namespace with
    // the Pod Security level the kustomize base gives it.
    // (crds/, as a release of the chart before the CRDs became templates installed them.)
    let crds = repo_root().join("crds").display().to_string();
    cp.kubectl_output(&["apply", "--server-side", "-f", &crds])?;
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        kubectl_apply(&cp, &["--server-side"], &monitoring_crd(kind))?;
    }
    cp.kubectl_output(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/scanrules.imagewarden.io",
        "crd/scantasks.imagewarden.io",
        "crd/imagescanresults.imagewarden.io",
        "crd/servicemonitors.monitoring.coreos.com",
        "crd/prometheusrules.monitoring.coreos.com",
    ])?;
    cp.kubectl_output(&["create", "namespace", NAMESPACE])?;
    cp.kubectl_output(&[
        "label",
        "namespace",
        NAMESPACE,
        "pod-security.kubernetes.io/enforce=restricted",
    ])?;

    // The check can fail: a variant that allows privilege escalation is reported.
    let privileged = helm_template(&[])?.replace(
        "allowPrivilegeEscalation: false",
        "allowPrivilegeEscalation: true",
    );
    let warnings = server_dry_run(&cp, &privileged, "privileged variant")?;
    assert!(
        warnings.contains("PodSecurity") && warnings.contains("allowPrivilegeEscalation"),
        "a Deployment that allows privilege escalation was not reported: {warnings}"
    );

    server_dry_run_restricted(&cp, &helm_template(&[])?, "helm defaults")?;
    server_dry_run_restricted(
        &cp,
        &helm_template(&[
            "--set",
            "crds.install=false",
            "--set",
            "rbac.aggregatedRoles=false",
            "--set",
            "test.enabled=false",
            "--set",
            "links.resultURL=https://grafana.example.com/d/iw?ns={namespace}&name={name}",
        ])?,
        "helm without CRDs, aggregated roles and test, with a result link",
    )?;
    server_dry_run_restricted(
        &cp,
        &helm_template(&["-f", &everything_values().display().to_string()])?,
        "helm everything-values (ServiceMonitor, PrometheusRule, dashboard, example ScanRule, inline executor)",
    )?;
    server_dry_run_restricted(&cp, &kustomize(&kustomize_dir("base"))?, "kustomize base")?;
    server_dry_run_restricted(
        &cp,
        &kustomize(&kustomize_dir("webhook"))?,
        "kustomize webhook",
    )?;
    let examples = kustomize(&kustomize_dir("examples"))?;
    let (stdout, _) = kubectl_apply(&cp, &["--dry-run=server", "-n", NAMESPACE], &examples)?;
    assert!(
        stdout.contains("scanrule.imagewarden.io/team-a-releases created (server dry run)"),
        "{stdout}"
    );
    // Nothing was stored.
    let deployments = cp.kubectl_output(&["get", "deployments", "-A", "-o", "name"])?;
    assert!(deployments.trim().is_empty(), "{deployments}");

    // A real `helm install`, then `helm upgrade`: the generated webhook token stays (the
    // registries are configured with it).
    let chart = chart_dir().display().to_string();
    let helm_cp = |args: &[&str]| -> Result<String> {
        let mut cmd = helm(args)?;
        cmd.env("KUBECONFIG", cp.kubeconfig());
        run_ok(cmd, None)
    };
    let token = || {
        cp.kubectl_output(&[
            "-n",
            NAMESPACE,
            "get",
            "secret",
            "imagewarden-webhook-token",
            "-o",
            "jsonpath={.data.token}",
        ])
    };
    // CRDs installed from an older chart's crds/ belong to no release: adopt them, as the
    // README's upgrade path says, and the release then owns and upgrades them.
    for crd in std::fs::read_dir(repo_root().join("crds"))? {
        let file = crd?.file_name().to_string_lossy().into_owned();
        let Some(name) = file.strip_suffix(".yaml") else {
            continue;
        };
        let crd = format!("crd/{name}");
        cp.kubectl_output(&["label", &crd, "app.kubernetes.io/managed-by=Helm"])?;
        cp.kubectl_output(&[
            "annotate",
            &crd,
            "meta.helm.sh/release-name=imagewarden",
            &format!("meta.helm.sh/release-namespace={NAMESPACE}"),
        ])?;
    }
    helm_cp(&[
        "install",
        "imagewarden",
        &chart,
        "-n",
        NAMESPACE,
        "--set",
        "examples.enabled=true",
    ])?;
    // The example ScanRule (a post-install hook, after the CRDs) is there; the CRDs carry
    // the release's labels and are kept on uninstall.
    let rules = cp.kubectl_output(&["-n", NAMESPACE, "get", "scanrules", "-o", "name"])?;
    assert_eq!(rules.trim(), "scanrule.imagewarden.io/team-a-releases");
    let crd = cp.kubectl_output(&[
        "get",
        "crd/scanrules.imagewarden.io",
        "-o",
        "jsonpath={.metadata.labels.app\\.kubernetes\\.io/instance} {.metadata.annotations.helm\\.sh/resource-policy}",
    ])?;
    assert_eq!(crd.trim(), "imagewarden keep");
    let first = token()?;
    assert!(first.len() >= 40, "generated token {first:?}");
    helm_cp(&["upgrade", "imagewarden", &chart, "-n", NAMESPACE])?;
    assert_eq!(token()?, first, "helm upgrade changed the webhook token");
    let deployments = cp.kubectl_output(&["-n", NAMESPACE, "get", "deployments", "-o", "name"])?;
    assert_eq!(deployments.trim(), "deployment.apps/imagewarden-operator");
    Ok(())
}

/// `kubectl auth can-i VERB RESOURCE -n NS` as `user`.
fn can_i(cp: &ControlPlane, user: &str, args: &[&str]) -> Result<bool> {
    let mut cmd = cp.kubectl()?;
    cmd.args(["auth", "can-i"])
        .args(args)
        .arg(format!("--as={user}"));
    let (_, stdout, stderr) = run(cmd, None)?;
    match stdout.trim() {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => bail!("kubectl auth can-i {args:?}: {other} {stderr}"),
    }
}

#[tokio::test]
async fn after_a_real_install_the_operator_can_do_what_it_needs_and_no_more() -> Result<()> {
    let cp = ControlPlane::start().await?;
    let base = kustomize_dir("base").display().to_string();
    let out = cp.kubectl_output(&["apply", "-k", &base])?;
    assert!(
        out.contains("deployment.apps/imagewarden-operator created"),
        "{out}"
    );
    cp.kubectl_output(&["create", "namespace", "team-a"])?;

    let op = |args: &[&str]| can_i(&cp, OPERATOR_SA, args);
    let allowed: &[&[&str]] = &[
        &["create", "jobs.batch", "-n", "team-a"],
        &["watch", "jobs.batch", "--all-namespaces"],
        // A fix Job, once its outcome is told.
        &["delete", "jobs.batch", "-n", "team-a"],
        &["list", "pods", "--all-namespaces"],
        &["get", "secrets", "-n", "team-a"],
        &["list", "scanrules.imagewarden.io", "--all-namespaces"],
        &[
            "patch",
            "scanrules.imagewarden.io",
            "--subresource=status",
            "-n",
            "team-a",
        ],
        &["create", "scantasks.imagewarden.io", "-n", "team-a"],
        &[
            "patch",
            "scantasks.imagewarden.io",
            "--subresource=status",
            "-n",
            "team-a",
        ],
        &["create", "imagescanresults.imagewarden.io", "-n", "team-a"],
        &[
            "list",
            "imagescanresults.imagewarden.io",
            "--all-namespaces",
        ],
        &["create", "events.events.k8s.io", "-n", "team-a"],
        &["create", "serviceaccounts", "-n", "team-a"],
        &[
            "create",
            "rolebindings.rbac.authorization.k8s.io",
            "-n",
            "team-a",
        ],
        &["create", "roles.rbac.authorization.k8s.io", "-n", "team-a"],
        &["create", "leases.coordination.k8s.io", "-n", NAMESPACE],
        &[
            "update",
            "leases.coordination.k8s.io/imagewarden-operator",
            "-n",
            NAMESPACE,
        ],
        &["get", "services/imagewarden-database", "-n", NAMESPACE],
    ];
    for args in allowed {
        assert!(op(args)?, "the operator cannot {args:?}");
    }
    let denied: &[&[&str]] = &[
        &["delete", "secrets", "-n", "team-a"],
        &["list", "secrets", "-n", "team-a"],
        &["watch", "secrets", "--all-namespaces"],
        &["create", "secrets", "-n", "team-a"],
        &["create", "pods", "-n", "team-a"],
        &["create", "pods", "--subresource=exec", "-n", "team-a"],
        &["delete", "pods", "-n", "team-a"],
        &["delete", "scanrules.imagewarden.io", "-n", "team-a"],
        &["update", "scanrules.imagewarden.io", "-n", "team-a"],
        &[
            "bind",
            "clusterroles.rbac.authorization.k8s.io/cluster-admin",
        ],
        &["bind", "clusterroles.rbac.authorization.k8s.io/admin"],
        &["escalate", "clusterroles.rbac.authorization.k8s.io"],
        &["create", "clusterrolebindings.rbac.authorization.k8s.io"],
        &[
            "bind",
            "clusterroles.rbac.authorization.k8s.io/imagewarden-scanner",
        ],
        &[
            "escalate",
            "roles.rbac.authorization.k8s.io",
            "-n",
            "team-a",
        ],
        &["impersonate", "serviceaccounts", "-n", "team-a"],
        &["create", "leases.coordination.k8s.io", "-n", "team-a"],
        &[
            "update",
            "leases.coordination.k8s.io/other",
            "-n",
            NAMESPACE,
        ],
        &["get", "configmaps", "-n", NAMESPACE],
        &["get", "services/imagewarden-webhook", "-n", NAMESPACE],
        &["list", "services", "-n", NAMESPACE],
        &["get", "services/imagewarden-database", "-n", "team-a"],
    ];
    for args in denied {
        assert!(!op(args)?, "the operator can {args:?}");
    }

    // What the operator does in a ScanRule's namespace before each scanner Job, as its
    // ServiceAccount: a ServiceAccount, a Role that writes one result by name, and a
    // RoleBinding of the two. A Role with more than the operator holds, or a binding to a
    // ClusterRole, is refused by the API server.
    let as_op = format!("--as={OPERATOR_SA}");
    let job = "iw-scan-0123456789abcdef";
    cp.kubectl_output(&["-n", "team-a", "create", "serviceaccount", job, &as_op])?;
    cp.kubectl_output(&[
        "-n",
        "team-a",
        "create",
        "role",
        job,
        "--verb=get,create,patch",
        "--resource=imagescanresults.imagewarden.io",
        "--resource-name=reg-team-a-app-0123",
        &as_op,
    ])?;
    cp.kubectl_output(&[
        "-n",
        "team-a",
        "create",
        "rolebinding",
        job,
        &format!("--role={job}"),
        &format!("--serviceaccount=team-a:{job}"),
        &as_op,
    ])?;
    let err = cp
        .kubectl_output(&[
            "-n",
            "team-a",
            "create",
            "role",
            "secret-lister",
            "--verb=list",
            "--resource=secrets",
            &as_op,
        ])
        .expect_err("a Role with more than the operator holds must be forbidden");
    assert!(err.to_string().contains("forbidden"), "{err}");
    // (admin, edit and view are aggregated by kube-controller-manager, not running here:
    // empty, anyone may bind them. A ClusterRole with a permission the operator lacks
    // stands in for them.)
    cp.kubectl_output(&[
        "create",
        "clusterrole",
        "secret-lister",
        "--verb=get,list",
        "--resource=secrets",
    ])?;
    for other in ["cluster-admin", "secret-lister"] {
        let err = cp
            .kubectl_output(&[
                "-n",
                "team-a",
                "create",
                "rolebinding",
                &format!("bind-{other}"),
                &format!("--clusterrole={other}"),
                &format!("--serviceaccount=team-a:{job}"),
                &as_op,
            ])
            .expect_err("binding another ClusterRole must be forbidden");
        assert!(err.to_string().contains("forbidden"), "{err}");
    }

    // The scanner's ServiceAccount writes its own result, by name, and nothing else.
    let scanner = format!("system:serviceaccount:team-a:{job}");
    for args in [
        &[
            "create",
            "imagescanresults.imagewarden.io/reg-team-a-app-0123",
            "-n",
            "team-a",
        ][..],
        &[
            "patch",
            "imagescanresults.imagewarden.io/reg-team-a-app-0123",
            "-n",
            "team-a",
        ],
    ] {
        assert!(can_i(&cp, &scanner, args)?, "the scanner cannot {args:?}");
    }
    for args in [
        &[
            "patch",
            "imagescanresults.imagewarden.io/reg-team-a-other-4567",
            "-n",
            "team-a",
        ][..],
        &["create", "imagescanresults.imagewarden.io", "-n", "default"],
        &["get", "secrets", "-n", "team-a"],
        &["list", "imagescanresults.imagewarden.io", "-n", "team-a"],
        &["delete", "imagescanresults.imagewarden.io", "-n", "team-a"],
        &["get", "scanrules.imagewarden.io", "-n", "team-a"],
    ] {
        assert!(!can_i(&cp, &scanner, args)?, "the scanner can {args:?}");
    }
    Ok(())
}

/// Harbor's scanner adapter (`imagewarden server`) is a chart option: off by default; on,
/// a locked-down Deployment whose flags carry the values, with the token from a Secret.
#[test]
fn the_harbor_adapter_is_a_chart_option_that_honours_its_values() -> Result<()> {
    let default = objects(&helm_template(&[])?)?;
    assert!(!has(&default, "Deployment", "imagewarden-harbor-adapter"));
    assert!(!has(&default, "Service", "imagewarden-harbor-adapter"));

    let everything = objects(&helm_template(&[
        "-f",
        &everything_values().display().to_string(),
    ])?)?;
    let deploy = find_in(
        &everything,
        "Deployment",
        "imagewarden-harbor-adapter",
        NAMESPACE,
    )?;
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert_eq!(strings(&c["command"]), ["imagewarden", "server"]);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        strings(&c["securityContext"]["capabilities"]["drop"]),
        ["ALL"]
    );
    let args = strings(&c["args"]);
    for expected in [
        "--api-token-file=/var/run/imagewarden/harbor-adapter/token",
        "--tls-cert=/var/run/imagewarden/harbor-adapter-tls/tls.crt",
        "--db=/usr/share/imagewarden/db.idx",
        "--db-refresh=12h",
        "--queue=8",
        "--workers=2",
        "--allowed-registries=harbor-core.harbor:80",
        "--cluster-cidrs=10.96.0.0/12,10.244.0.0/16",
        "--egress-allow=10.96.12.34/32,gitlab.com",
    ] {
        assert!(args.contains(&expected), "{expected} not in {args:?}");
    }
    assert_eq!(c["readinessProbe"]["httpGet"]["scheme"], "HTTPS");
    let secret = find_in(
        &everything,
        "Secret",
        "imagewarden-harbor-adapter-token",
        NAMESPACE,
    )?;
    assert!(secret["data"]["token"]
        .as_str()
        .is_some_and(|t| t.len() >= 40));
    let service = find_in(
        &everything,
        "Service",
        "imagewarden-harbor-adapter",
        NAMESPACE,
    )?;
    assert_eq!(
        service["spec"]["selector"],
        deploy["spec"]["selector"]["matchLabels"]
    );

    // The operator's database settings are the default; a token Secret of the user's.
    let own = objects(&helm_template(&[
        "--set",
        "harborAdapter.enabled=true",
        "--set",
        "harborAdapter.token.existingSecret=harbor-scanner-token",
        "--set",
        "harborAdapter.token.existingSecretKey=bearer",
    ])?)?;
    assert!(!has(&own, "Secret", "imagewarden-harbor-adapter-token"));
    let pod = &find(&own, "Deployment", "imagewarden-harbor-adapter")?["spec"]["template"]["spec"];
    let args = strings(&pod["containers"][0]["args"]);
    assert!(args.contains(&"--api-token-file=/var/run/imagewarden/harbor-adapter/bearer"));
    assert!(args.contains(&"--db=https://osv-vulnerabilities.storage.googleapis.com"));
    assert!(args.contains(&"--db-refresh=6h"));
    assert_eq!(
        pod["volumes"][1]["secret"]["secretName"],
        "harbor-scanner-token"
    );

    // Bad values are refused by the schema.
    for (set, error) in [
        ("harborAdapter.queue=0", "/harborAdapter/queue"),
        ("harborAdapter.reportTTL=soon", "/harborAdapter/reportTTL"),
        (
            "harborAdapter.allowedRegistries={https://x}",
            "/harborAdapter/allowedRegistries",
        ),
    ] {
        let chart = chart_dir().display().to_string();
        let (ok, _, stderr) = run(
            helm(&["template", "imagewarden", &chart, "--set", set])?,
            None,
        )?;
        assert!(!ok && stderr.contains(error), "{set}: {stderr}");
    }
    Ok(())
}

#[test]
fn crds_install_switches_the_crds_and_every_object_carries_the_instance_label() -> Result<()> {
    let crds = |args: &[&str]| -> Result<Vec<String>> {
        Ok(objects(&helm_template(args)?)?
            .into_iter()
            .filter(|o| o["kind"] == "CustomResourceDefinition")
            .map(|o| {
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect())
    };
    let mut generated: Vec<String> = yaml_files(&repo_root().join("crds"))?
        .keys()
        .map(|f| f.trim_end_matches(".yaml").to_string())
        .collect();
    generated.sort();
    let mut rendered = crds(&[])?;
    rendered.sort();
    assert_eq!(rendered, generated, "crds.install=true (the default)");
    assert!(crds(&["--set", "crds.install=false"])?.is_empty());

    for args in [
        vec![],
        vec!["-f", everything_values().to_str().unwrap()],
        vec!["--set", "admission.certManager.enabled=true"],
    ] {
        for o in objects(&helm_template(&args)?)? {
            let what = format!("{} {} ({args:?})", o["kind"], o["metadata"]["name"]);
            let labels = &o["metadata"]["labels"];
            assert_eq!(
                labels["app.kubernetes.io/instance"], "imagewarden",
                "{what}"
            );
            for key in [
                "app.kubernetes.io/name",
                "app.kubernetes.io/version",
                "app.kubernetes.io/managed-by",
                "app.kubernetes.io/part-of",
                "helm.sh/chart",
            ] {
                assert!(labels[key].is_string(), "{what} lacks {key}");
            }
            if let Some(template) = o["spec"]["template"]["metadata"]["labels"].as_object() {
                assert_eq!(
                    template["app.kubernetes.io/instance"], "imagewarden",
                    "{what}"
                );
            }
            // Selectors stay as they were: a Deployment's cannot change on upgrade.
            if o["kind"] == "Deployment" {
                let component = if o["metadata"]["name"] == "imagewarden-harbor-adapter" {
                    "harbor-adapter"
                } else {
                    "operator"
                };
                assert_eq!(
                    o["spec"]["selector"]["matchLabels"],
                    json!({"app.kubernetes.io/name": "imagewarden", "app.kubernetes.io/component": component}),
                    "{what}"
                );
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn namespace_viewers_read_results_and_editors_write_rules() -> Result<()> {
    let cp = ControlPlane::start_with(imagewarden_tests::control_plane::ControlPlaneOptions {
        controller_manager: true,
    })
    .await?;
    let crds = repo_root().join("crds").display().to_string();
    cp.kubectl_output(&["apply", "--server-side", "-f", &crds])?;
    let aggregated: String = objects(&helm_template(&[])?)?
        .into_iter()
        .filter(|o| {
            o["metadata"]["name"] == "imagewarden-view"
                || o["metadata"]["name"] == "imagewarden-edit"
        })
        .map(|o| format!("---\n{}", serde_norway::to_string(&o).unwrap()))
        .collect();
    kubectl_apply(&cp, &["--server-side"], &aggregated)?;
    cp.kubectl_output(&["create", "namespace", "team-a"])?;
    cp.kubectl_output(&[
        "-n",
        "team-a",
        "create",
        "rolebinding",
        "alice-view",
        "--clusterrole=view",
        "--user=alice",
    ])?;
    cp.kubectl_output(&[
        "-n",
        "team-a",
        "create",
        "rolebinding",
        "bob-edit",
        "--clusterrole=edit",
        "--user=bob",
    ])?;
    // kube-controller-manager aggregates the rules into view and edit.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !can_i(
        &cp,
        "alice",
        &["list", "imagescanresults.imagewarden.io", "-n", "team-a"],
    )? {
        assert!(
            std::time::Instant::now() < deadline,
            "view never gained imagescanresults"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    while !can_i(
        &cp,
        "bob",
        &["create", "scanrules.imagewarden.io", "-n", "team-a"],
    )? {
        assert!(
            std::time::Instant::now() < deadline,
            "edit never gained scanrules"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    for resource in [
        "scanrules.imagewarden.io",
        "scantasks.imagewarden.io",
        "imagescanresults.imagewarden.io",
        "vulnerabilityexceptions.imagewarden.io",
    ] {
        for verb in ["get", "list", "watch"] {
            assert!(
                can_i(&cp, "alice", &[verb, resource, "-n", "team-a"])?,
                "view cannot {verb} {resource}"
            );
        }
        assert!(
            !can_i(&cp, "alice", &["create", resource, "-n", "team-a"])?,
            "view can create {resource}"
        );
        assert!(
            !can_i(&cp, "alice", &["list", resource, "-n", "default"])?,
            "view reaches another namespace"
        );
    }
    for resource in [
        "scanrules.imagewarden.io",
        "vulnerabilityexceptions.imagewarden.io",
    ] {
        for verb in ["create", "update", "patch", "delete"] {
            assert!(
                can_i(&cp, "bob", &[verb, resource, "-n", "team-a"])?,
                "edit cannot {verb} {resource}"
            );
        }
    }
    assert!(can_i(
        &cp,
        "bob",
        &["create", "scantasks.imagewarden.io", "-n", "team-a"]
    )?);
    // Results and status stay the operator's.
    for args in [
        &["create", "imagescanresults.imagewarden.io", "-n", "team-a"][..],
        &[
            "patch",
            "scanrules.imagewarden.io",
            "--subresource=status",
            "-n",
            "team-a",
        ],
        &["patch", "imagescanresults.imagewarden.io", "-n", "team-a"],
    ] {
        assert!(!can_i(&cp, "bob", args)?, "edit can {args:?}");
    }
    Ok(())
}

/// The series names the operator exposes on `/metrics` (families without samples yet
/// included), read from its own renderer.
fn operator_metric_names() -> std::collections::BTreeSet<String> {
    let rendered = imagewarden_operator::metrics::Metrics::default().render();
    imagewarden_tests::promql::exposed_names(&rendered)
}

/// Fails naming each query of `what` that reads a metric the operator does not expose,
/// or no metric at all (a query the extraction could not read).
fn check_queries(queries: &[String], what: &str) {
    let exposed = operator_metric_names();
    assert!(!queries.is_empty(), "{what}: no queries");
    for q in queries {
        let used = imagewarden_tests::promql::metric_names(q);
        assert!(!used.is_empty(), "{what}: no metric in {q}");
        for name in used {
            assert!(
                exposed.contains(&name),
                "{what}: {name} (in {q}) is not a metric the operator exposes: {exposed:?}"
            );
        }
    }
}

/// The dashboard's PromQL: every panel target's `expr` and every query variable.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if let Some(expr) = o.get("expr").and_then(Value::as_str) {
                    out.push(expr.to_string());
                }
                for v in o.values() {
                    walk(v, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"] == "query" {
            let q = var["query"]["query"].as_str().or(var["query"].as_str());
            out.push(q.expect("a query variable has a query").to_string());
        }
    }
    out
}

#[test]
fn the_grafana_dashboard_is_valid_and_queries_only_metrics_the_operator_exposes() -> Result<()> {
    let path = chart_dir().join("files/grafana/imagewarden-dashboard.json");
    let dashboard: Value = serde_json::from_slice(&std::fs::read(&path)?)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    for key in ["uid", "title"] {
        assert!(
            dashboard[key].as_str().is_some_and(|s| !s.is_empty()),
            "{key}"
        );
    }
    assert!(dashboard["schemaVersion"].as_u64().is_some());
    let panels = dashboard["panels"].as_array().context("panels")?;
    let mut ids = std::collections::BTreeSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().context("panel id")?), "{p}");
        for k in ["x", "y", "w", "h"] {
            assert!(p["gridPos"][k].as_u64().is_some(), "gridPos.{k} of {p}");
        }
        if p["type"] == "row" {
            continue;
        }
        // Every query goes to the data source the user picks.
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        let targets = p["targets"].as_array().context("targets")?;
        assert!(!targets.is_empty(), "{} has no query", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        }
    }
    let vars: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .context("templating")?
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(vars.contains(&"datasource"), "{vars:?}");
    check_queries(&dashboard_queries(&dashboard), "the Grafana dashboard");
    Ok(())
}

#[test]
fn the_dashboard_configmap_and_the_prometheus_rule_are_rendered_only_when_enabled() -> Result<()> {
    let default = objects(&helm_template(&[])?)?;
    assert!(!has(&default, "ConfigMap", "imagewarden-grafana-dashboard"));
    assert!(!default.iter().any(|o| o["kind"] == "PrometheusRule"));

    let on = objects(&helm_template(&[
        "--set",
        "metrics.grafanaDashboard.enabled=true",
        "--set",
        "metrics.grafanaDashboard.labelKey=example.com/dashboard",
        "--set",
        "metrics.grafanaDashboard.labelValue=imagewarden",
        "--set",
        "metrics.grafanaDashboard.namespace=monitoring",
        "--set",
        "metrics.grafanaDashboard.annotations.grafana_folder=Security",
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--set",
        "metrics.prometheusRule.labels.release=prometheus",
        "--set",
        "metrics.prometheusRule.databaseMaxAgeHours=72",
        // --set makes 0.25 a string, which the schema refuses; values files give numbers.
        "--set-json",
        "metrics.prometheusRule.scanFailureRatio=0.25",
    ])?)?;
    let cm = find_in(
        &on,
        "ConfigMap",
        "imagewarden-grafana-dashboard",
        "monitoring",
    )?;
    assert_eq!(
        cm["metadata"]["labels"]["example.com/dashboard"],
        "imagewarden"
    );
    assert_eq!(cm["metadata"]["annotations"]["grafana_folder"], "Security");
    let file =
        std::fs::read_to_string(chart_dir().join("files/grafana/imagewarden-dashboard.json"))?;
    let carried = cm["data"]["imagewarden-dashboard.json"]
        .as_str()
        .context("dashboard data")?;
    assert_eq!(
        serde_json::from_str::<Value>(carried)?,
        serde_json::from_str::<Value>(&file)?
    );
    // The default label is the one Grafana's sidecar looks for.
    let sidecar = objects(&helm_template(&[
        "--set",
        "metrics.grafanaDashboard.enabled=true",
    ])?)?;
    let cm = find_in(
        &sidecar,
        "ConfigMap",
        "imagewarden-grafana-dashboard",
        NAMESPACE,
    )?;
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");

    let rule = find_in(&on, "PrometheusRule", "imagewarden-operator", NAMESPACE)?;
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["labels"]["release"], "prometheus");
    let rules: Vec<&Value> = rule["spec"]["groups"]
        .as_array()
        .context("groups")?
        .iter()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect();
    let alerts: Vec<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    assert_eq!(
        alerts,
        [
            "ImagewardenNewCriticalFinding",
            "ImagewardenDatabaseStale",
            "ImagewardenScansFailing",
            "ImagewardenNotificationsFailing"
        ]
    );
    let expr = |alert: &str| -> String {
        rules
            .iter()
            .find(|r| r["alert"] == alert)
            .and_then(|r| r["expr"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        expr("ImagewardenDatabaseStale").ends_with("> 259200"),
        "{}",
        expr("ImagewardenDatabaseStale")
    );
    assert!(
        expr("ImagewardenScansFailing").ends_with("> 0.25"),
        "{}",
        expr("ImagewardenScansFailing")
    );
    let exprs: Vec<String> = alerts.iter().map(|a| expr(a)).collect();
    check_queries(&exprs, "the PrometheusRule");
    for r in &rules {
        // Prometheus expands the annotations' templates, not Helm.
        let summary = r["annotations"]["summary"].as_str().unwrap_or_default();
        assert!(!summary.is_empty(), "{r}");
    }
    assert!(
        rules[0]["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("{{ $labels.repository }}"),
        "{}",
        rules[0]["annotations"]["summary"]
    );

    // Values the schema refuses.
    let chart = chart_dir().display().to_string();
    for (set, reason) in [
        (
            "metrics.prometheusRule.databaseMaxAgeHours=0",
            "at '/metrics/prometheusRule/databaseMaxAgeHours'",
        ),
        (
            "metrics.prometheusRule.scanFailureRatio=2",
            "at '/metrics/prometheusRule/scanFailureRatio'",
        ),
        (
            "metrics.grafanaDashboard.labelKey=not a label",
            "at '/metrics/grafanaDashboard/labelKey'",
        ),
        (
            "metrics.grafanaDashboard.folder=Security",
            "additional properties 'folder' not allowed",
        ),
    ] {
        let (ok, _, stderr) = run(helm(&["template", "x", &chart, "--set", set])?, None)?;
        assert!(
            !ok && stderr.contains(reason),
            "helm template --set {set}: {stderr}"
        );
    }
    Ok(())
}

//! The deployment artefacts checked by the validators their ecosystems publish, offline:
//! Kubernetes manifests against the Kubernetes OpenAPI schemas (`kubernetes-validate`, which
//! ships them), the compose file by the Compose Specification parser (`compose-spec`), the
//! Grafana dashboards against Grafana's published dashboard schema (`@grafana/schema`, pinned in
//! `.ci/deploy-schemas/package-lock.json`); and the Kubernetes copies of the rules and
//! dashboards equal to their sources. `.ci/run` installs the validators; without them (and
//! with `CI` unset) the validator tests print a skip notice.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_norway::Value as Yaml;

use crate::support::tools::tool_on_path;

const REGENERATE: &str = "regenerate with: python3 scripts/gen-kubernetes.py";

fn repository(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn yaml(relative: &str) -> Yaml {
    let text = std::fs::read_to_string(repository(relative))
        .unwrap_or_else(|error| panic!("read {relative}: {error}"));
    serde_norway::from_str(&text).unwrap_or_else(|error| panic!("{relative}: {error}"))
}

/// Files of `directory` (relative to the repository) ending in `extension`, sorted.
fn files(directory: &str, extension: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(repository(directory))
        .unwrap_or_else(|error| panic!("{directory}: {error}"))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|found| found == extension))
        .collect();
    found.sort();
    found
}

fn run(command: &mut Command) -> (bool, String) {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{command:?}: {error}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Every Kubernetes object in deploy/kubernetes (and the demo overlay) with a built-in kind.
fn builtin_kind_manifests() -> Vec<PathBuf> {
    let mut manifests = files("deploy/kubernetes", "yaml");
    manifests.extend(files("deploy/kubernetes/demo", "yaml"));
    manifests.retain(|path| {
        let text = std::fs::read_to_string(path).unwrap();
        let object: Yaml = serde_norway::from_str(&text).unwrap();
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        !api_version.contains(".coreos.com") && !api_version.starts_with("kustomize.")
    });
    manifests
}

#[test]
fn kubernetes_manifests_match_the_kubernetes_openapi_schemas() {
    let Some(validator) = tool_on_path(
        &["kubernetes-validate"],
        ".ci/run installs it into .ci/venv-deploy from .ci/deploy-requirements.txt",
    ) else {
        return;
    };
    let manifests = builtin_kind_manifests();
    assert!(manifests.len() >= 6, "{manifests:?}");
    // The oldest Kubernetes still supported upstream when this was written, and the newest
    // the validator knows: a manifest must pass both.
    for version in ["1.33.0", "1.37.0"] {
        let (ok, report) = run(Command::new(&validator)
            .args(["--strict", "--kubernetes-version", version])
            .args(&manifests));
        assert!(ok, "kubernetes-validate {version}:\n{report}");
        for manifest in &manifests {
            let name = manifest.display().to_string();
            assert!(
                report
                    .lines()
                    .any(|line| line.contains(&name) && line.contains("passed")),
                "{name} not reported valid against {version}:\n{report}"
            );
        }
    }
}

#[test]
fn an_unknown_field_in_a_manifest_is_refused_by_the_schema_check() {
    let Some(validator) = tool_on_path(
        &["kubernetes-validate"],
        ".ci/run installs it into .ci/venv-deploy from .ci/deploy-requirements.txt",
    ) else {
        return;
    };
    let text = std::fs::read_to_string(repository("deploy/kubernetes/deployment.yaml")).unwrap();
    let broken = text.replace(
        "readOnlyRootFilesystem: true",
        "readOnlyRootFilesytem: true",
    );
    assert_ne!(text, broken);
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("deployment.yaml");
    std::fs::write(&file, broken).unwrap();
    let (ok, report) = run(Command::new(&validator).arg("--strict").arg(&file));
    assert!(!ok, "a misspelt field passed:\n{report}");
    assert!(report.contains("readOnlyRootFilesytem"), "{report}");
}

/// Pod Security Standards, "restricted" profile, for the gridwatch pod.
#[test]
fn the_deployment_meets_pod_security_restricted() {
    let deployment = yaml("deploy/kubernetes/deployment.yaml");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    assert_ne!(pod["securityContext"]["runAsUser"].as_u64(), Some(0));
    assert!(pod["hostNetwork"].is_null() && pod["hostPID"].is_null() && pod["hostIPC"].is_null());
    let containers = pod["containers"].as_sequence().unwrap();
    assert!(!containers.is_empty());
    for container in containers {
        let security = &container["securityContext"];
        assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
        assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
        assert_eq!(security["privileged"].as_bool(), None);
        let dropped: Vec<&str> = security["capabilities"]["drop"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(Yaml::as_str)
            .collect();
        assert_eq!(dropped, ["ALL"]);
        assert!(security["capabilities"]["add"].is_null());
        assert!(container["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .all(|port| port["hostPort"].is_null()));
    }
    for volume in pod["volumes"].as_sequence().unwrap() {
        assert!(volume["hostPath"].is_null(), "{volume:?}");
    }
}

/// The Kafka source is the production default, the simulator only the demo overlay's; the
/// disruption budget selects the Deployment's pods.
#[test]
fn kubernetes_defaults_to_kafka_with_the_simulator_as_the_demo_overlay() {
    let config_of = |file: &str| {
        let manifest = yaml(file);
        let text = manifest["data"]["gridwatch.toml"]
            .as_str()
            .unwrap()
            .to_string();
        // The Secret's key stands in for its file (loading would read it).
        let mut config = gridwatch::config::Config::from_toml_str(&text.replace(
            "pseudonymization_key_file = \"/etc/gridwatch-secrets/pseudonymization-key\"",
            "pseudonymization_key = \"0123456789abcdef0123456789abcdef-the-secret-s-key\"",
        ))
        .unwrap_or_else(|error| panic!("{file}: {error}"));
        if text.contains("pseudonymization_key_file") {
            config.privacy.pseudonymization_key_file =
                Some("/etc/gridwatch-secrets/pseudonymization-key".into());
        }
        config
    };
    let production = config_of("deploy/kubernetes/configmap.yaml");
    assert_eq!(production.source.kind, gridwatch::config::SourceKind::Kafka);
    assert!(production.kafka.sinks.enabled);
    let demo = config_of("deploy/kubernetes/demo/configmap-simulator.yaml");
    assert_eq!(demo.source.kind, gridwatch::config::SourceKind::Simulator);
    let overlay = yaml("deploy/kubernetes/demo/kustomization.yaml");
    assert_eq!(
        overlay["patches"][0]["path"].as_str(),
        Some("configmap-simulator.yaml")
    );
    assert_eq!(overlay["replicas"][0]["count"].as_u64(), Some(1));

    let base = yaml("deploy/kubernetes/kustomization.yaml");
    let resources: Vec<&str> = base["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    let mut manifests: Vec<String> = files("deploy/kubernetes", "yaml")
        .iter()
        .map(|path| path.file_name().unwrap().to_string_lossy().to_string())
        .filter(|name| name != "kustomization.yaml")
        .collect();
    manifests.sort();
    let mut listed: Vec<String> = resources.iter().map(|name| name.to_string()).collect();
    listed.sort();
    assert_eq!(listed, manifests, "kustomization.yaml lists every manifest");

    let deployment = yaml("deploy/kubernetes/deployment.yaml");
    let budget = yaml("deploy/kubernetes/poddisruptionbudget.yaml");
    assert_eq!(
        budget["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() > 1);

    // The key file the ConfigMap names is the Secret's item in the secrets volume.
    let key_file = production
        .privacy
        .pseudonymization_key_file
        .expect("key file");
    let pod = &deployment["spec"]["template"]["spec"];
    let mount = pod["containers"][0]["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|mount| key_file.starts_with(mount["mountPath"].as_str().unwrap()))
        .expect("a mount holding the key file");
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|volume| volume["name"] == mount["name"])
        .unwrap();
    let file_name = key_file.file_name().unwrap().to_str().unwrap();
    assert!(
        volume["projected"]["sources"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|source| source["secret"]["name"] == "gridwatch-secrets"
                && source["secret"]["items"][0]["path"] == file_name),
        "{volume:?}"
    );
}

#[test]
fn the_prometheus_rule_holds_exactly_the_rules_files_groups() {
    let rule = yaml("deploy/kubernetes/prometheusrule.yaml");
    assert_eq!(rule["kind"].as_str(), Some("PrometheusRule"));
    let mut expected = Vec::new();
    for file in files("deploy/prometheus", "yml") {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".rules.yml") {
            continue;
        }
        let groups = yaml(&format!("deploy/prometheus/{name}"))["groups"].clone();
        expected.extend(groups.as_sequence().unwrap().iter().cloned());
    }
    assert!(expected.len() >= 2, "{expected:?}");
    let actual = rule["spec"]["groups"].as_sequence().unwrap();
    assert_eq!(
        actual.len(),
        expected.len(),
        "PrometheusRule groups differ from deploy/prometheus/*.rules.yml; {REGENERATE}"
    );
    for (actual, expected) in actual.iter().zip(&expected) {
        assert_eq!(
            actual, expected,
            "PrometheusRule group {:?} differs from its rules file; {REGENERATE}",
            expected["name"]
        );
    }
}

#[test]
fn the_dashboards_configmap_holds_exactly_the_dashboards() {
    let config_map = yaml("deploy/kubernetes/grafana-dashboards.yaml");
    assert_eq!(
        config_map["metadata"]["labels"]["grafana_dashboard"].as_str(),
        Some("1")
    );
    let data = config_map["data"].as_mapping().unwrap();
    let dashboards = files("deploy/grafana/dashboards", "json");
    assert_eq!(data.len(), dashboards.len(), "{REGENERATE}");
    for file in dashboards {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let source: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let copy = data
            .get(name.as_str())
            .and_then(Yaml::as_str)
            .unwrap_or_else(|| panic!("{name} missing from the ConfigMap; {REGENERATE}"));
        let copy: serde_json::Value = serde_json::from_str(copy).unwrap();
        assert_eq!(
            copy, source,
            "{name} differs in the ConfigMap; {REGENERATE}"
        );
    }
}

#[test]
fn every_dashboard_matches_grafanas_published_dashboard_schema() {
    let Some(node) = tool_on_path(&["node"], "Debian's nodejs package") else {
        return;
    };
    let checker = repository(".ci/deploy-schemas");
    if !checker.join("node_modules/@grafana/schema").is_dir() {
        let under_ci = std::env::var("CI").is_ok_and(|value| !value.is_empty() && value != "false");
        assert!(
            !under_ci,
            "CI is set but .ci/deploy-schemas has no node_modules (npm ci there)"
        );
        println!("skipping: run `npm ci` in .ci/deploy-schemas for the Grafana schema check");
        return;
    }
    let dashboards = files("deploy/grafana/dashboards", "json");
    assert!(dashboards.len() >= 3);
    let (ok, report) = run(Command::new(&node)
        .arg(checker.join("validate-dashboards.mjs"))
        .args(&dashboards));
    assert!(ok, "{report}");
    assert_eq!(
        report.matches(": valid (").count(),
        dashboards.len(),
        "{report}"
    );

    // The check refuses what Grafana's schema refuses: a string grid position.
    let mut broken: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dashboards[0]).unwrap()).unwrap();
    broken["panels"][1]["gridPos"]["x"] = serde_json::json!("left");
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("broken.json");
    std::fs::write(&file, broken.to_string()).unwrap();
    let (ok, report) = run(Command::new(&node)
        .arg(checker.join("validate-dashboards.mjs"))
        .arg(&file));
    assert!(
        !ok && report.contains("/gridPos/x must be number"),
        "{report}"
    );
}

#[test]
fn the_compose_file_is_valid_under_the_compose_specification() {
    let Some(validator) = tool_on_path(
        &["kubernetes-validate"],
        ".ci/run installs .ci/venv-deploy (compose-spec beside kubernetes-validate)",
    ) else {
        return;
    };
    let python = validator.with_file_name("python");
    let checker = repository(".ci/deploy-schemas/check_compose.py");
    let compose = repository("deploy/docker-compose.yml");
    let (ok, report) = run(Command::new(&python).arg(&checker).arg(&compose));
    assert!(ok, "{report}");
    assert!(report.contains(": valid ("), "{report}");

    let text = std::fs::read_to_string(&compose).unwrap();
    let broken = text.replacen(
        "condition: service_completed_successfully",
        "condition: finished",
        1,
    );
    assert_ne!(text, broken);
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("docker-compose.yml");
    std::fs::write(&file, broken).unwrap();
    let (ok, report) = run(Command::new(&python).arg(&checker).arg(&file));
    assert!(
        !ok && report.contains("unknown variant `finished`"),
        "{report}"
    );
}

/// The compose stack is wired end to end: Kafka advertises an address per network (the
/// containers use the internal one, the host port publishes the external one), and gridwatch
/// sends alerts to the Alertmanager service and CloudEvents to a receiver that listens there.
#[test]
fn the_compose_stack_wires_kafka_listeners_alertmanager_and_the_webhook_receiver() {
    let compose = yaml("deploy/docker-compose.yml");
    let services = &compose["services"];
    let environment = |service: &str| services[service]["environment"].clone();
    let kafka = environment("kafka");
    let advertised = kafka["KAFKA_ADVERTISED_LISTENERS"].as_str().unwrap();
    let listener = |name: &str| {
        advertised
            .split(',')
            .find_map(|entry| entry.strip_prefix(&format!("{name}://")))
            .unwrap_or_else(|| panic!("no {name} listener in {advertised}"))
            .to_string()
    };
    let internal = listener("INTERNAL");
    let external = listener("EXTERNAL");
    assert!(internal.starts_with("kafka:"), "{internal}");
    assert!(external.starts_with("localhost:"), "{external}");
    let external_port = external.rsplit(':').next().unwrap();
    let published: Vec<&str> = services["kafka"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(
        published
            .iter()
            .any(|port| port.ends_with(&format!(":{external_port}:{external_port}"))),
        "{published:?}"
    );
    let gridwatch = environment("gridwatch");
    assert_eq!(
        gridwatch["GRIDWATCH_KAFKA__BROKERS"].as_str(),
        Some(internal.as_str())
    );
    let producer_command: Vec<&str> = services["producer"]["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(
        producer_command.contains(&internal.as_str()),
        "{producer_command:?}"
    );

    let urls: Vec<String> = serde_json::from_str(
        gridwatch["GRIDWATCH_ALERTING__ALERTMANAGER_URLS"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(urls, ["http://alertmanager:9093"]);
    assert!(services["alertmanager"].is_mapping());
    let webhook = gridwatch["GRIDWATCH_ALERTING__WEBHOOK__URL"]
        .as_str()
        .unwrap();
    assert!(
        webhook.starts_with("http://alertmanager:9751/"),
        "{webhook}"
    );
    let receiver = &services["webhook-receiver"];
    assert_eq!(
        receiver["network_mode"].as_str(),
        Some("service:alertmanager")
    );
    let script = receiver["command"].as_sequence().unwrap().last().unwrap();
    assert!(script.as_str().unwrap().contains("9751"), "{script:?}");
    // Alertmanager's receivers post to that same listener (its network namespace).
    let alertmanager =
        std::fs::read_to_string(repository("deploy/alertmanager/alertmanager.yml")).unwrap();
    let receiver_urls: Vec<&str> = alertmanager
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- url: "))
        .map(|url| url.trim_matches('\''))
        .collect();
    assert!(!receiver_urls.is_empty());
    for url in receiver_urls {
        assert!(
            url.starts_with("http://127.0.0.1:9751/")
                || url.starts_with("http://alertmanager:9751/"),
            "Alertmanager receiver {url} reaches nothing in the compose stack"
        );
    }
}

//! The deployment files in `deploy/` agree with the program: ports, probe and scrape paths,
//! configuration keys (TOML and `GRIDWATCH_*` variables), command-line flags, and the Grafana
//! provisioning against the dashboards. Nothing here needs a container engine.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use gridwatch::api::{ApiState, Health};
use gridwatch::config::{Config, DEFAULT_HTTP_LISTEN};
use gridwatch::metrics::Metrics;
use gridwatch::read_model::{CityModel, CityModelSettings, ReadModelWriter};
use serde_norway::Value as Yaml;

/// A compose volume whose host file is written by a parallel change (Alertmanager delivery):
/// its absence is reported, not failed, until that change is merged.
const PENDING_ALERTMANAGER_CONFIG: &str = "./alertmanager/alertmanager.yml";

fn deploy_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(relative)
}

fn read_yaml(relative: &str) -> Yaml {
    let path = deploy_path(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|error| panic!("{relative}: {error}"))
}

fn kubernetes_manifest(file: &str, kind: &str) -> Yaml {
    let manifest = read_yaml(&format!("kubernetes/{file}"));
    assert_eq!(manifest["kind"].as_str(), Some(kind), "{file}");
    manifest
}

fn port_of(address: &str) -> u16 {
    address
        .parse::<SocketAddr>()
        .map(|socket| socket.port())
        .or_else(|_| {
            address
                .rsplit_once(':')
                .ok_or(())
                .and_then(|(_, port)| port.parse::<u16>().map_err(|_| ()))
        })
        .unwrap_or_else(|()| panic!("no port in {address:?}"))
}

/// Where the ConfigMap reads the pseudonymization key (the gridwatch-secrets Secret's file).
const KUBERNETES_KEY_FILE_LINE: &str =
    "pseudonymization_key_file = \"/etc/gridwatch-secrets/pseudonymization-key\"";

/// The ConfigMap's gridwatch.toml as the pod sees it: the key file's line replaced by the key
/// the Secret would hold (loading reads the file; there is none here).
fn configmap_toml() -> String {
    let configmap = kubernetes_manifest("configmap.yaml", "ConfigMap");
    let text = configmap["data"]["gridwatch.toml"]
        .as_str()
        .expect("ConfigMap data gridwatch.toml");
    assert!(
        text.contains(KUBERNETES_KEY_FILE_LINE),
        "the ConfigMap reads the pseudonymization key from the Secret's file"
    );
    text.replace(
        KUBERNETES_KEY_FILE_LINE,
        "pseudonymization_key = \"0123456789abcdef0123456789abcdef-the-secret-s-key\"",
    )
}

fn gridwatch_container() -> Yaml {
    let deployment = kubernetes_manifest("deployment.yaml", "Deployment");
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    containers
        .into_iter()
        .find(|container| container["name"].as_str() == Some("gridwatch"))
        .expect("a container named gridwatch")
}

fn compose_service(name: &str) -> Yaml {
    let compose = read_yaml("docker-compose.yml");
    let service = compose["services"][name].clone();
    assert!(service.is_mapping(), "compose has no service {name}");
    service
}

fn yaml_strings(value: &Yaml) -> Vec<String> {
    value
        .as_sequence()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|item| match item {
            Yaml::String(text) => Some(text.clone()),
            Yaml::Number(number) => Some(number.to_string()),
            _ => None,
        })
        .collect()
}

/// The compose service's environment (map or `KEY=value` list form).
fn compose_environment(service: &Yaml) -> BTreeMap<String, String> {
    let environment = &service["environment"];
    if let Some(mapping) = environment.as_mapping() {
        return mapping
            .iter()
            .filter_map(|(key, value)| {
                let value_text = match value {
                    Yaml::String(text) => text.clone(),
                    Yaml::Number(number) => number.to_string(),
                    Yaml::Bool(flag) => flag.to_string(),
                    _ => String::new(),
                };
                Some((key.as_str()?.to_string(), value_text))
            })
            .collect();
    }
    yaml_strings(environment)
        .iter()
        .filter_map(|entry| {
            entry
                .split_once('=')
                .map(|(key, value)| (key.to_string(), value.to_string()))
        })
        .collect()
}

/// The Kubernetes container's environment; values from Secrets get a placeholder.
fn kubernetes_environment() -> BTreeMap<String, String> {
    gridwatch_container()["env"]
        .as_sequence()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|variable| {
            let name = variable["name"].as_str().expect("env name").to_string();
            let value = variable["value"]
                .as_str()
                .unwrap_or("value-from-a-secret")
                .to_string();
            (name, value)
        })
        .collect()
}

/// `ENV KEY=value` lines of the Dockerfile.
fn dockerfile_environment() -> BTreeMap<String, String> {
    let dockerfile = std::fs::read_to_string(deploy_path("Dockerfile")).expect("deploy/Dockerfile");
    dockerfile
        .lines()
        .filter_map(|line| line.trim().strip_prefix("ENV "))
        .filter_map(|assignment| assignment.trim().split_once('='))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// Loads the configuration as `gridwatch run` would with this file and these variables.
#[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
fn load_with_environment(
    config_text: &str,
    environment: &BTreeMap<String, String>,
) -> Result<Config, String> {
    let mut outcome = Err("jail did not run".to_string());
    figment::Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file("gridwatch.toml", config_text)?;
        for (key, value) in environment {
            jail.set_env(key, value);
        }
        outcome =
            Config::load(Some(Path::new("gridwatch.toml"))).map_err(|error| error.to_string());
        Ok(())
    });
    outcome
}

fn gridwatch_help(subcommand: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_gridwatch"))
        .args([subcommand, "--help"])
        .output()
        .expect("run gridwatch --help");
    assert!(
        output.status.success(),
        "gridwatch {subcommand} --help failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// Every `--flag` of a command line (`[subcommand, args…]`) is in the subcommand's help.
fn assert_command_line_is_known(origin: &str, command_line: &[String]) {
    let subcommand = command_line
        .first()
        .unwrap_or_else(|| panic!("{origin}: empty command line"));
    let help = gridwatch_help(subcommand);
    for argument in &command_line[1..] {
        if let Some(flag) = argument.strip_prefix("--") {
            let flag_name = flag.split('=').next().unwrap_or(flag);
            assert!(
                help.contains(&format!("--{flag_name}")),
                "{origin}: `gridwatch {subcommand}` has no flag --{flag_name}:\n{help}"
            );
        }
    }
}

#[test]
fn kubernetes_configmap_is_a_valid_gridwatch_config() {
    let text = configmap_toml();
    let config = Config::from_toml_str(&text).unwrap_or_else(|error| panic!("{error}"));
    assert!(
        config.http.listen.starts_with("0.0.0.0:"),
        "pods must listen on every interface"
    );
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("gridwatch.toml");
    std::fs::write(&path, &text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_gridwatch"))
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run gridwatch check-config");
    assert!(
        output.status.success(),
        "gridwatch check-config rejects the ConfigMap:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn kubernetes_ports_match_the_configured_listen_port() {
    let listen_port = port_of(
        &Config::from_toml_str(&configmap_toml())
            .unwrap()
            .http
            .listen,
    );
    assert_eq!(listen_port, port_of(DEFAULT_HTTP_LISTEN));
    let container = gridwatch_container();
    let ports = container["ports"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    let metrics_port = ports
        .iter()
        .find(|port| port["name"].as_str() == Some("http-metrics"))
        .expect("a container port named http-metrics");
    assert_eq!(
        metrics_port["containerPort"].as_u64(),
        Some(u64::from(listen_port))
    );
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(
            container[probe]["httpGet"]["port"].as_str(),
            Some("http-metrics"),
            "{probe}"
        );
    }
    let service = kubernetes_manifest("service.yaml", "Service");
    let service_port = &service["spec"]["ports"][0];
    assert_eq!(service_port["targetPort"].as_str(), Some("http-metrics"));
    let pod_monitor = kubernetes_manifest("podmonitor.yaml", "PodMonitor");
    assert_eq!(
        pod_monitor["apiVersion"].as_str(),
        Some("monitoring.coreos.com/v1")
    );
    let endpoint = &pod_monitor["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"].as_str(), Some("http-metrics"));
    let deployment = kubernetes_manifest("deployment.yaml", "Deployment");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for selector in [
        &service["spec"]["selector"],
        &pod_monitor["spec"]["selector"]["matchLabels"],
        &deployment["spec"]["selector"]["matchLabels"],
    ] {
        for (key, value) in selector.as_mapping().expect("selector labels") {
            assert_eq!(
                &pod_labels[key.as_str().unwrap()],
                value,
                "selector {key:?}"
            );
        }
    }
    // The PodMonitor's job label must be "gridwatch": rules and dashboards select job="gridwatch".
    let job_label = pod_monitor["spec"]["jobLabel"].as_str().expect("jobLabel");
    assert_eq!(pod_labels[job_label].as_str(), Some("gridwatch"));
}

#[test]
fn compose_and_prometheus_targets_use_the_effective_listen_port() {
    let gridwatch = compose_service("gridwatch");
    let environment = compose_environment(&gridwatch);
    let volumes = yaml_strings(&gridwatch["volumes"]);
    let config_mount = volumes
        .iter()
        .find(|volume| volume.contains(":/etc/gridwatch/gridwatch.toml"))
        .expect("compose mounts a config at /etc/gridwatch/gridwatch.toml");
    let host_config = config_mount.split(':').next().unwrap();
    let config_text = std::fs::read_to_string(deploy_path(host_config)).expect("mounted config");
    let config = load_with_environment(&config_text, &environment)
        .unwrap_or_else(|error| panic!("compose gridwatch config: {error}"));
    let listen_port = port_of(&config.http.listen);
    assert!(
        config.http.listen.starts_with("0.0.0.0:"),
        "{}",
        config.http.listen
    );
    assert_eq!(listen_port, port_of(DEFAULT_HTTP_LISTEN));
    let published: Vec<u16> = yaml_strings(&gridwatch["ports"])
        .iter()
        .map(|mapping| port_of(mapping))
        .collect();
    assert!(
        published.contains(&listen_port),
        "compose publishes {published:?}"
    );

    let prometheus = read_yaml("prometheus/prometheus.yml");
    let jobs = prometheus["scrape_configs"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    let job = jobs
        .iter()
        .find(|job| job["job_name"].as_str() == Some("gridwatch"))
        .expect("a scrape job named gridwatch");
    assert_eq!(
        job["metrics_path"].as_str().unwrap_or("/metrics"),
        "/metrics"
    );
    let targets = yaml_strings(&job["static_configs"][0]["targets"]);
    assert_eq!(targets, vec![format!("gridwatch:{listen_port}")]);
    let alertmanager_targets =
        yaml_strings(&prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]);
    assert_eq!(alertmanager_targets, vec!["alertmanager:9093".to_string()]);
    let alertmanager_ports = yaml_strings(&compose_service("alertmanager")["ports"]);
    assert!(alertmanager_ports
        .iter()
        .any(|mapping| port_of(mapping) == 9093));
    for rule_file in yaml_strings(&prometheus["rule_files"]) {
        assert!(
            deploy_path("prometheus").join(&rule_file).is_file(),
            "prometheus.yml names a missing rule file {rule_file}"
        );
    }

    let dockerfile = std::fs::read_to_string(deploy_path("Dockerfile")).unwrap();
    assert!(dockerfile.contains(&format!("EXPOSE {listen_port}")));
    let image_listen = dockerfile_environment()
        .get("GRIDWATCH_HTTP__LISTEN")
        .cloned()
        .expect("the image sets GRIDWATCH_HTTP__LISTEN");
    assert_eq!(port_of(&image_listen), listen_port);
}

#[test]
fn gridwatch_variables_in_manifests_name_real_config_keys() {
    let mut variables: Vec<(String, String, String)> = Vec::new();
    for (origin, environment) in [
        (
            "docker-compose.yml",
            compose_environment(&compose_service("gridwatch")),
        ),
        ("kubernetes/deployment.yaml", kubernetes_environment()),
        ("Dockerfile", dockerfile_environment()),
    ] {
        for (key, value) in environment {
            if key.starts_with("GRIDWATCH_") {
                variables.push((origin.to_string(), key, value));
            }
        }
    }
    assert!(variables.len() >= 4, "{variables:?}");
    let run_help = gridwatch_help("run");
    for (origin, key, _) in &variables {
        if !key.contains("__") {
            assert!(
                run_help.contains(&format!("env: {key}")),
                "{origin}: {key} is neither a config key nor a `gridwatch run` variable"
            );
            continue;
        }
    }
    // Each origin's variables are loaded together: they form one configuration, and some only
    // make sense together (listening on 0.0.0.0 needs the API tokens file). Alone, a Kafka
    // source is refused for using the public built-in pseudonymization key; this check is about
    // key names and values, so it allows that key unless the origin sets it itself.
    let origins: std::collections::BTreeSet<&String> =
        variables.iter().map(|(origin, _, _)| origin).collect();
    for origin in origins {
        let mut environment: BTreeMap<String, String> = BTreeMap::from([(
            "GRIDWATCH_PRIVACY__ALLOW_BUILTIN_KEY".to_string(),
            "true".to_string(),
        )]);
        environment.extend(
            variables
                .iter()
                .filter(|(variable_origin, key, _)| variable_origin == origin && key.contains("__"))
                .map(|(_, key, value)| (key.clone(), value.clone())),
        );
        if let Err(error) = load_with_environment("", &environment) {
            panic!("{origin}: {environment:?} is not a valid configuration: {error}");
        }
    }
    // The check can fail: a misspelled key is an unknown field.
    let misspelled = BTreeMap::from([(
        "GRIDWATCH_HTTP__LISTN".to_string(),
        "0.0.0.0:9750".to_string(),
    )]);
    let error = load_with_environment("", &misspelled).unwrap_err();
    assert!(error.contains("listn"), "{error}");
}

#[test]
fn command_lines_in_manifests_use_existing_flags() {
    let compose_command = yaml_strings(&compose_service("gridwatch")["command"]);
    assert_command_line_is_known("docker-compose.yml", &compose_command);
    let kubernetes_args = yaml_strings(&gridwatch_container()["args"]);
    assert_command_line_is_known("kubernetes/deployment.yaml", &kubernetes_args);
    for command_line in [&compose_command, &kubernetes_args] {
        let config_index = command_line
            .iter()
            .position(|argument| argument == "--config")
            .expect("--config given");
        assert_eq!(
            command_line.get(config_index + 1).map(String::as_str),
            Some("/etc/gridwatch/gridwatch.toml")
        );
    }
    let container = gridwatch_container();
    let mounts = container["volumeMounts"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    assert!(
        mounts
            .iter()
            .any(|mount| mount["mountPath"].as_str() == Some("/etc/gridwatch")),
        "the ConfigMap is mounted at /etc/gridwatch"
    );
    let dockerfile = std::fs::read_to_string(deploy_path("Dockerfile")).unwrap();
    assert!(dockerfile.contains("ENTRYPOINT [\"gridwatch\"]"));
    assert!(dockerfile.contains("CMD [\"run\"]"));
}

#[tokio::test]
async fn probe_and_scrape_paths_are_served_by_the_router() {
    let container = gridwatch_container();
    let mut paths: Vec<String> = ["livenessProbe", "readinessProbe"]
        .iter()
        .map(|probe| {
            container[*probe]["httpGet"]["path"]
                .as_str()
                .expect("probe path")
                .to_string()
        })
        .collect();
    let pod_monitor = kubernetes_manifest("podmonitor.yaml", "PodMonitor");
    paths.push(
        pod_monitor["spec"]["podMetricsEndpoints"][0]["path"]
            .as_str()
            .expect("PodMonitor path")
            .to_string(),
    );
    assert_eq!(paths, ["/healthz", "/readyz", "/metrics"]);
    let registry = gridwatch::grid::GridRegistry::embedded();
    let views = vec!["15m".to_string()];
    let (_writer, read_model) = ReadModelWriter::new(CityModel::new(
        registry.clone(),
        CityModelSettings::new(views.clone(), vec![900_000], "test".to_string()),
        None,
    ));
    let state = ApiState::new(
        Arc::new(Metrics::new(&["simulator"], "test").unwrap()),
        Arc::new(Health::default()),
        read_model,
        &registry,
        views,
        &Config::default().http,
        tokio_util::sync::CancellationToken::new(),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server =
        tokio::spawn(async move { axum::serve(listener, gridwatch::api::router(state)).await });
    let client = reqwest::Client::new();
    for path in paths.iter().map(String::as_str).chain(["/no-such-path"]) {
        let status = client
            .get(format!("http://{address}{path}"))
            .send()
            .await
            .expect("request")
            .status()
            .as_u16();
        let expected_missing = path == "/no-such-path";
        assert_eq!(status == 404, expected_missing, "{path} answered {status}");
    }
    server.abort();
}

/// A dashboard imports into any Grafana: it declares its Prometheus as the import input
/// `DS_PROMETHEUS`, selects it through the `datasource` variable (which the import presets to
/// `${DS_PROMETHEUS}` and provisioning resolves to the default Prometheus), and names no
/// datasource uid anywhere (the provisioned uid `prometheus` exists only in this repository's
/// stack).
fn assert_importable_anywhere(dashboard: &serde_json::Value, name: &str) {
    let inputs = dashboard["__inputs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        inputs.iter().any(|input| input["name"] == "DS_PROMETHEUS"
            && input["type"] == "datasource"
            && input["pluginId"] == "prometheus"),
        "{name}: __inputs must declare DS_PROMETHEUS: {inputs:?}"
    );
    let variables = dashboard["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let datasource = variables
        .iter()
        .find(|variable| variable["name"] == "datasource")
        .unwrap_or_else(|| panic!("{name}: no datasource variable"));
    assert_eq!(datasource["type"], "datasource", "{name}");
    assert_eq!(datasource["query"], "prometheus", "{name}");
    assert_eq!(datasource["current"]["value"], "${DS_PROMETHEUS}", "{name}");
    let text = dashboard.to_string();
    assert!(
        !text.contains("\"uid\":\"prometheus\""),
        "{name}: a hard-coded datasource uid remains"
    );
    for variable in &variables {
        if variable["type"] == "query" {
            assert_eq!(
                variable["datasource"]["uid"], "${datasource}",
                "{name}: variable {}",
                variable["name"]
            );
        }
    }
}

#[test]
fn grafana_provisioning_matches_the_dashboards_and_compose_mounts() {
    let datasources = read_yaml("grafana/provisioning/datasources/prometheus.yml");
    let datasource = &datasources["datasources"][0];
    assert_eq!(datasource["uid"].as_str(), Some("prometheus"));
    assert_eq!(datasource["type"].as_str(), Some("prometheus"));
    assert_eq!(datasource["url"].as_str(), Some("http://prometheus:9090"));
    assert!(compose_service("prometheus").is_mapping());

    let providers = read_yaml("grafana/provisioning/dashboards/gridwatch.yml");
    let provider_path = providers["providers"][0]["options"]["path"]
        .as_str()
        .expect("provider path")
        .to_string();
    let grafana = compose_service("grafana");
    let grafana_volumes = yaml_strings(&grafana["volumes"]);
    assert!(
        grafana_volumes
            .iter()
            .any(|volume| volume.starts_with("./grafana/dashboards:")
                && volume.contains(&format!(":{provider_path}"))),
        "compose mounts ./grafana/dashboards at the provider path {provider_path}: {grafana_volumes:?}"
    );

    let mut uids = Vec::new();
    let directory = deploy_path("grafana/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&directory)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    for file in &files {
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let name = file.display().to_string();
        assert!(
            dashboard["schemaVersion"].as_u64().unwrap_or(0) >= 39,
            "{name}"
        );
        uids.push(dashboard["uid"].as_str().expect("uid").to_string());
        assert_importable_anywhere(&dashboard, &name);
        let mut stack: Vec<serde_json::Value> =
            dashboard["panels"].as_array().cloned().unwrap_or_default();
        while let Some(panel) = stack.pop() {
            if let Some(nested) = panel["panels"].as_array() {
                stack.extend(nested.iter().cloned());
            }
            if panel["type"] == "row" {
                continue;
            }
            assert!(
                panel["fieldConfig"]["defaults"]["unit"]
                    .as_str()
                    .is_some_and(|unit| !unit.is_empty()),
                "{name}: panel {} has no unit",
                panel["title"]
            );
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{name}: {}",
                panel["title"]
            );
            for target in panel["targets"].as_array().cloned().unwrap_or_default() {
                assert_eq!(
                    target["datasource"]["uid"], "${datasource}",
                    "{name}: {}",
                    panel["title"]
                );
            }
        }
    }
    let unique: std::collections::BTreeSet<&String> = uids.iter().collect();
    assert_eq!(
        unique.len(),
        uids.len(),
        "dashboard uids must be unique: {uids:?}"
    );
    assert!(uids.len() >= 3, "{uids:?}");

    let home = compose_environment(&grafana)
        .get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
        .cloned()
        .expect("home dashboard");
    let home_file = home
        .strip_prefix(&format!("{provider_path}/"))
        .expect("home dashboard under the provider path");
    assert!(directory.join(home_file).is_file(), "{home}");
}

#[test]
fn compose_mounts_and_build_refer_to_existing_files() {
    let compose = read_yaml("docker-compose.yml");
    let services = compose["services"].as_mapping().expect("services");
    for (name, service) in services {
        for volume in yaml_strings(&service["volumes"]) {
            let host = volume.split(':').next().unwrap_or_default();
            if !host.starts_with('.') {
                continue; // a named volume
            }
            if host == PENDING_ALERTMANAGER_CONFIG && !deploy_path(host).exists() {
                eprintln!(
                    "NOTICE: {host} (service {name:?}) does not exist yet: the Alertmanager configuration is added by a parallel change"
                );
                continue;
            }
            assert!(
                deploy_path(host).exists(),
                "service {name:?} mounts missing {host}"
            );
        }
    }
    let build = &compose["services"]["gridwatch"]["build"];
    let context = deploy_path(build["context"].as_str().expect("build context"));
    let dockerfile = context.join(build["dockerfile"].as_str().expect("dockerfile"));
    assert!(dockerfile.is_file(), "{}", dockerfile.display());
    let dockerfile_text = std::fs::read_to_string(&dockerfile).unwrap();
    for line in dockerfile_text.lines() {
        if let Some(arguments) = line.strip_prefix("COPY ") {
            if arguments.starts_with("--from") {
                continue;
            }
            let sources: Vec<&str> = arguments.split_whitespace().collect();
            for source in &sources[..sources.len().saturating_sub(1)] {
                assert!(
                    context.join(source).exists(),
                    "Dockerfile copies missing {source}"
                );
            }
        }
    }
}

#[test]
fn api_tokens_come_from_a_secret_mounted_where_the_config_and_image_look() {
    let config = Config::from_toml_str(&configmap_toml()).unwrap_or_else(|error| panic!("{error}"));
    let tokens_file = config
        .http
        .tokens_file
        .expect("the ConfigMap listens on 0.0.0.0, so it names http.tokens_file");
    let tokens_directory = tokens_file
        .parent()
        .and_then(|directory| directory.to_str())
        .expect("tokens_file has a directory")
        .to_string();
    let container = gridwatch_container();
    let mount = container["volumeMounts"]
        .as_sequence()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .find(|mount| mount["mountPath"].as_str() == Some(tokens_directory.as_str()))
        .unwrap_or_else(|| panic!("nothing is mounted at {tokens_directory}"));
    let volume_name = mount["name"].as_str().expect("volumeMount name");
    let deployment = kubernetes_manifest("deployment.yaml", "Deployment");
    let volume = deployment["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .find(|volume| volume["name"].as_str() == Some(volume_name))
        .unwrap_or_else(|| panic!("no volume {volume_name}"));
    // A Secret volume, or a projected volume made of Secrets only (tokens and key together).
    let projected_sources = volume["projected"]["sources"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    assert!(
        volume["secret"]["secretName"].as_str().is_some()
            || (!projected_sources.is_empty()
                && projected_sources
                    .iter()
                    .all(|source| source["secret"]["name"].as_str().is_some())),
        "the tokens volume must be made of Secrets, not a ConfigMap: {volume:?}"
    );
    let image_tokens_file = dockerfile_environment()
        .get("GRIDWATCH_HTTP__TOKENS_FILE")
        .cloned()
        .expect("the image listens on 0.0.0.0, so it sets GRIDWATCH_HTTP__TOKENS_FILE");
    assert_eq!(Some(image_tokens_file.as_str()), tokens_file.to_str());
}

//! The deployment files under `deploy/` hold together: what they mount,
//! build, list and reference exists; the configurations they carry pass
//! `mailjournal check --offline`; the Kubernetes, systemd and Grafana files
//! say what the product needs (a spool per pod, probes on the admin port, a
//! drain longer than the session limit, hardening, the fixed metric names).
//! Nothing here needs Docker or a cluster: the files are parsed and compared.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_norway::Value as Yaml;

/// The metric names the gateway exports (README.md, "Operations").
const METRICS: &[&str] = &[
    "mailjournal_sessions_open",
    "mailjournal_sessions_total",
    "mailjournal_messages_accepted_total",
    "mailjournal_messages_rejected_total",
    "mailjournal_journal_copies_total",
    "mailjournal_deliveries_total",
    "mailjournal_queue_depth",
    "mailjournal_queue_oldest_age_seconds",
    "mailjournal_directory_lookups_total",
    "mailjournal_directory_cache_hits_total",
    "mailjournal_directory_cache_misses_total",
    "mailjournal_directory_stale_serves_total",
    "mailjournal_directory_errors_total",
    "mailjournal_directory_latency_seconds",
];

/// The histogram among them, whose series carry these suffixes.
const HISTOGRAM: &str = "mailjournal_directory_latency_seconds";
const HISTOGRAM_SUFFIXES: &[&str] = &["_bucket", "_sum", "_count"];

/// Every configuration key of the product contract, as `section.key`.
const CONFIG_KEYS: &[&str] = &[
    "server.hostname",
    "server.listen",
    "server.spool_dir",
    "server.max_message_size",
    "server.max_connections",
    "server.tls_cert",
    "server.tls_key",
    "server.admin_listen",
    "routing.local_domains",
    "routing.internal_networks",
    "routing.inbound_next_hop",
    "routing.outbound_next_hop",
    "routing.journal_next_hop",
    "journal.format",
    "journal.report_sender",
    "journal.inbound",
    "journal.inbound_ndr",
    "journal.outbound",
    "journal.outbound_ndr",
    "journal.inbound_recipient_attribute",
    "journal.outbound_recipient_attribute",
    "journal.hidden_check",
    "directory.url",
    "directory.starttls",
    "directory.bind_dn",
    "directory.bind_password_file",
    "directory.bind_password",
    "directory.base_dn",
    "directory.mapping",
    "directory.cache_ttl",
    "directory.negative_cache_ttl",
    "directory.stale_ttl",
    "directory.cache_capacity",
    "directory.timeout",
    "queue.retry_initial",
    "queue.retry_max",
    "queue.max_age",
    "queue.connect_timeout",
    "queue.command_timeout",
];

/// Keys the example configurations leave out on purpose: TLS needs files of
/// the user's own, and the password comes from a file, not from the config.
const KEYS_LEFT_OUT: &[&str] = &[
    "server.tls_cert",
    "server.tls_key",
    "directory.bind_password",
];

/// The keys of a mapping file.
const MAPPING_KEYS: &[&str] = &[
    "user_filter",
    "mail",
    "addresses",
    "hidden",
    "group_member",
    "journal_value_prefix",
    "custom_attributes",
];

/// Where the spool lives when `server.spool_dir` is not set.
const DEFAULT_SPOOL: &str = "/var/spool/mailjournal";

/// The longest drain of sessions in flight after SIGTERM, in seconds.
const SESSION_DRAIN_SECS: u64 = 30;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy() -> PathBuf {
    root().join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every YAML document of `text`, empty ones left out.
fn yaml_documents(text: &str, origin: &Path) -> Vec<Yaml> {
    serde_norway::Deserializer::from_str(text)
        .map(|document| {
            Yaml::deserialize(document)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", origin.display()))
        })
        .filter(|document| !document.is_null())
        .collect()
}

/// The value at `path` (mapping keys, or list indexes written as numbers).
fn at<'a>(value: &'a Yaml, path: &[&str]) -> Option<&'a Yaml> {
    path.iter().try_fold(value, |value, key| match value {
        Yaml::Sequence(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => value.get(*key),
    })
}

fn text<'a>(value: &'a Yaml, path: &[&str]) -> Option<&'a str> {
    at(value, path).and_then(Yaml::as_str)
}

fn list<'a>(value: &'a Yaml, path: &[&str]) -> &'a [Yaml] {
    at(value, path)
        .and_then(Yaml::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn keys(value: &Yaml) -> Vec<String> {
    value
        .as_mapping()
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A port written as a number or a string.
fn port_of(value: &Yaml) -> Option<String> {
    match value {
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// `section.key` of every key in a configuration.
fn config_keys(config: &toml::Table) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (section, table) in config {
        if let Some(table) = table.as_table() {
            for key in table.keys() {
                found.insert(format!("{section}.{key}"));
            }
        }
    }
    found
}

fn config_str<'a>(config: &'a toml::Table, section: &str, key: &str) -> Option<&'a str> {
    config.get(section)?.get(key)?.as_str()
}

fn port_of_socket(address: &str) -> &str {
    address
        .rsplit_once(':')
        .map(|(_, port)| port)
        .unwrap_or_else(|| panic!("{address:?} is not host:port"))
}

/// Runs `mailjournal check --offline` on `text` written to a temporary file.
/// The bind password file named in it lives inside a container, so the
/// environment points it at a temporary file instead, as a user would.
fn check_offline(text: &str, origin: &str) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = dir.path().join("mailjournal.toml");
    std::fs::write(&config, text).expect("write the configuration");
    let password = dir.path().join("ldap_password");
    std::fs::write(&password, "placeholder\n").expect("write the password file");

    let mut command = Command::new(env!("CARGO_BIN_EXE_mailjournal"));
    for (name, _) in std::env::vars() {
        if name.starts_with("MAILJOURNAL__") {
            command.env_remove(name);
        }
    }
    let output = command
        .args(["check", "--offline", "--config"])
        .arg(&config)
        .env("MAILJOURNAL__DIRECTORY__BIND_PASSWORD_FILE", &password)
        .output()
        .expect("run mailjournal check");
    assert!(
        output.status.success(),
        "mailjournal check --offline refused the configuration of {origin} ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn parse_config(text: &str, origin: &str) -> toml::Table {
    text.parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("{origin} is not TOML: {e}"))
}

/// Parses `a.b.c.d/len` (IPv4 only, as the compose network is).
fn ipv4_net(text: &str) -> Option<(u32, u32)> {
    let (address, len) = text.split_once('/').unwrap_or((text, "32"));
    let address: Ipv4Addr = address.parse().ok()?;
    let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((u32::from(address) & mask, mask))
}

fn in_networks(address: &str, networks: &[String]) -> bool {
    let address = u32::from(
        address
            .parse::<Ipv4Addr>()
            .unwrap_or_else(|_| panic!("{address:?} is not an IPv4 address")),
    );
    networks
        .iter()
        .filter_map(|n| ipv4_net(n))
        .any(|(net, mask)| address & mask == net)
}

// --- docker compose ---------------------------------------------------------

fn compose() -> Yaml {
    let path = deploy().join("docker-compose.yml");
    let mut documents = yaml_documents(&read(&path), &path);
    assert_eq!(documents.len(), 1, "docker-compose.yml holds one document");
    documents.remove(0)
}

/// `(source, target)` of each volume entry of a service.
fn compose_volumes(service: &Yaml) -> Vec<(String, String)> {
    list(service, &["volumes"])
        .iter()
        .map(|volume| match volume {
            Yaml::String(short) => {
                let mut parts = short.split(':');
                let source = parts.next().unwrap_or_default().to_owned();
                let target = parts.next().unwrap_or_default().to_owned();
                (source, target)
            }
            long => (
                text(long, &["source"]).unwrap_or_default().to_owned(),
                text(long, &["target"]).unwrap_or_default().to_owned(),
            ),
        })
        .collect()
}

fn is_path(source: &str) -> bool {
    source.starts_with('.') || source.starts_with('/') || source.starts_with('~')
}

#[test]
fn compose_file_references_only_existing_files() {
    let compose = compose();
    let base = deploy();
    assert!(
        compose.get("version").is_none(),
        "the compose specification has no version key"
    );
    let services = compose.get("services").expect("services");
    for name in ["gateway", "openldap", "mailpit"] {
        assert!(services.get(name).is_some(), "no service {name}");
    }
    let declared_volumes = compose.get("volumes").map(keys).unwrap_or_default();
    let declared_secrets = compose.get("secrets").map(keys).unwrap_or_default();

    for name in keys(services) {
        let service = &services[name.as_str()];
        if let Some(build) = service.get("build") {
            let context = build
                .as_str()
                .or_else(|| text(build, &["context"]))
                .unwrap_or(".");
            let context = base.join(context);
            assert!(
                context.is_dir(),
                "{name}: build context {context:?} missing"
            );
            let dockerfile = text(build, &["dockerfile"]).unwrap_or("Dockerfile");
            let dockerfile = context.join(dockerfile);
            assert!(dockerfile.is_file(), "{name}: {dockerfile:?} missing");
        }
        for (source, target) in compose_volumes(service) {
            assert!(!target.is_empty(), "{name}: a volume without a target");
            if is_path(&source) {
                let path = base.join(&source);
                assert!(path.exists(), "{name} mounts {source}, which is missing");
            } else {
                assert!(
                    declared_volumes.contains(&source),
                    "{name} uses volume {source}, not declared under volumes:"
                );
            }
        }
        for secret in list(service, &["secrets"]) {
            let secret = secret
                .as_str()
                .or_else(|| text(secret, &["source"]))
                .expect("a secret name");
            assert!(
                declared_secrets.iter().any(|s| s == secret),
                "{name} uses secret {secret}, not declared under secrets:"
            );
        }
    }
    for name in &declared_secrets {
        let file = text(&compose, &["secrets", name, "file"])
            .unwrap_or_else(|| panic!("secret {name} has no file"));
        assert!(base.join(file).is_file(), "secret {name}: {file} missing");
    }

    let gateway = &services["gateway"];
    let ports: Vec<String> = list(gateway, &["ports"])
        .iter()
        .filter_map(port_of)
        .collect();
    for wanted in ["2525:25", "9125:9125"] {
        assert!(
            ports.iter().any(|p| p == wanted),
            "gateway publishes {ports:?}, not {wanted}"
        );
    }
    assert!(
        text(&services["mailpit"], &["image"]).is_some_and(|i| i.starts_with("axllent/mailpit")),
        "mailpit is axllent/mailpit"
    );
}

#[test]
fn compose_configuration_is_usable_and_matches_the_compose_file() {
    let compose = compose();
    let base = deploy();
    let gateway = &compose["services"]["gateway"];
    let (source, _) = compose_volumes(gateway)
        .into_iter()
        .find(|(_, target)| target == "/etc/mailjournal/mailjournal.toml")
        .expect("the gateway mounts its configuration at /etc/mailjournal/mailjournal.toml");
    let text_of_config = read(&base.join(&source));
    let config = parse_config(&text_of_config, &source);
    check_offline(&text_of_config, &source);

    // A full configuration: every key of the contract, but for those that
    // need the user's own files.
    let found = config_keys(&config);
    for key in CONFIG_KEYS {
        if !KEYS_LEFT_OUT.contains(key) {
            assert!(found.contains(*key), "{source} does not set {key}");
        }
    }

    // The secret is where the configuration reads it.
    let password_file = config_str(&config, "directory", "bind_password_file")
        .expect("directory.bind_password_file");
    let secrets: Vec<&str> = list(gateway, &["secrets"])
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(
        secrets
            .iter()
            .any(|s| format!("/run/secrets/{s}") == password_file),
        "bind_password_file {password_file} is none of the gateway's secrets {secrets:?}"
    );

    // Next hops and the directory name services of the compose file.
    let services = keys(&compose["services"]);
    let host_of = |url: &str| {
        let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
        rest.split([':', '/', '?'])
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    for key in ["inbound_next_hop", "outbound_next_hop", "journal_next_hop"] {
        let hop = config_str(&config, "routing", key).expect(key);
        assert!(
            services.contains(&host_of(hop)),
            "routing.{key} {hop} is no compose service"
        );
    }
    let url = config_str(&config, "directory", "url").expect("directory.url");
    assert!(
        services.contains(&host_of(url)),
        "directory.url {url} is no compose service"
    );

    // The admin port is the published one.
    let admin = config_str(&config, "server", "admin_listen").expect("server.admin_listen");
    assert_eq!(port_of_socket(admin), "9125");
    assert!(
        admin.starts_with("0.0.0.0:"),
        "admin_listen must be reachable from outside the container"
    );

    // The host (through the network's gateway address) is internal, the
    // "internet" demo client is not.
    let networks: Vec<String> = config["routing"]["internal_networks"]
        .as_array()
        .expect("routing.internal_networks")
        .iter()
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect();
    for network in keys(compose.get("networks").expect("networks")) {
        for pool in list(&compose, &["networks", &network, "ipam", "config"]) {
            if let Some(gateway_ip) = text(pool, &["gateway"]) {
                assert!(
                    in_networks(gateway_ip, &networks),
                    "the host's address {gateway_ip} on {network} is not internal"
                );
            }
        }
    }
    if let Some(internet) = compose["services"].get("internet") {
        for network in internet
            .get("networks")
            .and_then(Yaml::as_mapping)
            .into_iter()
            .flat_map(|m| m.values())
        {
            if let Some(address) = text(network, &["ipv4_address"]) {
                assert!(
                    !in_networks(address, &networks),
                    "the internet client {address} would count as internal"
                );
            }
        }
    }
}

#[test]
fn dockerfile_and_dockerignore() {
    let path = deploy().join("Dockerfile");
    let dockerfile = read(&path);
    for wanted in [
        "FROM rust:1-bookworm AS builder",
        "cargo build --release --locked",
        "FROM debian:bookworm-slim",
        "ca-certificates",
        "VOLUME [\"/var/spool/mailjournal\"]",
        "/healthz",
        "HEALTHCHECK",
    ] {
        assert!(dockerfile.contains(wanted), "Dockerfile lacks {wanted:?}");
    }
    let instruction = |name: &str| -> Vec<String> {
        let line = dockerfile
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("Dockerfile has no {name}"));
        serde_json::from_str(&line[name.len()..])
            .unwrap_or_else(|e| panic!("{name} is not in exec form: {e}"))
    };
    assert_eq!(instruction("ENTRYPOINT"), ["/usr/local/bin/mailjournal"]);
    assert_eq!(
        instruction("CMD"),
        ["serve", "--config", "/etc/mailjournal/mailjournal.toml"]
    );
    let exposed: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(str::split_whitespace)
        .collect();
    for port in ["25", "9125"] {
        assert!(exposed.contains(&port), "Dockerfile does not expose {port}");
    }
    let user = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("Dockerfile sets USER");
    assert!(
        !user.trim().starts_with("root") && !user.trim().starts_with("0"),
        "the image must not run as root"
    );

    let ignore = read(&root().join(".dockerignore"));
    let ignored: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for wanted in ["target/", "var/", ".git/"] {
        assert!(ignored.contains(&wanted), ".dockerignore lacks {wanted}");
    }
    // The mapping presets are compiled in from deploy/mappings/.
    assert!(
        !ignored.iter().any(|l| l.starts_with("deploy")),
        ".dockerignore must keep deploy/ in the build context"
    );
}

// --- Kubernetes ---------------------------------------------------------------

struct Manifests {
    files: Vec<String>,
    documents: Vec<(String, Yaml)>,
    kustomization: Yaml,
}

fn manifests() -> Manifests {
    let dir = deploy().join("kubernetes");
    let mut files = Vec::new();
    let mut documents = Vec::new();
    let mut kustomization = None;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("file name")
            .to_owned();
        if !(name.ends_with(".yaml") || name.ends_with(".yml")) {
            continue;
        }
        let parsed = yaml_documents(&read(&path), &path);
        if name == "kustomization.yaml" {
            kustomization = parsed.into_iter().next();
            continue;
        }
        assert!(!parsed.is_empty(), "{name} holds no document");
        for document in parsed {
            assert!(
                text(&document, &["apiVersion"]).is_some() && text(&document, &["kind"]).is_some(),
                "{name}: a document without apiVersion or kind"
            );
            documents.push((name.clone(), document));
        }
        files.push(name);
    }
    Manifests {
        files,
        documents,
        kustomization: kustomization.expect("deploy/kubernetes/kustomization.yaml"),
    }
}

impl Manifests {
    fn of_kind(&self, kind: &str) -> Vec<&Yaml> {
        self.documents
            .iter()
            .map(|(_, d)| d)
            .filter(|d| text(d, &["kind"]) == Some(kind))
            .collect()
    }

    fn one(&self, kind: &str) -> &Yaml {
        let found = self.of_kind(kind);
        assert_eq!(found.len(), 1, "one {kind} expected");
        found[0]
    }

    fn named(&self, kind: &str, name: &str) -> &Yaml {
        self.of_kind(kind)
            .into_iter()
            .find(|d| text(d, &["metadata", "name"]) == Some(name))
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    }
}

#[test]
fn kustomization_lists_exactly_the_manifests() {
    let manifests = manifests();
    let listed: Vec<&str> = list(&manifests.kustomization, &["resources"])
        .iter()
        .map(|r| r.as_str().expect("a resource path"))
        .collect();
    let dir = deploy().join("kubernetes");
    for resource in &listed {
        assert!(
            dir.join(resource).is_file(),
            "kustomization.yaml lists {resource}, which is missing"
        );
    }
    for file in &manifests.files {
        assert!(
            listed.contains(&file.as_str()),
            "{file} is not listed in kustomization.yaml"
        );
    }
}

#[test]
fn kubernetes_configuration_is_usable_and_the_statefulset_fits_it() {
    let manifests = manifests();
    let set = manifests.one("StatefulSet");
    let pod = at(set, &["spec", "template", "spec"]).expect("pod template");
    let container = at(pod, &["containers", "0"]).expect("a container");

    // The configuration: from the ConfigMap mounted where the command reads it.
    let args: Vec<&str> = list(container, &["args"])
        .iter()
        .chain(list(container, &["command"]))
        .filter_map(Yaml::as_str)
        .collect();
    let config_arg = args
        .iter()
        .position(|a| *a == "--config")
        .and_then(|i| args.get(i + 1))
        .expect("the container runs with --config");
    assert!(
        args.contains(&"serve"),
        "the container runs serve: {args:?}"
    );
    let volumes = list(pod, &["volumes"]);
    let mounts = list(container, &["volumeMounts"]);
    let mount_of = |path: &str| -> (&Yaml, &Yaml) {
        let mount = mounts
            .iter()
            .filter(|m| {
                text(m, &["mountPath"]).is_some_and(|p| {
                    path == p || path.starts_with(&format!("{}/", p.trim_end_matches('/')))
                })
            })
            .max_by_key(|m| text(m, &["mountPath"]).map(str::len))
            .unwrap_or_else(|| panic!("nothing is mounted at {path}"));
        let name = text(mount, &["name"]).expect("mount name");
        let volume = volumes
            .iter()
            .find(|v| text(v, &["name"]) == Some(name))
            .unwrap_or(&Yaml::Null);
        (mount, volume)
    };
    let (config_mount, config_volume) = mount_of(config_arg);
    let map_name = text(config_volume, &["configMap", "name"])
        .unwrap_or_else(|| panic!("{config_arg} is not mounted from a ConfigMap"));
    let map = manifests.named("ConfigMap", map_name);
    let key = match text(config_mount, &["subPath"]) {
        Some(key) => key.to_owned(),
        None => Path::new(config_arg)
            .file_name()
            .and_then(|n| n.to_str())
            .expect("config file name")
            .to_owned(),
    };
    let key = list(config_volume, &["configMap", "items"])
        .iter()
        .find(|i| text(i, &["path"]) == Some(key.as_str()))
        .and_then(|i| text(i, &["key"]))
        .map(str::to_owned)
        .unwrap_or(key);
    let text_of_config = text(map, &["data", &key])
        .unwrap_or_else(|| panic!("ConfigMap {map_name} has no key {key}"));
    let origin = format!("ConfigMap {map_name} key {key}");
    check_offline(text_of_config, &origin);
    let config = parse_config(text_of_config, &origin);

    // The bind password file is the Secret.
    let password_file = config_str(&config, "directory", "bind_password_file")
        .expect("directory.bind_password_file");
    let (_, password_volume) = mount_of(password_file);
    let secret_name = text(password_volume, &["secret", "secretName"])
        .unwrap_or_else(|| panic!("{password_file} is not mounted from a Secret"));
    manifests.named("Secret", secret_name);

    // A spool per pod, where the configuration keeps it.
    let spool = config_str(&config, "server", "spool_dir").unwrap_or(DEFAULT_SPOOL);
    let claims: Vec<&str> = list(set, &["spec", "volumeClaimTemplates"])
        .iter()
        .filter_map(|c| text(c, &["metadata", "name"]))
        .collect();
    let (spool_mount, _) = mount_of(spool);
    let spool_volume = text(spool_mount, &["name"]).expect("mount name");
    assert_eq!(
        text(spool_mount, &["mountPath"]).map(|p| p.trim_end_matches('/')),
        Some(spool.trim_end_matches('/')),
        "the spool volume is mounted at server.spool_dir"
    );
    assert!(
        claims.contains(&spool_volume),
        "the spool ({spool_volume}) is not a volumeClaimTemplate ({claims:?}): \
         a spool must stay with its pod"
    );
    assert!(
        at(set, &["spec", "replicas"])
            .and_then(Yaml::as_u64)
            .is_some_and(|r| r >= 2),
        "two gateways or more"
    );

    // Probes on the admin port.
    let admin = config_str(&config, "server", "admin_listen").expect("server.admin_listen");
    let admin_port = port_of_socket(admin);
    let resolve = |port: &Yaml| -> String {
        let port = port_of(port).expect("a probe port");
        list(container, &["ports"])
            .iter()
            .find(|p| text(p, &["name"]) == Some(port.as_str()))
            .and_then(|p| at(p, &["containerPort"]).and_then(port_of))
            .unwrap_or(port)
    };
    let readiness = at(container, &["readinessProbe", "httpGet"]).expect("an HTTP readiness probe");
    assert_eq!(text(readiness, &["path"]), Some("/healthz"));
    assert_eq!(resolve(&readiness["port"]), admin_port);
    let liveness = at(container, &["livenessProbe", "httpGet"]).expect("an HTTP liveness probe");
    assert_eq!(resolve(&liveness["port"]), admin_port);
    let listen = config["server"]["listen"]
        .as_array()
        .and_then(|l| l.first())
        .and_then(|l| l.as_str())
        .expect("server.listen");
    let smtp_port = port_of_socket(listen);
    assert!(
        list(container, &["ports"])
            .iter()
            .any(|p| at(p, &["containerPort"]).and_then(port_of).as_deref() == Some(smtp_port)),
        "the container declares the SMTP port {smtp_port}"
    );

    // Draining outlasts the session limit; nothing runs as root.
    let grace = at(pod, &["terminationGracePeriodSeconds"])
        .and_then(Yaml::as_u64)
        .expect("terminationGracePeriodSeconds");
    assert!(
        grace > SESSION_DRAIN_SECS + 4,
        "terminationGracePeriodSeconds {grace} leaves no room for the {SESSION_DRAIN_SECS} s drain"
    );
    let non_root = |context: Option<&Yaml>| {
        context
            .and_then(|c| c.get("runAsNonRoot"))
            .and_then(Yaml::as_bool)
            == Some(true)
    };
    assert!(
        non_root(pod.get("securityContext")) || non_root(container.get("securityContext")),
        "runAsNonRoot"
    );
    assert_eq!(
        at(container, &["securityContext", "readOnlyRootFilesystem"]).and_then(Yaml::as_bool),
        Some(true)
    );
    let uid = at(pod, &["securityContext", "runAsUser"]).and_then(Yaml::as_u64);
    let dockerfile = read(&deploy().join("Dockerfile"));
    if let Some(uid) = uid {
        assert!(
            dockerfile.contains(&format!("USER {uid}:")),
            "runAsUser {uid} is not the image's user"
        );
    }

    // SMTP keeps client addresses; the StatefulSet has its headless Service.
    let services = manifests.of_kind("Service");
    let smtp = services
        .iter()
        .find(|s| text(s, &["spec", "clusterIP"]) != Some("None"))
        .expect("an SMTP Service");
    assert_eq!(
        text(smtp, &["spec", "externalTrafficPolicy"]),
        Some("Local"),
        "the SMTP Service must keep client addresses: direction depends on them"
    );
    assert!(
        list(smtp, &["spec", "ports"])
            .iter()
            .any(|p| at(p, &["port"]).and_then(port_of).as_deref() == Some("25")),
        "the SMTP Service listens on 25"
    );
    let governing = text(set, &["spec", "serviceName"]).expect("serviceName");
    let headless = manifests.named("Service", governing);
    assert_eq!(text(headless, &["spec", "clusterIP"]), Some("None"));
}

// --- systemd ------------------------------------------------------------------

#[test]
fn systemd_unit_is_hardened_and_serves() {
    let path = deploy().join("systemd/mailjournal.service");
    let unit = read(&path);
    let settings: Vec<(&str, &str)> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .collect();
    let value = |key: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .collect()
    };
    let one = |key: &str| -> &str {
        value(key)
            .last()
            .copied()
            .unwrap_or_else(|| panic!("the unit has no {key}="))
    };
    for (key, wanted) in [
        ("Type", "simple"),
        ("User", "mailjournal"),
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallFilter", "@system-service"),
        ("SystemCallArchitectures", "native"),
        ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
        ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
        ("UMask", "0077"),
    ] {
        assert!(
            value(key).contains(&wanted),
            "{key}={wanted} missing from the unit ({:?})",
            value(key)
        );
    }
    assert!(value("ExecReload").is_empty(), "mailjournal has no reload");
    assert!(
        one("ExecStart").contains("mailjournal serve --config "),
        "ExecStart runs serve --config"
    );
    assert!(one("LimitNOFILE").parse::<u64>().is_ok_and(|n| n >= 4096));
    let stop = one("TimeoutStopSec");
    let stop: u64 = stop
        .trim_end_matches('s')
        .parse()
        .expect("TimeoutStopSec in seconds");
    assert!(
        stop > SESSION_DRAIN_SECS + 4,
        "TimeoutStopSec {stop} is shorter than the drain"
    );
    let writable = value("ReadWritePaths").join(" ") + " " + &value("StateDirectory").join(" ");
    assert!(
        writable.contains(DEFAULT_SPOOL) || writable.contains("mailjournal"),
        "the spool must be writable under ProtectSystem=strict"
    );
    let sysusers = deploy().join("systemd/mailjournal.sysusers.conf");
    assert!(
        sysusers.is_file() || unit.contains("useradd"),
        "say how the mailjournal user is created"
    );
}

// --- Grafana ------------------------------------------------------------------

fn strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("mailjournal_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn grafana_dashboard_uses_only_the_exported_metrics() {
    let path = deploy().join("grafana/mailjournal-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    assert!(
        dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion 36 or later"
    );
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating variables");
    assert!(
        variables.iter().any(|v| v["name"] == "DS_PROMETHEUS"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "a Prometheus datasource variable DS_PROMETHEUS"
    );

    let mut all = Vec::new();
    strings(&dashboard, &mut all);
    let mut used = BTreeSet::new();
    for name in all.iter().flat_map(|s| metric_names(s)) {
        let known = METRICS.contains(&name.as_str())
            || HISTOGRAM_SUFFIXES
                .iter()
                .any(|suffix| name.strip_suffix(suffix) == Some(HISTOGRAM));
        assert!(
            known,
            "the dashboard uses {name}, which the gateway does not export"
        );
        let base = HISTOGRAM_SUFFIXES
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name)
            .to_owned();
        used.insert(base);
    }
    for metric in METRICS {
        assert!(used.contains(*metric), "no panel shows {metric}");
    }

    // Every query goes to the chosen Prometheus.
    fn datasources(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(ds) = map.get("datasource") {
                    if let Some(uid) = ds.get("uid").and_then(|u| u.as_str()) {
                        out.push(uid.to_owned());
                    }
                }
                map.values().for_each(|v| datasources(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| datasources(v, out)),
            _ => {}
        }
    }
    let mut uids = Vec::new();
    if let Some(panels) = dashboard.get("panels") {
        datasources(panels, &mut uids);
    }
    assert!(!uids.is_empty(), "panels name their datasource");
    for uid in uids {
        assert_eq!(
            uid, "${DS_PROMETHEUS}",
            "a panel queries another datasource"
        );
    }
}

// --- README ---------------------------------------------------------------------

#[test]
fn readme_operations_documents_every_key_command_and_metric() {
    let readme = read(&root().join("README.md"));
    let operations = readme
        .split_once("\n## Operations\n")
        .map(|(_, rest)| rest)
        .expect("README.md has a section \"## Operations\"");
    // Up to the next section of the same level, if any.
    let operations = operations
        .split_once("\n## ")
        .map(|(section, _)| section)
        .unwrap_or(operations);
    for key in CONFIG_KEYS {
        let (_, name) = key.split_once('.').expect("section.key");
        assert!(
            operations.contains(&format!("`{name}`")),
            "README Operations does not document {key}"
        );
    }
    for key in MAPPING_KEYS {
        assert!(
            operations.contains(&format!("`{key}`")) || operations.contains(&format!("`[{key}]`")),
            "README Operations does not document the mapping key {key}"
        );
    }
    for metric in METRICS {
        assert!(
            operations.contains(metric),
            "README Operations does not list {metric}"
        );
    }
    for command in [
        "serve",
        "check",
        "--offline",
        "lookup",
        "queue list",
        "queue show",
        "queue retry",
        "queue delete",
        "import-registry",
        "/healthz",
    ] {
        assert!(
            operations.contains(command),
            "README Operations does not mention {command}"
        );
    }
}

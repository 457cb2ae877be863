//! The production pieces of `compose/docker-compose.yml`, checked statically (no Docker
//! engine here): the Prometheus scrape configuration names compose services and the ports
//! their configurations listen on, and passes `promtool check config` with the alert rules
//! it mounts; Grafana's provisioning loads `ops/grafana/vitalsink.json` with a Prometheus
//! and PostgreSQL data sources; each PgBouncer runs transaction pooling with prepared
//! statements tracked in front of a Patroni member; the members archive WAL with pgBackRest
//! to the compose S3 over HTTPS; and every `/run/secrets/NAME` these files read is a secret
//! the service mounts. Needs promtool from the stack's root filesystem (`dev/stack up`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml(rel: &str) -> Value {
    let mut y: serde_norway::Value = serde_norway::from_str(&read(rel)).unwrap();
    y.apply_merge().unwrap();
    serde_json::to_value(y).unwrap()
}

fn services() -> Map<String, Value> {
    yaml("compose/docker-compose.yml")["services"]
        .as_object()
        .unwrap()
        .clone()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// `(host path relative to compose/, container path)` of each bind mount of `svc`.
fn mounts(svc: &Value) -> Vec<(String, String)> {
    strs(&svc["volumes"])
        .into_iter()
        .filter(|v| v.starts_with('.'))
        .map(|v| {
            let mut p = v.split(':');
            (p.next().unwrap().into(), p.next().unwrap().into())
        })
        .collect()
}

/// Every `/run/secrets/NAME` in `text` is a secret `svc` mounts.
fn secrets_mounted(who: &str, svc: &Value, text: &str) {
    let mounted = strs(&svc["secrets"]);
    let mut n = 0;
    for part in text.split("/run/secrets/").skip(1) {
        let name: String = part
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        assert!(
            mounted.contains(&name),
            "{who}: reads secret {name}, not mounted"
        );
        n += 1;
    }
    assert!(n > 0, "{who}: reads no secret");
}

/// The port `service` listens on for Prometheus: the vitalsink binaries' observability
/// listen address, the exporters' `--web.listen-address`, Patroni's REST API.
fn listen_port(services: &Map<String, Value>, service: &str) -> u16 {
    let svc = services
        .get(service)
        .unwrap_or_else(|| panic!("scrape target {service} is not a compose service"));
    let addr = if let Some(l) = svc["environment"]["VITALSINK_OBSERVABILITY__LISTEN"].as_str() {
        l.to_string()
    } else if let Some(a) = strs(&svc["command"])
        .iter()
        .find_map(|a| a.strip_prefix("--web.listen-address="))
    {
        a.to_string()
    } else if svc["image"].as_str().unwrap().contains("timescaledb-ha") {
        yaml("compose/patroni/patroni.yml")["restapi"]["listen"]
            .as_str()
            .unwrap()
            .to_string()
    } else {
        panic!("{service}: no metrics listener known");
    };
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn prometheus_scrapes_compose_services_and_loads_the_rules() {
    let services = services();
    let prom = &services["prometheus"];
    assert_eq!(strs(&prom["profiles"]), ["ops"]);
    let cfg = yaml("compose/prometheus/prometheus.yml");
    // The job names the rules and the dashboard select on (the example configuration's).
    let jobs = |c: &Value| -> Vec<String> {
        c["scrape_configs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job_name"].as_str().unwrap().to_string())
            .collect()
    };
    let ours = jobs(&cfg);
    for j in jobs(&yaml("ops/prometheus/prometheus.yml")) {
        assert!(ours.contains(&j), "compose Prometheus lacks job {j}");
    }
    let mut targets = 0;
    for job in cfg["scrape_configs"].as_array().unwrap() {
        let name = job["job_name"].as_str().unwrap();
        for sc in job["static_configs"].as_array().into_iter().flatten() {
            for t in strs(&sc["targets"]) {
                let (host, port) = t.rsplit_once(':').unwrap();
                assert_eq!(
                    port.parse::<u16>().unwrap(),
                    listen_port(&services, host),
                    "{name}: {t}"
                );
                if name.starts_with("vitalsink-shards") || name.starts_with("vitalsink-replicas") {
                    assert!(
                        sc["labels"]["shard"].is_string(),
                        "{name}: {t} has no shard label"
                    );
                }
                targets += 1;
            }
        }
        for sd in job["dns_sd_configs"].as_array().into_iter().flatten() {
            let port = sd["port"].as_u64().unwrap();
            for host in strs(&sd["names"]) {
                assert_eq!(
                    port,
                    u64::from(listen_port(&services, &host)),
                    "{name}: {host}"
                );
                targets += 1;
            }
        }
    }
    assert!(targets >= 10, "{targets} targets");
    // The rule files, as the container sees them: mounted next to the configuration.
    let prom_mounts = mounts(prom);
    let conf_dir = prom_mounts
        .iter()
        .find(|(h, _)| h == "./prometheus/prometheus.yml")
        .map(|(_, c)| Path::new(c).parent().unwrap().to_path_buf())
        .expect("prometheus.yml mounted");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo().join("compose/prometheus/prometheus.yml"),
        tmp.path().join("prometheus.yml"),
    )
    .unwrap();
    for rule in strs(&cfg["rule_files"]) {
        let (host, _) = prom_mounts
            .iter()
            .find(|(_, c)| Path::new(c) == conf_dir.join(&rule))
            .unwrap_or_else(|| panic!("rule file {rule} is not mounted in {}", conf_dir.display()));
        std::fs::copy(repo().join("compose").join(host), tmp.path().join(&rule)).unwrap();
    }
    let out = std::process::Command::new(repo().join("dev/monitoring"))
        .args(["promtool", "check", "config"])
        .arg(tmp.path().join("prometheus.yml"))
        .output()
        .expect("dev/monitoring promtool (dev/stack up installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check config: {text}");
    assert!(text.contains("SUCCESS: 1 rule files found"), "{text}");
}

#[test]
fn grafana_provisions_the_dashboard_and_its_data_sources() {
    let services = services();
    let g = &services["grafana"];
    assert_eq!(strs(&g["profiles"]), ["ops"]);
    let m = mounts(g);
    let container = |host: &str| {
        m.iter()
            .find(|(h, _)| h == host)
            .map(|(_, c)| c.clone())
            .unwrap_or_else(|| panic!("grafana does not mount {host}"))
    };
    let dash_dir = container("./grafana/provisioning/dashboards");
    let ds_dir = container("./grafana/provisioning/datasources");
    assert_eq!(dash_dir, "/etc/grafana/provisioning/dashboards");
    assert_eq!(ds_dir, "/etc/grafana/provisioning/datasources");
    let dashboard = container("../ops/grafana/vitalsink.json");
    let providers = yaml("compose/grafana/provisioning/dashboards/vitalsink.yml");
    let path = providers["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    assert_eq!(
        Path::new(&dashboard).parent().unwrap(),
        Path::new(path),
        "the provider's path holds the dashboard"
    );
    let dash: Value = serde_json::from_str(&read("ops/grafana/vitalsink.json")).unwrap();
    let ds = yaml("compose/grafana/provisioning/datasources/vitalsink.yml");
    let sources = ds["datasources"].as_array().unwrap();
    // Each data-source variable of the dashboard has a provisioned source of its type.
    for var in dash["templating"]["list"].as_array().unwrap() {
        if var["type"] == "datasource" {
            let ty = var["query"].as_str().unwrap();
            assert!(
                sources.iter().any(|s| s["type"] == ty),
                "no {ty} data source for ${}",
                var["name"]
            );
        }
    }
    let ds_text = read("compose/grafana/provisioning/datasources/vitalsink.yml");
    secrets_mounted("grafana", g, &ds_text);
    for s in sources {
        let url = s["url"].as_str().unwrap();
        let host = url.trim_start_matches("http://").split(':').next().unwrap();
        assert!(
            services.contains_key(host),
            "data source {url}: no service {host}"
        );
        if s["type"] == "grafana-postgresql-datasource" {
            assert_eq!(s["jsonData"]["sslmode"], "verify-full", "{url}");
            assert!(
                s["secureJsonData"]["password"]
                    .as_str()
                    .unwrap()
                    .starts_with("$__file{/run/secrets/"),
                "{url}: the password is a Docker secret"
            );
        }
    }
}

#[test]
fn pgbouncers_pool_transactions_in_front_of_the_members() {
    let services = services();
    let common = read("compose/pgbouncer/common.ini");
    let setting = |k: &str| {
        common
            .lines()
            .find_map(|l| l.strip_prefix(k)?.trim().strip_prefix('='))
            .map(str::trim)
            .unwrap_or_else(|| panic!("common.ini: no {k}"))
    };
    assert_eq!(setting("pool_mode"), "transaction");
    assert_eq!(setting("max_prepared_statements"), "200");
    assert_eq!(setting("server_tls_sslmode"), "verify-full");
    let script = read("compose/make-secrets");
    let toml = read("compose/vitalsink.toml");
    let mut n = 0;
    for (name, svc) in &services {
        if !svc["image"]
            .as_str()
            .unwrap_or_default()
            .contains("pgbouncer")
        {
            continue;
        }
        n += 1;
        let ini_path = strs(&svc["command"]).pop().unwrap();
        let ini_host = format!(
            "./pgbouncer/{}",
            Path::new(&ini_path).file_name().unwrap().to_str().unwrap()
        );
        assert!(
            mounts(svc)
                .iter()
                .any(|(h, c)| h == "./pgbouncer" && Path::new(&ini_path).starts_with(c)),
            "{name}: {ini_path} not mounted"
        );
        let ini = read(&format!("compose/{}", &ini_host[2..]));
        assert!(ini.contains("%include /etc/pgbouncer/common.ini"), "{name}");
        let member = ini
            .lines()
            .find_map(|l| l.strip_prefix("* = host="))
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("{name}: no [databases] target"));
        assert_eq!(name.strip_prefix("pgbouncer-"), Some(member), "{name}");
        assert!(services[member]["image"]
            .as_str()
            .unwrap()
            .contains("timescaledb-ha"));
        secrets_mounted(name, svc, &common);
    }
    assert_eq!(n, 4, "one PgBouncer per member");
    // The auth file holds every login of compose/vitalsink.toml.
    for line in toml.lines() {
        if let Some(user) = line.strip_prefix("user = ") {
            let user = user.trim_matches('"');
            assert!(
                script.contains(&format!("{user}:pg_")),
                "pgbouncer_userlist lacks {user}"
            );
        }
    }
}

#[test]
fn members_run_patroni_and_archive_wal_with_pgbackrest() {
    let services = services();
    let patroni = yaml("compose/patroni/patroni.yml");
    let params = &patroni["bootstrap"]["dcs"]["postgresql"]["parameters"];
    assert!(
        params["archive_command"]
            .as_str()
            .unwrap()
            .starts_with("pgbackrest archive-push %p"),
        "WAL archiving"
    );
    assert_eq!(params["archive_mode"], "on");
    assert_eq!(patroni["bootstrap"]["dcs"]["synchronous_mode"], true);
    assert!(patroni["etcd3"]["hosts"]
        .as_str()
        .unwrap()
        .starts_with("etcd:"));
    assert!(services.contains_key("etcd"));
    let conf = read("compose/pgbackrest/pgbackrest.conf");
    let opt = |k: &str| {
        conf.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("pgbackrest.conf: {k}"))
    };
    assert!(services.contains_key(opt("repo1-s3-endpoint")));
    let s3_cmd = services["s3"]["command"].as_str().unwrap();
    assert!(
        s3_cmd.contains(&format!("-s3.port={}", opt("repo1-storage-port"))),
        "the S3 HTTPS port"
    );
    assert!(s3_cmd.contains("-s3.cert.file"), "S3 over HTTPS");
    assert!(!conf.contains("verify-tls=n"));
    assert_eq!(
        opt("pg1-path"),
        patroni["postgresql"]["data_dir"].as_str().unwrap()
    );
    // The scripts Patroni runs, in the mounted compose/patroni/ directory.
    let mut scripts = vec![patroni["bootstrap"]["post_bootstrap"].as_str().unwrap()];
    for cb in patroni["postgresql"]["callbacks"]
        .as_object()
        .unwrap()
        .values()
    {
        scripts.push(cb.as_str().unwrap());
    }
    let mut files =
        read("compose/patroni/entrypoint.sh") + &read("compose/patroni/patroni.yml") + &conf;
    for s in scripts {
        let rel = s
            .strip_prefix("/etc/vitalsink/patroni/")
            .unwrap_or_else(|| panic!("{s} is not in the mounted compose/patroni/"));
        files += &read(&format!("compose/patroni/{rel}"));
    }
    let mut stanzas = Vec::new();
    for (name, svc) in &services {
        if !svc["image"]
            .as_str()
            .unwrap_or_default()
            .contains("timescaledb-ha")
        {
            continue;
        }
        let env = &svc["environment"];
        assert_eq!(env["PATRONI_NAME"].as_str(), Some(name.as_str()));
        assert_eq!(
            env["PATRONI_POSTGRESQL_CONNECT_ADDRESS"].as_str(),
            Some(format!("{name}:5432").as_str())
        );
        stanzas.push(env["PGBACKREST_STANZA"].as_str().unwrap().to_string());
        secrets_mounted(name, svc, &files);
        for (host, _) in mounts(svc) {
            assert!(
                repo().join("compose").join(&host).exists(),
                "{name}: {host}"
            );
        }
    }
    stanzas.sort();
    assert_eq!(
        stanzas,
        ["shard0", "shard0", "shard1", "shard1"],
        "two members per shard"
    );
    for svc in services.values() {
        if let Some(uri) = svc["environment"]["DATA_SOURCE_URI"].as_str() {
            assert!(uri.contains("sslmode=verify-full"), "{uri}");
            assert!(
                services.contains_key(uri.split(':').next().unwrap()),
                "{uri}"
            );
            assert!(mounts(svc)
                .iter()
                .any(|(h, _)| h == "../ops/postgres-exporter/queries.yaml"));
        }
    }
}

//! The deployment files in deploy/: the example configurations pass `check-config`
//! laid out as the Kubernetes manifests mount them, they are what `adep pki init
//! --layout containers` writes, and the manifests render (with kubectl, where it is
//! installed; docker compose likewise).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use adep_node::{
    check::{self, Verdict},
    domain::principals::Country,
    tooling::pki::{self, NodePlan},
};

const COUNTRIES: [&str; 3] = ["FR", "DE", "ES"];
/// The files of a node's Secret, as deploy/k8s/base/statefulset.yaml projects them.
const NODE_FILES: [&str; 9] = [
    "node.pem",
    "node.key.pem",
    "national-ca.pem",
    "national-ca.crl.pem",
    "national-node.pem",
    "national-node.key.pem",
    "audit.key",
    "data.key",
    "key-seed",
];

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn containers_pki(dir: &Path) {
    let countries: Vec<Country> = COUNTRIES.iter().map(|c| c.parse().expect("cc")).collect();
    pki::init(dir, &NodePlan::containers(&countries).expect("plans")).expect("pki init");
}

fn tool_works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn example_configurations_pass_check_config_as_mounted() {
    let net = tempfile::tempdir().expect("tmp");
    containers_pki(net.path());
    for cc in COUNTRIES {
        let example = deploy().join(format!("k8s/overlays/{}/node.toml", cc.to_lowercase()));
        let text = std::fs::read_to_string(&example).expect("example node.toml");
        assert_eq!(
            text,
            std::fs::read_to_string(net.path().join(cc).join("node.toml")).expect("generated"),
            "{} is not what `adep pki init --layout containers` writes; regenerate it",
            example.display()
        );
        // /etc/adep as the projected volume lays it out.
        let etc = tempfile::tempdir().expect("tmp");
        for ca in ["network-ca.pem", "network-ca.crl.pem"] {
            std::fs::copy(net.path().join(ca), etc.path().join(ca)).expect("copy");
        }
        let node = etc.path().join("node");
        std::fs::create_dir(&node).expect("mkdir");
        for f in NODE_FILES {
            std::fs::copy(net.path().join(cc).join(f), node.join(f)).expect("copy");
        }
        std::fs::copy(&example, node.join("node.toml")).expect("copy");
        let checks = check::check_config(&node.join("node.toml"));
        let failed: Vec<_> = checks
            .iter()
            .filter(|c| c.verdict == Verdict::Failed)
            .collect();
        assert!(failed.is_empty(), "{cc}: {failed:#?}");
    }
}

#[test]
#[ignore = "needs kubectl: .ci/run runs it where kubectl is installed and says when it is not"]
fn kubernetes_overlays_render_with_kubectl_kustomize() {
    assert!(
        tool_works("kubectl", &["version", "--client"]),
        "kubectl is not installed here"
    );
    let net = tempfile::tempdir().expect("tmp");
    containers_pki(net.path());
    let copy = tempfile::tempdir().expect("tmp");
    let status = Command::new("cp")
        .arg("-r")
        .arg(deploy().join("k8s"))
        .arg(copy.path())
        .status()
        .expect("cp");
    assert!(status.success());
    for cc in COUNTRIES {
        let lower = cc.to_lowercase();
        let secrets = copy.path().join(format!("k8s/overlays/{lower}/secrets"));
        std::fs::create_dir_all(&secrets).expect("mkdir");
        for ca in ["network-ca.pem", "network-ca.crl.pem"] {
            std::fs::copy(net.path().join(ca), secrets.join(ca)).expect("copy");
        }
        for f in NODE_FILES {
            std::fs::copy(net.path().join(cc).join(f), secrets.join(f)).expect("copy");
        }
        let out = Command::new("kubectl")
            .arg("kustomize")
            .arg(copy.path().join(format!("k8s/overlays/{lower}")))
            .output()
            .expect("kubectl kustomize");
        let yaml = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for expected in [
            "kind: StatefulSet".to_owned(),
            "kind: NetworkPolicy".to_owned(),
            format!("name: adep-{lower}\n"),
            format!("name: adep-national-{lower}\n"),
            format!("serviceName: adep-{lower}\n"),
            format!("adep.eu/country: {cc}"),
            "- probe\n".to_owned(),
        ] {
            assert!(yaml.contains(&expected), "{cc}: no {expected:?} in\n{yaml}");
        }
        // Peers call each other by the Service names the overlays give.
        for peer in COUNTRIES.iter().filter(|p| **p != cc) {
            let endpoint = format!("https://adep-{}:7100", peer.to_lowercase());
            assert!(yaml.contains(&endpoint), "{cc}: no peer {endpoint}");
        }
    }
}

#[test]
#[ignore = "needs docker compose: .ci/run runs it where it is installed and says when it is not"]
fn compose_file_is_accepted_by_docker_compose() {
    assert!(
        tool_works("docker", &["compose", "version"]),
        "docker compose is not installed here"
    );
    let out = Command::new("docker")
        .args(["compose", "-f"])
        .arg(deploy().join("compose.yaml"))
        .args(["config", "--quiet"])
        .output()
        .expect("docker compose config");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

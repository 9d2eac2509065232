//! Real services for unit tests: MariaDB, PostgreSQL, Redis, OpenLDAP and
//! a one-node Ceph cluster (whose "URL" is the path of a client ceph.conf),
//! started on demand by the scripts in `packaging/services/` (idempotent,
//! so every test and test binary shares one instance of each), under
//! `target/test-services` on fixed ports. `packaging/test.sh` stops them.
#![cfg(test)]

use std::path::PathBuf;
use std::process::Command;

#[allow(dead_code)] // each backend's tests use their own
pub enum Service {
    MariaDb,
    Postgres,
    Redis,
    OpenLdap,
    Ceph,
}

impl Service {
    fn script(&self) -> &'static str {
        match self {
            Service::MariaDb => "mariadb.sh",
            Service::Postgres => "postgres.sh",
            Service::Redis => "redis.sh",
            Service::OpenLdap => "openldap.sh",
            Service::Ceph => "ceph.sh",
        }
    }

    /// Fixed ports, away from the services' usual ones and below Linux's
    /// ephemeral range (32768–60999): a test listening on port 0 elsewhere
    /// in the suite must never be handed one of these first.
    fn ports(&self) -> &'static [&'static str] {
        match self {
            Service::MariaDb => &["23306"],
            Service::Postgres => &["25432"],
            Service::Redis => &["26379"],
            Service::OpenLdap => &["30389", "30636"],
            Service::Ceph => &["26789"],
        }
    }
}

pub fn services_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-services")
}

/// Starts the service if it is not running and returns its URL. Panics
/// with the script's output if it cannot: tests that need a service must
/// not silently pass without it (run `packaging/install-test-deps.sh`).
pub fn start(service: Service) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = services_dir();
    std::fs::create_dir_all(&dir).expect("create target/test-services");
    let out = Command::new(root.join("packaging/services").join(service.script()))
        .arg("start")
        .arg(&dir)
        .args(service.ports())
        .output()
        .expect("run the service script");
    assert!(
        out.status.success(),
        "{} start failed (install the test dependencies with packaging/install-test-deps.sh):\n{}",
        service.script(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("URL is UTF-8")
        .trim()
        .to_string()
}

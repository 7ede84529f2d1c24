//! `[services]`, `[checks]` and the references of components to services.

use super::*;

/// The additions of the infrastructure issue, accepted as written.
const SERVICES_CONFIG: &str = r#"
[services.db]
kind = "postgres"
url_env = "DATABASE_URL"            # looked up in env_file, then the environment; or url = "postgres://..."
env_file = ".env.production"
compose = { file = "docker-compose.prod.yml", service = "db" }   # optional
required = true

[services.redis]
kind = "redis"
url = "redis://127.0.0.1:6379"
compose = { file = "docker-compose.prod.yml", service = "redis" }

[components.backend]
listen = "127.0.0.1:8080"
command = ["{release_dir}/bin/api"]  # a release may be a bundle: tar archive or directory
requires = ["db", "redis"]           # deploy refused while a required service is unhealthy
migrations = { dir = "migrations", service = "db", lock_timeout = "60s" }  # dir inside the release

[checks]
disk = [ { path = ".", min_free = "1GiB" } ]
"#;

#[test]
fn accepts_services_checks_and_migrations() {
    let config = parse(SERVICES_CONFIG).unwrap();
    let db = config.service("db").unwrap();
    assert_eq!(db.kind, crate::vocab::ServiceKind::Postgres);
    let UrlSource::Env { var, env_file } = &db.url else {
        panic!("url_env expected")
    };
    assert_eq!(var, "DATABASE_URL");
    assert_eq!(
        env_file.as_deref(),
        Some(Path::new("/srv/app/.env.production"))
    );
    assert_eq!(
        db.compose.as_ref().unwrap().file,
        Path::new("/srv/app/docker-compose.prod.yml")
    );
    let process = config.component("backend").unwrap().process().unwrap();
    assert_eq!(process.requires, ["db", "redis"]);
    let migrations = process.migrations.as_ref().unwrap();
    assert_eq!(
        (migrations.dir.as_path(), migrations.service.as_str()),
        (Path::new("migrations"), "db")
    );
    assert_eq!(config.checks.disk[0].min_free, 1 << 30);
    assert_eq!(config.checks.disk[0].path, Path::new("/srv/app/."));
}

#[test]
fn service_references_are_checked() {
    check_error(
        &SERVICES_CONFIG.replace("requires = [\"db\", \"redis\"]", "requires = [\"db\", \"cache\"]"),
        "/srv/app/cutover.toml:17:1: components.backend.requires: unknown service \"cache\" in `requires`; configured: db, redis",
    );
    check_error(
        &SERVICES_CONFIG.replace("service = \"db\", lock_timeout", "service = \"redis\", lock_timeout"),
        "/srv/app/cutover.toml:18:1: components.backend.migrations: migrations need a postgres service; \"redis\" is not one",
    );
    check_error(
        &SERVICES_CONFIG.replace("min_free = \"1GiB\"", "min_free = \"lots\""),
        "/srv/app/cutover.toml:21:35: checks.disk[0].min_free: invalid size \"lots\"; write a number and a unit, e.g. \"1GiB\" or \"500MB\"",
    );
}

//! `dicomweb-gateway check` against the test bed's real sites.

use std::path::PathBuf;
use std::process::Command;

use testbed::TestbedInfo;

fn gateway_binary() -> PathBuf {
    // Test executables live in target/<profile>/deps; workspace binaries one level up.
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target directory");
    let binary = dir.join("dicomweb-gateway");
    assert!(binary.is_file(), "{} is missing: build the workspace first (cargo build --workspace)", binary.display());
    binary
}

fn config(info: &TestbedInfo, extra_site: &str) -> String {
    let mut text = String::from(
        "[server]\nlisten = \"127.0.0.1:8080\"\n\n[dimse]\nae_title = \"FEDGW\"\nlisten = \"127.0.0.1:11200\"\n\n[auth]\nmode = \"none\"\n",
    );
    for site in &info.sites {
        text.push_str(&format!(
            "\n[[sites]]\nid = \"{}\"\nae_title = \"{}\"\naddress = \"127.0.0.1:{}\"\nretrieve = \"c-get\"\ntimeout = \"5s\"\n",
            site.id, site.ae_title, site.dicom_port
        ));
    }
    text.push_str(extra_site);
    text
}

fn run(config_text: &str, name: &str) -> (bool, String, String) {
    let path = std::env::temp_dir().join(format!("gateway-check-{name}-{}.toml", std::process::id()));
    std::fs::write(&path, config_text).expect("write config");
    let output = Command::new(gateway_binary()).args(["check", "--config"]).arg(&path).output().expect("run");
    let _ = std::fs::remove_file(&path);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_echoes_every_site_and_prints_the_table() {
    let info = TestbedInfo::from_env().unwrap_or_else(|e| panic!("{e}"));
    let (ok, stdout, stderr) = run(&config(&info, ""), "ok");
    assert!(ok, "check failed:\n{stdout}\n{stderr}");
    assert!(stdout.starts_with("SITE"), "{stdout}");
    for site in &info.sites {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&site.id))
            .unwrap_or_else(|| panic!("no row for {}:\n{stdout}", site.id));
        assert!(line.contains(&site.ae_title) && line.contains(" yes ") && line.contains(" ms"), "{line}");
    }
}

#[test]
fn check_fails_when_a_site_is_down() {
    let info = TestbedInfo::from_env().unwrap_or_else(|e| panic!("{e}"));
    let port = testbed::free_port().expect("port");
    let down = format!("\n[[sites]]\nid = \"down\"\nae_title = \"DOWN\"\naddress = \"127.0.0.1:{port}\"\nretrieve = \"c-move\"\ntimeout = \"2s\"\n");
    let (ok, stdout, stderr) = run(&config(&info, &down), "down");
    assert!(!ok, "check must fail:\n{stdout}");
    let line = stdout.lines().find(|l| l.starts_with("down")).expect("row for the down site");
    assert!(line.contains("no: ") && line.contains("cannot connect"), "{line}");
    assert!(stderr.contains("1 of"), "{stderr}");
}

#[test]
fn check_reports_every_configuration_problem() {
    let (ok, _, stderr) = run(
        "[server]\nlisten = \"0.0.0.0:8080\"\n[dimse]\nae_title = \"THIS-IS-FAR-TOO-LONG\"\nlisten = \"127.0.0.1:11200\"\n[[sites]]\nid = \"a\"\nae_title = \"A\"\naddress = \"nowhere\"\nretrieve = \"c-get\"\n",
        "invalid",
    );
    assert!(!ok);
    for expected in ["dimse.ae_title", "host:port", "loopback"] {
        assert!(stderr.contains(expected), "missing {expected:?} in:\n{stderr}");
    }
}

//! `inf/flushguard.inf` agrees with the single definitions in `flushguard-protocol`
//! (service name, altitude, port name) and has the shape of a file-system minifilter INF
//! (Microsoft's passThrough sample; DDI page "Creating an INF file for a minifilter
//! driver").

use std::path::PathBuf;

use flushguard_protocol::{ALTITUDE, PORT_NAME, SERVICE_NAME};
use xtask::inf::Inf;

/// Altitude ranges of the load order groups (DDI page "Load order groups and altitudes
/// for minifilter drivers"); FlushGuard's group must be one of these and its altitude
/// must lie in the group's range.
const LOAD_ORDER_GROUPS: &[(&str, u32, u32)] = &[
    ("FSFilter Top", 400_000, 409_999),
    ("FSFilter Activity Monitor", 360_000, 389_999),
    ("FSFilter Undelete", 340_000, 349_999),
    ("FSFilter Anti-Virus", 320_000, 329_998),
    ("FSFilter Replication", 300_000, 309_998),
    ("FSFilter Continuous Backup", 280_000, 289_998),
    ("FSFilter Content Screener", 260_000, 269_998),
    ("FSFilter Quota Management", 240_000, 249_999),
    ("FSFilter System Recovery", 220_000, 229_999),
    ("FSFilter Cluster File System", 200_000, 209_999),
    ("FSFilter HSM", 180_000, 189_999),
    ("FSFilter Compression", 160_000, 169_999),
    ("FSFilter Encryption", 140_000, 149_999),
];

fn inf_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../inf/flushguard.inf")
}

fn load() -> Inf {
    let text = std::fs::read_to_string(inf_path()).expect("inf/flushguard.inf is readable");
    Inf::parse(&text).unwrap_or_else(|error| panic!("inf/flushguard.inf: {error}"))
}

fn value(inf: &Inf, section: &str, key: &str) -> String {
    inf.value(section, key)
        .unwrap_or_else(|error| panic!("[{section}] {key}: {error}"))
        .unwrap_or_else(|| panic!("[{section}] has no {key}"))
}

/// The service section named by `AddService` in the install section.
fn service_section(inf: &Inf) -> (String, String) {
    let add_service = inf
        .values("DefaultInstall.NTamd64.Services", "AddService")
        .expect("AddService expands")
        .expect("DefaultInstall.NTamd64.Services has AddService");
    assert_eq!(
        add_service.len(),
        3,
        "AddService = name,flags,section: {add_service:?}"
    );
    (add_service[0].clone(), add_service[2].clone())
}

#[test]
fn file_is_ascii_with_windows_signature() {
    let bytes = std::fs::read(inf_path()).unwrap();
    assert!(bytes.is_ascii(), "the INF must be ASCII");
    let inf = load();
    assert_eq!(value(&inf, "Version", "Signature"), "$Windows NT$");
    assert_eq!(value(&inf, "Version", "Class"), "ActivityMonitor");
    assert_eq!(
        value(&inf, "Version", "ClassGuid").to_ascii_lowercase(),
        "{b86dff51-a31e-4bac-b3cf-e8cfe75c9fc2}"
    );
}

#[test]
fn service_name_matches_protocol() {
    let inf = load();
    let (name, _) = service_section(&inf);
    assert_eq!(name, SERVICE_NAME);
    let del_service = inf
        .values("DefaultUninstall.NTamd64.Services", "DelService")
        .unwrap()
        .expect("DefaultUninstall.NTamd64.Services has DelService");
    assert_eq!(del_service[0], SERVICE_NAME);
    assert_eq!(
        del_service.get(1).map(String::as_str),
        Some("0x200"),
        "stop the service before deleting it"
    );
    assert!(inf.section("DefaultUninstall.NTamd64").is_some());
}

#[test]
fn service_is_a_demand_start_file_system_driver_depending_on_fltmgr() {
    let inf = load();
    let (_, section) = service_section(&inf);
    assert_eq!(
        value(&inf, &section, "ServiceType"),
        "2",
        "SERVICE_FILE_SYSTEM_DRIVER"
    );
    assert_eq!(
        value(&inf, &section, "StartType"),
        "3",
        "SERVICE_DEMAND_START"
    );
    assert_eq!(value(&inf, &section, "Dependencies"), "FltMgr");
    assert!(
        value(&inf, &section, "ServiceBinary")
            .to_ascii_lowercase()
            .ends_with("\\flushguard.sys"),
        "ServiceBinary names flushguard.sys"
    );
    let copy = inf
        .section("FlushGuard.CopyDriverFiles")
        .expect("copy-files section");
    assert!(copy
        .entries
        .iter()
        .any(|entry| inf.expand(&entry.values[0]).unwrap() == "flushguard.sys"));
}

#[test]
fn altitude_matches_protocol_and_lies_in_the_load_order_group() {
    let inf = load();
    let (_, section) = service_section(&inf);
    let group = value(&inf, &section, "LoadOrderGroup");
    let add_reg = value(&inf, &section, "AddReg");
    let registry = inf.registry_lines(&add_reg).unwrap();

    let default_instance = registry
        .iter()
        .find(|line| line.get(2).map(String::as_str) == Some("DefaultInstance"))
        .expect("DefaultInstance registry line");
    let instance_key = format!("Instances\\{}", default_instance[4]);
    let altitude = registry
        .iter()
        .find(|line| {
            line.get(1) == Some(&instance_key)
                && line.get(2).map(String::as_str) == Some("Altitude")
        })
        .unwrap_or_else(|| panic!("no Altitude under {instance_key}"));
    assert_eq!(altitude[4], ALTITUDE, "INF altitude vs protocol ALTITUDE");

    let numeric: u32 = ALTITUDE
        .split('.')
        .next()
        .unwrap()
        .parse()
        .expect("altitude is a decimal number");
    let (_, low, high) = LOAD_ORDER_GROUPS
        .iter()
        .find(|(name, _, _)| *name == group)
        .unwrap_or_else(|| panic!("unknown load order group {group}"));
    assert!(
        (*low..=*high).contains(&numeric),
        "altitude {ALTITUDE} outside {group} ({low}-{high})"
    );
}

#[test]
fn port_name_if_present_matches_protocol() {
    let inf = load();
    if let Some(port) = inf.strings().get("portname") {
        assert_eq!(port, PORT_NAME);
    }
    // The name the driver creates is the protocol constant itself (driver/src/port.rs
    // widens PORT_NAME at compile time); it must be a root-directory object name.
    assert!(PORT_NAME.starts_with('\\') && PORT_NAME.is_ascii());
}

#[test]
fn driver_version_matches_the_workspace_version() {
    let inf = load();
    let driver_ver = inf.values("Version", "DriverVer").unwrap().unwrap();
    assert_eq!(
        driver_ver.get(1).map(String::as_str),
        Some(format!("{}.0", env!("CARGO_PKG_VERSION")).as_str()),
        "DriverVer = date,major.minor.patch.0"
    );
}

use std::path::PathBuf;

use super::*;

/// What `nvidia-ctk cdi generate` writes (trimmed), with /dev/null and
/// /dev/zero standing in for the GPU nodes so that the host files exist.
const NVIDIA_CTK_STYLE: &str = r#"---
cdiVersion: 0.5.0
kind: nvidia.com/gpu
devices:
- name: "0"
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
      hostPath: /dev/null
- name: "1"
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia1
      hostPath: /dev/zero
- name: all
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
      hostPath: /dev/null
    - path: /dev/nvidia1
      hostPath: /dev/zero
containerEdits:
  env:
  - NVIDIA_VISIBLE_DEVICES=void
  deviceNodes:
  - path: /dev/nvidiactl
    hostPath: /dev/full
  hooks:
  - hookName: createContainer
    path: /usr/bin/nvidia-ctk
    args: [nvidia-ctk, hook, update-ldcache, --folder, /usr/lib/x86_64-linux-gnu]
    env: [NVIDIA_CTK_DEBUG=false]
  mounts:
  - hostPath: /usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15
    containerPath: /usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15
    options: [ro, nosuid, nodev, bind]
"#;

fn write(dir: &std::path::Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn a_spec_as_nvidia_ctk_writes_it_resolves_into_nodes_mounts_env_and_hooks() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "nvidia.yaml", NVIDIA_CTK_STYLE);
    let registry = Registry::load(&[tmp.path().to_path_buf()]);
    assert!(registry.problems.is_empty(), "{:?}", registry.problems);
    let names: Vec<String> = registry.of_kind("nvidia.com/gpu").iter().map(|d| d.name.clone()).collect();
    assert_eq!(names, ["0", "1", "all"]);

    let edits = registry.edits(&["nvidia.com/gpu=0".into(), "nvidia.com/gpu=1".into()]).unwrap();
    let nodes: Vec<(&str, &str, char, i64, i64)> =
        edits.nodes.iter().map(|n| (n.path.as_str(), n.host_path.as_str(), n.kind, n.major, n.minor)).collect();
    // The spec-wide control node once, however many of the spec's devices.
    assert_eq!(
        nodes,
        [
            ("/dev/nvidiactl", "/dev/full", 'c', 1, 7),
            ("/dev/nvidia0", "/dev/null", 'c', 1, 3),
            ("/dev/nvidia1", "/dev/zero", 'c', 1, 5)
        ]
    );
    assert_eq!(edits.env, ["NVIDIA_VISIBLE_DEVICES=void"]);
    assert_eq!(edits.hooks.len(), 1);
    assert_eq!(edits.hooks[0].hook_name, "createContainer");
    assert_eq!(edits.mounts.len(), 1);
    assert!(edits.nodes.iter().all(|n| n.permissions == "rwm"));
}

#[test]
fn json_specs_are_read_too() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "fpga.json",
        r#"{"cdiVersion":"0.6.0","kind":"example.com/fpga","devices":[{"name":"a","containerEdits":{"deviceNodes":[{"path":"/dev/fpga-a","hostPath":"/dev/null","type":"c","major":1,"minor":3,"permissions":"rw"}]}}]}"#,
    );
    let registry = Registry::load(&[tmp.path().to_path_buf()]);
    let edits = registry.edits(&["example.com/fpga=a".into()]).unwrap();
    assert_eq!(edits.nodes[0].permissions, "rw");
}

#[test]
fn a_later_directory_overrides_and_a_conflict_within_one_removes_both() {
    let tmp = tempfile::tempdir().unwrap();
    let (etc, run) = (tmp.path().join("etc"), tmp.path().join("run"));
    let spec = |host: &str| {
        format!("cdiVersion: 0.6.0\nkind: example.com/dev\ndevices:\n- name: x\n  containerEdits:\n    deviceNodes:\n    - path: /dev/x\n      hostPath: {host}\n")
    };
    write(&etc, "a.yaml", &spec("/dev/null"));
    write(&run, "b.yaml", &spec("/dev/zero"));
    let registry = Registry::load(&[etc.clone(), run.clone()]);
    assert_eq!(registry.edits(&["example.com/dev=x".into()]).unwrap().nodes[0].host_path, "/dev/zero");

    write(&etc, "c.yaml", &spec("/dev/full"));
    let registry = Registry::load(&[etc]);
    assert_eq!(registry.edits(&["example.com/dev=x".into()]), Err(CdiError::UnknownDevice("example.com/dev=x".into())));
    assert!(registry.problems.iter().any(|p| p.error.contains("neither is used")), "{:?}", registry.problems);
}

#[test]
fn broken_specs_are_reported_and_the_others_still_load() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "good.yaml", NVIDIA_CTK_STYLE);
    write(tmp.path(), "bad.yaml", "cdiVersion: [\n");
    write(tmp.path(), "ignored.txt", "not a spec");
    let registry = Registry::load(&[tmp.path().to_path_buf(), PathBuf::from("/nonexistent/cdi")]);
    assert_eq!(registry.problems.len(), 1);
    assert!(registry.problems[0].path.ends_with("bad.yaml"));
    assert_eq!(registry.of_kind("nvidia.com/gpu").len(), 3);
}

fn refused(yaml: &str) -> String {
    match Spec::parse(yaml.as_bytes(), false) {
        Err(CdiError::Invalid(m)) => m,
        other => panic!("accepted or wrong error: {other:?}"),
    }
}

#[test]
fn specs_breaking_the_cdi_rules_are_refused_saying_where() {
    let dev = "devices:\n- name: x\n  containerEdits:\n    env: [A=1]\n";
    assert!(refused(&format!("cdiVersion: 0.2.0\nkind: a.com/b\n{dev}")).contains("not supported"));
    assert!(refused(&format!("cdiVersion: two\nkind: a.com/b\n{dev}")).contains("not a version"));
    assert!(refused(&format!("cdiVersion: 0.6.0\nkind: nokind\n{dev}")).contains("vendor/class"));
    assert!(refused(&format!("cdiVersion: 0.6.0\nkind: a.com/-b\n{dev}")).contains("class"));
    assert!(refused("cdiVersion: 0.6.0\nkind: a.com/b\ndevices: []\n").contains("no devices"));
    assert!(refused("cdiVersion: 0.6.0\nkind: a.com/b\ndevices:\n- name: x\n").contains("edits nothing"));
    assert!(refused(&format!("cdiVersion: 0.6.0\nkind: a.com/b\n{dev}- name: x\n  containerEdits:\n    env: [B=2]\n"))
        .contains("named twice"));
    let edit = |e: &str| format!("cdiVersion: 0.6.0\nkind: a.com/b\ndevices:\n- name: x\n  containerEdits:\n{e}");
    assert!(refused(&edit("    env: [NOEQUALS]\n")).contains("devices[0].containerEdits.env[0]"));
    assert!(refused(&edit("    deviceNodes: [{path: dev/rel}]\n")).contains("absolute"));
    assert!(refused(&edit("    deviceNodes: [{path: /dev/../etc/shadow}]\n")).contains("absolute"));
    assert!(refused(&edit("    deviceNodes: [{path: /dev/x, type: q}]\n")).contains("type"));
    assert!(refused(&edit("    deviceNodes: [{path: /dev/x, permissions: rwx}]\n")).contains("rwm"));
    assert!(refused(&edit("    deviceNodes: [{path: /dev/x, major: 99999}]\n")).contains("out of range"));
    assert!(refused(&edit("    mounts: [{hostPath: lib, containerPath: /lib}]\n")).contains("mounts[0]"));
    assert!(refused(&edit("    hooks: [{hookName: whenever, path: /bin/true}]\n")).contains("not an OCI hook"));
    assert!(refused(&edit("    netDevices: [{hostInterfaceName: eth0, name: eth1}]\n")).contains("netDevices"));
    let huge = vec![b' '; MAX_SPEC_BYTES + 1];
    assert!(matches!(Spec::parse(&huge, false), Err(CdiError::Invalid(m)) if m.contains("at most")));
}

#[test]
fn a_node_that_is_not_the_device_the_spec_says_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("plain");
    std::fs::write(&file, b"").unwrap();
    let node = |host: &str, major: Option<i64>, kind: Option<&str>| ContainerEdits {
        device_nodes: vec![DeviceNode {
            path: "/dev/x".into(),
            host_path: Some(host.into()),
            kind: kind.map(Into::into),
            major,
            minor: None,
            file_mode: None,
            permissions: None,
            uid: None,
            gid: None,
        }],
        ..ContainerEdits::default()
    };
    let err = |e: ContainerEdits| match Edits::resolve(&e) {
        Err(CdiError::Node { why, .. }) => why,
        other => panic!("{other:?}"),
    };
    assert!(err(node(file.to_str().unwrap(), None, None)).contains("not a character or block device"));
    assert!(err(node("/nonexistent/dev", None, None)).contains("No such file"));
    assert!(err(node("/dev/null", Some(2), None)).contains("the spec says 2:3"));
    assert!(err(node("/dev/null", None, Some("b"))).contains("type b"));
    assert!(Edits::resolve(&node("/dev/null", Some(1), Some("c"))).is_ok());
}

#[test]
fn qualified_names_are_checked() {
    assert_eq!(parse_qualified("nvidia.com/gpu=0").unwrap(), ("nvidia.com/gpu", "0"));
    assert!(parse_qualified("nvidia.com/gpu").is_err());
    assert!(parse_qualified("gpu=0").is_err());
    assert!(parse_qualified("nvidia.com/gpu=../x").is_err());
}

#[test]
fn devices_sort_naturally() {
    let tmp = tempfile::tempdir().unwrap();
    let mut yaml = "cdiVersion: 0.6.0\nkind: a.com/g\ndevices:\n".to_string();
    for n in ["10", "2", "1", "gpu10", "gpu9"] {
        yaml += &format!("- name: \"{n}\"\n  containerEdits: {{env: [A=1]}}\n");
    }
    write(tmp.path(), "a.yaml", &yaml);
    let registry = Registry::load(&[tmp.path().to_path_buf()]);
    let names: Vec<&str> = registry.of_kind("a.com/g").iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["1", "2", "10", "gpu9", "gpu10"]);
}

#[test]
fn the_drivers_information_file_gives_model_uuid_bus_and_minor() {
    let text = "Model: \t\t NVIDIA H100 80GB HBM3\nIRQ:   \t\t 0\nGPU UUID: \t GPU-5fb2b9bf-1e3a-1d5c-b7b1-4f0e7d2c7a11\nVideo BIOS: \t 96.00.74.00.0d\nBus Type: \t PCIe\nDMA Size: \t 52 bits\nDMA Mask: \t 0xfffffffffffff\nBus Location: \t 0000:00:1e.0\nDevice Minor: \t 3\nGPU Excluded:\t No\n";
    let info = nvidia::parse_information(text).unwrap();
    assert_eq!(info.minor, 3);
    assert_eq!(info.model.as_deref(), Some("NVIDIA H100 80GB HBM3"));
    assert_eq!(info.bus.as_deref(), Some("0000:00:1e.0"));
    assert!(info.uuid.unwrap().starts_with("GPU-5fb2"));
    assert_eq!(nvidia::parse_information("Model: x\n"), None);

    let tmp = tempfile::tempdir().unwrap();
    let gpu = tmp.path().join("driver/nvidia/gpus/0000:00:1e.0");
    std::fs::create_dir_all(&gpu).unwrap();
    std::fs::write(gpu.join("information"), text).unwrap();
    assert_eq!(nvidia::driver_gpus(tmp.path())[&3].model.as_deref(), Some("NVIDIA H100 80GB HBM3"));
}

#[test]
fn nvidia_nodes_are_discovered_without_a_spec() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-caps"] {
        std::fs::write(tmp.path().join(name), b"").unwrap();
    }
    let found = nvidia::discover(tmp.path());
    let names: Vec<&str> = found.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["0", "1"]);
    assert_eq!(nvidia::gpu_minor(&found[1]), Some(1));
    let control: Vec<&str> = found[0].spec_edits.device_nodes.iter().map(|n| n.path.as_str()).collect();
    assert_eq!(control, ["/dev/nvidiactl", "/dev/nvidia-uvm"]);
    assert_eq!(found[0].kind, nvidia::GPU_KIND);
}

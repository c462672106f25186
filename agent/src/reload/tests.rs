use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn setup(name: &str, text: &str) -> (Dir, PathBuf, Reloader) {
    let dir = std::env::temp_dir().join(format!("agent-reload-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("agent.yaml");
    std::fs::write(&file, text).unwrap();
    let args = RunArgs {
        config: Some(file.clone()),
        ..Default::default()
    };
    let cfg = Config::resolve(&args, no_env).unwrap();
    (Dir(dir), file, Reloader::new(args, cfg))
}

const RULE: &str = "selection:\n  rules:\n    - {namespaces: [shop], protocols: [none]}\n";

#[test]
fn a_valid_change_applies_live_sections_and_names_the_others() {
    let (_d, file, mut r) = setup("valid", "capture: {bytes_per_syscall: 100}\n");
    assert!(matches!(r.check(false, no_env), Outcome::Unchanged));
    std::fs::write(
        &file,
        format!("capture: {{bytes_per_syscall: 200}}\n{RULE}"),
    )
    .unwrap();
    match r.check(false, no_env) {
        Outcome::Applied { live, ignored } => {
            assert_eq!(live, ["selection"]);
            assert_eq!(ignored, ["capture"]);
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(r.current().selection.rules.len(), 1);
    assert_eq!(
        r.current().capture.bytes_per_syscall,
        100,
        "restart-only fields keep their start-up value"
    );
    assert!(matches!(r.check(false, no_env), Outcome::Unchanged));
    // SIGHUP re-reads even when nothing changed.
    assert!(matches!(r.check(true, no_env), Outcome::Applied { .. }));
}

#[test]
fn an_invalid_change_is_refused_naming_the_field_and_the_old_config_stays() {
    let (_d, file, mut r) = setup("invalid", RULE);
    std::fs::write(
        &file,
        "selection:\n  rules:\n    - {namespaces: [shop], protocols: [htttp]}\n",
    )
    .unwrap();
    match r.check(false, no_env) {
        Outcome::Refused(e) => {
            let m = e.to_string();
            assert!(
                m.contains("selection.rules[0].protocols[0]") && m.contains("htttp"),
                "{m}"
            );
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(r.current().selection.rules[0].protocols, ["none"]);
    assert!(
        matches!(r.check(false, no_env), Outcome::Unchanged),
        "refused once, not every second"
    );
    std::fs::write(&file, "selection: [not, a, map]\n").unwrap();
    assert!(matches!(r.check(false, no_env), Outcome::Refused(_)));
    // A missing file is refused too (once), and the next good content applies.
    std::fs::remove_file(&file).unwrap();
    assert!(matches!(r.check(false, no_env), Outcome::Refused(_)));
    assert!(matches!(r.check(false, no_env), Outcome::Unchanged));
    std::fs::write(&file, "").unwrap();
    assert!(matches!(r.check(false, no_env), Outcome::Applied { .. }));
    assert!(r.current().selection.rules.is_empty());
}

/// A ConfigMap volume: `agent.yaml -> ..data/agent.yaml`, `..data -> ..<timestamp>`; an update
/// writes a new timestamped directory and swaps `..data` atomically.
#[test]
fn a_configmap_symlink_swap_is_seen() {
    let (d, _file, _) = setup("cm", "");
    let root = &d.0;
    let v1 = root.join("..2026_12_03_14_00_00.1");
    std::fs::create_dir_all(&v1).unwrap();
    std::fs::write(v1.join("agent.yaml"), "").unwrap();
    std::os::unix::fs::symlink("..2026_12_03_14_00_00.1", root.join("..data")).unwrap();
    let link = root.join("cm.yaml");
    std::os::unix::fs::symlink("..data/agent.yaml", &link).unwrap();
    let args = RunArgs {
        config: Some(link),
        ..Default::default()
    };
    let mut r = Reloader::new(args.clone(), Config::resolve(&args, no_env).unwrap());
    let v2 = root.join("..2026_12_03_14_01_00.2");
    std::fs::create_dir_all(&v2).unwrap();
    std::fs::write(v2.join("agent.yaml"), RULE).unwrap();
    std::os::unix::fs::symlink("..2026_12_03_14_01_00.2", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    assert!(
        matches!(r.check(false, no_env), Outcome::Applied { ref live, .. } if live == &["selection"])
    );
}

#[test]
fn changed_sections_compares_every_section() {
    let a = Config::default();
    let mut b = Config::default();
    assert!(changed_sections(&a, &b).is_empty());
    b.export.batch_size = 1;
    b.kubernetes.cluster_name = Some("c".into());
    assert_eq!(changed_sections(&a, &b), ["export", "kubernetes"]);
}

//! Each shape is a path a runtime or the kubelet really creates; the comment names where it was
//! seen. Ids that were published are kept; where a source gives only the pattern, the ids are
//! random.

use super::*;
use ContainerRuntime::*;
use QosClass::*;

fn parse_str(s: &str) -> Option<ContainerRef> {
    parse(s.as_bytes())
}

#[track_caller]
fn expect(
    file: &str,
    id: &str,
    runtime: Option<ContainerRuntime>,
    pod: Option<(&str, Option<QosClass>)>,
) {
    let want = ContainerRef {
        id: id.to_owned(),
        runtime,
        pod: pod.map(|(uid, qos)| PodRef {
            uid: uid.to_owned(),
            qos,
        }),
    };
    assert_eq!(parse_str(file), Some(want), "{file}");
}

/// A v1 file with every controller line on `path` (cgroup v1 hosts, and Docker on them).
fn v1_all(path: &str) -> String {
    [
        "12:rdma:/",
        "11:pids:",
        "10:blkio:",
        "9:memory:",
        "8:perf_event:",
        "7:cpuset:",
        "6:hugetlb:",
        "5:devices:",
        "4:freezer:",
        "3:cpu,cpuacct:",
        "2:net_cls,net_prio:",
        "1:name=systemd:",
    ]
    .iter()
    .map(|l| {
        if l.ends_with(':') {
            format!("{l}{path}\n")
        } else {
            format!("{l}\n")
        }
    })
    .collect()
}

const ID_A: &str = "511530b450fe148ccc6c1bb3b25d444d182ff1b474e552dedce7df32a6d4a9ab";
const ID_B: &str = "aba99b130abc22743df9aa5ca3b5dac703be332fee3909f275d830800faf6b44";
const UID_A: &str = "7652e3a3-8cea-495e-ae10-9a2ff003d6ca";
const UID_A_: &str = "7652e3a3_8cea_495e_ae10_9a2ff003d6ca";

#[test]
fn kubelet_systemd_driver_containerd() {
    // kubernetes/kubernetes#106514 (the shape kubelet's cAdvisor handles, systemd driver).
    let path = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod2fc932ce_fdcc_454b_97bd_aadfdeb4c340.slice/cri-containerd-aaefb9d8feed2d453b543f6d928cede7a4dbefa6a0ae7c9b990dd234c56e93b9.scope";
    let id = "aaefb9d8feed2d453b543f6d928cede7a4dbefa6a0ae7c9b990dd234c56e93b9";
    let pod = Some(("2fc932ce-fdcc-454b-97bd-aadfdeb4c340", Some(Burstable)));
    // cgroup v2 only, and cgroup v1 with the path on every controller.
    expect(&format!("0::{path}\n"), id, Some(Containerd), pod);
    expect(&v1_all(path), id, Some(Containerd), pod);
    // Hybrid as on this machine (FACTS.md): v1 lines at `/`, the path on the v2 line.
    expect(
        &format!("{}0::{path}\n", v1_all("/")),
        id,
        Some(Containerd),
        pod,
    );
}

#[test]
fn qos_classes_with_the_systemd_driver() {
    // Guaranteed pods have no QoS slice: kubepods.slice/kubepods-pod<uid>.slice (kubelet's
    // pod_container_manager; FACTS.md). BestEffort: pharos-cluster#440 (below, with Docker).
    let guaranteed =
        format!("0::/kubepods.slice/kubepods-pod{UID_A_}.slice/cri-containerd-{ID_A}.scope\n");
    expect(
        &guaranteed,
        ID_A,
        Some(Containerd),
        Some((UID_A, Some(Guaranteed))),
    );
    let besteffort = format!(
        "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_A_}.slice/cri-containerd-{ID_A}.scope\n"
    );
    expect(
        &besteffort,
        ID_A,
        Some(Containerd),
        Some((UID_A, Some(BestEffort))),
    );
}

#[test]
fn kubelet_systemd_driver_docker() {
    // pharos-cluster#440 (systemd-cgls of a CentOS node, dockershim).
    let path = "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod9692aa0e_748e_11e8_8dfa_76d458035df6.slice/docker-abddff03dfd7710c79a750ce3e730365cbb2c8247a974170c1062683bc3e9152.scope";
    expect(
        &v1_all(path),
        "abddff03dfd7710c79a750ce3e730365cbb2c8247a974170c1062683bc3e9152",
        Some(Docker),
        Some(("9692aa0e-748e-11e8-8dfa-76d458035df6", Some(BestEffort))),
    );
}

#[test]
fn cri_o_systemd_and_cgroupfs_and_its_conmon() {
    // cri-o internal/config/cgmgr: systemd `<pod slice>/crio-<id>.scope`, conmon in
    // `crio-conmon-<id>.scope`; cgroupfs `<parent>/crio-<id>` and `<parent>/crio-conmon-<id>`;
    // with crun the container's processes are in a `container` child of the scope.
    let slice =
        format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_A_}.slice");
    let pod = Some((UID_A, Some(Burstable)));
    expect(
        &format!("0::{slice}/crio-{ID_A}.scope\n"),
        ID_A,
        Some(CriO),
        pod,
    );
    expect(
        &format!("0::{slice}/crio-{ID_A}.scope/container\n"),
        ID_A,
        Some(CriO),
        pod,
    );
    assert_eq!(
        parse_str(&format!("0::{slice}/crio-conmon-{ID_A}.scope\n")),
        None
    );
    let fs = format!("/kubepods/burstable/pod{UID_A}");
    expect(&v1_all(&format!("{fs}/crio-{ID_A}")), ID_A, Some(CriO), pod);
    assert_eq!(
        parse_str(&v1_all(&format!("{fs}/crio-conmon-{ID_A}"))),
        None
    );
}

#[test]
fn kubelet_cgroupfs_driver() {
    // Guaranteed (no QoS level): fl64/k8s-pod-cgroups README, containerd, cgroup v1.
    expect(
        &v1_all("/kubepods/pod8c52fb9d-0a0c-4e4b-bea2-8da0ed0870c5/2cf7b0992492cfc7b4c473e2d022758ee09be9dd3761b3ee2d87598eec9a045a"),
        "2cf7b0992492cfc7b4c473e2d022758ee09be9dd3761b3ee2d87598eec9a045a",
        None,
        Some(("8c52fb9d-0a0c-4e4b-bea2-8da0ed0870c5", Some(Guaranteed))),
    );
    // BestEffort: moby/moby#34584 (a single controller line).
    expect(
        "2:cpu:/kubepods/besteffort/pod9a18ffb8-8513-11e7-b26e-7e29fbe2a5a3/d28e0087cf8f3f0429f755d60b0de415b20fcf76736ded7bab6e30e7b739ee36\n",
        "d28e0087cf8f3f0429f755d60b0de415b20fcf76736ded7bab6e30e7b739ee36",
        None,
        Some(("9a18ffb8-8513-11e7-b26e-7e29fbe2a5a3", Some(BestEffort))),
    );
    // Burstable on cgroup v2: kubernetes#109105 (`/kubepods/burstable/pod<uid>/<name>`).
    expect(
        &format!("0::/kubepods/burstable/pod{UID_A}/{ID_A}\n"),
        ID_A,
        None,
        Some((UID_A, Some(Burstable))),
    );
    // kind on cgroup v1 runs kubelet with --cgroup-root=/kubelet.
    expect(
        &v1_all(&format!("/kubelet/kubepods/besteffort/pod{UID_A}/{ID_A}")),
        ID_A,
        None,
        Some((UID_A, Some(BestEffort))),
    );
}

#[test]
fn systemd_form_written_literally_with_colons() {
    // containerd with SystemdCgroup=false under a systemd-driver kubelet writes runc's
    // `slice:prefix:id` as one directory name. Static pod (32-hex uid): kubernetes#106514.
    expect(
        "1:name=systemd:/system.slice/containerd.service/kubepods-burstable-pod36b6d6be73b1065af369b3985edafa09.slice:cri-containerd:79fedb3bd23ca77c9d9ccb41909038316f713df22b54b7d942b71d3812e7c74e\n",
        "79fedb3bd23ca77c9d9ccb41909038316f713df22b54b7d942b71d3812e7c74e",
        Some(Containerd),
        Some(("36b6d6be73b1065af369b3985edafa09", Some(Burstable))),
    );
    // containerd#5226 (Debian 10, containerd 1.4.4, cgroup v1 memory controller).
    expect(
        "8:memory:/system.slice/containerd.service/kubepods-burstable-pod7a875b5c_4d3c_4345_ac0f_5c847d8d7129.slice:cri-containerd:ee05f876e981d258209f91f25f139f7abc13a0246a5f343298572602fea8c7bb\n",
        "ee05f876e981d258209f91f25f139f7abc13a0246a5f343298572602fea8c7bb",
        Some(Containerd),
        Some(("7a875b5c-4d3c-4345-ac0f-5c847d8d7129", Some(Burstable))),
    );
    // k3s with runwasi: containerd/runwasi#821.
    expect(
        "0::/kubepods-besteffort-podb7c2cbdb_9ab5_47ef_977e_97e39a73da6d.slice:cri-containerd:66dda1e97c4fc48204b066f07fc1e28bab94a571820484e01576982d4cb9d32b\n",
        "66dda1e97c4fc48204b066f07fc1e28bab94a571820484e01576982d4cb9d32b",
        Some(Containerd),
        Some(("b7c2cbdb-9ab5-47ef-977e-97e39a73da6d", Some(BestEffort))),
    );
}

#[test]
fn kind_nodes_nested_in_docker() {
    // Inside a kind node (containerd/nri#227): kubelet's cgroup root is kubelet.slice.
    let inner = "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod1e597579_417e_482f_bf65_5fe170c3aebd.slice/cri-containerd-a09bc17f5aa29b0dbdec9ede5f46cf1396d2405917ab02e6f1eb1019f388396e.scope";
    let id = "a09bc17f5aa29b0dbdec9ede5f46cf1396d2405917ab02e6f1eb1019f388396e";
    let pod = Some(("1e597579-417e-482f-bf65-5fe170c3aebd", Some(BestEffort)));
    expect(&format!("0::{inner}\n"), id, Some(Containerd), pod);
    // Seen from the host, the node is itself a Docker container (its scope, then the node's
    // own tree): the innermost container is the pod's.
    let host = format!("0::/system.slice/docker-{ID_B}.scope{inner}\n");
    expect(&host, id, Some(Containerd), pod);
    // The node's own processes (kubelet) are in the node container only.
    expect(
        &format!("0::/system.slice/docker-{ID_B}.scope/kubelet.slice/kubelet.service\n"),
        ID_B,
        Some(Docker),
        None,
    );
    // Docker in Docker inside a pod: the inner container is not that pod's container.
    expect(
        &format!("0::/kubepods/burstable/pod{UID_A}/{ID_A}/docker/{ID_B}\n"),
        ID_B,
        Some(Docker),
        None,
    );
}

#[test]
fn docker_without_kubernetes() {
    // cgroupfs driver, every line including v2: htop-dev/htop#1036.
    let path = "/docker/ff90ed5efd657539ce42198e0d61661d62f2a5d8de9439e2aeb046fb1ef4e0af";
    let id = "ff90ed5efd657539ce42198e0d61661d62f2a5d8de9439e2aeb046fb1ef4e0af";
    expect(
        &format!("{}0::{path}\n", v1_all(path)),
        id,
        Some(Docker),
        None,
    );
    // Reverse hybrid: the v1 lines name the container, the v2 line does not
    // (ctrsploit/ctrsploit#280).
    let id = "2403ccfe427f1dc7b6120dccb9ac58c2f8456950380d587a9f33ea7f00dd303d";
    let file = format!(
        "{}0::/system.slice/containerd.service\n",
        v1_all(&format!("/docker/{id}"))
    );
    expect(&file, id, Some(Docker), None);
    // systemd driver: neuvector share/system/cgroup_test.go (CentOS).
    let id = "9ec39b91f3d70e1beff50a308f77067065ea6be0d91a3378375056cd4422cf3d";
    expect(
        &v1_all(&format!("/system.slice/docker-{id}.scope")),
        id,
        Some(Docker),
        None,
    );
    // A bare id at the root (neuvector, Debian): a container, runtime unknown.
    let id = "4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970";
    expect(
        &format!("10:net_prio:/{id}\n4:memory:/{id}\n"),
        id,
        None,
        None,
    );
}

#[test]
fn podman_and_its_conmon() {
    // `podman inspect` CgroupPath; crun's `container` child below the scope.
    let id = "55ea3863351726184e26ca7418f577d04c96dac0009e1f088f6c0c7a1dc2ed7c";
    expect(
        &format!("0::/machine.slice/libpod-{id}.scope\n"),
        id,
        Some(Podman),
        None,
    );
    expect(
        &format!("0::/machine.slice/libpod-{id}.scope/container\n"),
        id,
        Some(Podman),
        None,
    );
    assert_eq!(
        parse_str(&format!("0::/machine.slice/libpod-conmon-{id}.scope\n")),
        None
    );
}

#[test]
fn across_cgroup_namespaces() {
    // A reader in another cgroup namespace sees `/..` for the part above its own root
    // (cgroup_namespaces(7)): a DaemonSet agent without the host's cgroup namespace.
    expect(
        &format!("0::/../../kubepods-besteffort-pod{UID_A_}.slice/cri-containerd-{ID_A}.scope\n"),
        ID_A,
        Some(Containerd),
        Some((UID_A, Some(BestEffort))),
    );
    // cgroupfs: the QoS level above the pod may be hidden behind `..`.
    expect(
        &format!("0::/../../pod{UID_A}/{ID_A}\n"),
        ID_A,
        None,
        Some((UID_A, None)),
    );
    // A process in the reader's own cgroup root shows `/`.
    assert_eq!(parse_str("0::/\n"), None);
}

#[test]
fn not_containers() {
    for file in [
        // This machine's sandbox (a 32-hex name, not a container id).
        "9:name=systemd:/\n4:memory:/process_api/bc6c91bade67900c409ef10382036316\n0::/\n",
        "0::/init.scope\n",
        "0::/system.slice/containerd.service\n",
        "0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome-firefox-1234.scope\n",
        // A pod slice with no container segment.
        "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7652e3a3_8cea_495e_ae10_9a2ff003d6ca.slice\n",
        // Short ids (Docker's 12-hex short form is for display, never a cgroup name).
        "0::/docker/ff90ed5efd65\n",
        "0::/system.slice/docker-ff90ed5efd65.scope\n",
    ] {
        assert_eq!(parse_str(file), None, "{file}");
    }
}

#[test]
fn pods_need_a_kubepods_context_and_a_uid() {
    // A `pod<uuid>` directory outside kubepods is somebody else's naming.
    expect(&format!("0::/srv/pod{UID_A}/{ID_A}\n"), ID_A, None, None);
    expect(
        &format!("0::/system.slice/app-pod{UID_A_}.slice/docker-{ID_A}.scope\n"),
        ID_A,
        Some(Docker),
        None,
    );
    for bad_uid in [
        "7652e3a3_8cea_495e_ae10_9a2ff003d6c",   // short
        "7652e3a3_8cea_495e_ae10_9a2ff003d6cax", // long
        "7652E3A3_8CEA_495E_AE10_9A2FF003D6CA",  // not as Kubernetes writes it
        "7652e3a38cea_495e_ae10_9a2ff003d6ca__",
        "",
    ] {
        let file = format!("0::/kubepods.slice/kubepods-pod{bad_uid}.slice/crio-{ID_A}.scope\n");
        expect(&file, ID_A, Some(CriO), None);
    }
}

#[test]
fn container_ids_are_exactly_64_lowercase_hex() {
    let long = format!("{ID_A}0");
    let short = &ID_A[..63];
    let upper = ID_A.to_uppercase();
    let nonhex = format!("{}g", &ID_A[..63]);
    for bad in [long.as_str(), short, &upper, &nonhex] {
        for file in [
            format!("0::/system.slice/docker-{bad}.scope\n"),
            format!("0::/docker/{bad}\n"),
            format!("0::/kubepods/pod{UID_A}/{bad}\n"),
            format!("0::/kubepods-pod{UID_A_}.slice:cri-containerd:{bad}\n"),
        ] {
            assert_eq!(parse_str(&file), None, "{file}");
        }
    }
    // An unknown prefix is not a runtime we name (nerdctl, LXC, ...): the id alone counts
    // only when it is the whole segment.
    assert_eq!(
        parse_str(&format!("0::/system.slice/nerdctl-{ID_A}.scope\n")),
        None
    );
}

#[test]
fn colons_inside_paths() {
    // Only the first two `:` separate fields.
    expect(
        &format!("3:cpu,cpuacct:/odd:name/docker-{ID_A}.scope\n"),
        ID_A,
        Some(Docker),
        None,
    );
    // A colon form whose prefix names no runtime is no container.
    assert_eq!(
        parse_str(&format!("0::/kubepods-pod{UID_A_}.slice:lxc:{ID_A}\n")),
        None
    );
    // Too few parts: a plain segment.
    assert_eq!(parse_str(&format!("0::/a:{ID_A}\n")), None);
}

#[test]
fn a_dead_cgroup_of_a_zombie_is_still_its_container() {
    expect(
        &format!("0::/system.slice/docker-{ID_A}.scope (deleted)\n"),
        ID_A,
        Some(Docker),
        None,
    );
}

#[test]
fn malformed_and_hostile_input() {
    for file in [
        "",
        "\n\n",
        "garbage",
        "0:",
        "0::",
        "::/docker/x",
        "x::/docker/511530b450fe148ccc6c1bb3b25d444d182ff1b474e552dedce7df32a6d4a9ab\n",
        // Not absolute.
        "0::docker/511530b450fe148ccc6c1bb3b25d444d182ff1b474e552dedce7df32a6d4a9ab\n",
        "-1::/docker/511530b450fe148ccc6c1bb3b25d444d182ff1b474e552dedce7df32a6d4a9ab\n",
        "99999999999999999999::/docker/511530b450fe148ccc6c1bb3b25d444d182ff1b474e552dedce7df32a6d4a9ab\n",
    ] {
        assert_eq!(parse_str(file), None, "{file:?}");
    }
    // A cgroup name with a newline forging a second v2 line: the file is rejected whole.
    let forged = format!("0::/user.slice/x\n0::/kubepods.slice/kubepods-pod{UID_A_}.slice/cri-containerd-{ID_A}.scope\n");
    assert_eq!(parse_str(&forged), None);
    let forged_v1 = format!("4:memory:/\n4:memory:/docker/{ID_A}\n");
    assert_eq!(parse_str(&forged_v1), None);
    // Invalid UTF-8 around a valid line does not hide it.
    let mut bytes = b"5:devices:/\xff\xfe\n".to_vec();
    bytes.extend_from_slice(format!("0::/docker/{ID_A}\n").as_bytes());
    assert_eq!(parse(&bytes).map(|c| c.id), Some(ID_A.to_owned()));
    // Deep, long and many segments: bounded, no panic.
    let deep = format!("0::{}/docker/{ID_A}\n", "/a".repeat(2000));
    assert_eq!(parse_str(&deep).map(|c| c.id), Some(ID_A.to_owned()));
    let huge = "/".repeat(1 << 20);
    assert_eq!(parse_str(&huge), None);
    let many_lines: String = (1..5000).map(|i| format!("{i}:c{i}:/\n")).collect();
    assert_eq!(parse_str(&many_lines), None);
}

#[test]
fn reads_are_bounded_and_a_cut_line_is_dropped() {
    // Past the bound: not seen.
    let filler: String = (1..=200)
        .map(|i| format!("{i}:c{i}:/{}\n", "x".repeat(60)))
        .collect();
    assert!(filler.len() > MAX_CGROUP_FILE);
    let late = format!("{filler}0::/docker/{ID_A}\n");
    assert_eq!(parse_str(&late), None);
    // A line cut by the bound right after an id is not used: read whole, that line names
    // a deeper container.
    let head: String = (1..=100).map(|i| format!("{i}:c{i}:/\n")).collect();
    let prefix = format!("0::/docker/{ID_B}/");
    let pad = MAX_CGROUP_FILE - head.len() - prefix.len() - 64 - 1;
    let head = format!("{head}900:pad:/{}\n", "p".repeat(pad - "900:pad:/".len()));
    let line = format!("{prefix}{ID_A}/docker/{ID_B}\n");
    let file = format!("{head}{line}");
    assert_eq!(&file[MAX_CGROUP_FILE - 64..MAX_CGROUP_FILE], ID_A);
    assert_eq!(parse_str(&file), None);
    assert_eq!(
        parse_str(&format!("{head}{prefix}{ID_A}\n")).map(|c| c.id),
        Some(ID_A.to_owned()),
        "a file that fits is read whole"
    );
}

#[test]
fn every_prefix_is_either_nothing_or_the_right_answer() {
    let path = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod2fc932ce_fdcc_454b_97bd_aadfdeb4c340.slice/cri-containerd-aaefb9d8feed2d453b543f6d928cede7a4dbefa6a0ae7c9b990dd234c56e93b9.scope";
    let file = format!("{}0::{path}\n", v1_all("/"));
    let full = parse_str(&file).expect("whole file");
    for end in 0..file.len() {
        if let Some(c) = parse(&file.as_bytes()[..end]) {
            // A prefix can end inside the pod segment (no pod yet) but never yields another id.
            assert_eq!(c.id, full.id, "prefix {end}");
            assert_eq!(c.runtime, full.runtime, "prefix {end}");
            assert!(c.pod.is_none() || c.pod == full.pod, "prefix {end}");
        }
    }
}

#[test]
fn read_from_a_proc_tree() {
    use super::super::fake_proc::FakeProc;
    use super::super::process::read_process;
    let fake = FakeProc::new();
    fake.add(1, Some("/usr/bin/app"), &["app"], &[]);
    fake.set_cgroup(
        1,
        &format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_A_}.slice/cri-containerd-{ID_A}.scope\n"
        ),
    );
    let info = read_process(fake.root(), 1).unwrap();
    let c = info.container.expect("container");
    assert_eq!(
        (c.id.as_str(), c.runtime, c.pod.map(|p| (p.uid, p.qos))),
        (
            ID_A,
            Some(Containerd),
            Some((UID_A.to_owned(), Some(Burstable)))
        )
    );
    // No cgroup file (FakeProc writes none by default), or an unreadable one: no container,
    // and the rest of the process is still read.
    fake.add(2, Some("/usr/bin/app"), &["app"], &[]);
    let info = read_process(fake.root(), 2).unwrap();
    assert_eq!((info.container, info.exe_name.as_str()), (None, "app"));
    assert_eq!(read(&fake.root().join("3")), None);
}

#[test]
fn container_attributes_reach_the_resource() {
    use super::super::fake_proc::FakeProc;
    use super::super::ResourceCache;
    use crate::span::model::AttrValue;
    let fake = FakeProc::new();
    fake.add(1, Some("/usr/bin/app"), &["app"], &[]);
    fake.set_cgroup(
        1,
        &format!("0::/kubepods/besteffort/pod{UID_A}/crio-{ID_A}\n"),
    );
    fake.add(2, Some("/usr/bin/app"), &["app"], &[]);
    fake.set_cgroup(2, &format!("0::/docker/{ID_B}\n"));
    fake.add(3, Some("/usr/bin/app"), &["app"], &[]);
    fake.set_cgroup(3, "0::/user.slice\n");
    fake.add(4, Some("/usr/bin/app"), &["app"], &[]);
    fake.set_cgroup(4, &format!("0::/kubepods/pod{UID_A}/{ID_A}\n"));
    let mut cache = ResourceCache::with_proc_root("h".into(), 8, fake.root().to_owned());
    let s = |v: &str| Some(AttrValue::Str(v.to_owned()));
    let r = cache.get(1);
    assert_eq!(r.get("container.id"), s(ID_A).as_ref());
    assert_eq!(r.get("container.runtime.name"), s("cri-o").as_ref());
    assert_eq!(r.get("k8s.pod.uid"), s(UID_A).as_ref());
    let r = cache.get(2);
    assert_eq!(r.get("container.id"), s(ID_B).as_ref());
    assert_eq!(r.get("container.runtime.name"), s("docker").as_ref());
    assert_eq!(r.get("k8s.pod.uid"), None);
    let r = cache.get(3);
    for key in ["container.id", "container.runtime.name", "k8s.pod.uid"] {
        assert_eq!(r.get(key), None, "{key}");
    }
    // Runtime unknown: no attribute rather than a guess.
    let r = cache.get(4);
    assert_eq!(r.get("container.id"), s(ID_A).as_ref());
    assert_eq!(r.get("container.runtime.name"), None);
    assert_eq!(r.get("k8s.pod.uid"), s(UID_A).as_ref());
    // The deprecated `container.runtime` key is not used.
    assert_eq!(r.get("container.runtime"), None);
}

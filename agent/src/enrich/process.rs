//! Who a process is: its executable and its `service.name`, read from procfs.
//!
//! Reads `{proc_root}/{pid}/exe`, `comm`, `cmdline`, `environ` and `cgroup`, each with a size
//! bound, and decides the service name; which container the process is in is parsed by
//! [`super::cgroup`]. It does not cache (see [`super::ResourceCache`]) and does not
//! build the OpenTelemetry resource (see [`super::build_resource`]).
//!
//! `service.name`, first rule that gives a non-empty name:
//! 1. `OTEL_SERVICE_NAME` in the process's environment;
//! 2. `service.name` in its `OTEL_RESOURCE_ATTRIBUTES` (comma-separated `key=value`, values
//!    percent-decoded; a malformed variable is ignored whole, as the OpenTelemetry SDK
//!    specification asks of SDKs);
//! 3. for an interpreter or runtime (Python, Node, Deno, Bun, Ruby, Perl, PHP, Java, .NET,
//!    shells), what it runs: the file stem of the first non-option argument
//!    (`python3 -u /srv/app/service_a.py` → `service_a`), the module of `python -m`
//!    (`http.server`), the stem of `java -jar x.jar`, a Java main class, the stem of a .NET
//!    `dll`; nothing for code given inline (`-c`, `-e`) or on stdin. The derived name must look
//!    like a name (letters, digits, `._-`, not an id or token) or it is not used;
//! 4. the executable's file name (`nginx`, `curl`).
//!
//! These are the names the application would report itself if it had an OpenTelemetry SDK
//! (rules 1-2), or the name a person would use for it (3-4).
//!
//! Secrets: environment variables other than the two `OTEL_*` ones are never kept, and no
//! command-line argument reaches [`ProcessInfo`] — only a script stem or module name derived
//! from one, and only if it looks like a name. Reading another user's `environ` needs
//! `CAP_SYS_PTRACE` (root); without it rules 1-2 silently do not apply.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use thiserror::Error;

use super::cgroup::{self, ContainerRef};
use super::service_name;

/// Bound on what we read of `/proc/{pid}/cmdline`.
pub const MAX_CMDLINE: usize = 4 * 1024;
/// Bound on what we read of `/proc/{pid}/environ`; variables past it are not seen.
pub const MAX_ENVIRON: usize = 64 * 1024;
/// Bound on names and attribute values we keep (bytes; cut on a char boundary).
pub const MAX_VALUE_LEN: usize = 255;
/// Bound on the executable path we keep (Linux `PATH_MAX`).
pub const MAX_EXE_PATH: usize = 4096;

/// Keys copied from the target's `OTEL_RESOURCE_ATTRIBUTES` besides `service.name`. Only these,
/// because [`Attribute`](crate::span::model::Attribute) keys are `&'static str`; copying
/// arbitrary keys needs a model change (owned or `Cow` keys).
pub const COPIED_RESOURCE_KEYS: &[&str] = &[
    "service.namespace",
    "service.version",
    "service.instance.id",
    "deployment.environment.name",
    "deployment.environment",
];

/// Where [`ProcessInfo::service_name`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceNameSource {
    /// `OTEL_SERVICE_NAME` in the process environment.
    OtelServiceName,
    /// `service.name=` in `OTEL_RESOURCE_ATTRIBUTES`.
    OtelResourceAttributes,
    /// The script, module or class an interpreter runs.
    Script,
    /// The executable's file name.
    Executable,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    /// File name of the executable (`python3.11`), or the kernel's `comm` if `exe` is unreadable.
    pub exe_name: String,
    /// Target of `/proc/{pid}/exe`, without the kernel's ` (deleted)` suffix; `None` when it
    /// cannot be read (another user's process without privileges, kernel threads, zombies).
    pub exe_path: Option<String>,
    pub service_name: String,
    pub service_name_source: ServiceNameSource,
    /// Attributes from [`COPIED_RESOURCE_KEYS`] found in the target's `OTEL_RESOURCE_ATTRIBUTES`.
    pub resource_attributes: Vec<(&'static str, String)>,
    /// The executable is a Go program: its requests run on goroutines that move between OS
    /// threads, so a thread says nothing about which request caused a call (see
    /// `span::builder`).
    pub go: bool,
    /// An OpenTelemetry SDK in the process exports traces: `OTEL_TRACES_EXPORTER` names an
    /// exporter, or an OTLP endpoint is set with no `OTEL_TRACES_EXPORTER=none`, and
    /// `OTEL_SDK_DISABLED` is not `true` (the variables zero-code instrumentation and most
    /// deployments configure an SDK with).
    pub sdk_traces: bool,
    /// The container (and Kubernetes pod) the process runs in, from `/proc/{pid}/cgroup`;
    /// `None` when it is in none, or the file cannot be read.
    pub container: Option<ContainerRef>,
}

#[derive(Debug, Error)]
pub enum EnrichError {
    #[error("process {pid} does not exist (any more)")]
    ProcessGone { pid: u32 },
    #[error("process {pid}: cannot read {what}: {source}")]
    Io {
        pid: u32,
        what: &'static str,
        source: io::Error,
    },
    #[error("process {pid} has no readable executable name")]
    NoName { pid: u32 },
}

/// Reads what we need about `pid` from `{proc_root}/{pid}`. `proc_root` is `/proc` in
/// production and a fake tree in tests.
pub fn read_process(proc_root: &Path, pid: u32) -> Result<ProcessInfo, EnrichError> {
    let dir = proc_root.join(pid.to_string());
    match std::fs::metadata(&dir) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(EnrichError::ProcessGone { pid })
        }
        Err(source) => {
            return Err(EnrichError::Io {
                pid,
                what: "process directory",
                source,
            })
        }
    }
    let gone_or = |what: &'static str, e: io::Error| match e.raw_os_error() {
        // The process exited while we were reading.
        Some(libc::ENOENT) | Some(libc::ESRCH) => EnrichError::ProcessGone { pid },
        _ => EnrichError::Io {
            pid,
            what,
            source: e,
        },
    };

    let exe_path = std::fs::read_link(dir.join("exe")).ok().map(|p| {
        let p = p.to_string_lossy();
        // The kernel appends " (deleted)" when the binary was replaced or removed since exec.
        let p = p.strip_suffix(" (deleted)").unwrap_or(&p);
        bounded(p, MAX_EXE_PATH)
    });
    // cmdline and comm are world-readable; a failure other than "gone" is unexpected.
    let cmdline =
        read_bounded(&dir.join("cmdline"), MAX_CMDLINE).map_err(|e| gone_or("cmdline", e))?;
    let comm = read_bounded(&dir.join("comm"), 64).map_err(|e| gone_or("comm", e))?;
    // environ needs ptrace access to the process; without it we just do not see OTEL_*.
    let environ = read_bounded(&dir.join("environ"), MAX_ENVIRON).unwrap_or_default();

    let argv = nul_separated(&cmdline, MAX_CMDLINE);
    let comm = String::from_utf8_lossy(&comm)
        .trim_end_matches('\n')
        .to_owned();
    let exe_name = exe_path
        .as_deref()
        .and_then(|p| p.rsplit('/').next())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        // comm before argv[0]: processes rewrite argv[0] freely ("postgres: user db ..."), and
        // comm is the executable's name unless the process renamed a thread.
        .or_else(|| Some(comm).filter(|s| !s.is_empty()))
        .or_else(|| {
            argv.first()
                .and_then(|a| a.rsplit('/').next())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        })
        .map(|s| bounded(&s, MAX_VALUE_LEN))
        .ok_or(EnrichError::NoName { pid })?;

    let env = OtelEnv::parse(&environ);
    let sdk_traces = env.sdk_traces();
    let from_script = || {
        let args: Vec<&str> = argv.iter().skip(1).map(String::as_str).collect();
        service_name::from_command_line(&exe_name, &args)
    };
    let (service_name, service_name_source) = if let Some(n) = env.service_name {
        (n, ServiceNameSource::OtelServiceName)
    } else if let Some(n) = env.attr_service_name {
        (n, ServiceNameSource::OtelResourceAttributes)
    } else if let Some(n) = from_script() {
        (n, ServiceNameSource::Script)
    } else {
        (exe_name.clone(), ServiceNameSource::Executable)
    };
    Ok(ProcessInfo {
        pid,
        exe_name,
        exe_path,
        service_name: bounded(&service_name, MAX_VALUE_LEN),
        service_name_source,
        resource_attributes: env.copied,
        go: is_go_executable(&dir.join("exe")),
        sdk_traces,
        container: cgroup::read(&dir),
    })
}

/// Whether the ELF file at `path` was built by the Go toolchain: it has Go's build-info
/// section (`.go.buildinfo`, kept by stripped builds too) or build-id note. Reads only the
/// headers and section names, never the whole file.
pub fn is_go_executable(path: &Path) -> bool {
    use object::{Object, ObjectSection};
    let Ok(file) = File::open(path) else {
        return false;
    };
    let cache = object::ReadCache::new(file);
    let Ok(elf) = object::File::parse(&cache) else {
        return false;
    };
    elf.sections()
        .any(|s| matches!(s.name(), Ok(".go.buildinfo" | ".note.go.buildid")))
}

/// Reads at most `max` bytes of a file. procfs files report size 0, so we cannot ask first.
fn read_bounded(path: &Path, max: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(max.min(4096));
    File::open(path)?.take(max as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Splits a NUL-separated procfs file. If the read was cut at `max`, the last entry may be
/// partial and is dropped, so we never act on half a variable or argument.
fn nul_separated(bytes: &[u8], max: usize) -> Vec<String> {
    let mut parts: Vec<&[u8]> = bytes.split(|&b| b == 0).collect();
    // A complete file ends in NUL, leaving one empty last part; a cut one has a partial entry.
    parts.pop();
    if bytes.len() < max && bytes.last().is_some_and(|&b| b != 0) {
        // Not cut, but no final NUL (some processes rewrite their cmdline): keep the last part.
        parts.push(bytes.rsplit(|&b| b == 0).next().unwrap_or_default());
    }
    parts
        .into_iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect()
}

/// Cuts `s` to at most `max` bytes on a char boundary.
fn bounded(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// What we take from a process environment: nothing but the OpenTelemetry variables.
#[derive(Debug, Default, PartialEq)]
struct OtelEnv {
    service_name: Option<String>,
    attr_service_name: Option<String>,
    copied: Vec<(&'static str, String)>,
    /// `OTEL_TRACES_EXPORTER`, `OTEL_SDK_DISABLED`, and whether an OTLP endpoint is set.
    traces_exporter: Option<String>,
    sdk_disabled: bool,
    otlp_endpoint: bool,
}

impl OtelEnv {
    fn parse(environ: &[u8]) -> Self {
        let mut out = OtelEnv::default();
        let (mut seen_name, mut seen_attrs) = (false, false);
        for var in nul_separated(environ, MAX_ENVIRON) {
            // Like getenv(3), the first definition of a variable wins.
            if let Some(v) = var
                .strip_prefix("OTEL_SERVICE_NAME=")
                .filter(|_| !seen_name)
            {
                seen_name = true;
                out.service_name = Some(v.trim())
                    .filter(|v| !v.is_empty())
                    .map(|v| bounded(v, MAX_VALUE_LEN));
            } else if let Some(v) = var.strip_prefix("OTEL_TRACES_EXPORTER=") {
                out.traces_exporter
                    .get_or_insert_with(|| v.trim().to_ascii_lowercase());
            } else if let Some(v) = var.strip_prefix("OTEL_SDK_DISABLED=") {
                out.sdk_disabled |= v.trim().eq_ignore_ascii_case("true");
            } else if [
                "OTEL_EXPORTER_OTLP_ENDPOINT=",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=",
            ]
            .iter()
            .any(|p| var.strip_prefix(p).is_some_and(|v| !v.trim().is_empty()))
            {
                out.otlp_endpoint = true;
            } else if let Some(v) = var
                .strip_prefix("OTEL_RESOURCE_ATTRIBUTES=")
                .filter(|_| !seen_attrs)
            {
                seen_attrs = true;
                for (k, v) in parse_resource_attributes(v).unwrap_or_default() {
                    if k == "service.name" {
                        out.attr_service_name = Some(v).filter(|v| !v.is_empty());
                    } else if let Some(&key) = COPIED_RESOURCE_KEYS.iter().find(|&&c| c == k) {
                        if !v.is_empty() && out.copied.iter().all(|(c, _)| *c != key) {
                            out.copied.push((key, v));
                        }
                    }
                }
            }
        }
        out
    }

    fn sdk_traces(&self) -> bool {
        if self.sdk_disabled {
            return false;
        }
        match self.traces_exporter.as_deref() {
            Some(e) => e
                .split(',')
                .any(|x| !x.trim().is_empty() && x.trim() != "none"),
            None => self.otlp_endpoint,
        }
    }
}

/// Parses `OTEL_RESOURCE_ATTRIBUTES`: `key=value` pairs separated by `,`, whitespace around
/// keys and values trimmed, values percent-decoded (W3C Baggage octets). Any malformed pair
/// (no `=`, empty key, bad `%` escape, invalid UTF-8 after decoding) makes the whole value
/// invalid (`None`): the OpenTelemetry SDK specification says to discard it entirely rather
/// than use part of it. Values are bounded to [`MAX_VALUE_LEN`].
fn parse_resource_attributes(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for pair in s.split(',') {
        if pair.trim().is_empty() {
            continue;
        }
        let (k, v) = pair.split_once('=')?;
        let k = k.trim();
        if k.is_empty() {
            return None;
        }
        let v = percent_decode(v.trim())?;
        out.push((k.to_owned(), bounded(v.trim(), MAX_VALUE_LEN)));
    }
    Some(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            // Two hex digits exactly (from_str_radix alone would also take a sign: "%+1").
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::super::fake_proc::FakeProc;
    use super::*;
    use ServiceNameSource::*;

    #[test]
    fn an_sdk_exporting_traces_is_recognised_by_its_environment() {
        let fake = FakeProc::new();
        let cases: &[(&[&str], bool)] = &[
            (&["OTEL_SERVICE_NAME=shop"], false), // naming a service is not an SDK
            (&["OTEL_TRACES_EXPORTER=otlp"], true),
            (&["OTEL_TRACES_EXPORTER=console,otlp"], true),
            (
                &[
                    "OTEL_TRACES_EXPORTER=none",
                    "OTEL_EXPORTER_OTLP_ENDPOINT=http://c:4317",
                ],
                false,
            ),
            (&["OTEL_EXPORTER_OTLP_ENDPOINT=http://c:4317"], true),
            (
                &["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://c:4318/v1/traces"],
                true,
            ),
            (&["OTEL_EXPORTER_OTLP_ENDPOINT="], false),
            (
                &["OTEL_TRACES_EXPORTER=otlp", "OTEL_SDK_DISABLED=TRUE"],
                false,
            ),
            (&[], false),
        ];
        for (i, (env, sdk)) in cases.iter().enumerate() {
            let pid = 100 + i as u32;
            fake.add(pid, Some("/usr/bin/python3"), &["python3", "app.py"], env);
            let info = read_process(fake.root(), pid).unwrap();
            assert_eq!(info.sdk_traces, *sdk, "{env:?}");
        }
    }

    #[test]
    fn go_programs_are_told_apart_stripped_or_not() {
        // Debian's hey is a stripped Go binary (no .symtab, no DWARF); the go tool is not
        // stripped. Both come with the test packages (tests/e2e/APT_PACKAGES).
        for go in ["/usr/bin/hey", "/usr/lib/go-1.19/bin/go"] {
            assert!(
                Path::new(go).exists(),
                "{go} is missing: install tests/e2e/APT_PACKAGES"
            );
            assert!(is_go_executable(Path::new(go)), "{go}");
        }
        let me = std::env::current_exe().expect("test binary");
        for other in [
            Path::new("/bin/sh"),
            Path::new("/usr/lib/x86_64-linux-gnu/libc.so.6"),
            &me,
        ] {
            assert!(!is_go_executable(other), "{}", other.display());
        }
        // Not ELF, or not there: not Go (never an error).
        assert!(!is_go_executable(Path::new("/etc/hostname")));
        assert!(!is_go_executable(Path::new("/nonexistent")));
    }

    #[test]
    fn service_name_rules_in_order() {
        let fake = FakeProc::new();
        let py = Some("/usr/bin/python3.11");
        let argv: &[&str] = &["python3", "-u", "/srv/app/service_a.py", "--port", "8080"];
        fake.add(
            1,
            py,
            argv,
            &[
                "OTEL_SERVICE_NAME=checkout",
                "OTEL_RESOURCE_ATTRIBUTES=service.name=ignored",
            ],
        );
        fake.add(
            2,
            py,
            argv,
            &[
                "PATH=/bin",
                "OTEL_RESOURCE_ATTRIBUTES=a=b, service.name = cart%20svc ,x=y",
            ],
        );
        fake.add(3, py, argv, &["PATH=/bin"]);
        fake.add(4, Some("/usr/sbin/nginx"), &["nginx: master process"], &[]);
        fake.add(5, py, &["python3", "-c", "import x"], &[]);
        fake.add(
            6,
            py,
            argv,
            &[
                "OTEL_SERVICE_NAME=  ",
                "OTEL_RESOURCE_ATTRIBUTES=service.name=",
            ],
        );
        fake.add(
            7,
            Some("/usr/bin/node"),
            &["node", "server.js"],
            &["OTEL_RESOURCE_ATTRIBUTES=service.name=bad%zz"],
        );
        let cases = [
            (1, "checkout", OtelServiceName),
            (2, "cart svc", OtelResourceAttributes),
            (3, "service_a", Script),
            (4, "nginx", Executable),
            (5, "python3.11", Executable),
            (6, "service_a", Script),
            (7, "server", Script),
        ];
        for (pid, name, source) in cases {
            let info = read_process(fake.root(), pid).unwrap();
            assert_eq!(
                (info.service_name.as_str(), info.service_name_source),
                (name, source),
                "pid {pid}"
            );
        }
        let info = read_process(fake.root(), 3).unwrap();
        assert_eq!(info.exe_name, "python3.11");
        assert_eq!(info.exe_path.as_deref(), Some("/usr/bin/python3.11"));
    }

    #[test]
    fn exe_fallbacks_and_deleted_binaries() {
        let fake = FakeProc::new();
        fake.add(1, Some("/opt/app/server (deleted)"), &["server"], &[]);
        fake.add(2, None, &["/usr/local/bin/worker", "--x"], &[]); // exe unreadable
        fake.set_comm(2, "worker");
        fake.add(3, None, &[], &[]); // kernel thread: no exe, empty cmdline
        fake.set_comm(3, "kworker/0:1");
        fake.add(4, None, &["/usr/bin/python3", "app.py"], &[]);
        fake.set_comm(4, "");
        let info = read_process(fake.root(), 1).unwrap();
        assert_eq!(
            (info.exe_name.as_str(), info.exe_path.as_deref()),
            ("server", Some("/opt/app/server"))
        );
        let info = read_process(fake.root(), 2).unwrap();
        assert_eq!(
            (info.exe_name.as_str(), info.exe_path.as_deref()),
            ("worker", None)
        );
        assert_eq!(
            read_process(fake.root(), 3).unwrap().service_name,
            "kworker/0:1"
        );
        // No exe, no comm: argv[0]'s file name, and the interpreter rule still applies.
        let info = read_process(fake.root(), 4).unwrap();
        assert_eq!(
            (info.exe_name.as_str(), info.service_name.as_str()),
            ("python3", "app")
        );
        assert!(matches!(
            read_process(fake.root(), 99),
            Err(EnrichError::ProcessGone { pid: 99 })
        ));
    }

    #[test]
    fn copies_allow_listed_resource_attributes_only() {
        let fake = FakeProc::new();
        let attrs = "OTEL_RESOURCE_ATTRIBUTES=service.version=1.2.3,service.namespace=shop,\
                     deployment.environment.name=prod,k8s.pod.name=x,secret.token=abc,service.version=9";
        fake.add(1, Some("/usr/bin/app"), &["app"], &[attrs]);
        let info = read_process(fake.root(), 1).unwrap();
        assert_eq!(
            info.resource_attributes,
            vec![
                ("service.version", "1.2.3".to_owned()),
                ("service.namespace", "shop".to_owned()),
                ("deployment.environment.name", "prod".to_owned()),
            ]
        );
        // A malformed variable is ignored whole.
        fake.add(
            2,
            Some("/usr/bin/app"),
            &["app"],
            &["OTEL_RESOURCE_ATTRIBUTES=service.version=1,oops"],
        );
        assert!(read_process(fake.root(), 2)
            .unwrap()
            .resource_attributes
            .is_empty());
    }

    #[test]
    fn never_keeps_arguments_or_other_variables() {
        let fake = FakeProc::new();
        fake.add(
            1,
            Some("/usr/bin/python3"),
            &["python3", "--password", "hunter2hunter2Hunter2x", "app.py"],
            &["AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI", "DB_PASSWORD=hunter2"],
        );
        let info = read_process(fake.root(), 1).unwrap();
        let dump = format!("{info:?}");
        for secret in ["hunter2", "wJalr", "password", "AWS"] {
            assert!(!dump.contains(secret), "{dump}");
        }
        assert_eq!(info.service_name, "python3");
    }

    #[test]
    fn reads_are_bounded() {
        let fake = FakeProc::new();
        // OTEL_SERVICE_NAME past the environ bound is not seen; one cut by it is not used.
        let filler = format!("FILLER={}", "x".repeat(MAX_ENVIRON));
        fake.add(
            1,
            Some("/usr/bin/app"),
            &["app"],
            &[&filler, "OTEL_SERVICE_NAME=late"],
        );
        assert_eq!(
            read_process(fake.root(), 1).unwrap().service_name_source,
            Executable
        );
        let pad = format!("PAD={}", "x".repeat(MAX_ENVIRON - 30));
        fake.add(
            2,
            Some("/usr/bin/app"),
            &["app"],
            &[&pad, "OTEL_SERVICE_NAME=cut-in-the-middle"],
        );
        assert_eq!(read_process(fake.root(), 2).unwrap().service_name, "app");
        // A huge cmdline: the script argument past the bound is not seen.
        let big = "x".repeat(MAX_CMDLINE);
        fake.add(
            3,
            Some("/usr/bin/python3"),
            &["python3", "-W", &big, "app.py"],
            &[],
        );
        assert_eq!(
            read_process(fake.root(), 3).unwrap().service_name,
            "python3"
        );
        // Long names are cut.
        let long = format!("OTEL_SERVICE_NAME={}", "é".repeat(300));
        fake.add(4, Some("/usr/bin/app"), &["app"], &[&long]);
        let name = read_process(fake.root(), 4).unwrap().service_name;
        assert!(name.len() <= MAX_VALUE_LEN && name.starts_with('é'));
    }

    #[test]
    fn parses_resource_attribute_syntax() {
        let ok = |s: &str| parse_resource_attributes(s);
        let kv = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(ok(""), Some(vec![]));
        assert_eq!(
            ok(" a = b , ,c=d%2Ce%3D"),
            Some(vec![kv("a", "b"), kv("c", "d,e=")])
        );
        assert_eq!(ok("a=caf%C3%A9"), Some(vec![kv("a", "café")]));
        for bad in ["a", "=b", "a=%", "a=%4", "a=%zz", "a=%+1", "a=%FF"] {
            assert_eq!(ok(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn real_proc_self() {
        let pid = std::process::id();
        let info = read_process(Path::new("/proc"), pid).unwrap();
        let exe = std::env::current_exe().unwrap();
        assert_eq!(info.exe_path.as_deref(), exe.to_str());
        assert_eq!(
            Some(info.exe_name.as_str()),
            exe.file_name().and_then(|n| n.to_str())
        );
        match std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|s| !s.trim().is_empty())
        {
            Some(n) => assert_eq!(info.service_name, n.trim()),
            None if std::env::var_os("OTEL_RESOURCE_ATTRIBUTES").is_none() => {
                assert_eq!(
                    (info.service_name.as_str(), info.service_name_source),
                    (info.exe_name.as_str(), Executable)
                )
            }
            None => {}
        }
    }
}

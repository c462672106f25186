//! Real binaries only: the distribution's libssl/libcrypto, node, grpcio, Debian's `hey`,
//! and Go programs built here with the local toolchain. A missing input skips the test with a
//! message, except under `cargo xtask test` (env `AGENT_TESTS_REQUIRE_ALL`) or CI (env `CI`),
//! where it fails; see `need`.

use super::*;
use std::collections::HashMap;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

const LIBSSL: &str = "/usr/lib/x86_64-linux-gnu/libssl.so.3";
const LIBCRYPTO: &str = "/usr/lib/x86_64-linux-gnu/libcrypto.so.3";
const NODE: &str = "/usr/bin/node";
const HEY: &str = "/usr/bin/hey";

/// `path` if it exists. Otherwise the test fails when the run must cover everything — env
/// `AGENT_TESTS_REQUIRE_ALL` set and not `0` (`cargo xtask test` sets it) or `CI` set — and
/// is skipped elsewhere, with a `SKIP` line on stderr. The line is written to stderr directly,
/// not with `eprintln!`, which libtest captures and hides for a passing test (unless
/// `--nocapture`), so the skip is seen in a plain `cargo test`.
fn need(path: &str) -> Option<&Path> {
    let p = Path::new(path);
    if p.exists() {
        return Some(p);
    }
    let require_all = std::env::var_os("AGENT_TESTS_REQUIRE_ALL").is_some_and(|v| v != "0")
        || std::env::var_os("CI").is_some();
    assert!(
        !require_all,
        "{path} is missing (AGENT_TESTS_REQUIRE_ALL or CI is set: prerequisites must be present)"
    );
    let test = std::thread::current().name().unwrap_or("?").to_owned();
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIP {test}: {path} is missing");
    None
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Defined dynamic symbols (`nm -D`, versions cut), for an independent check of offsets.
fn nm_dynamic(path: &Path) -> HashMap<String, u64> {
    let out = run(Command::new("nm").args(["-D", "--defined-only"]).arg(path));
    out.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let addr = u64::from_str_radix(f.next()?, 16).ok()?;
            let name = f.nth(1)?.split('@').next()?;
            Some((name.to_owned(), addr))
        })
        .collect()
}

/// `(vaddr, offset, filesz)` of each PT_LOAD, from `readelf -lW`.
fn load_segments(path: &Path) -> Vec<(u64, u64, u64)> {
    let out = run(Command::new("readelf").arg("-lW").arg(path));
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
    out.lines()
        .filter(|l| l.trim_start().starts_with("LOAD"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (hex(f[2]), hex(f[1]), hex(f[4]))
        })
        .collect()
}

fn vaddr_to_offset(segments: &[(u64, u64, u64)], vaddr: u64) -> u64 {
    let (v, o, _) = segments
        .iter()
        .find(|(v, _, size)| (*v..v + size).contains(&vaddr))
        .expect("address in a segment");
    vaddr - v + o
}

fn openssl(result: Option<TlsRuntime>) -> (Option<String>, bool, Vec<SymbolProbe>) {
    match result {
        Some(TlsRuntime::OpenSsl {
            version,
            version_exact,
            funcs,
        }) => (version, version_exact, funcs),
        other => panic!("expected OpenSSL, got {other:?}"),
    }
}

/// The four functions, at the offsets `nm -D` and `readelf -l` give.
fn assert_offsets_match_nm(path: &Path, funcs: &[SymbolProbe]) {
    let names: Vec<_> = funcs.iter().map(|f| f.name).collect();
    assert_eq!(names, SSL_FUNCS);
    let (nm, segments) = (nm_dynamic(path), load_segments(path));
    for f in funcs {
        assert_eq!(
            f.file_offset,
            vaddr_to_offset(&segments, nm[f.name]),
            "{}",
            f.name
        );
    }
}

#[test]
fn libssl_is_openssl_3() {
    let Some(path) = need(LIBSSL) else { return };
    let (version, exact, funcs) = openssl(inspect(path).unwrap());
    // libssl carries no banner (libcrypto does): the version node says the series.
    assert_eq!((version.as_deref(), exact), (Some("3.0.0"), false));
    assert_offsets_match_nm(path, &funcs);
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(inspect_bytes(&bytes).unwrap(), inspect(path).unwrap());
}

#[test]
fn node_has_static_openssl() {
    let Some(path) = need(NODE) else { return };
    let start = Instant::now();
    let result = inspect(path).unwrap();
    let took = start.elapsed();
    eprintln!("inspect({NODE}) took {took:?}");
    let (version, exact, funcs) = openssl(result);
    let version = version.expect("banner version");
    assert!(exact && version.starts_with("3."), "{version}");
    assert_offsets_match_nm(path, &funcs);
}

#[test]
fn libcrypto_has_no_ssl_functions() {
    let Some(path) = need(LIBCRYPTO) else { return };
    assert_eq!(inspect(path).unwrap(), None);
}

#[test]
fn gnutls_openssl_compat_is_not_openssl() {
    // Optional (libgnutls-openssl27): present on many machines, not a CI prerequisite.
    let path = Path::new("/usr/lib/x86_64-linux-gnu/libgnutls-openssl.so.27");
    if !path.exists() {
        eprintln!("SKIP: {} is missing", path.display());
        return;
    }
    assert_eq!(inspect(path).unwrap(), None);
}

#[test]
fn grpcio_cygrpc_is_boringssl() {
    // grpcio is a Python package, not a CI prerequisite: skipped (visibly) when absent.
    let dir = Command::new("python3")
        .args([
            "-c",
            "import grpc, os; print(os.path.dirname(grpc.__file__))",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join("_cython"));
    let so = dir
        .and_then(|d| std::fs::read_dir(d).ok())
        .and_then(|entries| {
            entries.filter_map(Result::ok).map(|e| e.path()).find(|p| {
                p.to_string_lossy().contains("cygrpc") && p.extension() == Some("so".as_ref())
            })
        });
    let Some(so) = so else {
        eprintln!("SKIP: grpcio (python3 -c 'import grpc') is not installed");
        return;
    };
    assert_eq!(inspect(&so).unwrap(), Some(TlsRuntime::BoringSsl));
}

#[test]
fn banner_parsing() {
    let banner = |s: &[u8]| find_banner(s);
    assert_eq!(
        banner(b"x\0OpenSSL 3.0.19 27 Jan 2026\0"),
        Some(Banner::OpenSsl("3.0.19".into()))
    );
    assert_eq!(
        banner(b"OpenSSL 1.1.1w  11 Sep 2023\0"),
        Some(Banner::OpenSsl("1.1.1w".into()))
    );
    assert_eq!(banner(b"use OpenSSL 3.0 legacy provider\0"), None);
    assert_eq!(banner(b"\0OpenSSL 3.0 legacy provider\0"), None);
    assert_eq!(banner(b"\0OpenSSL 1.0.2u  20 Dec 2019\0"), None);
    assert_eq!(
        banner(b"\0OpenSSL 1.1.1 (compatible; BoringSSL)\0"),
        Some(Banner::BoringSsl)
    );
    assert_eq!(banner(b"\0OpenSSL 3.0.19"), None, "cut before the date");
}

/// Go programs built once per test run, kept in memory (the build directory is removed).
struct GoPrograms {
    /// `go1.19.8`, from `go version`.
    version: String,
    tls: Vec<u8>,
    tls_stripped: Vec<u8>,
    plain: Vec<u8>,
    /// `-buildmode=pie`, unstripped and stripped: the table is `.data.rel.ro.gopclntab`.
    pie: (Vec<u8>, Vec<u8>),
    /// The same linked externally: the table is somewhere inside `.data.rel.ro`.
    external_pie: (Vec<u8>, Vec<u8>),
    /// `inspect(path)` of the unstripped TLS program, while it was on disk.
    tls_from_path: Option<TlsRuntime>,
    /// `go tool objdump` of `(*Conn).Read` and `Write`: entry and RET addresses.
    objdump: HashMap<String, (u64, Vec<u64>)>,
}

const TLS_PROGRAM: &str = r#"package main

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
)

func fetch() {
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{}}}
	if resp, err := c.Get("https://127.0.0.1:1/"); err == nil {
		resp.Body.Close()
	}
}

func main() {
	if len(os.Args) > 5 {
		fetch()
	}
	fmt.Println("ok")
}
"#;

const PLAIN_PROGRAM: &str =
    "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"ok\") }\n";

fn go_programs() -> Option<&'static GoPrograms> {
    static PROGRAMS: OnceLock<Option<GoPrograms>> = OnceLock::new();
    PROGRAMS
        .get_or_init(|| need("/usr/bin/go").map(build_go_programs))
        .as_ref()
}

fn build_go_programs(go: &Path) -> GoPrograms {
    let tmp = std::env::temp_dir();
    let dir = tmp.join(format!("agent-tls-inspect-{}", std::process::id()));
    let home = std::env::var_os("HOME").map_or_else(|| tmp.clone(), PathBuf::from);
    let cache = std::env::var_os("GOCACHE")
        .map_or_else(|| tmp.join("agent-tls-inspect-gocache"), PathBuf::from);
    let go_cmd = |cwd: &Path| {
        let mut cmd = Command::new(go);
        cmd.current_dir(cwd)
            .env("GOFLAGS", "-mod=mod")
            .env("GOPROXY", "off")
            .env("GOTELEMETRY", "off")
            .env("CGO_ENABLED", "0")
            .env("GOOS", "linux")
            .env("GOARCH", "amd64")
            .env("HOME", &home)
            .env("GOCACHE", &cache);
        cmd
    };
    // Builds `source` in `dir/<package>` into `dir/<output>`.
    let build = |package: &str, source: &str, output: &str, args: &[&str]| {
        let src = dir.join(package);
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("go.mod"), "module x\n\ngo 1.19\n").unwrap();
        std::fs::write(src.join("main.go"), source).unwrap();
        let out = dir.join(format!("{output}.bin"));
        let mut cmd = go_cmd(&src);
        if args.contains(&"-linkmode=external") {
            cmd.env("CGO_ENABLED", "1");
        }
        run(cmd.arg("build").args(args).arg("-o").arg(&out).arg("."));
        std::fs::read(&out).unwrap()
    };
    let strip = "-ldflags=-s -w";
    let pie = "-buildmode=pie";
    let tls_path = dir.join("tls.bin");
    let tls = build("tls", TLS_PROGRAM, "tls", &[]);
    let tls_stripped = build("tls", TLS_PROGRAM, "tls-s", &[strip]);
    let plain = build("plain", PLAIN_PROGRAM, "plain", &[]);
    let pie_pair = (
        build("tls", TLS_PROGRAM, "pie", &[pie]),
        build("tls", TLS_PROGRAM, "pie-s", &[pie, strip]),
    );
    // External linking needs a C toolchain (cgo); the machines that build this crate have one.
    let external_pie_pair = (
        build(
            "tls",
            TLS_PROGRAM,
            "xpie",
            &[pie, "-ldflags=-linkmode=external"],
        ),
        build(
            "tls",
            TLS_PROGRAM,
            "xpie-s",
            &[pie, "-ldflags=-s -w -linkmode=external"],
        ),
    );

    let version = run(go_cmd(&dir).arg("version"));
    let version = version.split_whitespace().nth(2).unwrap().to_owned();
    let mut objdump = HashMap::new();
    for name in [
        "crypto/tls.(*Conn).Read",
        "crypto/tls.(*Conn).Write",
        "net/http.(*persistConn).writeLoop",
        "net/http.(*persistConn).roundTrip",
        "runtime.newproc1",
    ] {
        let pattern = format!(
            "^{}$",
            name.replace('.', "\\.")
                .replace('(', "\\(")
                .replace(')', "\\)")
                .replace('*', "\\*")
        );
        let text = run(go_cmd(&dir)
            .args(["tool", "objdump", "-s"])
            .arg(pattern)
            .arg(&tls_path));
        // `  conn.go:1301\t\t0x591b80\t\t493b6610\t\tCMPQ 0x10(R14), SP`
        let lines: Vec<Vec<&str>> = text
            .lines()
            .filter(|l| l.starts_with("  "))
            .map(|l| l.split('\t').filter(|f| !f.is_empty()).collect())
            .collect();
        let addr = |f: &Vec<&str>| u64::from_str_radix(&f[1][2..], 16).unwrap();
        let entry = addr(&lines[0]);
        let rets = lines
            .iter()
            .filter(|f| f[3].trim() == "RET")
            .map(addr)
            .collect();
        objdump.insert(name.to_owned(), (entry, rets));
    }
    let programs = GoPrograms {
        version,
        tls,
        tls_stripped,
        plain,
        pie: pie_pair,
        external_pie: external_pie_pair,
        tls_from_path: inspect(&tls_path).unwrap(),
        objdump,
    };
    std::fs::remove_dir_all(&dir).unwrap();
    programs
}

struct GoResult {
    version: String,
    regabi: bool,
    read: GoFunc,
    write: GoFunc,
    from_pclntab: bool,
    transport: Result<GoTransport, String>,
}

fn go(result: Option<TlsRuntime>) -> GoResult {
    match result {
        Some(TlsRuntime::Go {
            version,
            regabi,
            read: Some(read),
            write: Some(write),
            from_pclntab,
            skipped,
            transport,
        }) if skipped.is_empty() => GoResult {
            version,
            regabi,
            read,
            write,
            from_pclntab,
            transport,
        },
        other => panic!("expected Go with Read and Write, got {other:?}"),
    }
}

/// Go's register-ABI prologue, the stack-growth check against `g.stackguard0` (R14):
/// `CMPQ 0x10(R14), SP`, or for a big frame `LEAQ -n(SP), R12` first. A wrong `textStart`
/// would land elsewhere.
fn assert_go_prologue(data: &[u8], f: &GoFunc) {
    let at = usize::try_from(f.file_offset).unwrap();
    let start = &data[at..at + 4];
    assert!(
        start == [0x49, 0x3b, 0x66, 0x10] || start == [0x4c, 0x8d, 0x64, 0x24],
        "{} starts with {start:02x?}",
        f.name
    );
    for &ret in &f.return_offsets {
        let ret = usize::try_from(ret).unwrap();
        assert!(
            matches!(data[ret], 0xc3 | 0xc2),
            "{} RET at {ret:#x}",
            f.name
        );
    }
}

#[test]
fn go_unstripped_and_stripped_agree_with_objdump() {
    let Some(p) = go_programs() else { return };
    let full = go(inspect_bytes(&p.tls).unwrap());
    let stripped = go(inspect_bytes(&p.tls_stripped).unwrap());
    assert!(!full.from_pclntab && stripped.from_pclntab);
    assert_eq!((&full.version, full.regabi), (&p.version, true));
    assert_eq!((&stripped.version, stripped.regabi), (&p.version, true));
    assert_eq!(full.read, stripped.read);
    assert_eq!(full.write, stripped.write);
    assert_eq!(p.tls_from_path, inspect_bytes(&p.tls).unwrap());

    let image = Image::parse(&p.tls[..]).unwrap();
    for f in [&full.read, &full.write] {
        assert_go_prologue(&p.tls, f);
        let (entry, rets) = &p.objdump[&f.name];
        let to_offset = |vaddr: u64| image.file_offset(vaddr, 1).unwrap();
        assert_eq!(f.file_offset, to_offset(*entry), "{}", f.name);
        let rets: Vec<u64> = rets.iter().map(|&r| to_offset(r)).collect();
        assert_eq!(f.return_offsets, rets, "{}", f.name);
        eprintln!("{}: {} returns", f.name, rets.len());
    }
    // The net/http Transport probes: at the functions' entries, found alike with and without
    // the symbol table.
    assert_eq!(full.transport, stripped.transport);
    let transport = full.transport.expect("net/http is linked in");
    let entry = |name: &str| image.file_offset(p.objdump[name].0, 1).unwrap();
    // runtime.newproc1: its entry and every RET, as objdump lists them (the toolchain here
    // is >= 1.18).
    let spawn = transport.spawn.clone().expect("runtime.newproc1 found");
    let (sp_entry, sp_rets) = &p.objdump["runtime.newproc1"];
    assert_eq!(spawn.file_offset, image.file_offset(*sp_entry, 1).unwrap());
    let sp_rets: Vec<u64> = sp_rets
        .iter()
        .map(|&r| image.file_offset(r, 1).unwrap())
        .collect();
    assert_eq!(spawn.return_offsets, sp_rets);
    assert_eq!(
        transport,
        GoTransport {
            write_loop: entry("net/http.(*persistConn).writeLoop"),
            round_trip: entry("net/http.(*persistConn).roundTrip"),
            spawn: Some(spawn),
        }
    );
    for at in [transport.write_loop, transport.round_trip] {
        let at = usize::try_from(at).unwrap();
        let start = &p.tls[at..at + 4];
        // CMPQ 0x10(R14), SP, or LEAQ -n(SP), R12 (8- or 32-bit n) for a big frame.
        assert!(
            start == [0x49, 0x3b, 0x66, 0x10] || start[..2] == [0x4c, 0x8d],
            "a Go prologue at {at:#x}: {start:02x?}"
        );
    }
}

#[test]
fn go_symtab_and_pclntab_ranges_agree() {
    let Some(p) = go_programs() else { return };
    let image = Image::parse(&p.tls[..]).unwrap();
    let symtab = image.symbols(elf::SHT_SYMTAB).unwrap().unwrap();
    let section = image.section(b".gopclntab").unwrap();
    let text = image.section(b".text").unwrap().sh_addr(image.endian);
    let table = pclntab::Pclntab::parse(image.section_data(section, "").unwrap(), text);
    let names = ["crypto/tls.(*Conn).Read", "crypto/tls.(*Conn).Write"];
    let ranges = table.unwrap().find(&names).unwrap();
    for (name, range) in names.iter().zip(ranges) {
        let (entry, size) = symtab.func(name).unwrap();
        let range = range.unwrap();
        // The table's range runs to the next function, over the INT3 padding.
        assert_eq!(range.start, entry, "{name}");
        assert!(
            range.end >= entry + size && range.end - (entry + size) < 32,
            "{name}"
        );
    }
}

#[test]
fn go_pie_tables_are_found_when_stripped() {
    let Some(p) = go_programs() else { return };
    for (what, (full, stripped)) in [("pie", &p.pie), ("external pie", &p.external_pie)] {
        let (full_result, stripped_result) = (
            go(inspect_bytes(full).unwrap()),
            go(inspect_bytes(stripped).unwrap()),
        );
        assert!(stripped_result.from_pclntab, "{what}");
        assert_eq!(full_result.read, stripped_result.read, "{what}");
        assert_eq!(full_result.write, stripped_result.write, "{what}");
        assert!(full_result.transport.is_ok(), "{what}");
        assert_eq!(full_result.transport, stripped_result.transport, "{what}");
        assert_go_prologue(stripped, &stripped_result.read);
        assert_go_prologue(stripped, &stripped_result.write);
    }
}

#[test]
fn go_without_crypto_tls() {
    let Some(p) = go_programs() else { return };
    assert_eq!(
        inspect_bytes(&p.plain).unwrap(),
        Some(TlsRuntime::GoWithoutTls {
            version: p.version.clone()
        })
    );
}

#[test]
fn debian_hey_is_stripped_go() {
    let Some(path) = need(HEY) else { return };
    let hey = go(inspect(path).unwrap());
    assert!(hey.from_pclntab && hey.regabi && hey.version.starts_with("go1."));
    let data = std::fs::read(path).unwrap();
    // hey is externally linked: .text starts 0x100 bytes before Go's text, so this also
    // checks that textStart comes from the table header.
    assert_go_prologue(&data, &hey.read);
    assert_go_prologue(&data, &hey.write);
    eprintln!(
        "hey {}: Read {} returns, Write {} returns",
        hey.version,
        hey.read.return_offsets.len(),
        hey.write.return_offsets.len()
    );
}

/// Every prefix (the first 4 KiB byte by byte, then every 4 KiB): an error or an answer,
/// never a panic.
fn feed_prefixes(data: &[u8]) {
    let prefixes = (0..4096.min(data.len())).chain((4096..data.len()).step_by(4096));
    for len in prefixes {
        let _ = inspect_bytes(&data[..len]);
    }
}

#[test]
fn truncated_files_never_panic() {
    if let Some(path) = need(LIBSSL) {
        feed_prefixes(&std::fs::read(path).unwrap());
    }
    if let Some(p) = go_programs() {
        feed_prefixes(&p.tls_stripped);
    }
}

/// Section headers sit at the end of these files, so a prefix mostly fails early; cutting
/// the function table itself and scribbling over the Go-specific parts reaches the parsers.
#[test]
fn damaged_go_tables_never_panic() {
    let Some(p) = go_programs() else { return };
    let image = Image::parse(&p.tls_stripped[..]).unwrap();
    let section = image.section(b".gopclntab").unwrap();
    let pcln = image.section_data(section, "").unwrap();
    for len in (0..4096).chain((4096..pcln.len()).step_by(4096)) {
        if let Ok(table) = pclntab::Pclntab::parse(&pcln[..len], 0x40_1000) {
            let _ = table.find(&["crypto/tls.(*Conn).Read"]);
        }
    }
    let (start, size) = section.file_range(image.endian).unwrap();
    let (start, size) = (start as usize, size as usize);
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..300 {
        let mut data = p.tls_stripped.clone();
        for _ in 0..8 {
            // Mostly the pclntab header and function table, sometimes anywhere.
            let at = if rng.bool() {
                start + rng.usize(..size.min(64 * 1024))
            } else {
                rng.usize(..data.len())
            };
            data[at] = rng.u8(..);
        }
        let _ = inspect_bytes(&data);
    }
}

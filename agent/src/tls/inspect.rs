//! Inspects one ELF file (a shared library or an executable) and says where TLS plaintext can be
//! captured with uprobes: which TLS library it carries and the **file offsets** of the functions
//! to probe. It owns reading the file; it does not attach anything, walk `/proc`, or cache
//! results (the loader does, keyed by device and inode).
//!
//! * Offsets are file offsets, not virtual addresses, because that is what the kernel's uprobe
//!   interface takes (`perf_event_open` / `uprobe_events` name a file and an offset in it). A
//!   symbol's address is turned into one through the `PT_LOAD` segment that maps it.
//! * **OpenSSL** (`libssl.so.*`, or linked statically and exported, as in `node`): the entry points
//!   of `SSL_read`, `SSL_write`, `SSL_read_ex` and `SSL_write_ex`, from `.dynsym` then `.symtab`.
//!   A uretprobe on them is safe, so entries are all we report. The version comes from OpenSSL's
//!   banner string (`"OpenSSL 3.0.19 27 Jan 2026"`, present in libcrypto and in static builds) or,
//!   failing that, from the newest `OPENSSL_x.y.z` symbol-version node (libssl alone: the ABI
//!   series only).
//!   GnuTLS's OpenSSL compatibility layer (`libgnutls-openssl`) also defines `SSL_read`, over
//!   its own structs; it is recognised by its `gnutls_*` symbols and not reported.
//! * **BoringSSL** linked statically (gRPC's Python extension, Envoy, Chrome): its symbols are
//!   hidden or unstable and its structs differ from OpenSSL's, so the file is only reported.
//! * **Go** (`crypto/tls`): the entry of `(*Conn).Read` / `(*Conn).Write` and the offset of every
//!   `RET` in them. Go cannot take uretprobes: the kernel swaps the return address on the stack
//!   for a trampoline, and Go's stack copying and traceback read that address and crash the
//!   program ("unexpected return pc"). So the return is observed with a plain uprobe on each
//!   `RET`, found by decoding the function with a real x86-64 decoder (a raw `0xC3` byte scan hits
//!   immediates and displacements). Functions come from `.symtab`; stripped binaries (`-s -w`,
//!   most distribution packages) keep `.gopclntab`, Go's own function table used for tracebacks
//!   (its own section, or part of `.data.rel.ro` in an externally linked PIE), and that is parsed
//!   instead (`from_pclntab`). A stripped binary thus costs nothing more than an unstripped one.
//!
//! Everything read from the file is bounds-checked: a truncated or hostile file yields an
//! [`InspectError`], never a panic, and no allocation is sized by a header field alone. A path is
//! read through a cache of the ranges actually used (section headers, symbol tables, `.rodata`
//! when a banner is wanted, the probed functions), so a 90 MB `node` is not read in full and no
//! range is read twice.

use std::fs::File;
use std::path::{Path, PathBuf};

use object::elf;
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader, SectionTable, Sym};
use object::{Endianness, ReadCache, ReadRef, SectionIndex};

mod golang;
mod pclntab;

/// What one ELF file (shared library or executable) offers for TLS plaintext capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsRuntime {
    /// OpenSSL (libssl.so.* or statically linked with exported symbols, e.g. node).
    OpenSsl {
        /// `"3.0.19"` from the version banner when `version_exact`, otherwise
        /// the newest `OPENSSL_*` symbol-version node (`"3.0.0"` for any libssl.so.3): the ABI
        /// series, not the release.
        version: Option<String>,
        /// Whether `version` is the release (from the banner) rather than the ABI series.
        version_exact: bool,
        /// The functions found, in the order `SSL_read`, `SSL_write`, `SSL_read_ex`,
        /// `SSL_write_ex` (the `_ex` pair only exists from OpenSSL 1.1.1 on).
        funcs: Vec<SymbolProbe>,
    },
    /// Go's crypto/tls.
    Go {
        /// `"go1.19.8"`, or `"unknown"` when neither the build info nor the symbol table says.
        version: String,
        /// Go ≥ 1.17 on amd64 passes arguments and results in registers; older Go on the stack.
        regabi: bool,
        /// `crypto/tls.(*Conn).Read`, if linked in and usable.
        read: Option<GoFunc>,
        /// `crypto/tls.(*Conn).Write`, if linked in and usable.
        write: Option<GoFunc>,
        /// At least one function was located through `.gopclntab` (no usable `.symtab`).
        from_pclntab: bool,
        /// Why a function that is present could not be used (one line each, for the log).
        skipped: Vec<String>,
    },
    /// BoringSSL statically linked (e.g. grpcio's cygrpc .so): symbols are not exported/stable: not traced.
    BoringSsl,
    /// Go binary with no crypto/tls linked in (nothing to trace).
    GoWithoutTls {
        /// As in [`TlsRuntime::Go`].
        version: String,
    },
}

/// One exported TLS function to put a uprobe (and uretprobe) on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolProbe {
    /// `"SSL_read"`, `"SSL_write"`, `"SSL_read_ex"`, `"SSL_write_ex"` or `"SSL_do_handshake"`.
    pub name: &'static str,
    /// Offset of the function's first instruction in the file.
    pub file_offset: u64,
}

/// One Go function: a uprobe at the entry and one at every return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoFunc {
    /// The Go symbol name, e.g. `crypto/tls.(*Conn).Read`.
    pub name: String,
    /// File offset of the entry.
    pub file_offset: u64,
    /// File offsets of every `RET` instruction in the function, ascending; never empty.
    pub return_offsets: Vec<u64>,
}

/// Why a file could not be inspected.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not an ELF file (no \\x7fELF magic)")]
    NotElf,
    #[error("not a 64-bit little-endian ELF file (EI_CLASS {class}, EI_DATA {data})")]
    NotElf64Le { class: u8, data: u8 },
    #[error("not an x86-64 ELF file (e_machine {machine})")]
    NotX86_64 { machine: u16 },
    /// The ELF structures are out of bounds or inconsistent (also how a truncated file, or a read
    /// error on a path, shows up).
    #[error("malformed or truncated ELF ({what}): {reason}")]
    Elf { what: &'static str, reason: String },
    #[error("{name} at {vaddr:#x} is not in a file-backed PT_LOAD segment")]
    Unmapped { name: String, vaddr: u64 },
    #[error("truncated .gopclntab: {what} needs {need} bytes, the section has {len}")]
    TruncatedPclntab {
        what: &'static str,
        need: u64,
        len: u64,
    },
    #[error(
        "unsupported .gopclntab magic {magic:#010x} (known: 0xfffffffb Go 1.2-1.15, \
         0xfffffffa 1.16-1.17, 0xfffffff0 1.18-1.19, 0xfffffff1 1.20+)"
    )]
    UnsupportedPclntabMagic { magic: u32 },
    #[error("malformed .gopclntab: {reason}")]
    BadPclntab { reason: String },
    #[error("malformed .go.buildinfo: {reason}")]
    BadBuildInfo { reason: String },
    #[error("Go binary has neither .symtab nor .gopclntab to find functions in")]
    NoGoFunctionTable,
}

/// Inspects the ELF file at `path`. `Ok(None)`: no TLS library in this file.
pub fn inspect(path: &Path) -> Result<Option<TlsRuntime>, InspectError> {
    let file = File::open(path).map_err(|source| InspectError::Open {
        path: path.to_owned(),
        source,
    })?;
    let cache = ReadCache::new(file);
    inspect_data(&cache, true)
}

/// [`inspect`] without the search of `.rodata` for OpenSSL's version banner (tens of MB in
/// node, hundreds of ms when not cached): what the agent runs before attaching, so a new
/// process is probed as early as possible. `version` then comes from symbol versions only;
/// [`openssl_banner_version`] fills it in afterwards.
pub fn inspect_quick(path: &Path) -> Result<Option<TlsRuntime>, InspectError> {
    let file = File::open(path).map_err(|source| InspectError::Open {
        path: path.to_owned(),
        source,
    })?;
    let cache = ReadCache::new(file);
    inspect_data(&cache, false)
}

/// OpenSSL's release version from its banner in `.rodata` (`"3.0.19"`), if the file has one.
pub fn openssl_banner_version(path: &Path) -> Option<String> {
    let file = File::open(path).ok()?;
    let cache = ReadCache::new(file);
    let image = Image::parse(&cache).ok()?;
    let rodata = image.section(b".rodata")?;
    match find_banner(image.section_data(rodata, ".rodata").ok()?) {
        Some(Banner::OpenSsl(v)) => Some(v),
        _ => None,
    }
}

/// Inspects an ELF file already in memory. `Ok(None)`: no TLS library in this file.
pub fn inspect_bytes(data: &[u8]) -> Result<Option<TlsRuntime>, InspectError> {
    inspect_data(data, true)
}

fn inspect_data<'data, R: ReadRef<'data>>(
    data: R,
    scan_banner: bool,
) -> Result<Option<TlsRuntime>, InspectError> {
    let image = Image::parse(data)?;
    // Go first: a cgo binary may also carry C symbols, but its TLS is crypto/tls.
    if golang::is_go(&image) {
        return golang::inspect_go(&image).map(Some);
    }
    inspect_openssl(&image, scan_banner)
}

type Elf64 = elf::FileHeader64<Endianness>;

/// The parsed headers of one x86-64 ELF file, over a slice or a read cache.
struct Image<'data, R: ReadRef<'data>> {
    data: R,
    endian: Endianness,
    sections: SectionTable<'data, Elf64, R>,
    segments: &'data [elf::ProgramHeader64<Endianness>],
}

fn elf_err(what: &'static str) -> impl FnOnce(object::read::Error) -> InspectError {
    move |e| InspectError::Elf {
        what,
        reason: e.to_string(),
    }
}

impl<'data, R: ReadRef<'data>> Image<'data, R> {
    fn parse(data: R) -> Result<Self, InspectError> {
        let ident = data
            .read_bytes_at(0, 16)
            .map_err(|()| InspectError::NotElf)?;
        match ident {
            [0x7f, b'E', b'L', b'F', class, data, ..] => {
                if *class != elf::ELFCLASS64.0 || *data != elf::ELFDATA2LSB.0 {
                    return Err(InspectError::NotElf64Le {
                        class: *class,
                        data: *data,
                    });
                }
            }
            _ => return Err(InspectError::NotElf),
        }
        let header = Elf64::parse(data).map_err(elf_err("file header"))?;
        let endian = header.endian().map_err(elf_err("file header"))?;
        let machine = header.e_machine(endian);
        if machine != elf::EM_X86_64 {
            return Err(InspectError::NotX86_64 { machine: machine.0 });
        }
        let segments = header
            .program_headers(endian, data)
            .map_err(elf_err("program headers"))?;
        let sections = header
            .sections(endian, data)
            .map_err(elf_err("section headers"))?;
        Ok(Image {
            data,
            endian,
            sections,
            segments,
        })
    }

    fn section(&self, name: &[u8]) -> Option<&'data elf::SectionHeader64<Endianness>> {
        self.sections
            .section_by_name(self.endian, name)
            .map(|(_, s)| s)
    }

    fn section_data(
        &self,
        section: &elf::SectionHeader64<Endianness>,
        what: &'static str,
    ) -> Result<&'data [u8], InspectError> {
        section.data(self.endian, self.data).map_err(elf_err(what))
    }

    /// The first symbol table of type `sh_type` (`SHT_SYMTAB` or `SHT_DYNSYM`), read whole.
    fn symbols(&self, sh_type: elf::SectionType) -> Result<Option<Symbols<'data>>, InspectError> {
        let endian = self.endian;
        let Some(section) = self.sections.iter().find(|s| s.sh_type(endian) == sh_type) else {
            return Ok(None);
        };
        let syms = section
            .data_as_array::<elf::Sym64<Endianness>, R>(endian, self.data)
            .map_err(elf_err("symbol table"))?;
        let link = SectionIndex(section.sh_link(endian) as usize);
        let strings = self
            .sections
            .section(link)
            .and_then(|s| s.data(endian, self.data))
            .map_err(elf_err("symbol string table"))?;
        Ok(Some(Symbols {
            endian,
            syms,
            strings,
        }))
    }

    /// The file offset of `vaddr`, if `[vaddr, vaddr + len)` is file-backed in one `PT_LOAD`
    /// segment (section headers are the fallback for files without program headers).
    fn file_offset(&self, vaddr: u64, len: u64) -> Option<u64> {
        let e = self.endian;
        let end = vaddr.checked_add(len)?;
        let within = |start: u64, size: u64, offset: u64| {
            let seg_end = start.checked_add(size)?;
            (start <= vaddr && end <= seg_end).then(|| offset.checked_add(vaddr - start))?
        };
        if self.segments.is_empty() {
            return self
                .sections
                .iter()
                .filter(|s| s.sh_flags(e).0 & elf::SHF_ALLOC.0 != 0)
                .filter(|s| s.sh_type(e) != elf::SHT_NOBITS)
                .find_map(|s| within(s.sh_addr(e), s.sh_size(e), s.sh_offset(e)));
        }
        self.segments
            .iter()
            .filter(|p| p.p_type(e) == elf::PT_LOAD)
            .find_map(|p| within(p.p_vaddr(e), p.p_filesz(e), p.p_offset(e)))
    }

    /// `len` bytes of the file at virtual address `vaddr`.
    fn read_vaddr(&self, vaddr: u64, len: u64, name: &str) -> Result<&'data [u8], InspectError> {
        let unmapped = || InspectError::Unmapped {
            name: name.to_owned(),
            vaddr,
        };
        let offset = self.file_offset(vaddr, len).ok_or_else(unmapped)?;
        self.data
            .read_bytes_at(offset, len)
            .map_err(|()| InspectError::Elf {
                what: "segment contents",
                reason: format!("cannot read {len} bytes of {name} at file offset {offset:#x}"),
            })
    }
}

/// A symbol table and its string table, both read whole (one read each, however many symbols).
struct Symbols<'data> {
    endian: Endianness,
    syms: &'data [elf::Sym64<Endianness>],
    strings: &'data [u8],
}

impl<'data> Symbols<'data> {
    /// Every symbol with a readable name.
    fn iter(&self) -> impl Iterator<Item = (&'data [u8], &'data elf::Sym64<Endianness>)> + '_ {
        self.syms.iter().filter_map(|sym| {
            let start = usize::try_from(sym.st_name(self.endian)).ok()?;
            let tail = self.strings.get(start..)?;
            let name = tail.get(..memchr::memchr(0, tail)?)?;
            Some((name, sym))
        })
    }

    /// Whether `sym` is a function defined in this file.
    fn is_defined_func(&self, sym: &elf::Sym64<Endianness>) -> bool {
        sym.st_type() == elf::STT_FUNC
            && sym.st_shndx(self.endian) != elf::SHN_UNDEF
            && sym.st_value(self.endian) != 0
    }

    /// Address and size of the defined function `name`.
    fn func(&self, name: &str) -> Option<(u64, u64)> {
        self.iter()
            .find(|(n, sym)| *n == name.as_bytes() && self.is_defined_func(sym))
            .map(|(_, sym)| (sym.st_value(self.endian), sym.st_size(self.endian)))
    }

    /// Address and size of the defined data object `name`.
    fn object(&self, name: &str) -> Option<(u64, u64)> {
        self.iter()
            .find(|(n, sym)| {
                *n == name.as_bytes()
                    && sym.st_type() == elf::STT_OBJECT
                    && sym.st_shndx(self.endian) != elf::SHN_UNDEF
            })
            .map(|(_, sym)| (sym.st_value(self.endian), sym.st_size(self.endian)))
    }
}

/// The OpenSSL entry points probed, in the order `TlsRuntime::OpenSsl::funcs` lists them.
const SSL_FUNCS: [&str; 5] = [
    "SSL_read",
    "SSL_write",
    "SSL_read_ex",
    "SSL_write_ex",
    "SSL_do_handshake",
];

/// Symbols only BoringSSL has: the allocator hooks its `mem.c` references weakly (present even
/// when every other symbol is hidden, as in grpcio's cygrpc) and its `BORINGSSL_*` functions.
fn is_boringssl_symbol(name: &[u8]) -> bool {
    name.starts_with(b"BORINGSSL_")
        || matches!(
            name,
            b"OPENSSL_memory_alloc" | b"OPENSSL_memory_free" | b"OPENSSL_memory_get_size"
        )
}

fn inspect_openssl<'data, R: ReadRef<'data>>(
    image: &Image<'data, R>,
    scan_banner: bool,
) -> Result<Option<TlsRuntime>, InspectError> {
    let mut found: [Option<u64>; SSL_FUNCS.len()] = [None; SSL_FUNCS.len()];
    let (mut boringssl, mut gnutls) = (false, false);
    // .dynsym is what a shared library exports; .symtab (when not stripped) is only read when
    // .dynsym lacks something, as it is the bigger of the two.
    for sh_type in [elf::SHT_DYNSYM, elf::SHT_SYMTAB] {
        if found.iter().all(Option::is_some) {
            break;
        }
        let Some(symbols) = image.symbols(sh_type)? else {
            continue;
        };
        for (name, sym) in symbols.iter() {
            boringssl |= is_boringssl_symbol(name);
            gnutls |= name.starts_with(b"gnutls_");
            let Some(i) = SSL_FUNCS.iter().position(|f| f.as_bytes() == name) else {
                continue;
            };
            if let Some(slot @ None) = found.get_mut(i) {
                if symbols.is_defined_func(sym) {
                    *slot = Some(sym.st_value(image.endian));
                }
            }
        }
    }
    if boringssl {
        return Ok(Some(TlsRuntime::BoringSsl));
    }
    // GnuTLS's OpenSSL compatibility layer (libgnutls-openssl) defines SSL_read and SSL_write
    // over gnutls_record_recv/send with its own SSL struct: not OpenSSL, and not traced.
    if gnutls || found.iter().all(Option::is_none) {
        return Ok(None);
    }

    let mut version = None;
    if let Some(rodata) = image.section(b".rodata").filter(|_| scan_banner) {
        match find_banner(image.section_data(rodata, ".rodata")?) {
            Some(Banner::BoringSsl) => return Ok(Some(TlsRuntime::BoringSsl)),
            Some(Banner::OpenSsl(v)) => version = Some(v),
            None => {}
        }
    }
    let version_exact = version.is_some();
    if version.is_none() {
        version = openssl_symbol_version(image);
    }

    let mut funcs = Vec::new();
    for (name, vaddr) in SSL_FUNCS.iter().zip(found) {
        let Some(vaddr) = vaddr else { continue };
        let file_offset = image
            .file_offset(vaddr, 1)
            .ok_or_else(|| InspectError::Unmapped {
                name: (*name).to_owned(),
                vaddr,
            })?;
        funcs.push(SymbolProbe { name, file_offset });
    }
    Ok(Some(TlsRuntime::OpenSsl {
        version,
        version_exact,
        funcs,
    }))
}

#[derive(Debug, PartialEq, Eq)]
enum Banner {
    OpenSsl(String),
    BoringSsl,
}

/// Finds OpenSSL's `OPENSSL_VERSION_TEXT` (`"OpenSSL 3.0.19 27 Jan 2026"`, a C string of its
/// own) in `.rodata`, or BoringSSL's (`"OpenSSL 1.1.1 (compatible; BoringSSL)"`, and
/// `"BoringSSL"` returned by its `OpenSSL_version`). Other mentions of OpenSSL (`"OpenSSL 3.0
/// legacy provider"` in node) are not preceded by a NUL or lack a full `x.y.z` version.
fn find_banner(rodata: &[u8]) -> Option<Banner> {
    if memchr::memmem::find(rodata, b"(compatible; BoringSSL)").is_some()
        || memchr::memmem::find(rodata, b"\0BoringSSL\0").is_some()
    {
        return Some(Banner::BoringSsl);
    }
    const PREFIX: &[u8] = b"OpenSSL ";
    memchr::memmem::find_iter(rodata, PREFIX).find_map(|pos| {
        if pos > 0 && rodata.get(pos - 1) != Some(&0) {
            return None;
        }
        let rest = rodata.get(pos + PREFIX.len()..)?;
        let rest = rest.get(..rest.len().min(40))?;
        let token = rest.get(..rest.iter().position(|&b| b == b' ' || b == 0)?)?;
        let token = std::str::from_utf8(token).ok()?;
        is_release(token).then(|| Banner::OpenSsl(token.to_owned()))
    })
}

/// `3.0.19`, `1.1.1w`, `3.0.7-fips`: three numbers, then letters or a dash suffix; 1.1 or 3+.
fn is_release(token: &str) -> bool {
    let digits_end = token
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(token.len());
    let (numbers, suffix) = token.split_at(digits_end);
    let parts: Vec<&str> = numbers.split('.').collect();
    let numeric = parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let known = numbers.starts_with("1.1.")
        || parts
            .first()
            .and_then(|m| m.parse::<u32>().ok())
            .is_some_and(|m| m >= 3);
    numeric
        && known
        && suffix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The newest `OPENSSL_x.y.z` / `OPENSSL_x_y_z` version node the file defines, as `x.y.z`.
/// Best effort: a malformed version section just means no version.
fn openssl_symbol_version<'data, R: ReadRef<'data>>(image: &Image<'data, R>) -> Option<String> {
    let (mut defs, link) = image.sections.gnu_verdef(image.endian, image.data).ok()??;
    let strings = image
        .sections
        .strings(image.endian, image.data, link)
        .ok()?;
    let mut best: Option<(Vec<u32>, String)> = None;
    // A version section has a handful of nodes; the cap only bounds hostile input.
    for _ in 0..4096 {
        let Ok(Some((_, mut aux))) = defs.next() else {
            break;
        };
        let Ok(Some(aux)) = aux.next() else { continue };
        let Ok(name) = aux.name(image.endian, strings) else {
            continue;
        };
        let Some(rest) = name.strip_prefix(b"OPENSSL_") else {
            continue;
        };
        if !rest.first().is_some_and(u8::is_ascii_digit) {
            continue;
        }
        let text = String::from_utf8_lossy(rest).replace('_', ".");
        let key: Vec<u32> = text
            .split('.')
            .map(|p| {
                let end = p.find(|c: char| !c.is_ascii_digit()).unwrap_or(p.len());
                p.get(..end).and_then(|d| d.parse().ok()).unwrap_or(0)
            })
            .collect();
        if best.as_ref().is_none_or(|(k, _)| key > *k) {
            best = Some((key, text));
        }
    }
    best.map(|(_, text)| text)
}

#[cfg(test)]
mod tests {
    //! Real binaries only: the distribution's libssl/libcrypto, node, grpcio, Debian's `hey`,
    //! and Go programs built here with the local toolchain. A missing input skips the test with a
    //! message, except under CI (env `CI`), where it fails.

    use super::*;
    use std::collections::HashMap;
    use std::process::Command;
    use std::sync::OnceLock;
    use std::time::Instant;

    const LIBSSL: &str = "/usr/lib/x86_64-linux-gnu/libssl.so.3";
    const LIBCRYPTO: &str = "/usr/lib/x86_64-linux-gnu/libcrypto.so.3";
    const NODE: &str = "/usr/bin/node";
    const HEY: &str = "/usr/bin/hey";

    /// `path` if it exists; otherwise a visible skip (or a failure under CI).
    fn need(path: &str) -> Option<&Path> {
        let p = Path::new(path);
        if p.exists() {
            return Some(p);
        }
        assert!(std::env::var_os("CI").is_none(), "{path} is missing (CI)");
        eprintln!("SKIP: {path} is missing");
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
        for name in ["Read", "Write"] {
            let text = run(go_cmd(&dir)
                .args(["tool", "objdump", "-s"])
                .arg(format!("^crypto/tls.\\(\\*Conn\\).{name}$"))
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
            objdump.insert(format!("crypto/tls.(*Conn).{name}"), (entry, rets));
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
            }) if skipped.is_empty() => GoResult {
                version,
                regabi,
                read,
                write,
                from_pclntab,
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
}

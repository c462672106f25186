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
        /// Where the `net/http` Transport probes go (goroutine-aware trace context), or why
        /// they cannot be attached.
        transport: Result<GoTransport, String>,
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

/// Entries (file offsets) of `net/http.(*persistConn).writeLoop` and `.roundTrip`: where the
/// uprobes that tie a client connection's writer goroutine to its caller go (agent-ebpf's
/// `goctx`); and `runtime.newproc1`, whose entry and returns tell which goroutine started
/// which (None before Go 1.18, whose newproc1 takes `callergp` elsewhere, or when not found).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoTransport {
    pub write_loop: u64,
    pub round_trip: u64,
    pub spawn: Option<GoFunc>,
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
mod tests;

//! Go binaries: the toolchain version (from `.go.buildinfo`), where `crypto/tls.(*Conn).Read`
//! and `Write` are (from `.symtab`, else `.gopclntab`), and the `RET` instructions in them.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic};
use object::read::elf::SectionHeader;
use object::ReadRef;

use super::pclntab::{Layout, Pclntab};
use super::{GoFunc, GoTransport, Image, InspectError, TlsRuntime};

const READ: &str = "crypto/tls.(*Conn).Read";
const WRITE: &str = "crypto/tls.(*Conn).Write";
/// The goroutine that writes a `net/http` client connection (see agent-ebpf's `goctx`).
const WRITE_LOOP: &str = "net/http.(*persistConn).writeLoop";
/// Runs on the goroutine that makes the request and hands it to the connection's writeLoop.
const ROUND_TRIP: &str = "net/http.(*persistConn).roundTrip";
/// Creates every goroutine: `newproc1(fn, callergp, callerpc) *g` since Go 1.18.
const NEWPROC1: &str = "runtime.newproc1";
/// Looked up together, in this order.
const FUNCS: [&str; 5] = [READ, WRITE, WRITE_LOOP, ROUND_TRIP, NEWPROC1];

/// `(*Conn).Read` and `Write` are about 1 KiB of code; anything past this is a bad table.
const MAX_FUNC_LEN: u64 = 1 << 20;
/// Longest version string accepted (`"devel go1.23-abcdef0123 Tue Jan 2 15:04:05 2024 +0000"`).
const MAX_VERSION_LEN: u64 = 256;
/// The Go linker puts the build info at the start of the data segment; Go's own reader looks
/// at the first 64 KiB too.
const MAX_BUILDINFO_SCAN: u64 = 64 * 1024;
const BUILDINFO_MAGIC: &[u8] = b"\xff Go buildinf:";

/// Sections only the Go linker writes.
pub(super) fn is_go<'data, R: ReadRef<'data>>(image: &Image<'data, R>) -> bool {
    [
        &b".go.buildinfo"[..],
        b".gopclntab",
        b".note.go.buildid",
        b".gosymtab",
    ]
    .iter()
    .any(|name| image.section(name).is_some())
}

pub(super) fn inspect_go<'data, R: ReadRef<'data>>(
    image: &Image<'data, R>,
) -> Result<TlsRuntime, InspectError> {
    let symtab = image.symbols(object::elf::SHT_SYMTAB)?;
    let version = match build_info_version(image)? {
        Some(v) => Some(v),
        None => symtab
            .as_ref()
            .and_then(|s| s.object("runtime.buildVersion"))
            .map(|(vaddr, _)| read_go_string(image, vaddr, "runtime.buildVersion"))
            .transpose()?,
    };

    // Loaded only when needed: an unstripped binary answers from .symtab alone.
    let mut pclntab: Option<Pclntab<'data>> = None;
    let mut load_pclntab = || -> Result<Option<Pclntab<'data>>, InspectError> {
        if pclntab.is_none() {
            pclntab = locate_pclntab(image)?;
        }
        Ok(pclntab.clone())
    };

    let mut ranges = [None, None, None, None, None];
    let mut from_pclntab = false;
    if let Some(symtab) = &symtab {
        for (range, name) in ranges.iter_mut().zip(FUNCS) {
            *range = symtab
                .func(name)
                .map(|(entry, size)| entry..entry.saturating_add(size));
        }
    }
    if ranges.iter().any(Option::is_none) {
        match load_pclntab()? {
            Some(table) => {
                let found = table.find(&FUNCS)?;
                for (range, hit) in ranges.iter_mut().zip(found) {
                    if range.is_none() && hit.is_some() {
                        *range = hit;
                        from_pclntab = true;
                    }
                }
            }
            None if symtab.is_none() => return Err(InspectError::NoGoFunctionTable),
            None => {}
        }
    }

    let release = version.as_deref().and_then(go_release);
    let regabi = match release {
        Some(release) => release >= (1, 17),
        // No version string: a 1.18+ table layout implies a register-ABI toolchain.
        // Best effort: an unreadable table here only means the ABI is not known.
        None => load_pclntab()
            .ok()
            .flatten()
            .is_some_and(|t| t.layout() == Layout::Go118),
    };
    let version = version.unwrap_or_else(|| "unknown".to_owned());
    let [read_range, write_range, write_loop_range, round_trip_range, newproc1_range] = ranges;
    if read_range.is_none() && write_range.is_none() {
        return Ok(TlsRuntime::GoWithoutTls { version });
    }
    // newproc1's arguments moved in Go 1.18 (callergp second, in RBX): only from there on.
    let spawn = newproc1_range
        .filter(|_| release.is_some_and(|r| r >= (1, 18)))
        .and_then(|range| go_func(image, NEWPROC1, range).ok());
    let transport = transport(image, regabi, write_loop_range, round_trip_range)
        .map(|t| GoTransport { spawn, ..t });

    let mut skipped = Vec::new();
    let mut resolve = |name: &str, range: Option<std::ops::Range<u64>>| {
        let range = range?;
        go_func(image, name, range)
            .map_err(|reason| skipped.push(format!("{name}: {reason}")))
            .ok()
    };
    let read = resolve(READ, read_range);
    let write = resolve(WRITE, write_range);
    Ok(TlsRuntime::Go {
        version,
        regabi,
        read,
        write,
        from_pclntab,
        skipped,
        transport,
    })
}

/// The `net/http` Transport probe points, or why there are none.
fn transport<'data, R: ReadRef<'data>>(
    image: &Image<'data, R>,
    regabi: bool,
    write_loop: Option<std::ops::Range<u64>>,
    round_trip: Option<std::ops::Range<u64>>,
) -> Result<GoTransport, String> {
    if !regabi {
        return Err("Go before 1.17: no goroutine in R14, arguments on the stack".to_owned());
    }
    let entry = |name: &str, range: Option<std::ops::Range<u64>>| {
        let range = range.ok_or_else(|| format!("{name} not found (no net/http client)"))?;
        go_func(image, name, range)
            .map(|f| f.file_offset)
            .map_err(|reason| format!("{name}: {reason}"))
    };
    Ok(GoTransport {
        write_loop: entry(WRITE_LOOP, write_loop)?,
        round_trip: entry(ROUND_TRIP, round_trip)?,
        spawn: None,
    })
}

/// The pclntab magics with the amd64 header bytes after them (two zeros, PC quantum 1,
/// pointer size 8), newest first.
const PCLNTAB_HEADERS: [[u8; 8]; 4] = [
    [0xf1, 0xff, 0xff, 0xff, 0, 0, 1, 8],
    [0xf0, 0xff, 0xff, 0xff, 0, 0, 1, 8],
    [0xfa, 0xff, 0xff, 0xff, 0, 0, 1, 8],
    [0xfb, 0xff, 0xff, 0xff, 0, 0, 1, 8],
];

/// Go's function table: its own section (`.gopclntab`, `.data.rel.ro.gopclntab` in an
/// internally linked PIE), or, when a PIE is linked externally, somewhere inside
/// `.data.rel.ro`, found by its header and confirmed by its first entries.
fn locate_pclntab<'data, R: ReadRef<'data>>(
    image: &Image<'data, R>,
) -> Result<Option<Pclntab<'data>>, InspectError> {
    let text_addr = image
        .section(b".text")
        .map_or(0, |s| s.sh_addr(image.endian));
    for name in [&b".gopclntab"[..], b".data.rel.ro.gopclntab"] {
        if let Some(section) = image.section(name) {
            let data = image.section_data(section, ".gopclntab")?;
            return Pclntab::parse(data, text_addr).map(Some);
        }
    }
    let Some(section) = image.section(b".data.rel.ro") else {
        return Ok(None);
    };
    let data = image.section_data(section, ".data.rel.ro")?;
    for header in &PCLNTAB_HEADERS {
        for at in memchr::memmem::find_iter(data, header) {
            let table = data
                .get(at..)
                .and_then(|rest| Pclntab::parse(rest, text_addr).ok());
            if let Some(table) = table.filter(Pclntab::looks_valid) {
                return Ok(Some(table));
            }
        }
    }
    Ok(None)
}

/// Locates one function in the file and finds its returns.
fn go_func<'data, R: ReadRef<'data>>(
    image: &Image<'data, R>,
    name: &str,
    range: std::ops::Range<u64>,
) -> Result<GoFunc, String> {
    let len = range.end.saturating_sub(range.start);
    if len == 0 || len > MAX_FUNC_LEN {
        return Err(format!(
            "implausible size {len} bytes at {:#x}",
            range.start
        ));
    }
    let file_offset = image
        .file_offset(range.start, len)
        .ok_or_else(|| format!("{range:#x?} is not in a file-backed PT_LOAD segment"))?;
    let code = image
        .data
        .read_bytes_at(file_offset, len)
        .map_err(|()| format!("cannot read {len} bytes at file offset {file_offset:#x}"))?;
    let returns = return_offsets(code);
    if returns.is_empty() {
        return Err(format!("no RET instruction in {range:#x?}"));
    }
    Ok(GoFunc {
        name: name.to_owned(),
        file_offset,
        return_offsets: returns.into_iter().map(|r| file_offset + r).collect(),
    })
}

/// Offsets (from the start of `code`) of every near `RET` (`C3`, `C2 iw`, with any prefix),
/// decoding instruction by instruction from the entry. Go pads functions with `INT3`, which
/// decodes as such and is passed over; an instruction cut by the end of `code` is invalid.
pub(super) fn return_offsets(code: &[u8]) -> Vec<u64> {
    let mut decoder = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut instruction = Instruction::default();
    let mut returns = Vec::new();
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        if !instruction.is_invalid() && instruction.mnemonic() == Mnemonic::Ret {
            returns.push(instruction.ip());
        }
    }
    returns
}

/// The Go version from `.go.buildinfo`: inline after the header since Go 1.18, behind a
/// pointer to `runtime.buildVersion` before (see Go's `debug/buildinfo`).
fn build_info_version<'data, R: ReadRef<'data>>(
    image: &Image<'data, R>,
) -> Result<Option<String>, InspectError> {
    let Some(section) = image.section(b".go.buildinfo") else {
        return Ok(None);
    };
    let e = image.endian;
    let (offset, size) = section
        .file_range(e)
        .ok_or_else(|| bad_build_info("section has no file contents"))?;
    let data = image
        .data
        .read_bytes_at(offset, size.min(MAX_BUILDINFO_SCAN))
        .map_err(|()| bad_build_info("section is past the end of the file"))?;
    match parse_build_info(data)? {
        BuildInfo::Inline(version) => Ok(Some(version)),
        BuildInfo::Pointer(vaddr) => read_go_string(image, vaddr, "runtime.buildVersion").map(Some),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum BuildInfo {
    Inline(String),
    /// Address of the `runtime.buildVersion` string header.
    Pointer(u64),
}

fn bad_build_info(reason: impl Into<String>) -> InspectError {
    InspectError::BadBuildInfo {
        reason: reason.into(),
    }
}

/// The 32-byte header: 14 bytes of magic, pointer size, flags (bit 0 big-endian, bit 1 strings
/// inline), then two pointers (`runtime.buildVersion`, `runtime.modinfo`) that are zero when
/// inline; inline strings follow as uvarint length + bytes. 16-byte aligned.
fn parse_build_info(data: &[u8]) -> Result<BuildInfo, InspectError> {
    let header = (0..data.len())
        .step_by(16)
        .find_map(|at| {
            let header = data.get(at..at.checked_add(32)?)?;
            header.starts_with(BUILDINFO_MAGIC).then_some((at, header))
        })
        .ok_or_else(|| bad_build_info("no \"\\xff Go buildinf:\" header"))?;
    let (at, header) = header;
    let (ptr_size, flags) = match header.get(14..16) {
        Some(&[p, f]) => (p, f),
        _ => return Err(bad_build_info("short header")),
    };
    if flags & 1 != 0 {
        return Err(bad_build_info("big-endian build info in an x86-64 file"));
    }
    if flags & 2 != 0 {
        let rest = data.get(at + 32..).unwrap_or_default();
        let (len, used) =
            uvarint(rest).ok_or_else(|| bad_build_info("bad version length varint"))?;
        if len == 0 || len > MAX_VERSION_LEN {
            return Err(bad_build_info(format!("version length {len}")));
        }
        let bytes = usize::try_from(len)
            .ok()
            .and_then(|len| rest.get(used..used.checked_add(len)?))
            .ok_or_else(|| bad_build_info("version string runs past the section"))?;
        return Ok(BuildInfo::Inline(
            String::from_utf8_lossy(bytes).into_owned(),
        ));
    }
    match (ptr_size, header.get(16..24)) {
        (8, Some(p)) => Ok(BuildInfo::Pointer(u64::from_le_bytes(
            p.try_into().unwrap_or_default(),
        ))),
        _ => Err(bad_build_info(format!("pointer size {ptr_size}"))),
    }
}

/// A Go `string` header (pointer, length) at `vaddr`, and the bytes it points to.
fn read_go_string<'data, R: ReadRef<'data>>(
    image: &Image<'data, R>,
    vaddr: u64,
    name: &str,
) -> Result<String, InspectError> {
    let header = image.read_vaddr(vaddr, 16, name)?;
    let word = |range: std::ops::Range<usize>| {
        header
            .get(range)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or_default()
    };
    let (ptr, len) = (word(0..8), word(8..16));
    if len == 0 || len > MAX_VERSION_LEN {
        return Err(bad_build_info(format!("{name} has length {len}")));
    }
    let bytes = image.read_vaddr(ptr, len, name)?;
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// Go's `encoding/binary.Uvarint`: the value and the bytes used; `None` if cut or over 64 bits.
fn uvarint(data: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in data.iter().enumerate().take(10) {
        let bits = u64::from(byte & 0x7f);
        if i == 9 && byte > 1 {
            return None;
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// `(major, minor)` of `go1.19.8`, `go1.21rc2`, `devel go1.22-abcdef …`.
pub(super) fn go_release(version: &str) -> Option<(u32, u32)> {
    let start = version.find("go")? + 2;
    let mut numbers = version.get(start..)?.split('.');
    let major = numbers.next()?.parse().ok()?;
    let minor_text = numbers.next()?;
    let minor_end = minor_text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(minor_text.len());
    let minor = minor_text.get(..minor_end)?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_numbers() {
        assert_eq!(go_release("go1.19.8"), Some((1, 19)));
        assert_eq!(go_release("go1.21rc2"), Some((1, 21)));
        assert_eq!(go_release("go1.16"), Some((1, 16)));
        assert_eq!(go_release("devel go1.22-abcdef Tue"), Some((1, 22)));
        assert_eq!(go_release("unknown"), None);
    }

    #[test]
    fn uvarint_matches_go() {
        assert_eq!(uvarint(&[0x08]), Some((8, 1)));
        assert_eq!(uvarint(&[0xac, 0x02]), Some((300, 2)));
        assert_eq!(uvarint(&[0x80]), None);
        assert_eq!(uvarint(&[0xff; 11]), None);
    }

    #[test]
    fn build_info_inline_and_pointer() {
        let mut inline = BUILDINFO_MAGIC.to_vec();
        inline.extend([8, 2]);
        inline.resize(32, 0);
        inline.push(8);
        inline.extend(b"go1.19.8");
        assert_eq!(
            parse_build_info(&inline).unwrap(),
            BuildInfo::Inline("go1.19.8".into())
        );
        // Cut anywhere: an error, never a panic.
        for cut in 0..inline.len() {
            assert!(parse_build_info(&inline[..cut]).is_err(), "cut at {cut}");
        }

        let mut pointer = BUILDINFO_MAGIC.to_vec();
        pointer.extend([8, 0]);
        pointer.extend(0x51_2000u64.to_le_bytes());
        pointer.extend(0x51_2010u64.to_le_bytes());
        assert_eq!(
            parse_build_info(&pointer).unwrap(),
            BuildInfo::Pointer(0x51_2000)
        );
    }

    #[test]
    fn rets_found_by_decoding_not_by_byte() {
        // mov eax, 0xc3c3c3c3; ret 8; int3; ret: the C3 bytes inside the immediate are not
        // returns, and the trailing INT3 padding is skipped.
        let code = [
            0xb8, 0xc3, 0xc3, 0xc3, 0xc3, 0xc2, 0x08, 0x00, 0xcc, 0xc3, 0xcc, 0xcc,
        ];
        assert_eq!(return_offsets(&code), vec![5, 9]);
        // A RET prefix-free at the very end but cut: `C2` needs two more bytes.
        assert_eq!(return_offsets(&[0x90, 0xc2]), Vec::<u64>::new());
    }
}
